"""Recurrent glimpse models (RS-RNN and the overt-attention baselines) as one configurable module.

Per step t (paper.md §3–§4, model.png):

  glimpse_t = sampler(image, l_t)                          retina (RS-RNN, Base-Retina) or crops (DRAM, GF-Net-m)
  x_t       = Encoder1(glimpse_t)                          VGG-style conv stages (one encoder per glimpse scale;
                                                           the features of every scale are concatenated)
  h_t       = Core(h_{t−1}, x_t)                           ConvGRU (2-D, RS-RNN) or GRU on pooled features (1-D)
  z_t       = Encoder2(h_t)                                more conv stages (2-D core only) + global average pool
  p_t       = Classifier(z_t)                              logits at every step
  l_{t+1}, log π_t, M_t = Dorsal(features_t, l_t, M_{t−1})  the attention module of :mod:`rsrnn_jax.models.dorsal`

The dorsal stream reads the core's maps (RS-RNN: ConvGRU and Encoder2 outputs, in retinal coordinates) or, for
the 1-D models, a glance when ``glance`` is set: the whole image resized to the glimpse side, seen once by a
dorsal CNN of its own (the v1 paper's "Dorsal CNN with a broad field of view"; it costs one glimpse pass, the
extra point at the start of the 1-D models' curves in the AAAI draft's Fig. 3), its features in image
coordinates (:class:`rsrnn_jax.models.samplers.ImageView`). Without it they read their own glimpse's features,
so a model whose glimpse is a small crop can only look next within that crop (docs/zoo.md).

The loop is a Flax ``nn.scan`` over steps with parameters broadcast; its ``unroll`` comes from the config
(``-1``: fully unrolled for training, rolled for evaluation and attacks:
:func:`rsrnn_jax.models.layers.scan_unroll`). In training the last step runs without the dorsal stream (its
action is never used; the step's dorsal outputs are zeros), with the same fixation keys for the other steps.
Fixations may be forced per step (``fixations`` + ``fixation_mask``): the initial fixation is the forced
fixation of step 0, and the adversarial probability maps force the fixation of a chosen step; forcing every step
freezes a scanpath (the attacks' frozen-scanpath surrogate). ``bpda_tau`` (attacks only) gives the fixation
choice a straight-through gradient and stops detaching the dorsal inputs; the forward pass is unchanged.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from rsrnn_jax.models import layers, samplers
from rsrnn_jax.models.dorsal import Dorsal

Dtype = Any


class _Step(nn.Module):
  """One glimpse step; scanned over time by :class:`GlimpseRNN`."""
  num_classes: int
  sampler: Any
  encoder1: Sequence[Sequence[int]]
  core: str
  core_features: int
  encoder2: Sequence[Sequence[int]]
  norm: str
  dorsal_cfg: dict
  mean: Sequence[float]
  std: Sequence[float]
  train: bool
  sample: bool
  dtype: Dtype = jnp.float32
  bpda_tau: float | None = None

  @nn.compact
  def __call__(self, carry, xs, images, glance, with_dorsal: bool = True):
    h, candidate, ior_map = carry
    forced, use_forced = xs
    fix = jnp.where(use_forced, forced, candidate)

    # Ventral stream.
    glimpses = self.sampler.glimpses(images, fix)
    feats = []
    for i, g in enumerate(glimpses):
      g = layers.normalize_pixels(g, self.mean, self.std).astype(self.dtype)
      feats.append(layers.ConvStages(self.encoder1, norm=self.norm, dtype=self.dtype,
                                     name=f"encoder1_{i}")(g, train=self.train))
    x = jnp.concatenate(feats, axis=-1)
    if self.core == "conv_gru":
      h = layers.ConvGRUCell(self.core_features, dtype=self.dtype, name="core")(h, x)
      z = layers.ConvStages(self.encoder2, norm=self.norm, dtype=self.dtype, name="encoder2")(
          h.astype(self.dtype), train=self.train)
      pooled = layers.global_avg_pool(z)
      zs = jax.image.resize(z, (*z.shape[:-3], *h.shape[-3:-1], z.shape[-1]), "bilinear")
      dorsal_features = jnp.concatenate([h.astype(self.dtype), zs], axis=-1)
    elif self.core == "gru":
      h = layers.GRUCore(self.core_features, dtype=self.dtype, name="core")(
          h, layers.global_avg_pool(x))
      pooled = h
      # The dorsal stream's view: the glance (whole image), else the glimpse (the largest crop for Crop-D).
      dorsal_features = feats[self.sampler.view_index]
    else:
      raise ValueError(f"unknown core {self.core!r}; use 'conv_gru' or 'gru'")
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(pooled)

    # Dorsal stream (chooses l_{t+1}); its inputs are detached so the policy loss trains only the dorsal
    # parameters and the classifier's features are shaped by the classification loss alone.
    pooled_f32 = jax.lax.stop_gradient(pooled.astype(jnp.float32))
    baseline = nn.Dense(1, name="baseline")(pooled_f32)[:, 0]
    out = {"logits": logits.astype(jnp.float32), "fixations": fix, "baselines": baseline}
    if not with_dorsal:  # the last training step: its action would never be used (GlimpseRNN)
      return (h, candidate, ior_map), out
    if self.bpda_tau is None:
      dorsal_in, dorsal_pooled = jax.lax.stop_gradient(dorsal_features), pooled_f32
    else:  # attacks (BPDA): the attacker differentiates through the dorsal stream and the fixation choice
      dorsal_in, dorsal_pooled = dorsal_features, pooled.astype(jnp.float32)
    view = self.sampler
    if glance is not None:  # the dorsal CNN's own features: trained by the policy loss, never detached
      dorsal_in, view = glance, samplers.ImageView()
    next_fix, log_prob, ior_map, maps = Dorsal(**self.dorsal_cfg, dtype=self.dtype, name="dorsal")(
        dorsal_in, dorsal_pooled, fix, ior_map, view, sample=self.sample,
        straight_through_tau=self.bpda_tau)
    return (h, next_fix, ior_map), {**out, "log_probs": log_prob, **maps}


class GlimpseRNN(nn.Module):
  """Sampler → Encoder1 → Core → Encoder2 → classifier at every step, plus the dorsal attention module."""
  num_classes: int
  sampler: Any
  encoder1: Sequence[Sequence[int]]
  core: str = "conv_gru"
  core_features: int = 256
  encoder2: Sequence[Sequence[int]] = ()
  norm: str = "group"
  dorsal: dict = None
  ior_size: int = 32
  glance: bool = False
  glance_norm: bool = False
  mean: Sequence[float] = (0.5,)
  std: Sequence[float] = (0.25,)
  unroll: int = -1
  remat: bool = False
  dtype: Dtype = jnp.float32

  @property
  def dorsal_view(self):
    """The coordinates the dorsal maps live in: the whole image (glance) or the sampler's view."""
    return samplers.ImageView() if self.glance else self.sampler

  @nn.compact
  def __call__(self, images, *, num_steps: int, train: bool, sample_fixations: bool | None = None,
               fixations=None, fixation_mask=None, init_fixations=None, bpda_tau: float | None = None):
    """images [B,H,W,C] in [0,1] → dict of per-step outputs, time-major ([T,B,...]).

    Args:
      num_steps: number of glimpses T (static).
      train: training mode (BatchNorm statistics).
      sample_fixations: sample from the dorsal policy (default: ``train``) or take its argmax.
      fixations, fixation_mask: optional forced fixations [T,B,2] and a [T] boolean mask of the steps at
        which they replace the policy's choice.
      init_fixations: [B,2] first fixation; default uniform in [−0.9, 0.9]² when training, else the centre.
      bpda_tau: attacks only (BPDA / straight-through). None (default): the fixation choice is detached and so
        are the dorsal inputs. τ > 0: same forward values; the next fixation gets the gradient of the expected
        location Σ_c softmax(logits_c / τ)·loc_c and the dorsal inputs are not detached.
    """
    if bpda_tau is not None and not float(bpda_tau) > 0:
      raise ValueError(f"bpda_tau must be a positive temperature or None, got {bpda_tau!r}")
    batch = images.shape[0]
    sample = train if sample_fixations is None else sample_fixations
    if init_fixations is None:
      if train:
        init_fixations = jax.random.uniform(self.make_rng("fixation"), (batch, 2), minval=-0.9,
                                            maxval=0.9)
      else:
        init_fixations = jnp.zeros((batch, 2), jnp.float32)
    if fixations is None:
      fixations = jnp.zeros((num_steps, batch, 2), jnp.float32)
      fixation_mask = jnp.zeros((num_steps,), bool)
    # Step 0 uses init_fixations unless a forced fixation is given for it.
    forced0 = jnp.where(fixation_mask[0], fixations[0], init_fixations)
    fixations = fixations.at[0].set(forced0)
    fixation_mask = fixation_mask.at[0].set(True)

    # Initial recurrent state: a learned h0 broadcast over the batch.
    if self.core == "conv_gru":
      side = self.sampler.out_size // 2 ** sum(1 for *_, pool in self.encoder1 if pool)
      h0 = self.param("h0", nn.initializers.zeros, (1, side, side, self.core_features))
    else:
      h0 = jnp.tanh(self.param("h0", nn.initializers.normal(0.1), (1, self.core_features)))
    h0 = jnp.broadcast_to(h0, (batch, *h0.shape[1:]))
    ior0 = jnp.ones((batch, self.ior_size, self.ior_size), jnp.float32)

    glance = None
    if self.glance:  # the whole image at the glimpse side, seen once by the dorsal CNN
      small = layers.resize_square(images, self.sampler.out_size)
      small = layers.normalize_pixels(small, self.mean, self.std).astype(self.dtype)
      glance = layers.ConvStages(self.encoder1, norm=self.norm, dtype=self.dtype, name="glance")(
          small, train=train)
      if self.glance_norm:  # scale-free features: the policy loss alone cannot inflate the saliency's scale
        glance = layers.norm_layer("group", train=train, dtype=self.dtype, name="glance_norm")(glance)

    unroll = layers.scan_unroll(self.unroll, num_steps, train=train)
    step_cls = nn.remat(_Step, static_argnums=(5,)) if self.remat else _Step
    # BatchNorm statistics (norm="batch") are created at init like parameters (broadcast), carried from step
    # to step when training updates them, and read-only (broadcast) in evaluation.
    if self.is_mutable_collection("batch_stats") and not self.is_initializing():
      broadcast, carry = "params", "batch_stats"
    else:
      broadcast, carry = ("params", "batch_stats"), False
    scan = nn.scan(step_cls, variable_broadcast=broadcast, variable_carry=carry,
                   split_rngs={"params": False, "fixation": True},
                   in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast),
                   unroll=unroll)
    step = scan(num_classes=self.num_classes, sampler=self.sampler, encoder1=self.encoder1,
                core=self.core, core_features=self.core_features, encoder2=self.encoder2,
                norm=self.norm, dorsal_cfg=dict(self.dorsal or {}), mean=self.mean, std=self.std,
                train=train, sample=sample, dtype=self.dtype,
                bpda_tau=None if bpda_tau is None else float(bpda_tau), name="step")
    carry, xs = (h0, init_fixations, ior0), (fixations, fixation_mask)
    # Training never uses the last step's action (losses.reinforce_loss), so that step runs without the dorsal
    # stream: in one scan its forward and its backward (on a zero cotangent) would still run. Steps 0..T-2 get
    # the same fixation keys as in one T-step scan (jax.random.split is prefix-stable with JAX's default
    # partitionable threefry), so the outputs used are the same; the last step's dorsal outputs are zeros.
    if not (train and bpda_tau is None and num_steps > 1 and not self.is_initializing()):
      return step(carry, xs, images, glance, True)[1]
    carry, head = step(carry, jax.tree_util.tree_map(lambda x: x[:-1], xs), images, glance, True)
    _, last = step(carry, jax.tree_util.tree_map(lambda x: x[-1:], xs), images, glance, False)
    return {k: jnp.concatenate([v, last[k] if k in last else jnp.zeros_like(v[-1:])]) for k, v in head.items()}
