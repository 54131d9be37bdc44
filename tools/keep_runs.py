"""The files of a reproduction's runs that carry its work to another machine or session, for `git add -f`.

  git add -f $(python tools/keep_runs.py reproduction)

Run folders (`OUT/<setting>/runs/<model>/seed<s>/`) are git-ignored: checkpoints are large. This lists, for every
run, what the report and the stages still to run need: the stage record, the config, the metrics, the eval
outputs (results, compute, figures, plateau), every attack folder but its adversarial sets (`--mode=verify`'s,
tens of MB: verifying needs the attack run again), and the **last checkpoint** (the train stage counts as done
only with it, and the attacks need it; until eval is done also the checkpoints at 80% and 90% of training, which
the plateau check reads). A training stopped short of its end (``--deadline`` stops one at its last checkpoint
before then) carries its record, config, metrics and last checkpoints, to resume from. A run restored from these
files skips every finished stage (its fingerprints match) and resumes at the first missing one. Standard library
only.
"""
from __future__ import annotations

import argparse
import json
import os

SMALL = ("reproduce_stages.json", "config.json", "config_history.jsonl", "metrics.jsonl", "compute.json",
         "figures.npz", "plateau.json", "eval")


def _checkpoints(run: str) -> list[int]:
  folder = os.path.join(run, "checkpoints")
  return sorted(int(d) for d in os.listdir(folder) if d.isdigit()) if os.path.isdir(folder) else []


def keep(run: str) -> list[str]:
  """The paths (files and folders) of one run folder to carry."""
  with open(os.path.join(run, "reproduce_stages.json")) as f:
    stages = json.load(f)
  steps = _checkpoints(run)
  if not stages.get("train") or not (stages["train"].get("done") or steps):
    return []  # no training record (its checkpoints would be discarded), or nothing to resume from
  out = [os.path.join(run, n) for n in SMALL if os.path.exists(os.path.join(run, n))]
  for d in sorted(os.listdir(run)):  # attack folders without their adversarial sets (tens of MB; --mode=verify's)
    if d.startswith("attack_") and ".tmp" not in d:
      out += [os.path.join(run, d, f) for f in sorted(os.listdir(os.path.join(run, d)))
              if not f.startswith("adversarial_")]
  if steps:  # the train stage counts as done only with its last checkpoint (stages.stage_outputs)
    wanted = steps[-1:] if stages.get("eval", {}).get("done") else steps[-3:]  # plateau: 80% / 90% / 100%
    out += [os.path.join(run, "checkpoints", str(s)) for s in wanted]
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("out", nargs="?", default="reproduction", help="the reproduction's --out folder")
  root = p.parse_args(argv).out
  if not os.path.isdir(root):
    p.error(f"{root} is not a folder: give the reproduction's --out folder (default: reproduction)")
  paths = []
  for setting in sorted(os.listdir(root)):
    runs = os.path.join(root, setting, "runs")
    if not os.path.isdir(runs):
      continue
    for model in sorted(os.listdir(runs)):
      for seed in sorted(os.listdir(os.path.join(runs, model))):
        run = os.path.join(runs, model, seed)
        if os.path.exists(os.path.join(run, "reproduce_stages.json")):
          paths += keep(run)
  print("\n".join(paths))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
