"""The sections of ``report.md`` (:mod:`rsrnn_jax.reproduction.report`), one function each returning Markdown
lines. ``Setup`` holds what every section shares: the attack step k, T_eval, the attacked examples n and the
ε grids (from the first attack results, or from the config until a run has them)."""
from __future__ import annotations

import dataclasses
import time

from rsrnn_jax.data import registry as datasets
from rsrnn_jax.models import registry
from rsrnn_jax.report.results import _pct as pct, _table as table
from rsrnn_jax.reproduction.paper_numbers import PAPER
from rsrnn_jax.reproduction.runs import ATTACK_TITLES, attack_accuracies, display, paper_key
from rsrnn_jax.reproduction.verdicts import PAPER_EXAMPLES, Z


@dataclasses.dataclass(frozen=True)
class Setup:
  k: int           # attack step
  t: int           # T_eval
  n: int           # attacked examples
  eps: list        # untargeted ε
  teps: list       # targeted ε


def setup(runs, configs) -> Setup:
  a = next(iter(configs.values())).attack  # what the runs will use, until one exists
  first = next((r["attack"] for r in runs.values() if r["attack"]), None)
  n = min((r["attack"]["num_examples"] for r in runs.values() if r["attack"]), default=int(a.num_examples))
  if first:
    return Setup(first["attack_step"], first["eval_steps"], n, first["untargeted"]["epsilons"],
                 first["targeted"]["epsilons"])
  return Setup(int(a.attack_step), int(a.eval_steps), n, list(a.epsilons), list(a.targeted_epsilons))


def _signed(v) -> str:
  return "–" if v is None else f"{100 * v:+.1f}"


def _eps(values) -> str:
  return "/".join(f"{e:g}" for e in values)


def _verdict_word(holds) -> str:
  return "not evaluated" if holds is None else ("**holds**" if holds else "**does not hold**")


def _test_cell(test) -> str:
  if not test:
    return "–"
  return f"{_signed(test['mean_diff'])} (margin {100 * test['margin']:.1f})"


def header(runs, configs, budget, s: Setup) -> list[str]:
  any_cfg = next(iter(configs.values()))
  total_s = sum(st.get("seconds", 0.0) for r in runs.values() for st in r["stages"].values())
  data_cfg = next((r["eval"]["config"]["data"] for r in runs.values() if r["eval"]), any_cfg.data.to_dict())
  classes = datasets.num_classes(data_cfg)
  out = [f"# Reproduction: {display(registry.DEFAULT_MODEL)} and its baselines on cluttered Fashion-MNIST", ""]
  out.append(f"Written by `python -m rsrnn_jax.reproduction.run` (`make reproduce`) on "
             f"{time.strftime('%Y-%m-%d %H:%M')}. Budget `{budget.name}`: {budget.describe()}. Stage time summed "
             f"over the models: {total_s / 60:.1f} min (table at the end).")
  out.append("")
  out.append(f"Data: `{data_cfg['name']}` ({data_cfg.get('canvas_size')}² canvas, {classes} classes, chance "
             f"{100 / classes:g}%). Attacks: untargeted ε = {_eps(s.eps)}, targeted ε = {_eps(s.teps)} (pixels in "
             f"[0, 1]), made at step k = {s.k}, images run for T_eval = {s.t} steps, on the first {s.n} test images.")
  out.append("")
  out.append(f"**Columns marked \"paper\" are the authors' published numbers** ({PAPER['source']}), transcribed "
             "in `rsrnn_jax/reproduction/paper_numbers.py`: ImageNet100 at 336²/224², ε in 1e-3..1e-2, attack at "
             "step 4 (AAAI) or 12 (v1). They are not our results and not on our data: compare orderings and "
             "trends, not values.")
  out.append("")
  if budget.name == "quick":
    out += ["> **Quick budget: a smoke test. These numbers mean nothing.**", ""]
  return out


def claims(ours: list, paper: list, s: Setup) -> list[str]:
  paper_by_claim = {v["claim"]["id"]: v for v in paper}
  rows = []
  for v in ours:
    tests = v["tests"]
    pv = paper_by_claim[v["claim"]["id"]] if v["attack"] == "paper" else None
    if "model" in v["claim"]:
      cells = [_test_cell(tests.get("T vs k")), "(one column)"]
      pcell = _test_cell(pv["tests"].get("T vs k")) if pv else "–"
    else:
      cells = [_test_cell(tests.get("k")), _test_cell(tests.get("T"))]
      pcell = (f"{_test_cell(pv['tests'].get('k'))} / {_test_cell(pv['tests'].get('T'))}" if pv else "–")
    rows.append([v["claim"]["text"], ATTACK_TITLES[v["attack"]], *cells, _verdict_word(v["holds"]),
                 pcell, _verdict_word(pv["holds"]) if pv else "not run by the paper"])
  out = ["## The paper's claims", ""]
  out += [table(["claim", "attack", f"ours: Δ at step k={s.k} (pt)", f"ours: Δ at T_eval={s.t} (pt)",
                 "verdict (ours)", "paper: Δ at 4 / 16 (pt, AAAI Fig. 4)", "paper (same rule)"], rows), ""]
  out.append(f"Δ: the mean over the ε grid of (first group − second group) accuracy, in points; for the "
             f"recovery claim RS-RNN's accuracy at T_eval minus at k (one column). Margin: {Z:g} mean standard "
             f"errors (n = {s.n} attacked examples here, {PAPER_EXAMPLES} for the paper). Rules: see "
             "\"How the verdicts are computed\" below.")
  out.append("")
  return out


def _paper_gmacs(key) -> str:
  pg = PAPER["accuracy_vs_gmacs"]
  return (f"{pg['gmacs_per_step'][key]:g}/step" if key in pg["gmacs_per_step"] else
          f"{pg['gmacs_total'][key]:g} total" if key in pg["gmacs_total"] else "–")


def table1(runs, configs, budget, figures: dict) -> list[str]:
  rows = []
  for m, r in runs.items():
    cfg, key = configs[m], paper_key(m)
    d = registry.describe(cfg.model.to_dict())
    ev, co = r["eval"], r["compute"]
    acc = ev["accuracy_per_step"] if ev else None
    t_train = int(cfg.train.num_glimpses)
    p1, pv1 = PAPER["table1"]["top1"].get(key), PAPER["table1_v1"]["top1"].get(key)
    paper_top1 = " / ".join(f"{v:.2f}" if v is not None else "–" for v in (p1, pv1))
    name = display(m) + (" (PGD-AT)" if cfg.train.adversarial.enabled else "")
    rows.append([name, pct(acc[min(t_train, len(acc)) - 1]) if acc else "–", pct(acc[-1]) if acc else "–",
                 paper_top1, d["input"], d["gru"], d["attention"],
                 f"{1e3 * co['gmacs_per_step']:.2f}" if co else "–",
                 f"{max(1e3 * co['gmacs_once'], 0.0):.2f}" if co else "–",  # −0.0x: rounding (docs/zoo.md)
                 _paper_gmacs(key)])
  out = ["## Table 1 — the models (paper: AAAI Table 1, table.png)", ""]
  out.append(table(["model", "top-1 % @T_train", "top-1 % @T_eval", "paper top-1 % (AAAI / v1)", "input", "GRU",
                    "attention", "MMACs/step", "MMACs once", "paper GMACs"], rows))
  out.append("")
  where = "the whole test split" if not budget.eval_examples else f"{budget.eval_examples} test images"
  out.append(f"Ours: clean accuracy on {where} at the training step count and at T_eval; compute from XLA's cost "
             "analysis of one image's forward pass (`rsrnn_jax/models/compute.py`, docs/zoo.md), in millions of "
             "MACs (our demo models are ~10⁴× smaller than the paper's). Input/GRU/attention are read from each "
             "model's config.")
  out.append("")
  if figures.get("gmacs"):
    out += ["## Accuracy vs compute as the steps grow (paper: AAAI Fig. 3, recog.png)", "",
            f"![accuracy vs GMACs]({figures['gmacs']})", "",
            "Each point of a glimpse model is one more step (GMACs = once + steps × per step); S3TA is drawn at its "
            "training step count and FF-CNN(-AT) once, as in the paper.", ""]
  return out


def under_attack(runs, figures: dict, s: Setup) -> list[str]:
  acc_paper, acc_strong = attack_accuracies(runs, "paper"), attack_accuracies(runs, "strongest")
  k, t = s.k, s.t
  out = [f"## Accuracy under attack at steps k = {k} and T_eval = {t} (paper: AAAI Fig. 4, adv1.png)", ""]
  header = ["model", f"clean @{k} / @{t}"]
  header += [f"paper attack ε={e:g}" for e in s.eps] + [f"strongest ε={e:g}" for e in s.eps]
  header.append(f"paper: ε={_eps(PAPER['adv_accuracy']['epsilons'])} @4 → @16")
  rows = []
  pa = PAPER["adv_accuracy"]
  for m, r in runs.items():
    if m not in acc_paper:
      continue
    clean, key = r["attack"]["clean"]["accuracy_per_step"], paper_key(m)
    row = [display(m), f"{pct(clean[k - 1])} / {pct(clean[t - 1])}"]
    row += [f"{pct(a)} / {pct(b)}" for a, b in zip(acc_paper[m]["k"], acc_paper[m]["T"])]
    st = acc_strong.get(m)
    row += ([f"{pct(a)} / {pct(b)}" for a, b in zip(st["k"], st["T"])] if st else ["–"] * len(s.eps))
    row.append(", ".join(f"{a:g}→{b:g}" for a, b in zip(pa["at_k"][key], pa["at_T"][key]))
               if key in pa["at_k"] else "–")
    rows.append(row)
  out.append(table(header, rows))
  out.append("")
  out.append(f"Cells: accuracy (%) at step k / at step T_eval. Paper attack: {ATTACK_TITLES['paper']}; "
             "strongest: the per-example, per-step worst case over every untargeted attack of the suite "
             "(module docstring of `rsrnn_jax/reproduction/report.py`).")
  out.append("")
  if figures.get("bars"):
    out += [f"![accuracy under attack]({figures['bars']})", ""]
  if figures.get("per_step"):
    ps = PAPER["adv_accuracy_per_step"]
    main = registry.variant(registry.DEFAULT_MODEL)
    out += ["## Accuracy per step under attack (paper: AAAI Fig. 5, adv2.png)", "",
            f"![accuracy per step]({figures['per_step']})", "",
            "Solid: the paper attack (made at step k, the dotted line); dashed: the strongest attack; black "
            f"dashed: clean. Paper, {main.display} at steps 1/4/16: " + ", ".join(
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
    row.append("/".join(f"{v:g}" for v in fa["values"]) + f" (ε={_eps(fa['epsilons'])}, {fa['source']})")
  else:
    row.append("–")
  return row


def asr(runs, s: Setup) -> list[str]:
  acc_paper, acc_strong = attack_accuracies(runs, "paper"), attack_accuracies(runs, "strongest")
  out = [f"## Attack success rate at step k = {s.k} (paper: v1 Table 2, tablen2.png)", ""]
  pasr = PAPER["asr"]
  header = ["model"] + [f"U paper ε={e:g}" for e in s.eps] + [f"U strongest ε={e:g}" for e in s.eps]
  header += [f"T paper ε={e:g}" for e in s.teps]
  header += [f"paper U ε={_eps(pasr['untargeted_epsilons'])}", f"paper T ε={_eps(pasr['targeted_epsilons'])}"]
  rows = []
  for m, r in runs.items():
    if m not in acc_paper:
      continue
    tgt = r["attack"]["targeted"]["attacks"].get("pgd_step", [])
    row = [display(m)] + [pct(v) for v in acc_paper[m]["asr_k"]]
    row += [pct(v) for v in acc_strong[m]["asr_k"]] if m in acc_strong else ["–"] * len(s.eps)
    row += [pct(e["asr"][s.k - 1]) for e in tgt] + ["–"] * (len(s.teps) - len(tgt))
    rows.append(row + _paper_asr(paper_key(m)))
  out.append(table(header, rows))
  out.append("")
  out.append("ASR (%) over the examples clean-correct at step k: untargeted (U) = wrong after the attack, "
             "targeted (T) = predicts the target (uniform over the other classes, the same per image for every "
             f"model). Paper: {pasr['source']}; v1's \"Retina\" row is shown for Base-Retina (v1 has no RS-RNN "
             f"row). Note: {pasr['note']}.")
  out.append("")
  return out


def sanity_checks(runs) -> list[str]:
  checked = {m: r["attack"]["checks"] for m, r in runs.items() if r["attack"]}
  if not checked:
    return []
  names = [c["name"] for c in next(iter(checked.values()))]
  out = ["## Sanity checks of each attack suite (gradient masking; rsrnn_jax/attacks/suite.py)", ""]
  out.append(table(["model"] + [f"{i + 1}. {nm}" for i, nm in enumerate(names)],
                   [[display(m)] + [c["status"].upper() for c in cs] for m, cs in checked.items()]))
  out.append("")
  out.append("Details and numbers: `runs/<model>/attack_paper/report.md`. A FAIL means that model's numbers under "
             "attack are not to be trusted as they stand (e.g. check 3: the 5-iteration attack had not converged; "
             "the strongest attack includes the converged one).")
  out.append("")
  return out


def where_they_look(figures: dict) -> list[str]:
  if not (figures.get("fixations") or figures.get("gif")):
    return []
  out = ["## Where the models look (paper: v1 Fig. 3a, fign3.png)", ""]
  if figures.get("fixations"):
    out += [f"![fixations]({figures['fixations']})", "",
            "The same test images for every attention model: fixations 1–4 in red, blue, green, black (the "
            "paper's colours), argmax policy from the centre. S3TA (covert): its attention over steps 1–4, "
            "each step's peak as a square.", ""]
  if figures.get("gif"):
    out += [f"![RS-RNN glimpses]({figures['gif']})", "",
            "RS-RNN step by step: the scanpath (red = current fixation) and the retinal image it sees, with its "
            "prediction and probability at that step.", ""]
  return out


def rules() -> list[str]:
  out = ["## How the verdicts are computed", ""]
  out.append("The rules are code (`rsrnn_jax/reproduction/verdicts.py`: `clearly_above`, `claim_verdict`), "
             "applied to the numbers above; the same code judges the paper's Fig. 4 numbers. Per ε, accuracies on "
             "the same n attacked examples; the binomial standard error of a difference is "
             f"se = sqrt(a(1−a)/n + b(1−b)/n). Series A is clearly above series B when mean_ε(A − B) > "
             f"{Z:g}·mean_ε(se) and A − B ≥ −{Z:g}·se at every ε.")
  out.append("")
  out += ["1. Retina more robust than crops: the mean accuracy of {RS-RNN, Base-Retina} clearly above that of "
          "{DRAM, GF-Net-m}, read at step k and at step T_eval (both needed).",
          "2. Crops more robust than S3TA and FF-CNN: {DRAM, GF-Net-m} clearly above {S3TA, FF-CNN}, at k and T_eval.",
          "3. RS-RNN recovers with more glimpses: RS-RNN's accuracy at T_eval clearly above its accuracy at k under "
          "the same attack (for the strongest attack: the per-step worst case, which includes an attack on all "
          "T_eval steps).",
          "", "\"Does not hold\" means the measured numbers do not meet the rule, which includes differences within "
          "the noise margin. FF-CNN-AT is not part of any claim (shown for reference, as in v1 Fig. 4a).", ""]
  return out


def budget_and_time(runs, configs) -> list[str]:
  rows = []
  for m, r in runs.items():
    st = r["stages"]
    secs = [st.get(stage, {}).get("seconds") for stage in ("train", "eval", "attack")]
    rows.append([display(m), configs[m].train.num_train_steps] + [f"{v / 60:.1f}" if v else "–" for v in secs]
                + [f"{sum(v or 0 for v in secs) / 60:.1f}"])
  out = ["## Budget and run time", ""]
  out.append(table(["model", "train steps", "train min", "eval min", "attack min", "total min"], rows))
  out.append("")
  out.append("Stage wall-clock as recorded in `runs/<model>/reproduce_stages.json` (a resumed stage adds its "
             "parts; a skipped stage keeps the time of the run that made it). The budget and the measurements "
             "behind it: docs/reproduction.md.")
  out.append("")
  return out
