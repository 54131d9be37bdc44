"""Model zoo: every model is built from ``config.model`` by name and returns the same output structure.

Outputs are dicts of time-major arrays: ``logits`` [T,B,K] always; the overt-attention models add
``fixations`` [T,B,2], ``log_probs`` and ``baselines`` [T,B] (REINFORCE), and the dorsal maps ``saliency``,
``probs`` [T,B,s,s], ``ior`` [T,B,G,G] and ``sigma`` [T,B]; S3TA (covert attention) adds ``attention``
[T,B,heads,h,w]. docs/zoo.md maps each model to the paper.

  rsrnn        retina → Encoder1 → ConvGRU → Encoder2, dorsal stream            (GlimpseRNN)
  base_retina  retina → VGG → 1-D GRU, the same dorsal stream                   (GlimpseRNN preset)
  dram         two crops (Crop-D) → one VGG per scale → 1-D GRU, dorsal stream  (GlimpseRNN preset)
  gfnet_m      one crop (Crop-S) → VGG → 1-D GRU, dorsal stream                 (GlimpseRNN preset)
  s3ta         whole image → VGG once → keys/values + spatial basis; LSTM queries, soft attention (S3TA)
  ff_cnn       whole image → VGG → classifier                                   (FeedForwardCNN)
"""
from __future__ import annotations

import jax.numpy as jnp

from rsrnn_jax.models.ff_cnn import FeedForwardCNN
from rsrnn_jax.models.glimpse import GlimpseRNN
from rsrnn_jax.models.s3ta import S3TA
from rsrnn_jax.models.samplers import make_sampler

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

GLIMPSE_MODELS = ("rsrnn", "base_retina", "dram", "gfnet_m")  # overt attention: fixations, dorsal stream
WHOLE_IMAGE_MODELS = ("s3ta", "ff_cnn")                        # the whole image at once
MODELS = GLIMPSE_MODELS + WHOLE_IMAGE_MODELS


def _stages(spec):
  return tuple(tuple(int(v) for v in stage) for stage in spec)


def build_model(model_cfg, *, num_classes: int, mean, std):
  """Returns the Flax module named by ``model_cfg.name``."""
  name = model_cfg.name
  common = dict(num_classes=num_classes, norm=model_cfg.norm, mean=tuple(mean), std=tuple(std),
                dtype=_DTYPES[model_cfg.dtype])
  if name in GLIMPSE_MODELS:
    return GlimpseRNN(
        sampler=make_sampler(model_cfg.sampler), encoder1=_stages(model_cfg.encoder1), core=model_cfg.core,
        core_features=int(model_cfg.core_features), encoder2=_stages(model_cfg.encoder2),
        dorsal=dict(model_cfg.dorsal.to_dict()), ior_size=int(model_cfg.ior_size),
        unroll=int(model_cfg.unroll), remat=bool(model_cfg.remat), **common)
  if name == "s3ta":
    a = model_cfg.attention
    return S3TA(stages=_stages(model_cfg.stages), core_features=int(model_cfg.core_features),
                heads=int(a.heads), key_features=int(a.key_features), value_features=int(a.value_features),
                basis_size=int(a.basis_size), unroll=int(model_cfg.unroll), **common)
  if name == "ff_cnn":
    return FeedForwardCNN(stages=_stages(model_cfg.stages), **common)
  raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")


def has_fixations(model_cfg) -> bool:
  """Overt attention: the model outputs fixations (dorsal stream, REINFORCE, fixation figures, prob. maps)."""
  return model_cfg.name in GLIMPSE_MODELS


def is_recurrent(model_cfg) -> bool:
  """The answer changes with the step (attack horizons over steps make sense); false for FF-CNN."""
  return model_cfg.name != "ff_cnn"
