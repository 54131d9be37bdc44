"""FF-CNN: the shared VGG-style backbone on the whole image, no recurrence (paper.md §5)."""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from rsrnn_jax.models import layers

Dtype = Any


class FeedForwardCNN(nn.Module):
  """Whole image → conv stages → global average pool → classifier.

  Returns the same structure as the recurrent models: logits repeated over ``num_steps`` (the answer of a
  feed-forward network does not change with more "glimpses"), so per-step evaluation code is shared.
  """
  num_classes: int
  stages: Sequence[Sequence[int]]
  norm: str = "batch"
  mean: Sequence[float] = (0.5,)
  std: Sequence[float] = (0.25,)
  input_size: int = 0          # the side the image is resized to first (0: as given; docs/zoo.md)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images, *, num_steps: int, train: bool, sample_fixations=None, fixations=None,
               fixation_mask=None, init_fixations=None):
    del sample_fixations, fixations, fixation_mask, init_fixations  # no fixations: whole image
    x = layers.normalize_pixels(layers.resize_square(images, self.input_size), self.mean, self.std)
    x = x.astype(self.dtype)
    x = layers.ConvStages(self.stages, norm=self.norm, dtype=self.dtype, name="backbone")(x, train=train)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(layers.global_avg_pool(x))
    logits = logits.astype(jnp.float32)
    return {"logits": jnp.broadcast_to(logits, (num_steps, *logits.shape))}
