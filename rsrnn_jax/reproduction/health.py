"""Has each run trained properly? The report's plateau and policy tables, and the runs a reader should know about
before reading a claim (:mod:`rsrnn_jax.reproduction.sections` places them).

- **Plateau** (``plateau.json``): clean accuracy of the checkpoints at 80%, 90% and 100% of training.
- **Policy** (``eval/results.json`` → ``policy``, :mod:`rsrnn_jax.evaluation.scanpath`): the entropy of each
  attention model's fixation policy and the spread of its fixations over the test images. A run whose policy
  gives every image the same scanpath has an attention that died in training (docs/zoo.md): what it is compared
  on is a model with a fixed scanpath, not the paper's recurrent attention. The claims that compare such a model
  are judged again without those runs (:func:`live_policy_runs`; the section :func:`live_policy`).
"""
from __future__ import annotations

from rsrnn_jax.evaluation.scanpath import ONE_SCANPATH_PX, one_scanpath
from rsrnn_jax.report.tables import pct, table
from rsrnn_jax.reproduction.cells import claims_table, seeds_cell, verdict_cell
from rsrnn_jax.reproduction.runs import display, plateau_reached, short_of_plateau


def plateau(rep) -> list[str]:
  rows = []
  for m, seeds in rep.runs.items():
    for s, r in seeds.items():
      p = r["plateau"]
      if not p:
        continue
      reached = {True: "yes", False: "**no**", None: "–"}[plateau_reached(p["rise_points"])]
      rows.append([display(m), s, "/".join(map(str, p["steps"])), " / ".join(pct(a) for a in p["accuracy"]),
                   "–" if p["rise_points"] is None else f"{p['rise_points']:+.1f}", reached])
  if not rows:
    return []
  n = next(r["plateau"]["num_examples"] for seeds in rep.runs.values() for r in seeds.values() if r["plateau"])
  out = ["### Plateau: has each run finished learning?", ""]
  out += [table(["model", "seed", "checkpoints (80/90/100%)", "clean top-1 % @T_train", "rise over the last 20% (pt)",
                 "plateau reached"], rows), ""]
  out += [f"Clean accuracy at T_train of the checkpoints at 80%, 90% and 100% of training, on the first {n} test "
          "images. Rule: the plateau is reached iff acc(100%) − acc(80%) ≤ 1 point (a run still rising more than "
          "that was stopped while it was learning; its comparisons are with a model short of its accuracy).", ""]
  return out


def run_policies(runs: dict) -> list[tuple]:
  """[(model, seed, policy dict)] of every run whose clean evaluation recorded its policy (the attention models)."""
  return [(m, s, r["eval"]["policy"]) for m, seeds in runs.items() for s, r in seeds.items()
          if r.get("eval") and (r["eval"].get("policy") or {}).get("fixation_spread_px")]


def one_scanpath_runs(runs: dict) -> list[tuple]:
  """[(model, seed)] of the runs whose policy gives every test image the same scanpath."""
  return [(m, s) for m, s, p in run_policies(runs) if one_scanpath(p)]


def live_policy_runs(runs: dict) -> dict:
  """``runs`` ({model: {seed: run}}) without the runs of :func:`one_scanpath_runs` (a model all of whose runs
  have one scanpath is left with none)."""
  dead = set(one_scanpath_runs(runs))
  return {m: {s: r for s, r in seeds.items() if (m, s) not in dead} for m, seeds in runs.items()}


def _steps(values, digits: int) -> str:
  return " / ".join(f"{v:.{digits}f}" for v in values) or "–"


def policy(rep) -> list[str]:
  rows = [[display(m), s, _steps(p.get("entropy_per_saccade", []), 2), _steps(p["fixation_spread_px"][1:], 1),
           "**yes**" if one_scanpath(p) else "no"] for m, s, p in run_policies(rep.runs)]
  if not rows:
    return []
  out = ["### Policy: does each run's scanpath depend on the image?", ""]
  out += [table(["model", "seed", "policy entropy per saccade (nats)", "fixation spread at steps 2.. (px)",
                 "one scanpath for every image"], rows), ""]
  out += ["From the clean evaluation at T_eval (argmax fixations from the centre, every test image): the mean "
          "entropy of the distribution each next fixation is chosen from (0: deterministic; log of the saliency "
          "map's cells: uniform), and the spread of each fixation over the images (RMS distance from that step's "
          f"mean fixation). A run whose every spread is under {ONE_SCANPATH_PX:g} px looks at the same places in "
          "every image: its attention died in training, and it is compared as a model with a fixed scanpath "
          "(docs/zoo.md). Sanity check 8 reads the same run's policy attacks as a finding.", ""]
  return out


def claims_note(rep) -> list[str]:
  """The notes under the claims naming the runs still learning when they stopped and those whose policy gives
  every image one scanpath (none: no lines)."""
  out = []
  short = short_of_plateau(rep.runs)
  if short:
    out += ["**Short of the plateau**: " + ", ".join(f"{display(m)} seed {s} (+{rise:.1f} pt over its last 20% of "
                                                     f"training)" for m, s, rise in short)
            + ". The claims that compare with these models rest in part on a run that was still learning "
            "(\"Plateau\" below).", ""]
  dead = one_scanpath_runs(rep.runs)
  if dead:
    out += ["**One scanpath for every image**: " + ", ".join(f"{display(m)} seed {s}" for m, s in dead)
            + ". The attention of these runs died in training; the claims that compare with them compare with a "
            "model whose fixations do not depend on the image (\"Policy\" below).", ""]
  return out


def live_policy(rep) -> list[str]:
  """The claims and pairs that compare a model with a run whose policy died, judged again without those runs:
  does a fixed-scanpath run carry the verdict?"""
  if not rep.live_policy:
    return []
  every = {(v["claim"]["id"], v["attack"]): v for v in rep.ours + rep.pairs}
  dead = ", ".join(f"{display(m)} seed {s}" for m, s in one_scanpath_runs(rep.runs))
  out = ["## The claims without the runs whose policy died", ""]
  same = (["verdict on every run"], lambda v: [verdict_cell(every[(v["claim"]["id"], v["attack"])])])
  out += [claims_table(rep.k, rep.t, rep.live_policy + rep.live_pairs, "seeds left", seeds_cell, same), ""]
  out += [f"Left out: {dead} (one scanpath for every image, \"Policy\" below). The same tests on the other runs, "
          "on every attacked image: the claims, then the pairs (one against one) with such a model in them. A "
          "model left with one seed has an interval over the examples only, not over seeds: narrower than the "
          "full run's would be.", ""]
  return out
