"""Ventral-stream building blocks: VGG-style conv stages, the ConvGRU cell and the 1-D GRU core.

All modules are plain Flax Linen modules. Normalisation is chosen by name (``"batch"``, ``"group"``,
``"none"``) so that a config, not a code copy, picks BatchNorm (the paper's VGG) or GroupNorm (no batch
statistics: the default in the recurrent models, which keeps the scan carry free of mutable state).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from rsrnn_jax.models import fastops

Dtype = Any

# Stages are written as (features, num_convs, pool) triples in configs.
StageSpec = Sequence[int]


def norm_layer(kind: str, *, train: bool, dtype: Dtype, groups: int = 32, name: str | None = None):
  """Returns a normalisation module by name."""
  if kind == "batch":
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=dtype, name=name)
  if kind == "group":
    return _GroupNormAuto(groups=groups, dtype=dtype, name=name)
  if kind == "none":
    return lambda x: x
  raise ValueError(f"unknown normalisation {kind!r}; use 'batch', 'group' or 'none'")


def conv(features: int, kernel_size, **kwargs) -> nn.Conv:
  """``nn.Conv`` (same parameters, names and initialisation) whose convolution is
  :func:`rsrnn_jax.models.fastops.conv_general_dilated`: gradients that XLA:CPU runs fast, also in loops."""
  return nn.Conv(features, kernel_size, conv_general_dilated=fastops.conv_general_dilated, **kwargs)


class _GroupNormAuto(nn.Module):
  """GroupNorm whose group count is the largest divisor of the channels that is <= ``groups``."""
  groups: int = 32
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    channels = x.shape[-1]
    g = min(self.groups, channels)
    while channels % g:
      g -= 1
    return nn.GroupNorm(num_groups=g, dtype=self.dtype)(x)


class ConvStages(nn.Module):
  """VGG-style stages: each stage is ``num_convs`` × (3×3 conv, norm, ReLU), then optional 2×2 max-pool.

  ``stages`` is a sequence of (features, num_convs, pool) with pool in {0, 1}.
  """
  stages: Sequence[StageSpec]
  norm: str = "group"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    for i, (features, num_convs, pool) in enumerate(self.stages):
      for j in range(num_convs):
        x = conv(features, (3, 3), use_bias=self.norm == "none", dtype=self.dtype,
                 name=f"stage{i}_conv{j}")(x)
        x = norm_layer(self.norm, train=train, dtype=self.dtype, name=f"stage{i}_norm{j}")(x)
        if not (pool and j == num_convs - 1):
          x = nn.relu(x)
      if pool:
        # relu(pool(x)) = pool(relu(x)), values and gradients bit for bit (max and ReLU are monotone, ReLU'(0)
        # = 0), on 4× fewer values; and the pool's backward pass then needs no re-evaluation of the conv output.
        x = nn.relu(fastops.max_pool_2x2(x))
    return x


class ConvGRUCell(nn.Module):
  """Convolutional GRU (Choi's ConvGRU.py): GroupNorm on the gates and the candidate, learned h0.

    [z, r] = σ(GN(Conv_k([x, h])));  h̃ = tanh(GN(Conv_k([x, r ⊙ h])));  h' = (1 − z) ⊙ h + z ⊙ h̃
  """
  features: int
  kernel_size: int = 3
  groups: int = 32
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, h, x):
    k = (self.kernel_size, self.kernel_size)
    gates = conv(2 * self.features, k, use_bias=False, dtype=self.dtype, name="gates")(
        jnp.concatenate([x, h.astype(x.dtype)], axis=-1))
    gates = _GroupNormAuto(groups=2 * self.groups, dtype=self.dtype, name="gates_norm")(gates)
    z, r = jnp.split(nn.sigmoid(gates), 2, axis=-1)
    cand = conv(self.features, k, use_bias=False, dtype=self.dtype, name="candidate")(
        jnp.concatenate([x, r * h.astype(x.dtype)], axis=-1))
    cand = jnp.tanh(_GroupNormAuto(groups=self.groups, dtype=self.dtype, name="candidate_norm")(cand))
    new_h = (1.0 - z) * h + z * cand
    return new_h.astype(h.dtype)


class GRUCore(nn.Module):
  """1-D GRU on pooled features (the Base-Retina / DRAM / GF-Net-m core), learned h0 = tanh(param)."""
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, h, x):
    new_h, _ = nn.GRUCell(self.features, dtype=self.dtype, name="cell")(h, x)
    return new_h


def global_avg_pool(x):
  return jnp.mean(x, axis=(-3, -2))


def normalize_pixels(images, mean: Sequence[float], std: Sequence[float]):
  """[0, 1] pixels → standardised inputs. Lives inside the model so attacks work in pixel space."""
  mean = jnp.asarray(mean, images.dtype)
  std = jnp.asarray(std, images.dtype)
  return (images - mean) / std


def resize_square(images, side: int):
  """[B,H,W,C] images resized to side × side (bilinear, antialiased when shrinking; differentiable, so attacks
  see through it). ``side`` 0 or the images' own side: unchanged."""
  if not side or images.shape[-3:-1] == (side, side):
    return images
  return jax.image.resize(images, (*images.shape[:-3], side, side, images.shape[-1]), "linear", antialias=True)


def scan_unroll(unroll: int, num_steps: int, *, train: bool = True) -> int:
  """The ``nn.scan`` unroll for config value ``unroll`` (-1: auto, 0: full, n: n steps per loop trip).

  Auto is full unrolling for training and a rolled scan for evaluation and attacks. Training: on XLA:CPU conv
  weight gradients in a rolled scan are ~60× slower, and on an H200 the unrolled RS-RNN train step (T = 4,
  batch 256) ran 1.6× (bf16) / 1.3× (f32) faster than the rolled one with a third of its program memory
  (bench/results/gpu_check.json, docs/scaling.md § GPUs). Evaluation and attacks need no weight gradients, their
  input gradients run as fast rolled (:mod:`rsrnn_jax.models.fastops`), and a rolled scan's compile time does not
  grow with the number of steps (docs/performance.md). lax.scan's "unroll entirely" is 0: unroll=True
  (= length) still lowers a 1-step scan to a rolled while loop, which pays the rolled-scan gradient cost on
  XLA:CPU.
  """
  if unroll < 0:
    unroll = 0 if train else 1
  return 0 if unroll == 0 or unroll >= num_steps else unroll
