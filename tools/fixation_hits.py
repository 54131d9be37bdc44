"""Does a glimpse model find the item? Per step, how often its glimpse window contains the item's centre, and its
accuracy when it does and when it does not, on cluttered Fashion-MNIST test images.

  python tools/fixation_hits.py WORKDIR [--examples 2000] [--steps 8] [--out FILE.json]

WORKDIR is a trained run of a glimpse model on a `cluttered_fashion_mnist` setting (e.g. `make demo`'s, or a
reproduction run). The test images and the items' positions are rendered again from the raw Fashion-MNIST files
with the run's data config (`cluttered.generate`: the same bytes as the TFDS data set). The window is the largest
crop of a crop model, and the foveal half (the central half of the glimpse's field) of a retina model. Writes JSON
with, per step: `hit` (fraction of images whose window contains the item's centre), `acc_hit`, `acc_miss`,
`acc` and the mean distance from the fixation to the item's centre in pixels (docs/zoo.md uses it for GF-Net-m).
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rsrnn_jax import load  # noqa: E402
from rsrnn_jax.data import cluttered, fashion_mnist  # noqa: E402
from tools import common  # noqa: E402


def window_half(model_cfg, side: int) -> float:
  """Half the side (px) of the window a fixation counts as looking at: the largest crop, or the retina's fovea
  (taken as a quarter of the image side)."""
  s = model_cfg.sampler
  return (max(s.scales) if s.kind == "crop" else 0.25) * side / 2


def hits(fix: np.ndarray, position: np.ndarray, item: int, side: int, half: float) -> tuple[np.ndarray, np.ndarray]:
  """fix [T, B, 2] in [-1, 1] (x, y), position [B, 2] (row, col) of the item's corner → (inside [T, B], distance
  [T, B] in px)."""
  centre = position[None].astype(np.float64) + item / 2.0               # (row, col)
  px = (fix.astype(np.float64) + 1.0) / 2.0 * side                      # (x, y) in px
  d = np.stack([px[..., 1] - centre[..., 0], px[..., 0] - centre[..., 1]], -1)
  return np.all(np.abs(d) <= half, -1), np.linalg.norm(d, axis=-1)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("workdir")
  p.add_argument("--examples", type=int, default=2000)
  p.add_argument("--steps", type=int, default=0, help="default: the run's eval glimpses")
  p.add_argument("--out", default="")
  args = p.parse_args(argv)
  m = load(args.workdir)
  d = m.config.data
  side, item = int(d.canvas_size), int(d.get("item_size", cluttered.ITEM_SIZE))
  raw, labels = fashion_mnist.load_fashion_mnist(fashion_mnist.find_fashion_mnist(d.get("source_dir")), "test")
  raw, labels = raw[:args.examples], labels[:args.examples]
  canvas, position = cluttered.generate(raw, canvas_size=side, num_clutter=int(d.num_clutter),
                                        clutter_size=int(d.clutter_size), seed=int(d.get("clutter_seed", 0)),
                                        split="test", item_size=item)
  images = canvas[..., None].astype(np.float32) / 255.0
  steps = args.steps or int(m.config.eval.num_glimpses)
  preds, fixes = [], []
  for i in range(0, len(images), 250):
    preds.append(np.asarray(m.predict(images[i:i + 250], steps=steps)["logits"]).argmax(-1))
    fixes.append(np.asarray(m.fixations(images[i:i + 250], steps=steps)))
  correct = np.concatenate(preds, 1) == labels[None]
  inside, dist = hits(np.concatenate(fixes, 1), position, item, side, window_half(m.config.model, side))
  rows = [{"step": t + 1, "hit": float(inside[t].mean()), "acc": float(correct[t].mean()),
           "acc_hit": float(correct[t][inside[t]].mean()) if inside[t].any() else None,
           "acc_miss": float(correct[t][~inside[t]].mean()) if (~inside[t]).any() else None,
           "distance_px": float(dist[t].mean())} for t in range(steps)]
  out = {"workdir": args.workdir, "model": m.config.model.name, "glance": bool(m.config.model.get("glance", False)),
         "checkpoint_step": m.step, "examples": int(len(images)), "window_half_px": window_half(m.config.model, side),
         "per_step": rows}
  common.emit(out, args.out)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
