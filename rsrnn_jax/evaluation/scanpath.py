"""Scanpath statistics of the clean evaluation (``eval/results.json``: ``saccades`` and ``policy``).

Per batch, on device (:func:`batch_sums`, summed over the valid examples) and then once on the host
(:func:`summary`):

  saccades.mean_saccade_px[t]     mean length of the saccade from fixation t+1 to t+2 (pixels of the image)
  saccades.fraction_moving[t]     fraction of those saccades longer than one pixel
  policy.entropy_per_saccade[t]   mean entropy (nats) of the policy's distribution over the saliency cells that
                                  chose fixation t+2; log(cells) is uniform, 0 deterministic
  policy.fixation_spread_px[t]    spread of fixation t+1 over the images: the RMS distance (pixels) of each
                                  image's fixation from the mean fixation of that step; 0 at the first fixation,
                                  which is the same for every image

A policy whose later fixations do not depend on the image (:func:`one_scanpath`: every step's spread under
:data:`ONE_SCANPATH_PX`) gives the same scanpath to every image: a policy that died in training (docs/zoo.md)
and that no attack on the policy can move (sanity check 8 reads the same failure as a finding).
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

ONE_SCANPATH_PX = 1.0  # every step's fixation spread below this many pixels: one scanpath for every image


def _pixels(image_size: int) -> float:
  """Pixels per unit of the normalised [−1, 1] image coordinates."""
  return (image_size - 1) / 2.0


def saccade_stats(fixations, mask, image_size: int):
  """Per step t → t+1: summed saccade length (pixels) and number of saccades longer than one pixel."""
  moves = jnp.linalg.norm(jnp.diff(fixations, axis=0), axis=-1) * _pixels(image_size)  # [T-1,B]
  return jnp.sum(moves * mask[None], axis=1), jnp.sum((moves > 1.0) * mask[None], axis=1)


def batch_sums(out, mask, image_size: int) -> dict:
  """The batch's sums of every statistic (a model's outputs with ``fixations`` [T,B,2] and, from the dorsal
  stream, ``probs`` [T,B,s,s]; ``mask`` [B] 1 for a valid example)."""
  fix = out["fixations"].astype(jnp.float32)
  m = mask.astype(jnp.float32)
  sums = dict(zip(("saccade_px", "saccades_over_1px"), saccade_stats(fix, m, image_size)))
  sums["fixation_sum"] = jnp.sum(fix * m[None, :, None], axis=1)  # [T,2]
  sums["fixation_sq_sum"] = jnp.sum(fix ** 2 * m[None, :, None], axis=1)
  if "probs" in out:
    p = out["probs"].reshape(*out["probs"].shape[:2], -1).astype(jnp.float32)  # [T,B,cells]
    entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1)
    sums["policy_entropy"] = jnp.sum(entropy[:-1] * m[None], axis=1)  # the last step's choice is never used
  return sums


def summary(totals: dict, count: float, image_size: int) -> tuple[dict, dict]:
  """(saccades, policy) of the module docstring from the summed :func:`batch_sums` over ``count`` examples."""
  count = max(float(count), 1.0)
  saccades = {"mean_saccade_px": [float(v) for v in np.asarray(totals["saccade_px"]) / count],
              "fraction_moving": [float(v) for v in np.asarray(totals["saccades_over_1px"]) / count]}
  mean = np.asarray(totals["fixation_sum"], np.float64) / count
  var = np.asarray(totals["fixation_sq_sum"], np.float64) / count - mean ** 2
  policy = {"fixation_spread_px": [float(v) for v in np.sqrt(np.clip(var.sum(-1), 0.0, None)) * _pixels(image_size)]}
  if "policy_entropy" in totals:
    policy["entropy_per_saccade"] = [float(v) for v in np.asarray(totals["policy_entropy"]) / count]
  return saccades, policy


def one_scanpath(policy: dict | None) -> bool | None:
  """True iff every fixation after the first has a spread under :data:`ONE_SCANPATH_PX` over the images (one
  scanpath for every image); None without the statistics (a model without fixations, or an older eval)."""
  spread = (policy or {}).get("fixation_spread_px")
  if not spread or len(spread) < 2:
    return None
  return max(spread[1:]) < ONE_SCANPATH_PX
