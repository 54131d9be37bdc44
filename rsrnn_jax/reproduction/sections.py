"""The sections of ``report.md`` (:mod:`rsrnn_jax.reproduction.report`), one function each returning Markdown
lines from a :class:`Report` (everything the report reads, gathered once)."""
from __future__ import annotations

import dataclasses
import time

from rsrnn_jax.data import registry as datasets
from rsrnn_jax.models import registry
from rsrnn_jax.report.tables import pct, table
from rsrnn_jax.reproduction import health, stats
from rsrnn_jax.reproduction.cells import (claims_table, eps_cell, interval_cell, mean_sd_cell, verdict_cell,
                                          verdict_word)
from rsrnn_jax.reproduction.paper_numbers import PAPER
from rsrnn_jax.reproduction.runs import ATTACK_TITLES, code_versions, display, paper_key, stage_devices
from rsrnn_jax.reproduction.verdicts import PAPER_TOLERANCE
from rsrnn_jax.robustness import readings as check_readings


@dataclasses.dataclass
class Report:
  runs: dict             # {model: {seed: run}} (runs.load_runs)
  configs: dict          # {model: {seed: {stage: config}}}
  budget: object         # budgets.Budget
  acc: dict              # {attack: runs.attack_accuracies}
  clean: dict            # runs.clean_summary
  ours: list             # verdicts.judge entries (+ attack metadata)
  paper: list            # verdicts.judge_paper entries
  missing: list          # [(model, seed, stage)] not done
  compute: dict          # {model: {stage: seconds}}
  figures: dict          # name → file
  k: int                 # attack step
  t: int                 # T_eval
  n: int                 # attacked examples of the verdicts
  eps: list              # untargeted ε (profile paper)
  teps: list             # targeted ε
  pairs: list = dataclasses.field(default_factory=list)  # verdicts.judge entries of verdicts.PAIRS
  paper_pairs: list = dataclasses.field(default_factory=list)  # verdicts.judge_paper entries of verdicts.PAIRS
  clean_correct: list = dataclasses.field(default_factory=list)  # the claims on the clean-correct examples
  live_policy: list = dataclasses.field(default_factory=list)  # the claims without the runs whose policy died
  live_pairs: list = dataclasses.field(default_factory=list)  # the pairs without them


def _config(rep: Report, m: str):
  return next(iter(rep.configs[m].values()))["train"]


def header(rep: Report) -> list[str]:
  any_cfg = _config(rep, next(iter(rep.configs)))
  total = sum(sum(st.values()) for st in rep.compute.values())
  data_cfg = next((r["eval"]["config"]["data"] for seeds in rep.runs.values() for r in seeds.values() if r["eval"]),
                  any_cfg.data.to_dict())
  classes = datasets.num_classes(data_cfg)
  b = rep.budget
  out = [f"# Reproduction: {display(registry.DEFAULT_MODEL)} and its baselines on cluttered Fashion-MNIST", ""]
  out += [f"Written by `python -m rsrnn_jax.reproduction.run` (`make reproduce`) on {time.strftime('%Y-%m-%d %H:%M')}. "
          f"Budget `{b.name}`: {b.describe()}. Compute recorded by the stages, summed over every run: "
          f"{total / 3600:.2f} h (per stage at the end; {len(rep.missing)} stage(s) still missing).", ""]
  out += [f"Data: `{data_cfg['name']}` ({data_cfg.get('canvas_size')}² canvas, {classes} classes, chance "
          f"{100 / classes:g}%). Attacks: untargeted ε = {eps_cell(rep.eps)}, targeted ε = {eps_cell(rep.teps)} "
          f"(pixels in [0, 1]), made at step k = {rep.k}, images run for T_eval = {rep.t} steps, on the first "
          f"{rep.n} test images; adaptive at ε = "
          + (eps_cell(b.adaptive_epsilons) or "– (not in this budget)") + ".", ""]
  out += [f"**Columns marked \"paper\" are the authors' published numbers** ({PAPER['source']}), transcribed in "
          "`rsrnn_jax/reproduction/paper_numbers.py`: ImageNet100 at 336²/224², ε in 1e-3..1e-2, attack at step 4 "
          "(AAAI) or 12 (v1). They are not our results and not on our data: compare orderings and trends, not "
          "values.", ""]
  if b.name == "quick":
    out += ["> **Quick budget: a smoke test. These numbers mean nothing.**", ""]
  return out


def claims(rep: Report) -> list[str]:
  paper = {v["claim"]["id"]: v for v in rep.paper}
  rows = []
  for v in rep.ours:
    cid, tests = v["claim"]["id"], v["tests"]
    pv = paper[cid] if v["attack"] == "paper" else None
    one = "model" in v["claim"]
    cells = ([interval_cell(tests.get("T vs k")), "(one test)"] if one
             else [interval_cell(tests.get("k")), interval_cell(tests.get("T"))])
    if pv:
      pt = pv["tests"]
      pcell = (interval_cell(pt.get("T vs k")) if one
               else f"{interval_cell(pt.get('k'))} / {interval_cell(pt.get('T'))}")
    rows.append([v["claim"]["text"], ATTACK_TITLES[v["attack"]], eps_cell(v.get("epsilons", [])), *cells,
                 verdict_cell(v),
                 pcell if pv else "–", verdict_word(pv["verdict"]) if pv else "not run by the paper"])
  out = ["## The paper's claims", ""]
  out += [table(["claim", "attack", "ε", f"ours: Δ at k={rep.k} [95% CI] (pt)", f"ours: Δ at T_eval={rep.t} [95% CI]",
                 "verdict (ours)", "paper: Δ at 4 / 16 [± read-off] (AAAI Fig. 4)", "paper (same rule)"], rows), ""]
  out += [f"Δ: the mean over the attack's ε grid of (first group − second group) accuracy, in points; for the "
          "recovery claim RS-RNN's accuracy at T_eval minus at k (one test). Ours: the mean over seeds, with the 95% "
          f"interval of a paired bootstrap over seeds and the n = {rep.n} attacked images "
          f"({stats.RESAMPLES} resamples); paper: ± its read-off tolerance (±{100 * PAPER_TOLERANCE:g} point per "
          "value, worst case). **holds**: the interval is above 0; **fails**: below 0; **undecided**: it contains 0. "
          "A claim read at k and T_eval holds iff both hold and fails iff either fails. Rules: \"How the verdicts "
          "are computed\" below.", ""]
  return out + health.claims_note(rep)


def clean_correct(rep: Report) -> list[str]:
  """The claims on the examples every compared model classifies correctly clean: a verdict a weak model cannot
  carry (there accuracy under attack = 1 − attack success rate, for every model)."""
  if not rep.clean_correct:
    return []
  out = ["## The claims on the examples every compared model gets right", ""]
  out += [claims_table(rep.k, rep.t, rep.clean_correct, "examples", lambda v: str(v.get("num_examples", "–"))), ""]
  out += ["The same tests, on the attacked images that every seed of every model in the claim classifies correctly "
          "clean at step k and at T_eval. Every model is 100% accurate there before the attack, so a model that is "
          "weak on clean images cannot make another look robust: Δ compares attack success rates.", ""]
  return out


def pairs(rep: Report) -> list[str]:
  """The group claims taken apart: each higher × lower pair under each attack, by the same rule."""
  if not rep.pairs:
    return []
  paper = {v["claim"]["id"]: v for v in rep.paper_pairs}
  rows = []
  for v in rep.pairs:
    tests, pv = v["tests"], paper.get(v["claim"]["id"]) if v["attack"] == "paper" else None
    pcell = f"{interval_cell(pv['tests'].get('k'))} / {interval_cell(pv['tests'].get('T'))}" if pv else "–"
    rows.append([v["claim"]["of"], v["claim"]["text"], ATTACK_TITLES[v["attack"]], interval_cell(tests.get("k")),
                 interval_cell(tests.get("T")), verdict_cell(v), pcell,
                 verdict_word(pv["verdict"]) if pv else "not run by the paper"])
  out = ["## One model against one: what carries the group claims", ""]
  out += [table(["claim", "pair", "attack", f"Δ at k={rep.k} [95% CI] (pt)", f"Δ at T_eval={rep.t} [95% CI]",
                 "verdict (ours)", "paper: Δ at 4 / 16 [± read-off]", "paper (same rule)"], rows), ""]
  out += ["The first two claims compare the mean of two models with the mean of two others; a group verdict can "
          "rest on one pair. Each row is the same test with one model per side (same bootstrap, same rule). Accuracy "
          "under attack is bounded by clean accuracy (Table 1): a model with low clean accuracy pulls its group "
          "down under every attack.", ""]
  return out


def _paper_gmacs(key) -> str:
  pg = PAPER["accuracy_vs_gmacs"]
  return (f"{pg['gmacs_per_step'][key]:g}/step" if key in pg["gmacs_per_step"] else
          f"{pg['gmacs_total'][key]:g} total" if key in pg["gmacs_total"] else "–")


def _first_compute(rep: Report, m: str):
  return next((r["compute"] for r in rep.runs[m].values() if r["compute"]), None)


def table1(rep: Report) -> list[str]:
  rows = []
  for m in rep.runs:
    cfg, key, c = _config(rep, m), paper_key(m), rep.clean.get(m)
    d, co = registry.describe(cfg.model.to_dict()), _first_compute(rep, m)
    p1, pv1 = PAPER["table1"]["top1"].get(key), PAPER["table1_v1"]["top1"].get(key)
    steps = sorted(set(c["steps"])) if c else []
    rows.append([display(m) + (" (PGD-AT)" if cfg.train.adversarial.enabled else ""),
                 f"{len(c['seeds'])}/{len(rep.configs[m])}" if c else f"0/{len(rep.configs[m])}",
                 "/".join(map(str, steps)) or "–", mean_sd_cell(c["at_train"]) if c else "–",
                 mean_sd_cell(c["at_eval"]) if c else "–",
                 " / ".join(f"{v:.2f}" if v is not None else "–" for v in (p1, pv1)), d["input"], d["gru"],
                 d["attention"], f"{1e3 * co['gmacs_per_step']:.2f}" if co else "–",
                 f"{max(1e3 * co['gmacs_once'], 0.0):.2f}" if co else "–", _paper_gmacs(key)])
  out = ["## Table 1 — the models (paper: AAAI Table 1, table.png)", ""]
  out += [table(["model", "seeds", "train steps", "top-1 % @T_train", "top-1 % @T_eval", "paper top-1 % (AAAI / v1)",
                 "input", "GRU", "attention", "MMACs/step", "MMACs once", "paper GMACs"], rows), ""]
  where = "the whole test split" if not rep.budget.eval_examples else f"{rep.budget.eval_examples} test images"
  out += [f"Ours: clean accuracy on {where}, mean ± sd over the seeds evaluated (seeds: evaluated/planned), at the "
          "training step count and at T_eval; compute from XLA's cost analysis of one image's forward pass "
          "(`rsrnn_jax/evaluation/compute.py`, docs/zoo.md), in millions of MACs (our demo models are ~10⁴× smaller "
          "than the paper's). Input/GRU/attention are read from each model's config.", ""]
  out += health.plateau(rep) + health.policy(rep)
  if rep.figures.get("gmacs"):
    out += ["## Accuracy vs compute as the steps grow (paper: AAAI Fig. 3, recog.png)", "",
            f"![accuracy vs GMACs]({rep.figures['gmacs']})", "",
            "Each point of a glimpse model is one more step (GMACs = once + steps × per step), mean ± sd over seeds; "
            "S3TA is drawn at its training step count and FF-CNN(-AT) once, as in the paper.", ""]
  return out


def _cell(v: dict, i: int) -> str:
  sd = lambda r: f" ± {100 * v[f'{r}_sd'][i]:.1f}" if v["seeds"] > 1 else ""
  return f"{pct(v['k'][i])}{sd('k')} / {pct(v['T'][i])}{sd('T')}"


def under_attack(rep: Report) -> list[str]:
  out = [f"## Accuracy under attack at steps k = {rep.k} and T_eval = {rep.t} (paper: AAAI Fig. 4, adv1.png)", ""]
  header = ["model", "seeds", f"clean @{rep.k} / @{rep.t}"]
  cols = [(a, i, e) for a, acc in rep.acc.items() if acc for i, e in enumerate(next(iter(acc.values()))["eps"])]
  header += [f"{a} ε={e:g}" for a, _, e in cols]
  header += [f"paper: ε={eps_cell(PAPER['adv_accuracy']['epsilons'])} @4 → @16"]
  pa, rows = PAPER["adv_accuracy"], []
  for m in rep.runs:
    first = next((acc[m] for acc in rep.acc.values() if m in acc), None)
    if first is None:
      continue
    key = paper_key(m)
    row = [display(m), "/".join(str(acc[m]["seeds"]) if m in acc else "0" for acc in rep.acc.values()),
           f"{pct(first['clean'][rep.k - 1])} / {pct(first['clean'][rep.t - 1])}"]
    row += [_cell(rep.acc[a][m], i) if m in rep.acc[a] else "–" for a, i, _ in cols]
    row.append(", ".join(f"{a:g}→{b:g}" for a, b in zip(pa["at_k"][key], pa["at_T"][key])) if key in pa["at_k"] else "–")
    rows.append(row)
  out += [table(header, rows), ""]
  out += ["Cells: accuracy (%) at step k / at step T_eval, mean ± sd over seeds (seeds: per attack). Attacks: "
          + "; ".join(f"{a} = {ATTACK_TITLES[a]}" for a in rep.acc) + " (module docstring of "
          "`rsrnn_jax/reproduction/report.py`).", ""]
  if rep.figures.get("bars"):
    out += [f"![accuracy under attack]({rep.figures['bars']})", ""]
  if rep.figures.get("per_step"):
    ps, main = PAPER["adv_accuracy_per_step"], registry.variant(registry.DEFAULT_MODEL)
    out += ["## Accuracy per step under attack (paper: AAAI Fig. 5, adv2.png)", "",
            f"![accuracy per step]({rep.figures['per_step']})", "",
            "Solid: the paper attack (made at step k, the dotted line); dashed: the strongest attack of profile "
            "paper; dotted: adaptive; black dashed: clean; bands: ± sd over seeds. Paper, "
            f"{main.display} at steps 1/4/16: " + ", ".join(
                f"ε={e:g}: {'/'.join(f'{v:g}' for v in vals)}"
                for e, vals in zip(ps["epsilons"], ps["values"][main.paper_key])) + " (read-off ±1.5).", ""]
  return out


def _paper_asr(key) -> list[str]:
  pasr = PAPER["asr"]
  row = ["/".join(f"{v:g}" for v in pasr["untargeted"][key]) if key in pasr["untargeted"] else "–"]
  if key in pasr["targeted"]:
    row.append("/".join(f"{v:g}" for v in pasr["targeted"][key]))
  elif key in pasr["targeted_read_off"]:
    fa = pasr["targeted_read_off"][key]
    row.append("/".join(f"{v:g}" for v in fa["values"]) + f" (ε={eps_cell(fa['epsilons'])}, {fa['source']})")
  else:
    row.append("–")
  return row


def _targeted_asr(rep: Report, m: str) -> list:
  """Targeted ASR at step k per targeted ε, mean over the seeds that ran it."""
  per = [[e["asr"][rep.k - 1] for e in r["attack"]["paper"]["targeted"]["attacks"].get("pgd_step", [])]
         for r in rep.runs[m].values() if r["attack"].get("paper")]
  per = [p for p in per if len(p) == len(rep.teps)]
  return [stats.mean_sd(col)["mean"] for col in zip(*per)] if per else [None] * len(rep.teps)


def asr(rep: Report) -> list[str]:
  untargeted = {a: rep.acc[a] for a in ("paper", "strongest") if rep.acc.get(a)}
  if not untargeted:
    return []
  pasr = PAPER["asr"]
  out = [f"## Attack success rate at step k = {rep.k} (paper: v1 Table 2, tablen2.png)", ""]
  header = ["model"] + [f"U {a} ε={e:g}" for a in untargeted for e in rep.eps] + [f"T paper ε={e:g}" for e in rep.teps]
  header += [f"paper U ε={eps_cell(pasr['untargeted_epsilons'])}", f"paper T ε={eps_cell(pasr['targeted_epsilons'])}"]
  rows = []
  for m in rep.runs:
    if m not in untargeted.get("paper", {}):
      continue
    row = [display(m)]
    for acc in untargeted.values():
      row += [pct(v) for v in acc[m]["asr_k"]] if m in acc else ["–"] * len(rep.eps)
    rows.append(row + [pct(v) for v in _targeted_asr(rep, m)] + _paper_asr(paper_key(m)))
  out += [table(header, rows), ""]
  out += ["ASR (%) over the examples clean-correct at step k, mean over seeds: untargeted (U) = wrong after the "
          "attack, targeted (T) = predicts the target (uniform over the other classes, the same per image for "
          f"every model). Paper: {pasr['source']}; v1's \"Retina\" row is shown for Base-Retina (v1 has no RS-RNN "
          f"row). Note: {pasr['note']}.", ""]
  return out


def sanity_checks(rep: Report) -> list[str]:
  found = [(m, p, [check_readings.run_checks(r["attack"], p) for r in seeds.values() if r["attack"].get(p)])
           for m, seeds in rep.runs.items() for p in rep.budget.profiles]
  found = [f for f in found if f[2]]
  if not found:
    return []
  names = max((cs for _, _, done in found for cs in done), key=len)
  names = [c["name"] for c in names]
  rows, meanings = [], {}
  for m, profile, done in found:
    cells, read = [], check_readings.readings(done)
    meanings.update({(cid, r[1]): r for cid, r in read.items()})
    for i in range(len(names)):
      st = [cs[i]["status"] for cs in done if i < len(cs)]
      bad = sum(x == "fail" for x in st)
      kind = read.get(i + 1, ("", ""))[1]
      cells.append(f"FAIL {bad}/{len(st)} ({kind})" if bad else "–" if not st else
                   st[0].upper() if len(set(st)) == 1 else "/".join(x.upper() for x in st))
    rows.append([display(m), profile, len(done)] + cells)
  out = ["## Sanity checks of each attack suite (gradient masking; rsrnn_jax/robustness/suite.py)", ""]
  out += [table(["model", "profile", "seeds"] + [f"{i + 1}. {nm}" for i, nm in enumerate(names)], rows), ""]
  out += ["A check's status over the seeds (FAIL i/n: it failed on i of the n runs). Details and numbers: "
          "`runs/<model>/seed<s>/attack_<profile>/report.md`. Each FAIL is read as a **finding** (a property of "
          "the model), **covered** (the stronger attack that exposed it is in the worst case the verdicts read) "
          "or a **warning** (that run's numbers under that attack may overstate robustness):", ""]
  out += [f"- check {cid}, {name} ({kind}): {meaning}."
          for (cid, _), (name, kind, meaning) in sorted(meanings.items())]
  return out + [""] if meanings else out


def where_they_look(rep: Report) -> list[str]:
  f = rep.figures
  if not (f.get("fixations") or f.get("gif")):
    return []
  out = ["## Where the models look (paper: v1 Fig. 3a, fign3.png)", ""]
  if f.get("fixations"):
    out += [f"![fixations]({f['fixations']})", "",
            "The same test images for every attention model (each model's first seed): fixations 1–4 in red, "
            "blue, green, black (the paper's colours), argmax policy from the centre. S3TA (covert): its "
            "attention over steps 1–4, each step's peak as a square.", ""]
  if f.get("gif"):
    out += [f"![RS-RNN glimpses]({f['gif']})", "",
            "RS-RNN step by step: the scanpath (red = current fixation) and the retinal image it sees, with its "
            "prediction and probability at that step.", ""]
  return out


def rules() -> list[str]:
  return ["## How the verdicts are computed", "",
          "The rules are code (`rsrnn_jax/reproduction/verdicts.py`, `stats.py`), applied to each run's "
          "per-example results (`attack_<profile>/per_example.npz`: for every attacked image, ε and step, whether "
          "the attacked image is still classified correctly); the same rule judges the paper's Fig. 4 numbers.", "",
          "1. Retina more robust than crops: the mean accuracy of {RS-RNN, Base-Retina} minus that of {DRAM, "
          "GF-Net-m}, averaged over the ε grid; one test at step k and one at step T_eval.",
          "2. Crops more robust than S3TA and FF-CNN: {DRAM, GF-Net-m} minus {S3TA, FF-CNN}, at k and at T_eval.",
          "3. RS-RNN recovers with more glimpses: RS-RNN's accuracy at T_eval minus at k under the same attack. "
          "Judged three ways: the paper attack (PGD-5 on step k), the strongest attack of profile paper (the "
          "per-step worst case, which includes PGD on all T_eval steps) and profile adaptive's worst case "
          "(APGD, BPDA through the fixations, the scanpath search, Square).", "",
          f"Interval: a paired bootstrap ({stats.RESAMPLES} resamples, numpy Generator seed {stats.SEED}): each "
          "resample draws every model's seeds with replacement and the attacked images with replacement, the "
          "same images for every model (they saw the same images); the 95% percentile interval of the statistic. "
          "A test **holds** if the interval is above 0, **fails** if it is below 0 (it excludes the claimed "
          "direction), else it is **undecided**. A claim with tests at k and T_eval holds iff both hold, fails iff "
          f"either fails. The paper's numbers: estimate ± {100 * PAPER_TOLERANCE:g} point per value read off AAAI "
          "Fig. 4, propagated in the worst case (Σ|weight| points). FF-CNN-AT is in the tables, not in a claim "
          "(shown for reference, as in v1 Fig. 4a).", ""]


def budget_and_time(rep: Report) -> list[str]:
  stages = rep.budget.stages
  rows, totals = [], dict.fromkeys(stages, 0.0)
  for m, secs in rep.compute.items():
    done = sum(1 for r in rep.runs[m].values() if all(r["stages"].get(s, {}).get("done") for s in stages))
    rows.append([display(m), f"{done}/{len(rep.runs[m])}", _config(rep, m).train.num_train_steps]
                + [f"{secs[s] / 60:.1f}" if secs[s] else "–" for s in stages] + [f"{sum(secs.values()) / 60:.1f}"])
    for s in stages:
      totals[s] += secs[s]
  rows.append(["**total**", "", ""] + [f"{v / 60:.1f}" for v in totals.values()] + [f"{sum(totals.values()) / 60:.1f}"])
  out = ["## Budget, compute and what is missing", ""]
  out += [table(["model", "runs complete", "train steps"] + [f"{s} min" for s in stages] + ["total min"], rows), ""]
  out += ["Minutes per stage summed over the model's seeds, as recorded in "
          "`runs/<model>/seed<s>/reproduce_stages.json` (a resumed stage adds its parts; a skipped stage keeps the "
          "time of the run that made it). The budget and why: docs/reproduction.md.", ""]
  codes = code_versions(rep.runs)
  if codes:
    out += [f"Code: the stages finished on commit{'s' if len(codes) > 1 else ''} {', '.join(f'`{c}`' for c in codes)}"
            " (each stage record's `code`).", ""]
  devices = stage_devices(rep.runs)
  if devices:
    where = lambda d: "from before the field was recorded" if d == "not recorded" else f"on {d}"
    out += ["Devices: " + ", ".join(f"{n} stage{'s' if n > 1 else ''} {where(d)}" for d, n in devices.items())
            + " (each stage record's `device`; seconds on different devices do not add up to one machine's time).", ""]
  if rep.missing:
    out += [f"**Still missing** ({len(rep.missing)}): " + ", ".join(f"{m}/seed{s}/{st}" for m, s, st in rep.missing)
            + ". The report shows what is done; `make reproduce` runs the rest.", ""]
  else:
    out += ["Nothing is missing: every stage of every run finished with the current config.", ""]
  return out
