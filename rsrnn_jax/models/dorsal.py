"""Dorsal stream: where to look next.

One step of the attention module of RS-RNN (paper.md §3, model.png (b)):

  σ network          σ_t = σ_min + softplus(Dense(pooled features))           (per example, normalised units)
  inhibition of return M_t = ReLU(M_{t−1} − G(l_t, σ_t))                        (image-space map, 1 = not yet seen)
  saliency network   S = Conv1×1(ReLU(Conv3×3(features)))                       (view coordinates, s × s)
  gate               Γ = ε·in + (1−ε)·warp(M_t → view)                           (1 = free, ε = inhibited)
  2-D softmax        P = softmax(S + log Γ)      combine="log" (default): P ∝ exp(S)·Γ, off-image cells P = 0
                     P = softmax(softplus(S)·Γ)  combine="product": the paper's S ⊙ M (ε = 0)
  2-D sample         cell ~ Categorical(P) when sampling, argmax(P) otherwise
  next fixation      l_{t+1} = stop_gradient(view_to_image(cell centre, l_t))

Design decisions (paper.md leaves them open; see docs/design.md):
* ``combine="log"`` gates probabilities, not logits: P ∝ exp(S)·Γ. An inhibited cell's probability is scaled by
  ε whatever the saliency's level, and S is an unbounded linear map. The paper's product S ⊙ M needs S ≥ 0
  (softplus), so that an inhibited cell (M = 0) gets the smallest logit (with tanh saliency, as in the authors'
  later code, inhibited cells would score above every cell with negative saliency); but softplus has an
  absorbing state. When REINFORCE pushes the saliency's level down, softplus(S) → 0 on every cell: the policy is
  uniform and softplus' gradient sigmoid(S) → 0, so it never recovers. Three of seven demo runs with
  the product died that way (saliency ≈ 0.005 everywhere, policy entropy = log 64; README). In the log form a
  shift of S's level does not change P at all, so there is nothing to drift into.
* Inhibited cells keep a weight ε = ``ior_floor`` (default 0.01) in the gate Γ; ``in`` is 1 where the view
  cell lies inside the image and 0 outside. With the paper's pure S ⊙ M (ε = 0), once the learned σ has
  inhibited the whole image every logit is 0 and the eval argmax picks cell 0, the top-left corner: the demo
  model did exactly that for 39–63% of its fixations from step 3 on (README, "the corner flaw"). With ε > 0
  an un-inhibited cell still wins unless it is 1/ε times less salient (product) or its saliency is lower by
  more than log(1/ε) (log), and once everything is inhibited the policy returns to the most salient point
  instead of a fixed corner.
* σ is bounded below by ``sigma_min`` (softplus + floor): a learned σ → 0 would divide by zero in G.
* The Gaussian is not renormalised by its grid maximum (its analytic peak is 1).
* The fixation is not differentiable (categorical / argmax + stop_gradient); the policy is trained with
  REINFORCE from the returned log-probabilities (see :mod:`rsrnn_jax.train.loop`).
* For attacks only (BPDA, Athalye et al. 2018), ``straight_through_tau=τ`` keeps the forward value (the chosen
  cell's location, bit for bit) and differentiates the expected location Σ_c softmax(logits_c / τ)·loc_c instead
  (``loc_c``: the image coordinates of cell c, :func:`cell_locations`). Training never sets it.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rsrnn_jax.models import layers, retina

Dtype = Any


def gaussian_blob(fixations, sigma, size: int):
  """G(q) = exp(−|q − l|² / (2σ²)) on the ``size × size`` normalised image grid. fixations [B,2], sigma [B]."""
  grid = retina.view_grid(1, size, fixations.dtype)  # [1,size,size,2]
  d2 = jnp.sum((grid - fixations[:, None, None, :]) ** 2, axis=-1)
  return jnp.exp(-d2 / (2.0 * sigma[:, None, None] ** 2))


def inhibit(ior_map, fixations, sigma):
  """One inhibition-of-return update M_t = ReLU(M_{t−1} − G(l_t, σ_t)). ior_map [B,G,G]."""
  return jax.nn.relu(ior_map - gaussian_blob(fixations, sigma, ior_map.shape[-1]))


def cell_to_view(index, size: int):
  """Flat cell index of an s × s map → view coordinates (x, y) of the cell centre (align_corners grid)."""
  row, col = jnp.divmod(index, size)
  step = 2.0 / (size - 1)
  return jnp.stack([col * step - 1.0, row * step - 1.0], axis=-1)


def cell_locations(sampler, fixations, size: int):
  """Image coordinates [B, size², 2] of the centre of every cell of the size × size map seen from ``fixations``
  (clipped to the image, as a chosen next fixation is)."""
  u = cell_to_view(jnp.arange(size * size), size).astype(fixations.dtype)  # [s², 2]
  u = jnp.broadcast_to(u, (fixations.shape[0], size * size, 2))
  return jnp.clip(sampler.view_to_image(u, fixations), -1.0, 1.0)


def nearest_cell(sampler, fixations, targets, size: int):
  """Flat index [B] of the cell of the map seen from ``fixations`` [B,2] whose centre is nearest ``targets``."""
  d2 = jnp.sum((cell_locations(sampler, fixations, size) - targets[:, None, :]) ** 2, axis=-1)
  return jnp.argmin(d2, axis=-1)


class Dorsal(nn.Module):
  """Saliency map, σ network, inhibition of return, 2-D softmax and 2-D sample."""
  saliency_size: int = 16
  hidden: int = 64
  sigma_init: float = 0.22
  sigma_min: float = 0.02
  learn_sigma: bool = True
  ior_floor: float = 0.01
  combine: str = "log"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features, pooled, fixations, ior_map, sampler, *, sample: bool,
               straight_through_tau: float | None = None):
    """features [B,h,w,C] in view coordinates, pooled [B,D], fixations [B,2], ior_map [B,G,G].

    ``straight_through_tau``: None (default) detaches the next fixation; τ > 0 gives it the gradient of the
    expected location at temperature τ (same forward value; for attacks, see the module docstring).
    Returns (next_fixations [B,2], log_prob [B], new_ior_map [B,G,G], maps dict).
    """
    batch = features.shape[0]
    s = self.saliency_size
    # σ network.
    raw0 = jnp.log(jnp.expm1(self.sigma_init - self.sigma_min))  # softplus⁻¹, so σ starts at sigma_init
    if self.learn_sigma:
      raw = nn.Dense(1, kernel_init=nn.initializers.zeros,
                     bias_init=nn.initializers.constant(raw0), name="sigma_net")(pooled)[:, 0]
    else:
      raw = jnp.full((batch,), raw0)
    sigma = self.sigma_min + jax.nn.softplus(raw.astype(jnp.float32))
    # Inhibition of return at the fixation just taken.
    ior_map = inhibit(ior_map, fixations, sigma)
    # Saliency map network in view coordinates.
    x = jax.image.resize(features, (batch, s, s, features.shape[-1]), "bilinear")
    x = nn.relu(layers.conv(self.hidden, (3, 3), dtype=self.dtype, name="saliency_conv")(x))
    sal = layers.conv(1, (1, 1), dtype=self.dtype, name="saliency_out")(x)[..., 0].astype(jnp.float32)
    # IOR map and the image's support warped into the same view coordinates (one gather; both are zero outside
    # the image, so cells off the image are fully inhibited and never win over a cell on it).
    warped = retina.bilinear_sample(jnp.stack([ior_map, jnp.ones_like(ior_map)], axis=-1),
                                    sampler.view_grid(fixations, s))
    ior_view, inside = warped[..., 0], warped[..., 1]
    gate = self.ior_floor * inside + (1.0 - self.ior_floor) * ior_view
    if self.combine == "log":
      # log Γ is finite on the image (Γ ≥ ε·in); off it the cell is excluded. The +1e-6 bounds d log Γ / dσ.
      logits = jnp.where(inside > 0, sal + jnp.log(gate + 1e-6), -1e9)
    elif self.combine == "product":
      sal = jax.nn.softplus(sal)
      logits = sal * gate
    else:
      raise ValueError(f"unknown dorsal combine {self.combine!r}; use 'log' or 'product'")
    logits = logits.reshape(batch, s * s)
    log_p = jax.nn.log_softmax(logits, axis=-1)
    if sample:
      index = jax.random.categorical(self.make_rng("fixation"), logits, axis=-1)
    else:
      index = jnp.argmax(logits, axis=-1)
    log_prob = jnp.take_along_axis(log_p, index[:, None], axis=-1)[:, 0]
    u = cell_to_view(index, s)
    next_fix = sampler.view_to_image(u[:, None, :], fixations)[:, 0, :]
    next_fix = jax.lax.stop_gradient(jnp.clip(next_fix, -1.0, 1.0))
    if straight_through_tau is not None:
      weights = jax.nn.softmax(logits / straight_through_tau, axis=-1)  # [B, s²]
      expected = jnp.einsum("bc,bcd->bd", weights, cell_locations(sampler, fixations, s))
      next_fix = next_fix + (expected - jax.lax.stop_gradient(expected))  # forward: + 0 exactly
    maps = {"saliency": sal, "probs": jnp.exp(log_p).reshape(batch, s, s), "ior": ior_map,
            "sigma": sigma}
    return next_fix, log_prob, ior_map, maps
