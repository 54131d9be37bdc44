"""``OUT/report.md`` and its figures for :mod:`rsrnn_jax.reproduction.run`, from the saved runs only (no JAX).

Reads ``OUT/runs/<model>/{eval/results.json, compute.json, figures.npz, attack_paper/results.json,
reproduce_stages.json}`` and writes, in ``OUT/``:

  report.md                  the tables below, the verdicts and the rules behind them, the budget and run time
  accuracy_vs_gmacs.png      accuracy vs GMACs as the steps grow, ours and the paper's (AAAI Fig. 3, recog.png)
  adv_accuracy_bars.png      accuracy under PGD at steps k and T_eval per ε, per model (AAAI Fig. 4, adv1.png)
  adv_accuracy_per_step.png  accuracy vs step per ε, one panel per model (AAAI Fig. 5, adv2.png)
  fixations.png              the first fixations of every attention model on the same images (v1 Fig. 3a)
  rsrnn_glimpses.gif         RS-RNN's fixations and retinal images step by step (the seed README's animation)

Two attacks are read from each model's attack suite (``attack_paper/results.json``):

* **paper attack** = ``pgd_step``: L∞ PGD, 5 iterations, step ε/3, random start, CE on the logits of step k
  (paper.md §7), the attacked images then run for T_eval steps;
* **strongest attack** = ``worst``: per example and per step, the worst case over every untargeted attack the
  suite ran at that ε: the paper attack, the same PGD on the mean logits of all T_eval steps (full horizon:
  the attacker also targets the later glimpses), FGSM, and PGD with 2× the iterations and 2 more random
  restarts on step k (check 3; the reproduction budget runs it on every attacked example at every ε).

Verdict rules (:func:`clearly_above`, :func:`claim_verdict`; the same code judges the paper's own numbers):
accuracies are compared per ε on the same n attacked examples, with the binomial standard error of a difference
of two accuracies se = sqrt(a(1−a)/n + b(1−b)/n). Series A is *clearly above* series B when the mean difference
over the ε grid exceeds Z = 2 mean standard errors AND A is nowhere clearly below B (A − B ≥ −Z·se at every ε).

1. "retina more robust than crops": the mean accuracy of {RS-RNN, Base-Retina} is clearly above that of
   {DRAM, GF-Net-m}, read at step k AND at step T_eval.
2. "crops more robust than S3TA and FF-CNN": {DRAM, GF-Net-m} clearly above {S3TA, FF-CNN}, at k AND T_eval.
3. "RS-RNN recovers with more glimpses": RS-RNN's accuracy at step T_eval is clearly above its accuracy at
   step k, under the same attack (made at step k for the paper attack; the per-step worst case for the
   strongest).
A claim "holds" when the rule is met, otherwise it "does not hold" (which includes differences within noise).
"""
from __future__ import annotations

import json
import math
import os
import time

import numpy as np

from rsrnn_jax.report import figures as viz
from rsrnn_jax.reproduction.paper_numbers import PAPER
from rsrnn_jax.report.results import _pct as pct, _table as table

DISPLAY = {"rsrnn": "RS-RNN", "base_retina": "Base-Retina", "dram": "DRAM", "gfnet_m": "GF-Net-m",
           "s3ta": "S3TA", "ff_cnn": "FF-CNN", "ff_cnn_at": "FF-CNN-AT"}
# Our two attacks: their entry in the attack suite's results (rsrnn_jax/attacks/suite.py).
ATTACKS = {"paper": "pgd_step", "strongest": "worst"}
ATTACK_TITLES = {"paper": "paper attack (PGD-5 on step k)", "strongest": "strongest attack (worst case)"}
Z = 2.0  # standard errors
CLAIMS = (
    {"id": "retina", "text": "retina more robust than crops", "higher": ("rsrnn", "base_retina"),
     "lower": ("dram", "gfnet_m")},
    {"id": "crops", "text": "crops more robust than S3TA and FF-CNN", "higher": ("dram", "gfnet_m"),
     "lower": ("s3ta", "ff_cnn")},
    {"id": "recovery", "text": "RS-RNN recovers with more glimpses", "model": "rsrnn"},
)
PAPER_EXAMPLES = 5000  # AAAI Figs. 4–5: the 5,000 ImageNet100 validation images (paper.md §7)


# ----------------------------------------------------------------------------------------------------------
# Verdict rules (pure functions of accuracies; tested on hand-made numbers)
# ----------------------------------------------------------------------------------------------------------

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
  """``acc``: {model: {"k": [per ε], "T": [per ε]}} for one attack. Returns {"holds", "tests"} (holds None
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
  """Every claim under every attack: [{claim, attack, holds, tests}]."""
  return [{"claim": c, "attack": a, **claim_verdict(c, acc, n)}
          for c in CLAIMS for a, acc in acc_by_attack.items()]


def paper_accuracies() -> dict:
  """The paper's Fig. 4 accuracies in the form :func:`claim_verdict` takes (fractions)."""
  p = PAPER["adv_accuracy"]
  return {m: {"k": [v / 100 for v in p["at_k"][m]], "T": [v / 100 for v in p["at_T"][m]]} for m in p["at_k"]}


# ----------------------------------------------------------------------------------------------------------
# Loading the runs
# ----------------------------------------------------------------------------------------------------------

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
  """{model: {"k": [per ε], "T": [per ε], "per_step": {ε: [T]}}} under ``attack`` (an ATTACKS key)."""
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


# ----------------------------------------------------------------------------------------------------------
# The model description of Table 1, from the config (not typed in)
# ----------------------------------------------------------------------------------------------------------

def describe_model(model_cfg) -> dict:
  """Input type, GRU type and attention type of a model config, in the words of the paper's Table 1."""
  name = model_cfg["name"]
  if name == "ff_cnn":
    return {"input": "Whole Image", "gru": "-", "attention": "-"}
  if name == "s3ta":
    return {"input": "Whole Image", "gru": "1D (LSTM)", "attention": "Covert"}
  s = model_cfg["sampler"]
  if s["kind"] == "retina":
    kind = "Retinal Image"
  else:
    kind = {1: "Single Patch", 2: "Double Patch"}.get(len(s["scales"]), f"{len(s['scales'])} Patches")
  return {"input": kind, "gru": "2D" if model_cfg["core"] == "conv_gru" else "1D", "attention": "Overt"}


# ----------------------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------------------

def _gmacs_curve(run) -> tuple[list, list] | None:
  ev, co = run["eval"], run["compute"]
  if not ev or not co:
    return None
  acc = ev["accuracy_per_step"]
  return ([co["gmacs_once"] + (t + 1) * co["gmacs_per_step"] for t in range(len(acc))], [100 * a for a in acc])


def figure_accuracy_vs_gmacs(runs, out_dir) -> str | None:
  ours = {}
  for m, r in runs.items():
    curve = _gmacs_curve(r)
    if curve is None:
      continue
    x, y = curve
    if m in ("s3ta", "ff_cnn", "ff_cnn_at"):  # one point, as in the paper (S3TA at its training steps)
      t = r["eval"]["train_glimpses"] if m == "s3ta" else len(y)
      x, y = [x[t - 1]], [y[t - 1]]
    ours[DISPLAY[m]] = (x, y)
  if not ours:
    return None
  paper = {DISPLAY[m]: ([p[0] for p in pts], [p[1] for p in pts])
           for m, pts in PAPER["accuracy_vs_gmacs"]["curves"].items()}
  name = "accuracy_vs_gmacs.png"
  viz.plot_accuracy_vs_gmacs({"ours: cluttered Fashion-MNIST (clean test accuracy, steps 1..T_eval)": ours,
                              "paper: ImageNet100 (AAAI Fig. 3, read-off)": paper}, os.path.join(out_dir, name))
  return name


def figure_adv_bars(acc_by_attack, eps, k, t, out_dir) -> str | None:
  panels = []
  for attack, acc in acc_by_attack.items():
    if acc:
      for r, step in (("k", k), ("T", t)):
        panels.append((f"ours, {ATTACK_TITLES[attack]}: step {step}", eps,
                       {DISPLAY[m]: v[r] for m, v in acc.items()}))
  if not panels:
    return None
  p = PAPER["adv_accuracy"]
  for r, step in (("at_k", p["attack_step"]), ("at_T", p["eval_steps"])):
    panels.append((f"paper (ImageNet100, AAAI Fig. 4): step {step}", p["epsilons"],
                   {DISPLAY[m]: [v / 100 for v in p[r][m]] for m in p[r]}))
  name = "adv_accuracy_bars.png"
  viz.plot_bar_panels(panels, os.path.join(out_dir, name), ncols=2,
                      title=f"Accuracy under untargeted L∞ PGD made at step k = {k}, read at steps k and "
                            f"T_eval = {t}")
  return name


def figure_adv_per_step(runs, acc_by_attack, k, out_dir) -> str | None:
  paper_acc, strongest = acc_by_attack.get("paper", {}), acc_by_attack.get("strongest", {})
  if not paper_acc:
    return None
  panels = {DISPLAY[m]: v["per_step"] for m, v in paper_acc.items()}
  dashed = {DISPLAY[m]: v["per_step"] for m, v in strongest.items()}
  clean = {DISPLAY[m]: runs[m]["attack"]["clean"]["accuracy_per_step"] for m in paper_acc}
  name = "adv_accuracy_per_step.png"
  viz.plot_adv_accuracy_per_step(panels, os.path.join(out_dir, name), clean=clean, attack_step=k, dashed=dashed,
                                 ncols=4, styles=("paper attack", "strongest"),
                                 title="Accuracy per step under untargeted PGD made at step k (dotted line)")
  return name


def figure_fixations(runs, out_dir) -> str | None:
  rows, images, titles = {}, None, None
  for m, r in runs.items():
    f = r["figures"]
    if f is None or not ("fixations" in f or "attention" in f):
      continue
    images = f["images"] if images is None else images
    names = [str(s) for s in f["class_names"]]
    titles = titles or [names[int(y)] for y in f["labels"]]
    rows[DISPLAY[m]] = {"fixations": f["fixations"]} if "fixations" in f else {"attention": f["attention"]}
  if not rows:
    return None
  name = "fixations.png"
  viz.plot_fixations_by_model(images, rows, os.path.join(out_dir, name), titles=titles)
  return name


def figure_gif(runs, out_dir, model: str = "rsrnn", max_images: int = 4) -> str | None:
  f = (runs.get(model) or {}).get("figures")
  if f is None or "glimpses" not in f:
    return None
  n = min(max_images, len(f["images"]))
  frames = viz.glimpse_frames(f["images"][:n], f["fixations"][:, :n], f["glimpses"][:, :n],
                              probs=f["probs"][:, :n], labels=f["labels"][:n],
                              class_names=[str(s) for s in f["class_names"]])
  name = f"{model}_glimpses.gif"
  viz.save_gif(frames, os.path.join(out_dir, name))
  return name


# ----------------------------------------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------------------------------------

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


def verdict_section(ours: list, paper: list, n: int, k: int, t: int) -> list[str]:
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
  out = [table(["claim", "attack", f"ours: Δ at step k={k} (pt)", f"ours: Δ at T_eval={t} (pt)", "verdict (ours)",
                "paper: Δ at 4 / 16 (pt, AAAI Fig. 4)", "paper (same rule)"], rows), ""]
  out.append(f"Δ: the mean over the ε grid of (first group − second group) accuracy, in points; for the "
             f"recovery claim RS-RNN's accuracy at T_eval minus at k (one column). Margin: {Z:g} mean standard "
             f"errors (n = {n} attacked examples here, {PAPER_EXAMPLES} for the paper). Rules: see "
             "\"How the verdicts are computed\" below.")
  return out


def markdown(runs, configs, budget, figures: dict, verdict_rows, paper_rows) -> str:
  any_cfg = next(iter(configs.values()))
  first_attack = next((r["attack"] for r in runs.values() if r["attack"]), None)
  a = any_cfg.attack  # what the runs will use, until one exists
  k = first_attack["attack_step"] if first_attack else int(a.attack_step)
  t = first_attack["eval_steps"] if first_attack else int(a.eval_steps)
  n = min((r["attack"]["num_examples"] for r in runs.values() if r["attack"]), default=int(a.num_examples))
  eps = first_attack["untargeted"]["epsilons"] if first_attack else list(a.epsilons)
  teps = first_attack["targeted"]["epsilons"] if first_attack else list(a.targeted_epsilons)
  total_s = sum(s.get("seconds", 0.0) for r in runs.values() for s in r["stages"].values())
  out = ["# Reproduction: RS-RNN and its baselines on cluttered Fashion-MNIST", ""]
  out.append(f"Written by `python -m rsrnn_jax.reproduction.run` (`make reproduce`) on {time.strftime('%Y-%m-%d %H:%M')}. "
             f"Budget `{budget.name}`: {budget.describe()}. Stage time summed over the models: "
             f"{total_s / 60:.1f} min (table at the end).")
  out.append("")
  data_cfg = next((r["eval"]["config"]["data"] for r in runs.values() if r["eval"]), any_cfg.data.to_dict())
  out.append(f"Data: `{data_cfg['name']}` ({data_cfg.get('canvas_size')}² canvas, 10 classes, chance 10%). "
             f"Attacks: untargeted ε = {_eps(eps)}, targeted ε = {_eps(teps)} (pixels in [0, 1]), made at step "
             f"k = {k}, images run for T_eval = {t} steps, on the first {n} test images.")
  out.append("")
  out.append(f"**Columns marked \"paper\" are the authors' published numbers** ({PAPER['source']}), transcribed "
             "in `rsrnn_jax/reproduction/paper_numbers.py`: ImageNet100 at 336²/224², ε in 1e-3..1e-2, attack at step 4 "
             "(AAAI) or 12 (v1). They are not our results and not on our data: compare orderings and trends, "
             "not values.")
  out.append("")
  if budget.name == "quick":
    out += ["> **Quick budget: a smoke test. These numbers mean nothing.**", ""]

  out += ["## The paper's claims", ""]
  out += verdict_section(verdict_rows, paper_rows, n, k, t)
  out.append("")

  # Table 1.
  out += ["## Table 1 — the models (paper: AAAI Table 1, table.png)", ""]
  rows = []
  for m, r in runs.items():
    cfg = configs[m]
    d = describe_model(cfg.model.to_dict())
    ev, co = r["eval"], r["compute"]
    acc = ev["accuracy_per_step"] if ev else None
    t_train = int(cfg.train.num_glimpses)
    p1, pv1 = PAPER["table1"]["top1"].get(m), PAPER["table1_v1"]["top1"].get(m)
    paper_top1 = " / ".join(f"{v:.2f}" if v is not None else "–" for v in (p1, pv1))
    pg = PAPER["accuracy_vs_gmacs"]
    paper_g = (f"{pg['gmacs_per_step'][m]:g}/step" if m in pg["gmacs_per_step"] else
               f"{pg['gmacs_total'][m]:g} total" if m in pg["gmacs_total"] else "–")
    name = DISPLAY[m] + (" (PGD-AT)" if cfg.train.adversarial.enabled else "")
    rows.append([name, pct(acc[min(t_train, len(acc)) - 1]) if acc else "–", pct(acc[-1]) if acc else "–",
                 paper_top1, d["input"], d["gru"], d["attention"],
                 f"{1e3 * co['gmacs_per_step']:.2f}" if co else "–",
                 f"{max(1e3 * co['gmacs_once'], 0.0):.2f}" if co else "–",  # −0.0x: rounding (docs/zoo.md)
                 paper_g])
  out.append(table(["model", "top-1 % @T_train", f"top-1 % @T_eval", "paper top-1 % (AAAI / v1)", "input", "GRU",
                    "attention", "MMACs/step", "MMACs once", "paper GMACs"], rows))
  out.append("")
  out.append(f"Ours: clean accuracy on {'the whole test split' if not budget.eval_examples else f'{budget.eval_examples} test images'} "
             f"at the training step count and at T_eval; compute from XLA's cost analysis of one image's forward "
             "pass (`rsrnn_jax/models/compute.py`, docs/zoo.md), in millions of MACs (our demo models are ~10⁴× smaller "
             "than the paper's). Input/GRU/attention are read from each model's config.")
  out.append("")
  if figures.get("gmacs"):
    out += ["## Accuracy vs compute as the steps grow (paper: AAAI Fig. 3, recog.png)", "",
            f"![accuracy vs GMACs]({figures['gmacs']})", "",
            "Each point of a glimpse model is one more step (GMACs = once + steps × per step); S3TA is drawn at its "
            "training step count and FF-CNN(-AT) once, as in the paper.", ""]

  # Fig. 4: accuracy under attack at k and T.
  acc_paper, acc_strong = attack_accuracies(runs, "paper"), attack_accuracies(runs, "strongest")
  if acc_paper:
    out += [f"## Accuracy under attack at steps k = {k} and T_eval = {t} (paper: AAAI Fig. 4, adv1.png)", ""]
    header = ["model", f"clean @{k} / @{t}"]
    header += [f"paper attack ε={e:g}" for e in eps] + [f"strongest ε={e:g}" for e in eps]
    header.append(f"paper: ε={_eps(PAPER['adv_accuracy']['epsilons'])} @4 → @16")
    rows = []
    pa = PAPER["adv_accuracy"]
    for m, r in runs.items():
      if m not in acc_paper:
        continue
      clean = r["attack"]["clean"]["accuracy_per_step"]
      row = [DISPLAY[m], f"{pct(clean[k - 1])} / {pct(clean[t - 1])}"]
      row += [f"{pct(a)} / {pct(b)}" for a, b in zip(acc_paper[m]["k"], acc_paper[m]["T"])]
      s = acc_strong.get(m)
      row += ([f"{pct(a)} / {pct(b)}" for a, b in zip(s["k"], s["T"])] if s else ["–"] * len(eps))
      row.append(", ".join(f"{a:g}→{b:g}" for a, b in zip(pa["at_k"][m], pa["at_T"][m])) if m in pa["at_k"] else "–")
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
      out += ["## Accuracy per step under attack (paper: AAAI Fig. 5, adv2.png)", "",
              f"![accuracy per step]({figures['per_step']})", "",
              "Solid: the paper attack (made at step k, the dotted line); dashed: the strongest attack; black "
              "dashed: clean. Paper, RS-RNN at steps 1/4/16: " + ", ".join(
                  f"ε={e:g}: {'/'.join(f'{v:g}' for v in vals)}" for e, vals in zip(
                      PAPER["adv_accuracy_per_step"]["epsilons"], PAPER["adv_accuracy_per_step"]["values"]["rsrnn"]))
              + " (read-off ±1.5).", ""]

    # v1 Table 2: ASR.
    out += [f"## Attack success rate at step k = {k} (paper: v1 Table 2, tablen2.png)", ""]
    pasr = PAPER["asr"]
    header = ["model"] + [f"U paper ε={e:g}" for e in eps] + [f"U strongest ε={e:g}" for e in eps]
    header += [f"T paper ε={e:g}" for e in teps]
    header += [f"paper U ε={_eps(pasr['untargeted_epsilons'])}", f"paper T ε={_eps(pasr['targeted_epsilons'])}"]
    rows = []
    for m, r in runs.items():
      if m not in acc_paper:
        continue
      tgt = r["attack"]["targeted"]["attacks"].get("pgd_step", [])
      row = [DISPLAY[m]] + [pct(v) for v in acc_paper[m]["asr_k"]]
      row += [pct(v) for v in acc_strong[m]["asr_k"]] if m in acc_strong else ["–"] * len(eps)
      row += [pct(e["asr"][k - 1]) for e in tgt] + ["–"] * (len(teps) - len(tgt))
      row.append("/".join(f"{v:g}" for v in pasr["untargeted"][m]) if m in pasr["untargeted"] else "–")
      if m in pasr["targeted"]:
        row.append("/".join(f"{v:g}" for v in pasr["targeted"][m]))
      elif m == "ff_cnn_at":
        fa = pasr["targeted_ff_cnn_at"]
        row.append("/".join(f"{v:g}" for v in fa["values"]) + f" (ε={_eps(fa['epsilons'])}, Fig. 4a)")
      else:
        row.append("–")
      rows.append(row)
    out.append(table(header, rows))
    out.append("")
    out.append("ASR (%) over the examples clean-correct at step k: untargeted (U) = wrong after the attack, "
               "targeted (T) = predicts the target (uniform over the other classes, the same per image for every "
               f"model). Paper: {pasr['source']}; v1's \"Retina\" row is shown for Base-Retina (v1 has no RS-RNN "
               f"row). Note: {pasr['note']}.")
    out.append("")

  # Sanity checks.
  checked = {m: r["attack"]["checks"] for m, r in runs.items() if r["attack"]}
  if checked:
    names = [c["name"] for c in next(iter(checked.values()))]
    out += ["## Sanity checks of each attack suite (gradient masking; rsrnn_jax/attacks/suite.py)", ""]
    out.append(table(["model"] + [f"{i + 1}. {nm}" for i, nm in enumerate(names)],
                     [[DISPLAY[m]] + [c["status"].upper() for c in cs] for m, cs in checked.items()]))
    out.append("")
    out.append("Details and numbers: `runs/<model>/attack_paper/report.md`. A FAIL means that model's numbers under "
               "attack are not to be trusted as they stand (e.g. check 3: the 5-iteration attack had not converged; "
               "the strongest attack includes the converged one).")
    out.append("")

  if figures.get("fixations") or figures.get("gif"):
    out += ["## Where the models look (paper: v1 Fig. 3a, fign3.png)", ""]
    if figures.get("fixations"):
      out += [f"![fixations]({figures['fixations']})", "",
              "The same test images for every attention model: fixations 1–4 in red, blue, green, black (the "
              "paper's colours), argmax policy from the centre. S3TA (covert): its attention over steps 1–4, "
              "each step's peak as a square.", ""]
    if figures.get("gif"):
      out += [f"![RS-RNN glimpses]({figures['gif']})", "",
              "RS-RNN step by step: the scanpath (red = current fixation) and the retinal image it sees, with its "
              "prediction and probability at that step.", ""]

  out += ["## How the verdicts are computed", ""]
  out.append("The rules are code (`rsrnn_jax/reproduction/report.py`: `clearly_above`, `claim_verdict`), applied to the "
             "numbers above; the same code judges the paper's Fig. 4 numbers. Per ε, accuracies on the same n "
             "attacked examples; the binomial standard error of a difference is se = sqrt(a(1−a)/n + b(1−b)/n). "
             f"Series A is clearly above series B when mean_ε(A − B) > {Z:g}·mean_ε(se) and A − B ≥ −{Z:g}·se at "
             "every ε.")
  out.append("")
  out += ["1. Retina more robust than crops: the mean accuracy of {RS-RNN, Base-Retina} clearly above that of "
          "{DRAM, GF-Net-m}, read at step k and at step T_eval (both needed).",
          "2. Crops more robust than S3TA and FF-CNN: {DRAM, GF-Net-m} clearly above {S3TA, FF-CNN}, at k and T_eval.",
          "3. RS-RNN recovers with more glimpses: RS-RNN's accuracy at T_eval clearly above its accuracy at k under "
          "the same attack (for the strongest attack: the per-step worst case, which includes an attack on all "
          "T_eval steps).",
          "", "\"Does not hold\" means the measured numbers do not meet the rule, which includes differences within "
          "the noise margin. FF-CNN-AT is not part of any claim (shown for reference, as in v1 Fig. 4a).", ""]

  # Budget and time.
  out += ["## Budget and run time", ""]
  rows = []
  for m, r in runs.items():
    st = r["stages"]
    secs = [st.get(s, {}).get("seconds") for s in ("train", "eval", "attack")]
    rows.append([DISPLAY[m], configs[m].train.num_train_steps] + [f"{v / 60:.1f}" if v else "–" for v in secs]
                + [f"{sum(v or 0 for v in secs) / 60:.1f}"])
  out.append(table(["model", "train steps", "train min", "eval min", "attack min", "total min"], rows))
  out.append("")
  out.append("Stage wall-clock as recorded in `runs/<model>/reproduce_stages.json` (a resumed stage adds its "
             "parts; a skipped stage keeps the time of the run that made it). The budget and the measurements "
             "behind it: docs/reproduction.md.")
  out.append("")
  return "\n".join(out)


def write(out_dir: str, configs: dict, budget) -> str:
  """Loads the runs of ``configs`` (model → config) from ``out_dir/runs``, draws the figures, writes
  ``out_dir/report.md``; returns its path."""
  runs = load_runs(out_dir, list(configs))
  acc_by_attack = {a: attack_accuracies(runs, a) for a in ATTACKS}
  first = next((r["attack"] for r in runs.values() if r["attack"]), None)
  n = min((r["attack"]["num_examples"] for r in runs.values() if r["attack"]), default=0)
  ours = verdicts(acc_by_attack, max(n, 1))
  paper = verdicts({"paper": paper_accuracies()}, PAPER_EXAMPLES)
  figures = {"gmacs": figure_accuracy_vs_gmacs(runs, out_dir), "fixations": figure_fixations(runs, out_dir),
             "gif": figure_gif(runs, out_dir)}
  if first:
    k, t, eps = first["attack_step"], first["eval_steps"], first["untargeted"]["epsilons"]
    figures["bars"] = figure_adv_bars(acc_by_attack, eps, k, t, out_dir)
    figures["per_step"] = figure_adv_per_step(runs, acc_by_attack, k, out_dir)
  path = os.path.join(out_dir, "report.md")
  with open(path, "w") as f:
    f.write(markdown(runs, configs, budget, figures, ours, paper))
  with open(os.path.join(out_dir, "verdicts.json"), "w") as f:
    json.dump({"ours": ours, "paper": paper, "n": n, "z": Z}, f, indent=1, default=str)
  return path
