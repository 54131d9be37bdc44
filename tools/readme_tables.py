"""Renders README.md's generated tables from committed result files; ``--check`` fails if they are stale.

Every number in README.md comes from a file a command writes, and this script is what puts it there. A
generated block sits between two markers,

  <!-- table:NAME -->
  ...rendered text, never edited by hand...
  <!-- /table -->

and NAME picks its renderer and its source file:

  demo      docs/results/demo_eval.json (a `make demo` run's eval/results.json): the run's setup in one line,
            then accuracy, saccade length and the fraction of fixations that move, per glimpse step
  adaptive  docs/results/demo_attack_adaptive/results.json (`--mode=attack` with `attack=adaptive` on the demo
            checkpoint): the run's setup in one line, then robust accuracy per step (the worst case per example
            over every attack) per ε, and the sanity checks that did not pass
  verdicts  reproduction/verdicts.json (`make reproduce`): each claim of the paper (holds / fails / undecided, with
            its 95% interval) under each attack of the reproduction, beside the same rule applied to the paper's
            own numbers

  python tools/readme_tables.py            # rewrite the blocks in README.md
  python tools/readme_tables.py --check    # exit 1 (and print a diff) if README.md differs from the rendering

Standard library only, so it runs without the project's dependencies.
"""
from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
BLOCK = re.compile(r"(<!-- table:(?P<name>[a-z_]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


def _row(cells) -> str:
  return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header, rows) -> list[str]:
  return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]


def _load(path: str) -> dict:
  with open(os.path.join(ROOT, path)) as f:
    return json.load(f)


def render_demo(results: dict) -> list[str]:
  """The demo block: one line of setup read from the run's saved config, then the per-step table."""
  acc = results["accuracy_per_step"]
  t_train, cfg = int(results["train_glimpses"]), results["config"]
  steps = range(1, len(acc) + 1)
  setup = (f"Model `{results['model']}` after {results['step']:,} training steps of {cfg['train']['batch_size']} "
           f"images (seed {cfg['seed']}, T = {t_train} glimpses in training), evaluated on "
           f"{results['num_examples']:,} test images of `{cfg['data']['name']}` for {len(acc)} steps.")
  header = ["glimpse step", *(f"**{t}**" if t == t_train else str(t) for t in steps)]
  rows = [["test accuracy (%)", *(f"**{100 * a:.2f}**" if t == t_train else f"{100 * a:.2f}"
                                  for t, a in zip(steps, acc))]]
  sac = results.get("saccades") or {}
  if sac:
    rows.append(["saccade to the next fixation (px)", *(f"{v:.1f}" for v in sac["mean_saccade_px"]), "–"])
    rows.append(["fixations that move > 1 px next", *(f"{100 * v:.0f}%" for v in sac["fraction_moving"]), "–"])
  return [setup, "", *_table(header, rows)]


TEST_NAMES = {"k": "at k", "T": "at T_eval", "T vs k": "k → T_eval"}  # the test names in verdicts.json
ATTACK_COLUMNS = {"paper": "the paper's attack", "strongest": "the strongest attack of profile paper",
                  "adaptive": "the adaptive attack"}


def render_adaptive(results: dict) -> list[str]:
  """The adaptive block: setup, robust accuracy (%) per step and ε (worst case over attacks), checks not passed."""
  worst = results["untargeted"]["attacks"][results["headline"]]
  k, t = results["attack_step"], results["eval_steps"]
  steps = range(1, t + 1)
  mark = lambda s, v: f"**{v}**" if s == k else v
  setup = (f"Profile `{results['profile']}` on `{results['model']}` (checkpoint step {results['checkpoint_step']:,}), "
           f"{results['num_examples']} test images, attacked at step k = {k}, "
           f"{results['timing']['total_s'] / 60:.0f} min on 2 CPU cores.")
  rows = [["clean", *(mark(s, f"{100 * a:.1f}") for s, a in zip(steps, results["clean"]["accuracy_per_step"]))]]
  rows += [[f"ε = {e['eps']:g}", *(mark(s, f"{100 * a:.1f}") for s, a in zip(steps, e["adv_acc"]))] for e in worst]
  by = {st: [str(c["id"]) for c in results["checks"] if c["status"] == st] for st in ("fail", "skipped")}
  checks = "; ".join(f"{', '.join(ids)} {st}" for st, ids in by.items() if ids) or "all passed"
  return [setup + f" Sanity checks: {checks} (its report.md).", "",
          *_table(["robust accuracy (%) at step", *map(str, steps)], rows)]


def _test_text(name: str, t: dict) -> str:
  lo, hi = t["interval"]
  return f"{TEST_NAMES.get(name, name)} {100 * t['estimate']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def _claim_cell(v: dict | None) -> str:
  if v is None:
    return "not run"
  if v["verdict"] == "not evaluated":
    return "not evaluated (missing: " + ", ".join(v.get("missing", [])) + ")"
  return f"**{v['verdict']}**: " + ", ".join(_test_text(n, t) for n, t in v["tests"].items())


def render_verdicts(data: dict) -> list[str]:
  """One row per claim: our verdict (with its 95% interval, in points) under each attack, and the paper's own
  numbers judged by the same rule (± their read-off tolerance)."""
  group = {(v["id"], v["attack"]): v["verdict"] for v in data["claims"]}
  differ = {v["id"] for v in data.get("pairs", [])  # pairs that disagree with their claim under some attack
            if v["verdict"] != "not evaluated" and v["verdict"] != group.get((v.get("of"), v["attack"]))}
  pairs = [v for v in data.get("pairs", []) if v["id"] in differ]
  ours = {(v["id"], v["attack"]): v for v in data["claims"] + pairs}
  paper = {v["id"]: v for v in data["paper"] + data.get("paper_pairs", [])}
  attacks = list(dict.fromkeys(v["attack"] for v in data["claims"]))
  claims = []
  for cid, text in dict.fromkeys((v["id"], v["text"]) for v in data["claims"]):
    claims.append((cid, text))
    claims += [(pid, f"↳ {ptext}") for pid, ptext in dict.fromkeys((v["id"], v["text"]) for v in pairs
                                                                    if v.get("of") == cid)]
  rows = [[text, *(_claim_cell(ours.get((cid, a))) for a in attacks), _claim_cell(paper.get(cid))]
          for cid, text in claims]
  seeds = "/".join(str(s) for s in data["seeds"])
  head = ["claim", *(f"ours, {ATTACK_COLUMNS.get(a, a)}" for a in attacks),
          f"the paper's own numbers (±{100 * data['paper_tolerance']:g} pt read-off)"]
  note = (f"Budget `{data['budget']['name']}`, seeds {seeds}, n = {data['num_attacked_examples']} attacked images; "
          "Δ in points [95% interval]" + ("; ↳ rows: the pairs of models (one against one) whose verdict differs from "
                                          "their claim's under some attack (every pair: the report)." if pairs else "."))
  return [note, "", *_table(head, rows)]


RENDERERS = {
    "demo": ("docs/results/demo_eval.json", render_demo),
    "adaptive": ("docs/results/demo_attack_adaptive/results.json", render_adaptive),
    "verdicts": ("reproduction/verdicts.json", render_verdicts),
}


def render(text: str) -> str:
  """``text`` with every generated block replaced by its rendering; unknown block names are an error."""
  def replace(match):
    name = match.group("name")
    if name not in RENDERERS:
      raise ValueError(f"README block 'table:{name}' has no renderer; use one of {', '.join(RENDERERS)}")
    path, fn = RENDERERS[name]
    return match.group(1) + "\n".join(fn(_load(path))) + "\n" + match.group(4)
  return BLOCK.sub(replace, text)


def check(path: str = README) -> list[str]:
  """The unified diff between ``path`` and its rendering; empty when the README is current."""
  with open(path) as f:
    current = f.read()
  fresh = render(current)
  return list(difflib.unified_diff(current.splitlines(True), fresh.splitlines(True),
                                   fromfile=path, tofile=path + " (rendered)"))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--check", action="store_true", help="exit 1 if the README differs from the rendering")
  parser.add_argument("--readme", default=README, help="the file to render (default: README.md)")
  args = parser.parse_args(argv)
  try:
    if args.check:
      diff = check(args.readme)
      sys.stdout.writelines(diff)
      if diff:
        print(f"{args.readme} is stale: run `python tools/readme_tables.py`", file=sys.stderr)
      return 1 if diff else 0
    with open(args.readme) as f:
      text = f.read()
    with open(args.readme, "w") as f:
      f.write(render(text))
    return 0
  except (OSError, ValueError, KeyError) as e:
    print(f"readme_tables: {e!r}" if isinstance(e, KeyError) else f"readme_tables: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
