"""The attacked model as a ``logits_fn(images) -> [B, K]``: the objectives the pure attacks ascend.

* ``horizon="step"``: the logits of attack step k of a k-step unroll (the authors' attack);
* ``horizon="avg"``:  the mean logits of steps 1..k (the authors' ``isAvgSteps`` option);
* ``horizon="full"``: the mean logits of steps 1..T_eval of a T_eval-step unroll.

Fixations are the policy's argmax or, with ``fixations="sample"``, sampled; then each forward pass averages
the logits of ``eot_samples`` draws (EOT) whose keys are folded with an order-independent hash of the
queried images. Used by the attack suite and by adversarial training; imports nothing above the models.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

HORIZONS = ("step", "avg", "full")
FIXATION_MODES = ("argmax", "sample")



def step_logits(model, variables, images, *, num_steps: int, fixations: str = "argmax", rng=None):
  """Per-step logits [T, B, K] of a ``num_steps`` unroll in eval mode (argmax or sampled fixations)."""
  if fixations == "argmax":
    return model.apply(variables, images, num_steps=num_steps, train=False, sample_fixations=False)["logits"]
  if fixations == "sample":
    if rng is None:
      raise ValueError("fixations='sample' needs a PRNG key")
    return model.apply(variables, images, num_steps=num_steps, train=False, sample_fixations=True,
                       rngs={"fixation": rng})["logits"]
  raise ValueError(f"unknown fixations mode {fixations!r}; choose one of {', '.join(FIXATION_MODES)}")


def reduce_horizon(logits, horizon: str, attack_step: int):
  """[T, B, K] → [B, K]: step k's logits (``step``) or the mean over all T given steps (``avg``, ``full``)."""
  if horizon == "step":
    return logits[attack_step - 1]
  if horizon in ("avg", "full"):
    return jnp.mean(logits, axis=0)
  raise ValueError(f"unknown horizon {horizon!r}; choose one of {', '.join(HORIZONS)}")


def horizon_steps(horizon: str, attack_step: int, eval_steps: int) -> int:
  """Number of steps the model is unrolled for when attacked with ``horizon``."""
  return eval_steps if horizon == "full" else attack_step


def image_hash(images):
  """An order-independent uint32 hash of the images' bits (sum of the float32 bit patterns, mod 2³²).

  Integer addition is associative, so the value does not depend on the reduction order (device count).
  """
  bits = jax.lax.bitcast_convert_type(jax.lax.stop_gradient(images).astype(jnp.float32), jnp.uint32)
  return jnp.sum(bits, dtype=jnp.uint32)


def eot_keys(rng, images, num_draws: int):
  """The ``num_draws`` fixation keys EOT uses for a forward pass on ``images`` (fresh per queried point)."""
  return jax.random.split(jax.random.fold_in(rng, image_hash(images)), num_draws)


def model_logits_fn(model, variables, *, horizon: str = "step", attack_step: int = 4, eval_steps: int = 0,
                    fixations: str = "argmax", eot_samples: int = 1, rng=None):
  """The attacked model as ``logits_fn(images [B,H,W,C]) -> [B, K]`` (see the module docstring).

  horizon: ``step`` (logits of step ``attack_step``), ``avg`` (mean logits of steps 1..attack_step) or
  ``full`` (mean logits of steps 1..eval_steps). fixations: ``argmax`` (deterministic; ``rng`` unused) or
  ``sample``: the mean logits of ``eot_samples`` draws with keys ``eot_keys(rng, images, eot_samples)``.
  """
  if horizon not in HORIZONS:
    raise ValueError(f"unknown horizon {horizon!r}; choose one of {', '.join(HORIZONS)}")
  if attack_step < 1:
    raise ValueError(f"attack_step must be >= 1, got {attack_step}")
  if horizon == "full" and eval_steps < 1:
    raise ValueError("horizon='full' needs eval_steps >= 1")
  num_steps = horizon_steps(horizon, attack_step, eval_steps)

  if fixations == "argmax":
    def logits_fn(images):
      return reduce_horizon(step_logits(model, variables, images, num_steps=num_steps), horizon, attack_step)
    return logits_fn
  if fixations != "sample":
    raise ValueError(f"unknown fixations mode {fixations!r}; choose one of {', '.join(FIXATION_MODES)}")
  if rng is None:
    raise ValueError("fixations='sample' needs rng= for the EOT draws")
  if eot_samples < 1:
    raise ValueError(f"eot_samples must be >= 1, got {eot_samples}")

  def one_draw(images, key):
    return reduce_horizon(step_logits(model, variables, images, num_steps=num_steps, fixations="sample",
                                      rng=key), horizon, attack_step)

  def eot_logits_fn(images):
    keys = eot_keys(rng, images, eot_samples)
    return jnp.mean(jax.vmap(lambda k: one_draw(images, k))(keys), axis=0)
  return eot_logits_fn
