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
  verdicts  reproduction/<setting>/verdicts.json (`make reproduce`), one column group per data setting: each claim
            of the paper (holds / fails / undecided, with its 95% interval) under each attack of the reproduction,
            on all attacked images and on those every compared model gets right, beside the same rule applied to
            the paper's own numbers

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


ATTACK_COLUMNS = {"paper": "paper's attack", "strongest": "strongest of profile paper", "adaptive": "adaptive"}


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


SETTINGS = ("demo", "paper_geometry")  # rsrnn_jax/reproduction/settings.py, in its order (a test checks it)


README_ATTACKS = ("paper", "adaptive")  # the README's columns per setting (every attack: the reports)


def _compact(v: dict | None) -> str:
  """A verdict as `**holds** +3.9 / +4.6` (Δ at k / at T_eval in points, or k → T_eval)."""
  if v is None:
    return "–"
  if v["verdict"] == "not evaluated":
    return "not evaluated"
  return f"**{v['verdict']}** " + " / ".join(f"{100 * t['estimate']:+.1f}" for t in v["tests"].values())


def _dead_policies(name: str, d: dict, group: dict) -> str:
  """The note on a setting's runs whose policy died: who, and which claims change their verdict without them."""
  runs = d.get("one_scanpath_runs") or []
  if not runs:
    return ""
  who = ", ".join(f"{d['models'].get(m, {}).get('display', m)} seed {s}" for m, s in runs)
  judged = [v for v in d.get("claims_live_policy", []) if v["attack"] in README_ATTACKS]
  changed = [f"{v['text']}, {ATTACK_COLUMNS[v['attack']]}: **{v['verdict']}**" for v in judged
             if v["verdict"] not in ("not evaluated", group.get((v["id"], v["attack"])))]
  unjudged = sum(v["verdict"] == "not evaluated" for v in judged)
  return (f" The policy died (one scanpath for every image) in {name} {who}; without those runs "
          + ("; ".join(changed) if changed else "no claim changes its verdict")
          + (f" ({unjudged} not judged: a model has no other run yet)" if unjudged else "") + ".")


def _interim(d: dict) -> str:
  """While stages are still to run: how many, and the seeds each of the README's attacks rests on where a model
  has fewer than the setting's."""
  missing = d.get("still_missing") or []
  if not missing:
    return ""
  fewer = {}
  for v in d["claims"]:
    for model, seeds in (v.get("seeds") or {}).items():
      if v["attack"] in README_ATTACKS and len(seeds) < len(d["seeds"]):
        fewer.setdefault(v["attack"], {})[model] = seeds
  rests = "; ".join(f"{ATTACK_COLUMNS[a]} verdicts on seeds " + ", ".join(f"{m} {'/'.join(map(str, s)) or 'none'}"
                                                                 for m, s in ms.items()) for a, ms in fewer.items())
  return f", **interim**: {len(missing)} stage(s) still to run" + (f", {rests}" if rests else "")


def render_verdicts(by_setting: dict) -> list[str]:
  """One row per claim, one column group per data setting (the paper's attack and the adaptive one on all
  attacked images; the adaptive one on the images every compared model classifies correctly clean), and the
  paper's own numbers judged by the same rule; ↳ rows: the one-against-one pairs that disagree with their claim
  under one of these attacks in some setting."""
  def index(entries):
    return {(v["id"], v["attack"]): v for v in entries}
  ours = {n: index(d["claims"] + d.get("pairs", [])) for n, d in by_setting.items()}
  clean = {n: index(d.get("claims_clean_correct", [])) for n, d in by_setting.items()}
  group = {n: {k: v["verdict"] for k, v in index(d["claims"]).items()} for n, d in by_setting.items()}
  differ = {v["id"] for n, d in by_setting.items() for v in d.get("pairs", []) if v["attack"] in README_ATTACKS
            and v["verdict"] not in ("not evaluated", group[n].get((v.get("of"), v["attack"])))}
  first = next(iter(by_setting.values()))
  paper = {v["id"]: v for d in by_setting.values() for v in d["paper"] + d.get("paper_pairs", [])}
  texts = {v["id"]: v["text"] for d in by_setting.values() for v in d["claims"] + d.get("pairs", [])}
  rows = []
  for cid in dict.fromkeys(v["id"] for d in by_setting.values() for v in d["claims"]):
    for pid in [cid] + sorted(p for p in differ if p.split(":")[0] == cid):
      row = [texts[pid] if pid == cid else f"↳ {texts[pid]}"]
      for n in by_setting:
        row += [_compact(ours[n].get((pid, a))) for a in README_ATTACKS]
        row.append(_compact(clean[n].get((pid, "adaptive"))) if pid == cid else "")
      rows.append(row + [_compact(paper.get(pid))])
  head = ["claim"]
  for n in by_setting:
    head += [f"{n}: {ATTACK_COLUMNS[a]}" for a in README_ATTACKS] + [f"{n}: adaptive, on images all get right"]
  head.append(f"paper's own numbers (±{100 * first['paper_tolerance']:g} pt)")
  notes = []
  for n, d in by_setting.items():
    g = d.get("setting") or {}
    geo = (f"{g['image_side']}² images, {g['glimpse_side']}² glimpses, object {100 * g['object_area_fraction']:.0f}% "
           "of the image, " if g else "")
    code = f", code {', '.join(d['code_versions'])}" if d.get("code_versions") else ""
    notes.append(f"**{n}**: {geo}budget `{d['budget']['name']}`, seeds {'/'.join(map(str, d['seeds']))}, "
                 f"n = {d['num_attacked_examples']} attacked images{code}{_interim(d)}")
  note = ("; ".join(notes) + ". Δ in points at k / at T_eval (recovery: T_eval − k); 95% intervals, the strongest "
          "attack of profile paper and every pair: each setting's report. \"On images all get right\": only the "
          "attacked images every compared model classifies correctly clean. ↳ rows: pairs (one against one) whose "
          "verdict differs from their claim's in some setting.")
  note += "".join(_dead_policies(n, d, group[n]) for n, d in by_setting.items())
  return [note, "", *_table(head, rows)]


def load_settings(folder: str = "reproduction") -> dict:
  """{setting: verdicts.json} for every setting with committed verdicts, in :data:`SETTINGS` order."""
  found = {n: _load(os.path.join(folder, n, "verdicts.json")) for n in SETTINGS
           if os.path.exists(os.path.join(ROOT, folder, n, "verdicts.json"))}
  if not found:
    raise FileNotFoundError(f"no {folder}/<setting>/verdicts.json for any of {', '.join(SETTINGS)}")
  return found


RENDERERS = {
    "demo": ("docs/results/demo_eval.json", render_demo),
    "adaptive": ("docs/results/demo_attack_adaptive/results.json", render_adaptive),
    "verdicts": ("reproduction", render_verdicts),
}


def render(text: str) -> str:
  """``text`` with every generated block replaced by its rendering; unknown block names are an error."""
  def replace(match):
    name = match.group("name")
    if name not in RENDERERS:
      raise ValueError(f"README block 'table:{name}' has no renderer; use one of {', '.join(RENDERERS)}")
    path, fn = RENDERERS[name]
    source = load_settings(path) if fn is render_verdicts else _load(path)
    return match.group(1) + "\n".join(fn(source)) + "\n" + match.group(4)
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
