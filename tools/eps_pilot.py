"""Robust accuracy under the paper's attack over a grid of ε, to choose a setting's ε grids (docs/reproduction.md).

  python tools/eps_pilot.py WORKDIR --eps 0.002,0.005,0.01,0.02 [--examples 500] [--out FILE.json]

WORKDIR is a trained run (e.g. RS-RNN seed 0 of a reproduction setting). For every ε it runs the run's `paper`
attack profile's PGD on step k (`rsrnn_jax.load(WORKDIR).attack(..., profile="paper")`) on the first test images
and reads the accuracy at step k and at T_eval. The test images are the run's evaluation split (the same the
attack suite takes). Writes JSON: per ε, `acc_k`, `acc_T`, and the clean accuracies; prints a table.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rsrnn_jax import load  # noqa: E402
from tools import common  # noqa: E402


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("workdir")
  p.add_argument("--eps", required=True, help="comma-separated ε, e.g. 0.002,0.005,0.01")
  p.add_argument("--examples", type=int, default=500)
  p.add_argument("--batch", type=int, default=100)
  p.add_argument("--out", default="")
  args = p.parse_args(argv)
  m = load(args.workdir)
  k, t = int(m.config.attack.attack_step), int(m.config.eval.num_glimpses)
  images, labels = common.first_test_images(m.config.data, args.examples, args.batch)

  def accuracy(x):
    pred = np.concatenate([np.asarray(m.predict(x[i:i + args.batch], steps=t)["logits"]).argmax(-1)
                           for i in range(0, len(x), args.batch)], 1)
    return (pred == labels[None]).mean(1)

  clean = accuracy(images)
  rows = []
  for eps in (float(e) for e in args.eps.split(",")):
    adv = np.concatenate([m.attack(images[i:i + args.batch], labels[i:i + args.batch], eps=eps, profile="paper")
                          for i in range(0, len(images), args.batch)])
    acc = accuracy(adv)
    rows.append({"eps": eps, "acc_k": float(acc[k - 1]), "acc_T": float(acc[t - 1])})
    print(f"eps {eps:g}: accuracy at k={k} {100 * acc[k - 1]:.1f}%, at T_eval={t} {100 * acc[t - 1]:.1f}%", flush=True)
  out = {"workdir": args.workdir, "model": m.config.model.name, "checkpoint_step": m.step,
         "examples": int(len(images)), "attack_step": k, "eval_steps": t, "clean_k": float(clean[k - 1]),
         "clean_T": float(clean[t - 1]), "per_eps": rows}
  common.emit(out, args.out, echo=False)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
