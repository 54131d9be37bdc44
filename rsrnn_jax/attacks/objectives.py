"""The attacked model as a ``logits_fn(images) -> [B, K]``: the objectives the pure attacks ascend.

* ``horizon="step"``: the logits of attack step k of a k-step unroll (the authors' attack);
* ``horizon="avg"``:  the mean logits of steps 1..k (the authors' ``isAvgSteps`` option);
* ``horizon="full"``: the mean logits of steps 1..T_eval of a T_eval-step unroll;
* ``horizon="last"``: the logits of step T_eval of a T_eval-step unroll (the report's robust accuracy at T);
* ``horizon="t3"`` (any ``tN``): the logits of step N of an N-step unroll. A profile's ``each`` stands for one
  such objective per step 1..T_eval that no single-step objective of the list already aims at
  (:func:`expand_horizons`): every step attacked on its own.

Fixations are the policy's argmax or, with ``fixations="sample"``, sampled; then each forward pass averages
the logits of ``eot_samples`` draws (EOT) whose keys are folded with an order-independent hash of the
queried images. Used by the attack suite and by adversarial training; imports nothing above the models.

Attacks on the fixation policy (glimpse models only; the model's forward pass is unchanged):

* ``keyed_logits_fn``: one sampled-fixation draw per call, ``logits_fn(images, key)`` (APGD's EOT);
* ``frozen_scanpath_logits_fn``: the model made to walk a given scanpath (every step's fixation forced) — a
  surrogate: re-score its adversarial images with the free model;
* ``bpda_logits_fn``: BPDA / straight-through: the forward pass takes the policy's own fixations, the backward
  pass differentiates the expected fixation Σ_c softmax(logits_c / τ)·loc_c through undetached dorsal inputs;
* ``steering_objective``: the free model's logits plus a steering term, the mean over steps of
  log P(the cell of the attacker's scanpath) under the model made to walk that scanpath (teacher forcing: if the
  policy's argmax picks every one of those cells, the free model walks the scanpath).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from rsrnn_jax.models import FIXATION_MODES, dorsal, predict

HORIZONS = ("step", "avg", "full", "last")  # and ``tN`` (step N), see :func:`step_horizon`
EACH = "each"  # in a list of horizons: ``tN`` for every step N not yet aimed at (:func:`expand_horizons`)
_T_EVAL_HORIZONS = ("full", "last")  # the objectives that unroll the model for T_eval steps


def step_horizon(horizon) -> int | None:
  """``"t3"`` → 3 (the objective: logits of step 3 of a 3-step unroll); None for any other name."""
  h = str(horizon)
  return int(h[1:]) if h[:1] == "t" and h[1:].isdigit() and int(h[1:]) >= 1 else None


def is_horizon(horizon) -> bool:
  return horizon in HORIZONS or step_horizon(horizon) is not None


def single_step(horizon, attack_step: int, eval_steps: int) -> int | None:
  """The one step an objective aims at (``step``: k, ``last``: T_eval, ``tN``: N); None for the means."""
  return {"step": attack_step, "last": eval_steps}.get(horizon, step_horizon(horizon))


def expand_horizons(horizons, attack_step: int, eval_steps: int) -> tuple:
  """``horizons`` with ``each`` replaced by ``t1``..``tT`` (T = ``eval_steps``), leaving out the steps that a
  single-step objective of ``horizons`` already aims at (``step`` = t_k, ``last`` = t_T)."""
  if EACH not in horizons:
    return tuple(horizons)
  covered = {single_step(h, attack_step, eval_steps) for h in horizons if h != EACH}
  each = tuple(f"t{n}" for n in range(1, eval_steps + 1) if n not in covered)
  return tuple(x for h in horizons for x in (each if h == EACH else (h,)))



def step_logits(model, variables, images, *, num_steps: int, fixations: str = "argmax", rng=None):
  """Per-step logits [T, B, K] of a ``num_steps`` unroll in eval mode (argmax or sampled fixations)."""
  return predict(model, variables, images, num_steps=num_steps, fixations=fixations, rng=rng)["logits"]


def reduce_horizon(logits, horizon: str, attack_step: int):
  """[T, B, K] → [B, K]: step k's logits (``step``), step N's (``tN``), the last step's (``last``) or the mean
  over all T given steps (``avg``, ``full``)."""
  if (n := single_step(horizon, attack_step, logits.shape[0])) is not None:
    return logits[n - 1]
  if horizon in ("avg", "full"):
    return jnp.mean(logits, axis=0)
  raise ValueError(f"unknown horizon {horizon!r}; choose one of {', '.join(HORIZONS)} or tN (step N)")


def horizon_steps(horizon: str, attack_step: int, eval_steps: int) -> int:
  """Number of steps the model is unrolled for when attacked with ``horizon``."""
  if (n := step_horizon(horizon)) is not None:
    return n
  return eval_steps if horizon in _T_EVAL_HORIZONS else attack_step


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
  num_steps = _check_horizon(horizon, attack_step, eval_steps)

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


# ----------------------------------------------------------------------------------------------------------
# Attacks on the fixation policy
# ----------------------------------------------------------------------------------------------------------

def _check_horizon(horizon: str, attack_step: int, eval_steps: int) -> int:
  if not is_horizon(horizon):
    raise ValueError(f"unknown horizon {horizon!r}; choose one of {', '.join(HORIZONS)} or tN (step N)")
  if attack_step < 1:
    raise ValueError(f"attack_step must be >= 1, got {attack_step}")
  if horizon in _T_EVAL_HORIZONS and eval_steps < 1:
    raise ValueError(f"horizon={horizon!r} needs eval_steps >= 1")
  return horizon_steps(horizon, attack_step, eval_steps)


def _check_glimpse(model):
  if not hasattr(model, "sampler") or not hasattr(model, "dorsal"):
    raise ValueError(f"policy attacks need a glimpse model with fixations, got {type(model).__name__}")


def _apply(model, variables, images, num_steps, **kwargs):
  return model.apply(variables, images, num_steps=num_steps, train=False, **kwargs)


def keyed_logits_fn(model, variables, *, horizon: str = "step", attack_step: int = 4, eval_steps: int = 0):
  """``logits_fn(images, key) -> [B, K]``: one draw of sampled fixations with ``key`` (for apgd's EOT)."""
  num_steps = _check_horizon(horizon, attack_step, eval_steps)

  def logits_fn(images, key):
    return reduce_horizon(step_logits(model, variables, images, num_steps=num_steps, fixations="sample",
                                      rng=key), horizon, attack_step)
  return logits_fn


def model_scanpath(model, variables, images, *, num_steps: int):
  """The fixations [T, B, 2] the argmax policy takes on ``images`` (its own clean scanpath)."""
  _check_glimpse(model)
  return _apply(model, variables, images, num_steps, sample_fixations=False)["fixations"]


def _frozen(scanpath, num_steps):
  scanpath = jnp.asarray(scanpath, jnp.float32)
  if scanpath.ndim != 3 or scanpath.shape[0] < num_steps or scanpath.shape[-1] != 2:
    raise ValueError(f"scanpath must be [T >= {num_steps}, B, 2] image coordinates, got {scanpath.shape}")
  return dict(fixations=scanpath[:num_steps], fixation_mask=jnp.ones((num_steps,), bool))


def frozen_scanpath_logits_fn(model, variables, scanpath, *, horizon: str = "step", attack_step: int = 4,
                              eval_steps: int = 0):
  """``logits_fn(images)`` of the model made to fixate ``scanpath`` [T, B, 2] (T ≥ the unrolled steps) at
  every step: gradients flow only through the glimpse sampling. Given the model's own scanpath
  (:func:`model_scanpath`) it equals the free model. A surrogate: success is judged on the frozen model."""
  _check_glimpse(model)
  num_steps = _check_horizon(horizon, attack_step, eval_steps)
  forced = _frozen(scanpath, num_steps)

  def logits_fn(images):
    return reduce_horizon(_apply(model, variables, images, num_steps, sample_fixations=False, **forced)["logits"],
                          horizon, attack_step)
  return logits_fn


def bpda_logits_fn(model, variables, *, tau: float, horizon: str = "step", attack_step: int = 4,
                   eval_steps: int = 0):
  """``logits_fn(images)``: the free model's logits (argmax fixations, values unchanged) whose gradient also
  flows through the fixation choice: straight-through with the expected fixation at temperature ``tau``."""
  _check_glimpse(model)
  num_steps = _check_horizon(horizon, attack_step, eval_steps)

  def logits_fn(images):
    return reduce_horizon(_apply(model, variables, images, num_steps, sample_fixations=False,
                                 bpda_tau=tau)["logits"], horizon, attack_step)
  return logits_fn


def _saliency_size(model) -> int:
  return int(dict(model.dorsal or {}).get("saliency_size", dorsal.Dorsal.saliency_size))


def scanpath_cells(model, scanpath):
  """[T − 1, B] flat cells of the dorsal map seen from fixation t whose centre is nearest fixation t + 1."""
  _check_glimpse(model)
  scanpath = jnp.asarray(scanpath, jnp.float32)
  size = _saliency_size(model)
  return jax.vmap(lambda f, g: dorsal.nearest_cell(model.dorsal_view, f, g, size))(scanpath[:-1], scanpath[1:])


def steering_objective(model, variables, scanpath, *, weight: float = 1.0, horizon: str = "step",
                       attack_step: int = 4, eval_steps: int = 0, bpda_tau: float | None = None):
  """``objective(images) -> (logits [B, K], steering [B])`` for apgd (which ascends its loss + steering).

  logits: the free model (argmax fixations; BPDA gradients if ``bpda_tau``). steering: ``weight`` × the mean
  over the unrolled steps' transitions t → t+1 of log P_t(cell nearest scanpath[t+1]) on the model made to walk
  ``scanpath`` [T, B, 2] (zero for a one-step horizon). The cells are fixed by the scanpath, not by the image.
  """
  _check_glimpse(model)
  num_steps = _check_horizon(horizon, attack_step, eval_steps)
  forced = _frozen(scanpath, num_steps)
  cells = scanpath_cells(model, forced["fixations"])  # [n − 1, B]
  free = bpda_logits_fn(model, variables, tau=bpda_tau, horizon=horizon, attack_step=attack_step,
                        eval_steps=eval_steps) if bpda_tau is not None else model_logits_fn(
                            model, variables, horizon=horizon, attack_step=attack_step, eval_steps=eval_steps)

  def objective(images):
    logits = free(images)
    if num_steps < 2:
      return logits, jnp.zeros(logits.shape[:1], jnp.float32)
    # bpda_tau un-detaches the dorsal inputs, so the image can steer the policy; with every fixation forced the
    # straight-through estimator itself has no effect (the forced fixations carry no gradient).
    probs = _apply(model, variables, images, num_steps, sample_fixations=False, bpda_tau=1.0, **forced)["probs"]
    probs = probs[:-1].reshape(num_steps - 1, images.shape[0], -1)  # [n − 1, B, s²]
    chosen = jnp.take_along_axis(probs, cells[..., None], axis=-1)[..., 0]
    return logits, weight * jnp.mean(jnp.log(jnp.maximum(chosen, 1e-30)), axis=0)
  return objective

