"""The saved runs of :mod:`rsrnn_jax.reproduction.run` read back for the report (no JAX): where a run lives, its
outputs, and what its stage records say (code versions, devices, plateau).

A run is one (model, seed): ``OUT/runs/<model>/seed<s>/``, a normal workdir with ``checkpoints/``,
``metrics.jsonl``, ``eval/results.json``, ``compute.json``, ``figures.npz``, ``plateau.json``,
``attack_<profile>/{results.json, per_example.npz}`` and ``reproduce_stages.json`` (the stage records:
:mod:`rsrnn_jax.reproduction.stages`, which also runs the stages).
"""
from __future__ import annotations

import collections
import os

import numpy as np

from rsrnn_jax.models import registry
from rsrnn_jax.reproduction import stats
from rsrnn_jax.reproduction.stages import PLATEAU_FILE, read_json, read_stages
from rsrnn_jax.robustness import checks

PLATEAU_POINTS = 1.0  # plateau reached iff clean acc(100%) − acc(80%) ≤ this many points (at T_train)
# Our attacks: (the attack profile's stage, its entry in the suite's results; rsrnn_jax/robustness/suite.py).
ATTACKS = {"paper": ("paper", "pgd_step"), "strongest": ("paper", "worst"), "adaptive": ("adaptive", "worst")}
ATTACK_TITLES = {"paper": "paper attack (PGD-5 on step k)",
                 "strongest": "strongest of profile paper (worst case, incl. full-horizon PGD)",
                 "adaptive": "adaptive (worst case: APGD, BPDA, scanpath, Square)"}


def display(name: str) -> str:
  """The report's name of run ``name`` (a registered model or variant)."""
  return registry.variant(name).display


def paper_key(name: str) -> str | None:
  """Run ``name``'s key in ``paper_numbers.PAPER`` (None: not in the paper)."""
  return registry.variant(name).paper_key


def plateau_reached(rise_points) -> bool | None:
  """The plateau rule on a rise acc(100%) − acc(80%) in points: reached iff ≤ :data:`PLATEAU_POINTS`, after
  rounding away float error (a rise of exactly 1 point, 20 of 2,000 images, is within it); None if unknown."""
  return None if rise_points is None else bool(round(float(rise_points), 9) <= PLATEAU_POINTS)


def run_dir(out_dir: str, model: str, seed: int) -> str:
  return os.path.join(out_dir, "runs", model, f"seed{seed}")


# ----------------------------------------------------------------------------------------------------------
# What the stage records say
# ----------------------------------------------------------------------------------------------------------

def _finished_stages(runs: dict):
  """The record of every finished stage of ``runs`` ({model: {seed: run}})."""
  return (st for seeds in runs.values() for r in seeds.values() for st in r["stages"].values() if st.get("done"))


def code_versions(runs: dict) -> list[str]:
  """Every code version recorded by a finished stage of ``runs`` ({model: {seed: run}}), sorted."""
  return sorted({st["code"] for st in _finished_stages(runs) if st.get("code")})


def short_of_plateau(runs: dict) -> list[tuple]:
  """[(model, seed, rise in points)] of every run of ``runs`` whose plateau check failed (still learning)."""
  return [(m, s, r["plateau"]["rise_points"]) for m, seeds in runs.items() for s, r in seeds.items()
          if r.get("plateau") and plateau_reached(r["plateau"]["rise_points"]) is False]


def stage_devices(runs: dict) -> dict[str, int]:
  """{device: number of finished stages of ``runs`` recorded on it} (``not recorded`` for records older than
  the field), most stages first."""
  counts = collections.Counter(st.get("device", "not recorded") for st in _finished_stages(runs))
  return dict(counts.most_common())


# ----------------------------------------------------------------------------------------------------------
# Reading the runs back
# ----------------------------------------------------------------------------------------------------------

def load_runs(out_dir: str, seeds: dict, profiles) -> dict:
  """{model: {seed: run}} for ``seeds`` ({model: [seeds]}); a run: {"eval", "compute", "plateau", "attack":
  {profile: results}, "per_example": {profile: path}, "figures": path, "stages"} (None for what is missing)."""
  runs = {}
  for m, model_seeds in seeds.items():
    runs[m] = {}
    for s in model_seeds:
      d = run_dir(out_dir, m, s)
      exists = lambda f, d=d: os.path.join(d, f) if os.path.exists(os.path.join(d, f)) else None
      runs[m][s] = {"eval": read_json(os.path.join(d, "eval", "results.json")),
                    "compute": read_json(os.path.join(d, "compute.json")),
                    "plateau": read_json(os.path.join(d, PLATEAU_FILE)),
                    "attack": {p: _rechecked(read_json(os.path.join(d, f"attack_{p}", "results.json")))
                               for p in profiles},
                    "per_example": {p: exists(f"attack_{p}/per_example.npz") for p in profiles},
                    "figures": exists("figures.npz"), "stages": read_stages(d)}
  return runs


def _rechecked(results: dict | None) -> dict | None:
  """An attack's results with its sanity checks recomputed from its numbers by today's rules, so that a rule
  refined after the run (e.g. check 11's zero-gradient cover) reads it as it reads a new run; the numbers are
  not changed (results without their check settings keep the checks they were written with)."""
  settings = ((results or {}).get("config") or {}).get("attack", {}).get("checks")
  return {**results, "checks": checks.sanity_checks(results, settings)} if settings else results


def first_figures(runs: dict, model: str) -> dict | None:
  """The figure arrays of ``model``'s first seed that has them."""
  for r in runs.get(model, {}).values():
    if r["figures"]:
      with np.load(r["figures"]) as z:
        return dict(z)
  return None


def _entries(result, entry):
  return ((result or {}).get("untargeted", {}).get("attacks", {}).get(entry)) or None


def attack_accuracies(runs: dict, attack: str) -> dict:
  """{model: {"eps", "seeds", "k", "k_sd", "T", "T_sd" (per ε, mean and sd over seeds), "per_step",
  "per_step_sd" ({ε: [T_eval]}), "asr_k", "clean" (mean per step)}} under ``attack`` (an ATTACKS key), over the
  seeds whose results have it (on the ε grid of the first)."""
  profile, entry = ATTACKS[attack]
  out = {}
  for m, seeds in runs.items():
    done = [(r["attack"][profile], _entries(r["attack"].get(profile), entry)) for r in seeds.values()]
    done = [(res, e) for res, e in done if e]
    if not done:
      continue
    eps = [e["eps"] for e in done[0][1]]
    done = [(res, e) for res, e in done if [x["eps"] for x in e] == eps]
    per_step = np.asarray([[x["adv_acc"] for x in e] for _, e in done], np.float64)  # [S, E, T]
    k, t = done[0][0]["attack_step"], done[0][0]["eval_steps"]
    sd = per_step.std(0, ddof=1) if len(done) > 1 else np.zeros_like(per_step[0])
    out[m] = {"eps": eps, "seeds": len(done), "k": list(per_step.mean(0)[:, k - 1]), "k_sd": list(sd[:, k - 1]),
              "T": list(per_step.mean(0)[:, t - 1]), "T_sd": list(sd[:, t - 1]),
              "per_step": dict(zip(eps, per_step.mean(0).tolist())), "per_step_sd": dict(zip(eps, sd.tolist())),
              "asr_k": [stats.mean_sd([e[i]["asr"][k - 1] for _, e in done])["mean"] for i in range(len(eps))],
              "clean": list(np.mean([res["clean"]["accuracy_per_step"] for res, _ in done], 0))}
  return out


def per_example_data(runs: dict, attack: str) -> tuple[dict, dict]:
  """The per-example correctness under ``attack`` for the bootstrap: ({model: [S, E, n, 2]} bool, read-outs
  step k and T_eval, the first n examples common to every run), {"num_examples", "epsilons", "seeds": {model:
  [seeds]}, "clean": {model: [S, n, 2]} (clean correctness at the same read-outs)}. Runs without per-example
  results, or on another ε grid than the first, are left out."""
  profile, entry = ATTACKS[attack]
  arrays, clean, seeds_used, eps = {}, {}, {}, None
  for m, seeds in runs.items():
    for s, r in seeds.items():
      path, res = r["per_example"].get(profile), r["attack"].get(profile)
      if not path or not res:
        continue
      with np.load(path) as z:
        if entry not in z:
          continue
        e = [float(v) for v in z["epsilons"]]
        read = [res["attack_step"] - 1, res["eval_steps"] - 1]
        x, c = z[entry][:, :, read], z["clean_correct"][:, read]  # [E, N, 2], [N, 2]
      if eps is None:
        eps = e
      if len(e) != len(eps) or not np.allclose(e, eps):
        continue
      arrays.setdefault(m, []).append(x)
      clean.setdefault(m, []).append(c)
      seeds_used.setdefault(m, []).append(s)
  n = min((x.shape[1] for xs in arrays.values() for x in xs), default=0)
  data = {m: np.stack([x[:, :n] for x in xs]) for m, xs in arrays.items()}
  clean = {m: np.stack([c[:n] for c in cs]) for m, cs in clean.items()}
  return data, {"num_examples": int(n), "epsilons": eps or [], "seeds": seeds_used, "clean": clean}


def clean_summary(runs: dict) -> dict:
  """{model: {"seeds", "steps" (training steps per seed), "per_step" / "per_step_sd" (mean, sd over seeds),
  "at_train" / "at_eval" (mean ± sd dicts), "train_glimpses", "num_examples"}} from the clean evaluations."""
  out = {}
  for m, seeds in runs.items():
    evs = [r["eval"] for r in seeds.values() if r["eval"]]
    if not evs:
      continue
    t = int(evs[0]["train_glimpses"])
    acc = np.asarray([e["accuracy_per_step"] for e in evs], np.float64)
    out[m] = {"seeds": [s for s, r in seeds.items() if r["eval"]], "steps": [int(e["step"]) for e in evs],
              "per_step": list(acc.mean(0)), "per_step_sd": list(acc.std(0, ddof=1) if len(evs) > 1 else 0 * acc[0]),
              "at_train": stats.mean_sd(acc[:, min(t, acc.shape[1]) - 1]), "at_eval": stats.mean_sd(acc[:, -1]),
              "train_glimpses": t, "num_examples": int(evs[0]["num_examples"])}
  return out


def compute_seconds(runs: dict, stages) -> dict:
  """{model: {stage: seconds summed over its seeds}} as recorded in the stage records."""
  return {m: {st: sum(r["stages"].get(st, {}).get("seconds", 0.0) for r in seeds.values()) for st in stages}
          for m, seeds in runs.items()}


def still_missing(runs: dict, expected: dict) -> list[tuple]:
  """[(model, seed, stage)] of every stage not finished with the fingerprint ``expected`` ({model: {seed:
  {stage: fingerprint}}}) of the current config."""
  return [(m, s, st) for m, seeds in runs.items() for s, r in seeds.items()
          for st, fp in expected.get(m, {}).get(s, {}).items()
          if not (r["stages"].get(st, {}).get("done") and r["stages"][st].get("fingerprint") == fp)]
