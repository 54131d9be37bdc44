"""Model zoo: every model is built from ``config.model`` by name and returns the same output structure.

Outputs are dicts of time-major arrays: ``logits`` [T,B,K] always; the overt-attention models add
``fixations`` [T,B,2], ``log_probs`` and ``baselines`` [T,B] (REINFORCE), and the dorsal maps ``saliency``,
``probs`` [T,B,s,s], ``ior`` [T,B,G,G] and ``sigma`` [T,B].
"""
from __future__ import annotations

import jax.numpy as jnp

from rsrnn_jax.models.ff_cnn import FeedForwardCNN
from rsrnn_jax.models.glimpse import GlimpseRNN
from rsrnn_jax.samplers import make_sampler

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

GLIMPSE_MODELS = ("rsrnn",)
MODELS = GLIMPSE_MODELS + ("ff_cnn",)


def _stages(spec):
  return tuple(tuple(int(v) for v in stage) for stage in spec)


def build_model(model_cfg, *, num_classes: int, mean, std):
  """Returns the Flax module named by ``model_cfg.name``."""
  name = model_cfg.name
  dtype = _DTYPES[model_cfg.dtype]
  if name in GLIMPSE_MODELS:
    return GlimpseRNN(
        num_classes=num_classes, sampler=make_sampler(model_cfg.sampler),
        encoder1=_stages(model_cfg.encoder1), core=model_cfg.core,
        core_features=int(model_cfg.core_features), encoder2=_stages(model_cfg.encoder2),
        norm=model_cfg.norm, dorsal=dict(model_cfg.dorsal.to_dict()), ior_size=int(model_cfg.ior_size),
        mean=tuple(mean), std=tuple(std), unroll=int(model_cfg.unroll), remat=bool(model_cfg.remat),
        dtype=dtype)
  if name == "ff_cnn":
    return FeedForwardCNN(num_classes=num_classes, stages=_stages(model_cfg.stages),
                          norm=model_cfg.norm, mean=tuple(mean), std=tuple(std), dtype=dtype)
  raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")


def has_fixations(model_cfg) -> bool:
  return model_cfg.name in GLIMPSE_MODELS
