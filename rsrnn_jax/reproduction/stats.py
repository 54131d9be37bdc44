"""The bootstrap behind the reproduction's verdicts: a paired bootstrap over seeds and examples (numpy only).

Data: for each model, a 0/1 array ``[S, E, n, R]``: seed (an independent training run), ε, attacked example (the
first n test images, in test-set order, the same for every model) and read-out (R: e.g. the accuracy at step k
and at step T_eval). A claim's statistic is a linear combination of model accuracies,

    statistic = mean over ε of  Σ_terms  weight · acc(model, read-out, ε),

where acc is the mean over the model's seeds of its accuracy on the n examples (:func:`point`). One bootstrap
resample draws, for every model independently, S of its seeds with replacement, and n example indices with
replacement; with ``paired=True`` (the default) the SAME example indices for every model, since every model saw
the same images: what is common to the examples (easy and hard images) cancels in a difference. Different
models' seeds are resampled independently (separate training runs; the same seed only shares the data order).
The 95% interval is the percentile interval of the statistic over :data:`RESAMPLES` resamples drawn from
``numpy.random.default_rng(SEED)``: deterministic, and vectorised (resamples as multinomial counts, one einsum
per model, no Python loop over resamples).
"""
from __future__ import annotations

import numpy as np

RESAMPLES = 2000   # bootstrap resamples
SEED = 16          # the numpy Generator seed: the same data give the same interval
LEVEL = 0.95       # percentile interval [2.5%, 97.5%]


def _check(data: dict, terms) -> tuple[list, int, int]:
  models = list(dict.fromkeys(m for m, _, _ in terms))
  missing = [m for m in models if m not in data]
  if missing:
    raise ValueError(f"bootstrap: no data for {', '.join(missing)}")
  shapes = {m: np.shape(data[m]) for m in models}
  if any(len(s) != 4 or s[0] < 1 for s in shapes.values()):
    raise ValueError(f"bootstrap: each model's data must be [seeds >= 1, eps, examples, read-outs], got {shapes}")
  if len({s[1:] for s in shapes.values()}) != 1:
    raise ValueError(f"bootstrap: every model needs the same eps, examples and read-outs, got {shapes}")
  _, e, n, r = next(iter(shapes.values()))
  if n < 1 or e < 1:
    raise ValueError("bootstrap: no examples or no ε to resample")
  bad = [t for t in terms if not 0 <= t[1] < r]
  if bad:
    raise ValueError(f"bootstrap: read-out index out of range in {bad} (data have {r})")
  return models, e, n


def point(data: dict, terms) -> float:
  """The statistic on the data as they are (every seed, every example)."""
  models, _, _ = _check(data, terms)
  means = {m: np.asarray(data[m], np.float64).mean(axis=(0, 2)) for m in models}  # [E, R]
  return float(sum(w * means[m][:, r].mean() for m, r, w in terms))


def _counts(rng, resamples: int, size: int) -> np.ndarray:
  """[resamples, size] weights summing to 1 per row: multinomial counts of a resample with replacement / size."""
  return rng.multinomial(size, np.full(size, 1.0 / size), size=resamples) / size


def bootstrap(data: dict, terms, *, resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL,
              paired: bool = True) -> dict:
  """The statistic of ``terms`` (``[(model, read-out index, weight)]``) on ``data`` (``{model: [S, E, n, R]}``),
  with its percentile interval.

  Returns {"estimate", "interval": [lo, hi], "sd" (of the bootstrap distribution), "resamples", "seed",
  "level", "paired"}. ``paired=False`` draws each model's examples independently (for comparison only: it
  ignores that the models saw the same images).
  """
  models, _, n = _check(data, terms)
  rng = np.random.default_rng(seed)
  shared = _counts(rng, resamples, n) if paired else None
  samples = np.zeros(resamples)
  for m in models:
    x = np.asarray(data[m], np.float64)                                   # [S, E, n, R]
    examples = shared if paired else _counts(rng, resamples, n)           # [B, n]
    seeds = _counts(rng, resamples, x.shape[0])                           # [B, S]
    acc = np.einsum("bs,bser->ber", seeds, np.einsum("senr,bn->bser", x, examples))  # [B, E, R]
    for mm, r, w in terms:
      if mm == m:
        samples += w * acc[:, :, r].mean(axis=1)
  tail = 50.0 * (1.0 - level)
  lo, hi = np.percentile(samples, [tail, 100.0 - tail])
  return {"estimate": point(data, terms), "interval": [float(lo), float(hi)], "sd": float(samples.std()),
          "resamples": int(resamples), "seed": int(seed), "level": float(level), "paired": bool(paired)}


def mean_sd(values) -> dict:
  """{"mean", "sd" (sample sd over the values; 0 for one value), "n"} of per-seed numbers."""
  v = np.asarray([x for x in values if x is not None], np.float64)
  if not len(v):
    return {"mean": None, "sd": None, "n": 0}
  return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": int(len(v))}
