"""S3TA: covert soft attention over the whole image (Zoran et al. 2020, "Towards robust image classification
using sequential attention models"; paper.md §5).

The image is seen whole, once; only *where the model attends* changes from step to step:

  F          = Backbone(image)                                  the shared VGG stages, run once  [B,h,w,C]
  K          = [Conv1×1(F), basis]                              keys  + a fixed cosine spatial basis
  V          = [Conv1×1(F), basis]                              values + the same basis
  q_t^i      = Dense(h_{t−1})                                   one query per head i (LSTM state of step t−1)
  A_t^i      = softmax_{(y,x)}(K · q_t^i / √d_k)                attention map of head i over the h × w grid
  a_t        = concat_i Σ_{(y,x)} A_t^i V                       the answer of every head
  h_t        = LSTM(h_{t−1}, a_t)
  p_t        = Dense([h_t, a_t])                                logits at every step

basis(y, x) = cos(π u (y + ½)/h) · cos(π v (x + ½)/w) for u, v < ``basis_size`` (the 8 × 8 cosine basis of
S3TA). Keys and values are shared by the heads; each head has its own query. The initial LSTM state is zero.
No fixations, no dorsal stream, no REINFORCE: attention is differentiable and trained by the classification
loss (on the last step, the preset's ``train.loss_steps="last"``). Outputs: ``logits`` [T,B,K] and
``attention`` [T,B,heads,h,w].
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from rsrnn_jax.models import layers

Dtype = Any


def spatial_basis(height: int, width: int, size: int, dtype=jnp.float32):
  """Fixed cosine basis [h, w, size²]: cos(π u (y + ½)/h) · cos(π v (x + ½)/w), u, v = 0..size−1."""
  u = jnp.arange(size, dtype=jnp.float32)
  cy = jnp.cos(jnp.pi * u[None, :] * (jnp.arange(height, dtype=jnp.float32)[:, None] + 0.5) / height)
  cx = jnp.cos(jnp.pi * u[None, :] * (jnp.arange(width, dtype=jnp.float32)[:, None] + 0.5) / width)
  return (cy[:, None, :, None] * cx[None, :, None, :]).reshape(height, width, size * size).astype(dtype)


class _AttendStep(nn.Module):
  """One attention step; scanned over time by :class:`S3TA`."""
  num_classes: int
  heads: int
  core_features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, carry, _, keys, values):
    """keys [B,N,Dk], values [B,N,Dv] (N = h·w cells) → (carry, {"logits" [B,K], "attention" [B,heads,N]})."""
    batch, _, dk = keys.shape
    query = nn.Dense(self.heads * dk, dtype=self.dtype, name="query")(carry[1].astype(self.dtype))
    query = query.reshape(batch, self.heads, dk)
    scores = jnp.einsum("bnd,bhd->bhn", keys, query) / math.sqrt(dk)
    attention = jax.nn.softmax(scores.astype(jnp.float32), axis=-1)
    answer = jnp.einsum("bhn,bnd->bhd", attention.astype(self.dtype), values).reshape(batch, -1)
    carry, out = nn.OptimizedLSTMCell(self.core_features, dtype=self.dtype, name="core")(carry, answer)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(
        jnp.concatenate([out, answer], axis=-1))
    return carry, {"logits": logits.astype(jnp.float32), "attention": attention}


class S3TA(nn.Module):
  """Backbone once → keys/values with a spatial basis → LSTM-driven multi-head soft attention per step."""
  num_classes: int
  stages: Sequence[Sequence[int]]
  core_features: int = 512
  heads: int = 2
  key_features: int = 64
  value_features: int = 256
  basis_size: int = 8
  norm: str = "batch"
  mean: Sequence[float] = (0.5,)
  std: Sequence[float] = (0.25,)
  unroll: int = -1
  input_size: int = 0          # the side the image is resized to first (0: as given; docs/zoo.md)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images, *, num_steps: int, train: bool, sample_fixations=None, fixations=None,
               fixation_mask=None, init_fixations=None):
    del sample_fixations, fixations, fixation_mask, init_fixations  # covert attention: no fixations
    x = layers.normalize_pixels(layers.resize_square(images, self.input_size), self.mean, self.std)
    x = x.astype(self.dtype)
    feats = layers.ConvStages(self.stages, norm=self.norm, dtype=self.dtype, name="backbone")(x, train=train)
    batch, h, w, _ = feats.shape
    basis = jnp.broadcast_to(spatial_basis(h, w, self.basis_size, self.dtype), (batch, h, w, self.basis_size ** 2))
    keys = jnp.concatenate([nn.Conv(self.key_features, (1, 1), dtype=self.dtype, name="keys")(feats), basis], -1)
    values = jnp.concatenate([nn.Conv(self.value_features, (1, 1), dtype=self.dtype, name="values")(feats),
                              basis], -1)
    keys, values = keys.reshape(batch, h * w, -1), values.reshape(batch, h * w, -1)

    zeros = jnp.zeros((batch, self.core_features), jnp.float32)
    scan = nn.scan(_AttendStep, variable_broadcast="params", split_rngs={"params": False},
                   in_axes=(0, nn.broadcast, nn.broadcast), length=num_steps,
                   unroll=layers.scan_unroll(self.unroll, num_steps))
    step = scan(num_classes=self.num_classes, heads=self.heads, core_features=self.core_features,
                dtype=self.dtype, name="step")
    _, outputs = step((zeros, zeros), None, keys, values)
    outputs["attention"] = outputs["attention"].reshape(num_steps, batch, self.heads, h, w)
    return outputs
