"""What does a glimpse model's policy add? Its clean accuracy per step with its own fixations, with every fixation at
the image centre, and with random fixations after the first, on the first test images.

  python tools/policy_value.py WORKDIR [--examples 1000] [--steps 8] [--seed 0] [--out FILE.json]

WORKDIR is a trained run of a model with fixations (e.g. `make demo`'s, or a reproduction run). The three ways to
look, each for ``--steps`` glimpses from the centre:
  policy  the model's argmax fixations (its evaluation);
  centre  every fixation at the centre (no saccade);
  random  fixations 2.. uniform in [−0.9, 0.9]² (the training's random start range), drawn once from ``--seed``.
A policy worth having beats both from step 2 on; a model whose accuracy barely depends on where it looks gives its
policy no reward to learn from (docs/zoo.md § A policy can still die). Writes JSON with the accuracy per step of each.
"""
from __future__ import annotations

import argparse
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rsrnn_jax import load  # noqa: E402
from rsrnn_jax.models import registry  # noqa: E402
from tools import common  # noqa: E402

WAYS = ("policy", "centre", "random")


def forced_fixations(way: str, steps: int, n: int, seed: int):
  """(fixations [T, n, 2], mask [T]) of a way to look; None for the model's own policy."""
  if way == "policy":
    return None
  fix = np.zeros((steps, n, 2), np.float32)
  if way == "random":
    fix[1:] = np.random.default_rng(seed).uniform(-0.9, 0.9, (steps - 1, n, 2))
  return fix, np.ones((steps,), bool)


def logits_fn(m, steps: int):
  """jit(variables, images, fixations or None, mask or None) → logits [T, B, K] of the eval policy, or of the
  forced fixations where given (one compilation per kind)."""
  return jax.jit(lambda v, x, f, k: m.model.apply(v, x, num_steps=steps, train=False, sample_fixations=False,
                                                  fixations=f, fixation_mask=k)["logits"])


def accuracy_per_step(m, apply, images, labels, way: str, steps: int, seed: int, batch: int = 250) -> list[float]:
  forced = forced_fixations(way, steps, len(images), seed)
  correct = np.zeros(steps)
  for i in range(0, len(images), batch):
    x = images[i:i + batch]
    f, k = (None, None) if forced is None else (forced[0][:, i:i + batch], forced[1])
    logits = np.asarray(apply(m.variables, x, f, k))
    correct += (logits.argmax(-1) == labels[None, i:i + batch]).sum(1)
  return [float(c) / len(images) for c in correct]


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("workdir")
  p.add_argument("--examples", type=int, default=1000)
  p.add_argument("--steps", type=int, default=0, help="default: the run's eval glimpses")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default="")
  args = p.parse_args(argv)
  m = load(args.workdir)
  if not registry.entry_of(m.config.model).has_fixations:
    print(f"error: model {m.config.model.name!r} has no fixations; give the workdir of a glimpse model", file=sys.stderr)
    return 2
  images, labels = common.first_test_images(m.config.data, args.examples)
  steps = args.steps or int(m.config.eval.num_glimpses)
  apply = logits_fn(m, steps)
  out = {"workdir": args.workdir, "model": m.config.model.name, "checkpoint_step": m.step, "examples": len(images),
         "steps": steps, "seed": args.seed,
         "accuracy_per_step": {w: accuracy_per_step(m, apply, images, labels, w, steps, args.seed) for w in WAYS}}
  common.emit(out, args.out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
