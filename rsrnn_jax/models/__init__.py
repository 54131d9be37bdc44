"""Model zoo: every model is built from ``config.model`` by name and returns the same output structure.

Outputs are dicts of time-major arrays: ``logits`` [T,B,K] always; the overt-attention models add
``fixations`` [T,B,2], ``log_probs`` and ``baselines`` [T,B] (REINFORCE), and the dorsal maps ``saliency``,
``probs`` [T,B,s,s], ``ior`` [T,B,G,G] and ``sigma`` [T,B]; S3TA (covert attention) adds ``attention``
[T,B,heads,h,w]. A model is called as ``model.apply(variables, images, num_steps=T, train=..., sample_fixations=
None, fixations=None, fixation_mask=None, init_fixations=None)`` (a model without fixations ignores the last four).

The models, their presets and what they output are registered in :mod:`rsrnn_jax.models.registry` (adding a
model = one module + one registry entry); docs/zoo.md maps each model to the paper.
"""
from __future__ import annotations

import jax.numpy as jnp

from rsrnn_jax.models import registry

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
FIXATION_MODES = ("argmax", "sample")
MODELS = registry.names()  # the built-in zoo; registry.names() also lists models registered later


def build_model(model_cfg, *, num_classes: int, mean, std):
  """Returns the Flax module of the registered model named by ``model_cfg.name``."""
  entry = registry.get(model_cfg.name)
  return entry.build(model_cfg, num_classes=num_classes, norm=model_cfg.norm, mean=tuple(mean), std=tuple(std),
                     dtype=_DTYPES[model_cfg.dtype])


def has_fixations(model_cfg) -> bool:
  """Overt attention: the model outputs fixations (dorsal stream, REINFORCE, fixation figures, prob. maps)."""
  return registry.entry_of(model_cfg).has_fixations


def is_recurrent(model_cfg) -> bool:
  """The answer changes with the step (attack horizons over steps make sense); false for FF-CNN."""
  return registry.entry_of(model_cfg).is_recurrent


def predict(model, variables, images, *, num_steps: int, fixations: str = "argmax", rng=None):
  """The evaluation forward pass: the outputs dict of a ``num_steps`` unroll in eval mode.

  ``fixations="argmax"``: the policy's most likely fixation at every step, deterministic (the evaluation,
  the figures and the default attacks); ``"sample"``: fixations drawn from the policy with PRNG key ``rng``.
  Models without fixations ignore the mode.
  """
  if fixations == "argmax":
    return model.apply(variables, images, num_steps=num_steps, train=False, sample_fixations=False)
  if fixations == "sample":
    if rng is None:
      raise ValueError("fixations='sample' needs a PRNG key")
    return model.apply(variables, images, num_steps=num_steps, train=False, sample_fixations=True,
                       rngs={"fixation": rng})
  raise ValueError(f"unknown fixations mode {fixations!r}; choose one of {', '.join(FIXATION_MODES)}")
