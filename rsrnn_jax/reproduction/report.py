"""``OUT/report.md`` and its figures for :mod:`rsrnn_jax.reproduction.run`, from the saved runs only (no JAX).

The parts: :mod:`~rsrnn_jax.reproduction.runs` reads the runs, :mod:`~rsrnn_jax.reproduction.verdicts` judges the
claims, :mod:`~rsrnn_jax.reproduction.figures` draws, :mod:`~rsrnn_jax.reproduction.sections` writes the Markdown.

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

Verdict rules (:mod:`rsrnn_jax.reproduction.verdicts`: ``clearly_above``, ``claim_verdict``; the same code judges
the paper's own numbers):
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
import os

from rsrnn_jax.reproduction import figures as fig
from rsrnn_jax.reproduction import sections
from rsrnn_jax.reproduction.runs import ATTACKS, attack_accuracies, load_runs
from rsrnn_jax.reproduction.verdicts import PAPER_EXAMPLES, Z, by_paper_key, paper_accuracies, verdicts


def markdown(runs, configs, budget, figures: dict, verdict_rows, paper_rows) -> str:
  """The report: every section of :mod:`rsrnn_jax.reproduction.sections` in order."""
  s = sections.setup(runs, configs)
  out = sections.header(runs, configs, budget, s)
  out += sections.claims(verdict_rows, paper_rows, s)
  out += sections.table1(runs, configs, budget, figures)
  if attack_accuracies(runs, "paper"):
    out += sections.under_attack(runs, figures, s)
    out += sections.asr(runs, s)
  out += sections.sanity_checks(runs)
  out += sections.where_they_look(figures)
  out += sections.rules()
  out += sections.budget_and_time(runs, configs)
  return "\n".join(out)


def write(out_dir: str, configs: dict, budget) -> str:
  """Loads the runs of ``configs`` (model → config) from ``out_dir/runs``, draws the figures, writes
  ``out_dir/report.md`` and ``out_dir/verdicts.json``; returns the report's path."""
  runs = load_runs(out_dir, list(configs))
  acc_by_attack = {a: attack_accuracies(runs, a) for a in ATTACKS}
  first = next((r["attack"] for r in runs.values() if r["attack"]), None)
  n = min((r["attack"]["num_examples"] for r in runs.values() if r["attack"]), default=0)
  ours = verdicts({a: by_paper_key(acc) for a, acc in acc_by_attack.items()}, max(n, 1))
  paper = verdicts({"paper": paper_accuracies()}, PAPER_EXAMPLES)
  figures = {"gmacs": fig.accuracy_vs_gmacs(runs, out_dir), "fixations": fig.fixations(runs, out_dir),
             "gif": fig.glimpses_gif(runs, out_dir)}
  if first:
    k, t, eps = first["attack_step"], first["eval_steps"], first["untargeted"]["epsilons"]
    figures["bars"] = fig.adv_bars(acc_by_attack, eps, k, t, out_dir)
    figures["per_step"] = fig.adv_per_step(runs, acc_by_attack, k, out_dir)
  path = os.path.join(out_dir, "report.md")
  with open(path, "w") as f:
    f.write(markdown(runs, configs, budget, figures, ours, paper))
  with open(os.path.join(out_dir, "verdicts.json"), "w") as f:
    json.dump({"ours": ours, "paper": paper, "n": n, "z": Z}, f, indent=1, default=str)
  return path
