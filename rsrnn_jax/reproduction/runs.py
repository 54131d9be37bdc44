"""The saved runs of :mod:`rsrnn_jax.reproduction.run`, read back for the report (no JAX): one dict per model of
``OUT/runs/<model>/{eval/results.json, compute.json, figures.npz, attack_paper/results.json,
reproduce_stages.json}``, and the accuracies under our two attacks."""
from __future__ import annotations

import json
import os

import numpy as np

from rsrnn_jax.models import registry

# Our two attacks: their entry in the attack suite's results (rsrnn_jax/attacks/suite.py).
ATTACKS = {"paper": "pgd_step", "strongest": "worst"}
ATTACK_TITLES = {"paper": "paper attack (PGD-5 on step k)", "strongest": "strongest attack (worst case)"}


def display(name: str) -> str:
  """The report's name of run ``name`` (a registered model or variant)."""
  return registry.variant(name).display


def paper_key(name: str) -> str | None:
  """Run ``name``'s key in ``paper_numbers.PAPER`` (None: not in the paper)."""
  return registry.variant(name).paper_key


def _json(path):
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def load_runs(out_dir: str, models, profile: str = "paper") -> dict:
  """{model: {"eval", "compute", "attack", "figures", "stages"}} (None for what is missing)."""
  runs = {}
  for m in models:
    d = os.path.join(out_dir, "runs", m)
    fig = os.path.join(d, "figures.npz")
    runs[m] = {"eval": _json(os.path.join(d, "eval", "results.json")),
               "compute": _json(os.path.join(d, "compute.json")),
               "attack": _json(os.path.join(d, f"attack_{profile}", "results.json")),
               "figures": dict(np.load(fig)) if os.path.exists(fig) else None,
               "stages": _json(os.path.join(d, "reproduce_stages.json")) or {}}
  return runs


def attack_accuracies(runs: dict, attack: str) -> dict:
  """{model: {"k": [per ε], "T": [per ε], "per_step": {ε: [T]}, "asr_k": [per ε]}} under ``attack`` (an
  ATTACKS key)."""
  out = {}
  for m, r in runs.items():
    res = r["attack"]
    entries = (res or {}).get("untargeted", {}).get("attacks", {}).get(ATTACKS[attack])
    if not entries:
      continue
    k, t = res["attack_step"], res["eval_steps"]
    out[m] = {"k": [e["adv_acc"][k - 1] for e in entries], "T": [e["adv_acc"][t - 1] for e in entries],
              "per_step": {e["eps"]: e["adv_acc"] for e in entries},
              "asr_k": [e["asr"][k - 1] for e in entries]}
  return out
