"""``OUT/report.md``, its figures and ``OUT/verdicts.json`` for :mod:`rsrnn_jax.reproduction.run`, from the saved
runs only (no JAX); whatever is done is rendered, and what is missing is listed.

The parts: :mod:`~rsrnn_jax.reproduction.runs` reads the runs, :mod:`~rsrnn_jax.reproduction.stats` and
:mod:`~rsrnn_jax.reproduction.verdicts` judge the claims, :mod:`~rsrnn_jax.reproduction.figures` draws,
:mod:`~rsrnn_jax.reproduction.sections` writes the Markdown.

Reads ``OUT/runs/<model>/seed<s>/{eval/results.json, compute.json, figures.npz, plateau.json,
attack_<profile>/{results.json, per_example.npz}, reproduce_stages.json}`` and writes, in ``OUT/``:

  report.md                  the claims' verdicts with their intervals, Table 1 (mean ± sd over seeds), the
                             plateau and the policy per run (:mod:`~rsrnn_jax.reproduction.health`), accuracy
                             and ASR under attack, the sanity checks, the rules, the compute per stage and what is
                             still missing
  verdicts.json              every verdict with its estimate, interval and the numbers behind it
  accuracy_vs_gmacs.png      accuracy vs GMACs as the steps grow, ours (± sd) and the paper's (AAAI Fig. 3)
  adv_accuracy_bars.png      accuracy under attack at steps k and T_eval per ε, per model (AAAI Fig. 4)
  adv_accuracy_per_step.png  accuracy vs step per ε, one panel per model (AAAI Fig. 5)
  fixations.png              the first fixations of every attention model on the same images (v1 Fig. 3a)
  rsrnn_glimpses.gif         RS-RNN's fixations and retinal images step by step (the seed README's animation)

Three attacks are read from each run's attack suites:

* **paper** = ``pgd_step`` of ``attack_paper``: L∞ PGD, 5 iterations, step ε/3, random start, CE on the logits of
  step k (paper.md §7), the attacked images then run for T_eval steps;
* **strongest** = ``worst`` of ``attack_paper``: per example and per step, the worst case over every untargeted
  attack of that profile at that ε: the paper attack, the same PGD on the mean logits of all T_eval steps (full
  horizon: the attacker also targets the later glimpses), FGSM, and PGD with 2× the iterations (check 3);
* **adaptive** = ``worst`` of ``attack_adaptive``: the worst case over APGD-CE (step k and full horizon),
  APGD-T, BPDA through the fixation choice, the scanpath search and Square, with robust flags
  (docs/attacks.md), at the budget's adaptive ε.

The verdict rules: :mod:`rsrnn_jax.reproduction.verdicts` (three-valued, on the intervals of
:mod:`rsrnn_jax.reproduction.stats`); the report's "How the verdicts are computed" spells them out.
"""
from __future__ import annotations

import os

from rsrnn_jax import workdir
from rsrnn_jax.models import registry
from rsrnn_jax.robustness import readings as check_readings
from rsrnn_jax.reproduction import figures as fig
from rsrnn_jax.evaluation.scanpath import one_scanpath
from rsrnn_jax.reproduction import health, sections, stats
from rsrnn_jax.reproduction import runs as saved
from rsrnn_jax.reproduction.runs import ATTACK_TITLES, ATTACKS
from rsrnn_jax.reproduction.stages import fingerprints
from rsrnn_jax.reproduction.verdicts import (CLAIMS, PAIRS, PAPER_TOLERANCE, by_paper_key, judge, judge_paper,
                                              needed_models)

RULE = ("holds if the 95% interval of the claimed difference is above 0, fails if it is below 0, else undecided; a "
        "claim tested at k and T_eval holds iff both hold and fails iff either fails")


def markdown(rep: sections.Report) -> str:
  """The report: every section of :mod:`rsrnn_jax.reproduction.sections` in order."""
  out = sections.header(rep) + sections.claims(rep) + sections.clean_correct(rep) + health.live_policy(rep)
  out += sections.pairs(rep)
  out += sections.table1(rep)
  if any(rep.acc.values()):
    out += sections.under_attack(rep) + sections.asr(rep)
  out += sections.sanity_checks(rep) + sections.where_they_look(rep) + sections.rules()
  out += sections.budget_and_time(rep)
  return "\n".join(out)


def _setup(runs: dict, configs: dict, n: int) -> dict:
  """k, T_eval, n and the ε grids: from the first paper-profile results, or from the config until one exists."""
  first = next((r["attack"]["paper"] for seeds in runs.values() for r in seeds.values() if r["attack"].get("paper")),
               None)
  if first:
    return {"k": first["attack_step"], "t": first["eval_steps"], "n": n or first["num_examples"],
            "eps": first["untargeted"]["epsilons"], "teps": first["targeted"]["epsilons"]}
  a = next(iter(next(iter(configs.values())).values()))["attack_paper"].attack
  return {"k": int(a.attack_step), "t": int(a.eval_steps), "n": n or int(a.num_examples), "eps": list(a.epsilons),
          "teps": list(a.targeted_epsilons)}


def _judge_ours(runs: dict, attacks, claims=CLAIMS, clean_correct: bool = False) -> tuple[list, dict]:
  """Every claim under every attack on our runs (``clean_correct``: on the examples every compared model
  classifies correctly clean only)."""
  entries, infos = [], {}
  data, clean = {}, {}
  for a in attacks:
    per_model, infos[a] = saved.per_example_data(runs, a)
    data[a], clean[a] = by_paper_key(per_model), by_paper_key(infos[a]["clean"])
  for v in judge(data, claims, clean if clean_correct else None):
    info = infos[v["attack"]]
    v.setdefault("num_examples", info["num_examples"])
    v.update(attack_title=ATTACK_TITLES[v["attack"]], epsilons=info["epsilons"],
             seeds={saved.paper_key(m): s for m, s in info["seeds"].items()
                    if saved.paper_key(m) in needed_models(v["claim"])})
    entries.append(v)
  return entries, infos


def _judge_live_policy(runs: dict, attacks, claims=CLAIMS) -> list:
  """The claims of ``claims`` (:data:`CLAIMS` or :data:`PAIRS`) that compare a model with a run whose policy died
  (one scanpath for every image: :func:`rsrnn_jax.reproduction.health.one_scanpath_runs`), judged again on the
  other runs only; [] if no run died."""
  dead = {saved.paper_key(m) for m, _ in health.one_scanpath_runs(runs)}
  affected = tuple(c for c in claims if dead & set(needed_models(c)))
  return _judge_ours(health.live_policy_runs(runs), attacks, affected)[0] if affected else []


def _claim_json(v: dict) -> dict:
  keep = ("estimate", "interval", "verdict", "sd", "tolerance")
  out = {"id": v["claim"]["id"], **({"of": v["claim"]["of"]} if "of" in v["claim"] else {}),
         "text": v["claim"]["text"], "attack": v["attack"], "verdict": v["verdict"],
         "tests": {n: {k: t[k] for k in keep if k in t} for n, t in v["tests"].items()}, "missing": v["missing"]}
  for key in ("attack_title", "epsilons", "num_examples", "seeds", "models"):
    if key in v:
      out[key] = v[key]
  return out


def geometry(configs: dict, setting=None) -> dict:
  """The setting's geometry, read from the runs' configs: image side, glimpse side, crop fractions, object size."""
  cfg = {m: next(iter(per.values()))["train"] for m, per in configs.items()}
  any_cfg = next(iter(cfg.values()))
  d = any_cfg.data
  glimpse = [c.model.sampler for c in cfg.values() if registry.get(c.model.name).has_fixations]
  crops = sorted({float(s) for g in glimpse if g.kind == "crop" for s in g.scales})
  whole = {int(c.model.get("input_size", 0)) or int(d.canvas_size) for c in cfg.values()
           if registry.get(c.model.name).whole_image}
  side, item = int(d.canvas_size), int(d.get("item_size", 28))
  return {"name": getattr(setting, "name", "demo"), "config_args": getattr(setting, "config_args", ""),
          "why_epsilons": getattr(setting, "why_epsilons", ""), "data": d.name,
          "table1_reasons": dict(getattr(setting, "table1_reasons", {})),
          "data_config": {k: d.get(k) for k in ("canvas_size", "item_size", "num_clutter", "clutter_size") if k in d},
          "image_side": side, "glimpse_side": int(glimpse[0].out_size) if glimpse else None,
          "crop_fractions": crops, "object_side": item, "object_area_fraction": item * item / (side * side),
          "whole_image_input": sorted(whole)}


def _under_attack(acc: dict) -> dict:
  """{attack: {model: accuracy at k and T_eval per ε, mean and sd over seeds, and clean}} for verdicts.json."""
  keep = ("eps", "seeds", "k", "k_sd", "T", "T_sd", "asr_k")
  return {a: {m: {key: v[key] for key in keep} for m, v in per.items()} for a, per in acc.items()}


def _sanity(runs: dict, profiles) -> dict:
  """{model: {profile: {"runs": n, "failed": {check name: runs that failed it}, "readings": {check name:
  [kind, meaning]}}}} for verdicts.json (kind: finding | covered | warning, robustness/checks.py)."""
  out = {}
  for m, seeds in runs.items():
    for p in profiles:
      done = [check_readings.run_checks(r["attack"], p) for r in seeds.values() if r["attack"].get(p)]
      failed = {}
      for checks in done:
        for c in checks:
          if c["status"] == "fail":
            failed[c["name"]] = failed.get(c["name"], 0) + 1
      if done:
        readings = {name: [kind, meaning] for name, kind, meaning in check_readings.readings(done).values()}
        out.setdefault(m, {})[p] = {"runs": len(done), "failed": failed, "readings": readings}
  return out


def verdicts_json(rep: sections.Report, infos: dict, seeds: dict, setting=None) -> dict:
  """The content of ``verdicts.json``."""
  models = {}
  for m, c in rep.clean.items():
    plateaus = [{"seed": s, "reached": saved.plateau_reached(r["plateau"]["rise_points"]),
                 "rise_points": r["plateau"]["rise_points"]}
                for s, r in rep.runs[m].items() if r["plateau"]]
    policies = [{"seed": s, "one_scanpath": one_scanpath(p), **p}
                for _, s, p in health.run_policies({m: rep.runs[m]})]
    models[m] = {"display": saved.display(m), "seeds": c["seeds"], "train_steps": c["steps"],
                 "clean_at_train": c["at_train"], "clean_at_eval": c["at_eval"], "plateau": plateaus,
                 "policy": policies}
  return {
      "setting": geometry(rep.configs, setting),
      "code_versions": saved.code_versions(rep.runs),
      "num_attacked_examples": infos.get("paper", {}).get("num_examples", 0),
      "seeds": sorted({s for per in seeds.values() for s in per}),
      "seeds_per_model": seeds,
      "profiles": list(rep.budget.profiles),
      "budget": rep.budget.to_dict(),
      "attacks": {a: {"profile": ATTACKS[a][0], "entry": ATTACKS[a][1], "title": ATTACK_TITLES[a]} for a in infos},
      "bootstrap": {"resamples": stats.RESAMPLES, "seed": stats.SEED, "level": stats.LEVEL, "paired": True,
                    "over": "each model's seeds (independently) and the attacked examples (the same for every model)"},
      "rule": RULE,
      "paper_tolerance": PAPER_TOLERANCE,
      "claims": [_claim_json(v) for v in rep.ours],
      "pairs": [_claim_json(v) for v in rep.pairs],
      "claims_clean_correct": [_claim_json(v) for v in rep.clean_correct],
      "claims_live_policy": [_claim_json(v) for v in rep.live_policy],
      "pairs_live_policy": [_claim_json(v) for v in rep.live_pairs],
      "one_scanpath_runs": [[m, s] for m, s in health.one_scanpath_runs(rep.runs)],
      "paper_pairs": [_claim_json(v) for v in rep.paper_pairs],
      "paper": [_claim_json(v) for v in rep.paper],
      "models": models,
      "under_attack": _under_attack(rep.acc),
      "sanity": _sanity(rep.runs, rep.budget.profiles),
      "compute_seconds": {st: sum(c[st] for c in rep.compute.values()) for st in rep.budget.stages},
      "still_missing": [list(x) for x in rep.missing],
  }


def write(out_dir: str, configs: dict, budget, setting=None, dest: str = "") -> str:
  """Loads the runs of ``configs`` ({model: {seed: {stage: config}}}) from ``out_dir/runs``, judges the claims,
  draws the figures, writes ``report.md`` and ``verdicts.json`` (naming ``setting``, a
  :class:`rsrnn_jax.reproduction.settings.Setting`) with the figures in ``dest`` (default ``out_dir``); returns
  the report's path."""
  dest = dest or out_dir
  os.makedirs(dest, exist_ok=True)
  seeds = {m: list(per) for m, per in configs.items()}
  runs = saved.load_runs(out_dir, seeds, budget.profiles)
  attacks = [a for a, (profile, _) in ATTACKS.items() if profile in budget.profiles]
  acc = {a: saved.attack_accuracies(runs, a) for a in attacks}
  ours, infos = _judge_ours(runs, attacks)
  pairs, _ = _judge_ours(runs, attacks, PAIRS)
  clean_correct, _ = _judge_ours(runs, attacks, CLAIMS, clean_correct=True)
  live_policy, live_pairs = _judge_live_policy(runs, attacks), _judge_live_policy(runs, attacks, PAIRS)
  expected = {m: {s: fingerprints(c, budget.plateau_examples) for s, c in per.items()}
              for m, per in configs.items()}
  s = _setup(runs, configs, infos.get("paper", {}).get("num_examples", 0))
  clean = saved.clean_summary(runs)
  rep = sections.Report(runs=runs, configs=configs, budget=budget, acc=acc, clean=clean, ours=ours,
                        paper=judge_paper(), missing=saved.still_missing(runs, expected),
                        compute=saved.compute_seconds(runs, budget.stages), figures={}, pairs=pairs,
                        paper_pairs=judge_paper(claims=PAIRS), clean_correct=clean_correct,
                        live_policy=live_policy, live_pairs=live_pairs, **s)
  computes = {m: next((r["compute"] for r in per.values() if r["compute"]), None) for m, per in runs.items()}
  rep.figures = {"gmacs": fig.accuracy_vs_gmacs(clean, computes, dest), "fixations": fig.fixations(runs, dest),
                 "gif": fig.glimpses_gif(runs, dest), "bars": fig.adv_bars(acc, s["k"], s["t"], dest),
                 "per_step": fig.adv_per_step(acc, s["k"], dest)}
  path = os.path.join(dest, "report.md")
  workdir.write_text(path, markdown(rep))  # atomic: a failed re-draw keeps the previous report
  workdir.write_json(os.path.join(dest, "verdicts.json"), verdicts_json(rep, infos, seeds, setting))
  return path
