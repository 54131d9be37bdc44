"""Train-step throughput (images/s) of every registered model, at demo and ImageNet-like shapes.

  python bench/train_throughput.py            # full: every model × {demo, imagenet} × devices {1,2} × unroll
  python bench/train_throughput.py --quick    # smoke run: small batches, 2 repeats (numbers not meaningful)
  python bench/train_throughput.py --models rsrnn --shapes demo --devices 1,2,4 --out /tmp/t.json

Models: every name in ``rsrnn_jax.models.MODELS`` (models added to the registry appear automatically).
Shapes: ``demo`` = configs/demo.py (96² canvas, retina 32², batch 64); ``imagenet`` = configs/imagenet.py's input
(336², 224² for FF-CNN) and retina (64²) with the model at ``--imagenet_width`` (paper: 64; default 16 so a CPU
step takes seconds, not minutes), float32 (bf16 is the GPU setting) and ``--imagenet_batch`` (default 16).
Scan: unroll -1 (full, the training default) and 1 (rolled; ~60× slower conv gradients on XLA:CPU),
rolled only at demo shapes unless ``--rolled_imagenet``; models without a glimpse loop run once.
Each device count runs in its own subprocess (fixed when JAX starts). Per row: compile timed apart, ``--warmup``
calls, then the median of ``--repeats`` calls each ended by block_until_ready. JSON → bench/results/.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import benchlib


def shape_config(name: str, shape: str, args):
  from configs import common
  if shape == "demo":
    c = benchlib.load_config(f"configs/demo.py:model={name}")
    return c, args.demo_batch
  c = benchlib.load_config(f"configs/imagenet.py:model={name}")
  c.model = common.model_preset(name, width=args.imagenet_width, out_size=64, density_ratio=10.0)
  c.model.dtype = "float32"
  return c, args.imagenet_batch


def _measure(args) -> list[dict]:
  import jax

  from rsrnn_jax.train import parallel
  from rsrnn_jax.train import step as train_step
  from rsrnn_jax.models import MODELS, has_fixations
  models = MODELS if args.models == "all" else tuple(args.models.split(","))
  mesh = parallel.make_mesh(0)
  rows = []
  for name in models:
    for shape in args.shapes.split(","):
      for unroll in [int(u) for u in args.unroll.split(",")]:
        c, batch_size = shape_config(name, shape, args)
        scanned = has_fixations(c.model)
        if unroll != -1 and (not scanned or (shape == "imagenet" and not args.rolled_imagenet)):
          continue
        c.model.unroll = unroll
        c.train.batch_size = batch_size
        row = {"model": name, "shape": shape, "image": benchlib.image_shape_and_classes(c)[0][0],
               "width": int(c.model.encoder1[0][0]) if scanned else int(c.model.stages[0][0]),
               "devices": jax.device_count(), "unroll": unroll if scanned else None, "batch": batch_size,
               "glimpses": int(c.train.num_glimpses) if scanned else None}
        try:
          model, state, batch = benchlib.random_setup(c, batch_size, mesh)
          with jax.set_mesh(mesh):
            step = train_step.make_train_step(c, mesh)
            t = benchlib.time_compiled(step, (state, batch, jax.random.key(1)), warmup=args.warmup,
                                       repeats=args.repeats, next_args=lambda out, a: (out[0], *a[1:]))
          t.pop("compiled")
          row.update(t, images_per_s=round(batch_size / t["median_s"], 1))
        except Exception as e:  # noqa: BLE001 - a model that cannot run here is reported, not fatal
          row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
  return rows


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--models", default="all", help="comma-separated names or 'all' (the registry)")
  p.add_argument("--shapes", default="demo,imagenet")
  p.add_argument("--devices", default="1,2", help="host device counts, one subprocess each")
  p.add_argument("--unroll", default="-1,1", help="-1 = full unroll (the training default), 1 = rolled scan")
  p.add_argument("--rolled_imagenet", action="store_true", help="also time the rolled scan at ImageNet shapes")
  p.add_argument("--demo_batch", type=int, default=64)
  p.add_argument("--imagenet_batch", type=int, default=16)
  p.add_argument("--imagenet_width", type=int, default=16, help="base width (paper 64: 64-128-256-512)")
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--quick", action="store_true", help="smoke test: batches 8/4, width 8, 1 warm-up, 2 repeats")
  p.add_argument("--out", default=None, help="default bench/results/train_throughput[_quick].json")
  p.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.quick:
    args.demo_batch, args.imagenet_batch, args.imagenet_width, args.warmup, args.repeats = 8, 4, 8, 1, 2
  if args._child:
    print(json.dumps(_measure(args)))
    return None
  child_args = [f"--models={args.models}", f"--shapes={args.shapes}", f"--unroll={args.unroll}",
                f"--demo_batch={args.demo_batch}", f"--imagenet_batch={args.imagenet_batch}",
                f"--imagenet_width={args.imagenet_width}", f"--warmup={args.warmup}", f"--repeats={args.repeats}"]
  if args.rolled_imagenet:
    child_args.append("--rolled_imagenet")
  result = {"benchmark": "train_throughput", "quick": args.quick, "machine": benchlib.machine(), "rows": []}
  for n in args.devices.split(","):
    result["rows"] += benchlib.run_child(os.path.abspath(__file__), child_args, int(n))
  out = args.out if args.out is not None else benchlib.default_out("train_throughput", args.quick)
  return benchlib.write(result, out)


if __name__ == "__main__":
  main()
