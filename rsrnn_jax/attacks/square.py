"""The L∞ Square Attack (Andriushchenko et al., ECCV 2020): score-based and gradient-free, so it cannot be masked by
a gradient that lies (check 5 of the suite). The same conventions as :mod:`rsrnn_jax.attacks.core`: images in
[0, 1], ``labels`` the targets when ``targeted``, randomness only from ``rng``, pure and jittable."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from rsrnn_jax.attacks import arguments, core

# The fraction of pixels p of the square is halved at these iterations of a 10,000-query budget; the schedule
# is rescaled linearly to the actual budget.
_SQUARE_SCHEDULE_ITERS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)



def _square_fraction(p_init, it, num_queries):
  """p(it): p_init halved at iterations {10, 50, 200, 500, 1k, 2k, 4k, 6k, 8k} of a 10k budget, rescaled."""
  it_scaled = (it * 10000) // num_queries
  halvings = jnp.sum(it_scaled > jnp.asarray(_SQUARE_SCHEDULE_ITERS))
  return p_init / (2.0 ** halvings.astype(jnp.float32))


def square_attack(logits_fn: core.LogitsFn, images, labels, *, eps, num_queries: int, rng, targeted: bool = False,
                  p_init: float = 0.8, schedule_queries: int | None = None):
  """L∞ Square Attack (Andriushchenko et al., ECCV 2020) with the margin loss; returns the best point found.
  (p's schedule is scaled to ``schedule_queries`` queries: default ``num_queries``; AutoAttack: 10000, unscaled.)

  Budget: ``num_queries`` forward passes per example — one for the initialisation (vertical stripes of ±ε,
  one sign per column and channel) and ``num_queries − 1`` random-search iterations. Iteration i proposes, per
  example, a square of side s(i) = round(√(p(i)·H·W)) (clamped to [1, min(H, W)]) at a uniformly random
  position, whose perturbation is set to ±ε per channel (a random sign per channel); the proposal is projected
  and accepted per example iff it strictly raises the margin ``attack_loss``. Examples already fooled (margin
  > 0) are frozen, as in the paper. If the proposed signs equal the current perturbation on the whole square
  (a wasted query), a uniformly random non-empty subset of the channel signs is flipped instead of resampling
  in a while-loop. ``targeted=True``: ``labels`` are the targets.
  """
  arguments.check_nonneg("eps", eps)
  arguments.check_count("num_queries", num_queries, 1)
  p = arguments.concrete(p_init)
  if p is not None and not (0.0 < float(p) <= 1.0):
    raise ValueError(f"p_init must be in (0, 1], got {p_init!r}")
  if rng is None:
    raise ValueError("square_attack needs an explicit PRNG key: pass rng=")
  x = jnp.asarray(images)
  labels = jnp.asarray(labels)
  arguments.check_images_labels(x, labels)
  if x.ndim != 4:
    raise ValueError(f"square_attack needs images [B, H, W, C], got shape {x.shape}")
  b, h, w, c = x.shape
  eps_b = arguments.per_example(eps, x)
  proj = lambda xa: core.ball_project(xa, x, eps_b, "linf")
  score = lambda xa: core.attack_loss(logits_fn(xa), labels, loss="margin", targeted=targeted)

  k_init, k_loop = jax.random.split(rng)
  stripes = jax.random.rademacher(k_init, (b, 1, w, c), x.dtype)
  x_best = proj(x + eps_b * stripes)
  loss_best = score(x_best)

  rows = jnp.arange(h).reshape(1, h, 1, 1)
  cols = jnp.arange(w).reshape(1, 1, w, 1)
  channel_bits = (2 ** jnp.arange(min(c, 30))).astype(jnp.int32)

  def body(i, carry):
    x_cur, loss_cur = carry
    # One draw per iteration (few random-number kernels keep compilation fast): [row, col, flip, signs...].
    u = jax.random.uniform(jax.random.fold_in(k_loop, i), (b, 3 + c))
    frac = _square_fraction(p_init, i, schedule_queries or num_queries)
    side = jnp.clip(jnp.round(jnp.sqrt(frac * h * w)).astype(jnp.int32), 1, min(h, w))
    r0 = jnp.minimum(jnp.floor(u[:, 0] * (h - side + 1)).astype(jnp.int32), h - side).reshape(b, 1, 1, 1)
    c0 = jnp.minimum(jnp.floor(u[:, 1] * (w - side + 1)).astype(jnp.int32), w - side).reshape(b, 1, 1, 1)
    window = (rows >= r0) & (rows < r0 + side) & (cols >= c0) & (cols < c0 + side)  # [B,H,W,1]
    signs = jnp.where(u[:, 3:] < 0.5, -1.0, 1.0).astype(x.dtype).reshape(b, 1, 1, c)

    def propose(s):
      return proj(jnp.where(window, x + eps_b * s, x_cur))

    x_new = propose(signs)
    # A proposal that changes nothing wastes a query: flip a random non-empty subset of the channel signs.
    unchanged = jnp.all(jnp.where(window, x_new == x_cur, True), axis=(1, 2, 3))
    num_subsets = 2 ** min(c, 30) - 1
    subset = 1 + jnp.minimum(jnp.floor(u[:, 2] * num_subsets).astype(jnp.int32), num_subsets - 1)
    flip = (subset[:, None] & channel_bits) != 0  # [B, min(C,30)]
    flip = jnp.pad(flip, ((0, 0), (0, c - flip.shape[1]))).reshape(b, 1, 1, c)
    signs = jnp.where(unchanged.reshape(b, 1, 1, 1) & flip, -signs, signs)
    x_new = propose(signs)

    loss_new = score(x_new)
    accept = (loss_new > loss_cur) & (loss_cur <= 0)  # per example; fooled examples are frozen
    return (jnp.where(accept.reshape(b, 1, 1, 1), x_new, x_cur), jnp.where(accept, loss_new, loss_cur))

  x_best, _ = jax.lax.fori_loop(1, num_queries, body, (x_best, loss_best))
  return jax.lax.stop_gradient(x_best).astype(x.dtype)
