"""Input-gradient norms per glimpse step (sanity check 6): is the gradient the attacks follow finite, non-zero
and of a sane size at every step of the unroll?"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rsrnn_jax.attacks import core
from rsrnn_jax.attacks.objectives import step_logits

def input_gradient_norms(model, variables, images, labels, *, num_steps: int, fixations: str = "argmax",
                         rng=None, losses=("ce", "margin")):
  """Per-example L2 norm of d loss(logits of step t) / d input, for every step t and loss.

  One forward pass; the T·len(losses) backward passes are a lax.map over one-hot cotangents of the [L·T] vector
  of batch-summed losses (per-example gradients are exact: examples are independent in eval mode).
  Returns ``{loss: [T, B]}``.
  """
  def losses_fn(x):
    z = step_logits(model, variables, x, num_steps=num_steps, fixations=fixations, rng=rng)
    per = [jax.vmap(lambda zt: jnp.sum(core.attack_loss(zt, labels, loss=l)))(z) for l in losses]  # [T] each
    return jnp.concatenate(per)

  values, vjp = jax.vjp(losses_fn, images)
  eye = jnp.eye(values.shape[0], dtype=values.dtype)

  def norm_of(cotangent):
    (g,) = vjp(cotangent)
    return jnp.sqrt(jnp.sum(jnp.square(g.astype(jnp.float32)), axis=tuple(range(1, g.ndim))))

  norms = jax.lax.map(norm_of, eye)  # [L·T, B]; one backward pass at a time (memory of one gradient)
  norms = norms.reshape(len(losses), num_steps, -1)
  return {l: norms[i] for i, l in enumerate(losses)}


def gradient_summary(norms_by_loss: dict, mask=None) -> dict:
  """{loss: [T, N]} norms → per-step median/mean/max, fraction exactly zero, count non-finite."""
  out = {}
  for loss, norms in norms_by_loss.items():
    g = np.asarray(norms, np.float64)
    if mask is not None:
      g = g[:, np.asarray(mask, bool)]
    finite = np.isfinite(g)
    safe = np.where(finite, g, np.nan)
    out[loss] = {
        "median_norm": [float(v) for v in np.nanmedian(safe, axis=1)] if g.size else [],
        "mean_norm": [float(v) for v in np.nanmean(safe, axis=1)] if g.size else [],
        "max_norm": [float(v) for v in np.nanmax(safe, axis=1)] if g.size else [],
        "zero_frac": [float(v) for v in np.mean(g == 0, axis=1)] if g.size else [],
        "num_nonfinite": [int(v) for v in np.sum(~finite, axis=1)],
    }
  return out

