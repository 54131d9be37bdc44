"""The paper's claims and the rules that judge them: pure functions of accuracies (tested on hand-made numbers);
the same code judges our runs and the paper's own numbers. The rules are spelled out in the docstring of
:mod:`rsrnn_jax.reproduction.report`.

Claims name models by their key in ``paper_numbers.PAPER`` (the paper's names); :func:`by_paper_key` maps our
runs' accuracies onto those keys through the model registry.
"""
from __future__ import annotations

import numpy as np

from rsrnn_jax.models import registry
from rsrnn_jax.reproduction.paper_numbers import PAPER

Z = 2.0  # standard errors
CLAIMS = (
    {"id": "retina", "text": "retina more robust than crops", "higher": ("RS-RNN", "Base-Retina"),
     "lower": ("DRAM", "GF-Net-m")},
    {"id": "crops", "text": "crops more robust than S3TA and FF-CNN", "higher": ("DRAM", "GF-Net-m"),
     "lower": ("S3TA", "FF-CNN")},
    {"id": "recovery", "text": "RS-RNN recovers with more glimpses", "model": "RS-RNN"},
)
PAPER_EXAMPLES = 5000  # AAAI Figs. 4–5: the 5,000 ImageNet100 validation images (paper.md §7)


def clearly_above(high, low, n: int, z: float = Z) -> dict:
  """Is accuracy series ``high`` clearly above ``low`` (fractions, one per ε, on the same ``n`` examples)?

  Holds iff mean(high − low) > z · mean(se) and high − low ≥ −z · se at every ε, with the binomial standard
  error of a difference se = sqrt(h(1−h)/n + l(1−l)/n).
  """
  h, l = np.asarray(high, np.float64), np.asarray(low, np.float64)
  diffs = h - l
  se = np.sqrt(h * (1 - h) / n + l * (1 - l) / n)
  mean_diff, margin = float(diffs.mean()), float(z * se.mean())
  nowhere_below = bool(np.all(diffs >= -z * se))
  return {"holds": bool(mean_diff > margin and nowhere_below), "mean_diff": mean_diff, "margin": margin,
          "nowhere_below": nowhere_below, "diffs": [float(d) for d in diffs]}


def _group_mean(acc: dict, models, read_out: str):
  return np.mean([acc[m][read_out] for m in models], axis=0)


def claim_verdict(claim: dict, acc: dict, n: int) -> dict:
  """``acc``: {paper key: {"k": [per ε], "T": [per ε]}} for one attack. Returns {"holds", "tests"} (holds None
  when a model the claim needs is missing)."""
  needed = (claim["model"],) if "model" in claim else claim["higher"] + claim["lower"]
  if any(m not in acc for m in needed):
    return {"holds": None, "tests": {}, "missing": [m for m in needed if m not in acc]}
  if "model" in claim:
    tests = {"T vs k": clearly_above(acc[claim["model"]]["T"], acc[claim["model"]]["k"], n)}
  else:
    tests = {r: clearly_above(_group_mean(acc, claim["higher"], r), _group_mean(acc, claim["lower"], r), n)
             for r in ("k", "T")}
  return {"holds": all(t["holds"] for t in tests.values()), "tests": tests}


def verdicts(acc_by_attack: dict, n: int) -> list[dict]:
  """Every claim under every attack: [{claim, attack, holds, tests}]; ``acc_by_attack``: {attack: {paper key:
  accuracies}}."""
  return [{"claim": c, "attack": a, **claim_verdict(c, acc, n)}
          for c in CLAIMS for a, acc in acc_by_attack.items()]


def by_paper_key(acc: dict) -> dict:
  """Our runs' accuracies {run name: ...} keyed by the paper's names (runs the paper has no name for dropped)."""
  keys = {m: registry.variant(m).paper_key for m in acc}
  return {keys[m]: v for m, v in acc.items() if keys[m]}


def paper_accuracies() -> dict:
  """The paper's Fig. 4 accuracies in the form :func:`claim_verdict` takes (fractions)."""
  p = PAPER["adv_accuracy"]
  return {m: {"k": [v / 100 for v in p["at_k"][m]], "T": [v / 100 for v in p["at_T"][m]]} for m in p["at_k"]}
