"""Train-step throughput (images/s) per model, device count and scan unroll; compile time reported apart.

  python bench/train_throughput.py                       # demo shapes, 1 and 2 devices, unrolled and rolled
  python bench/train_throughput.py --devices 1,2,4 --models rsrnn,ff_cnn --out bench/results/train.json

Each (devices) setting runs in its own subprocess (the host device count is fixed when JAX starts). Per setting:
one call compiles (timed apart), `--warmup` calls warm up, then `--repeats` timed calls, each ended with
block_until_ready; the median is reported.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _measure(args) -> list[dict]:
  import jax
  import numpy as np
  sys.path.insert(0, ROOT)
  from configs import demo
  from rsrnn_jax import parallel, train
  from rsrnn_jax.models import build_model

  rows = []
  for name in args.models.split(","):
    for unroll in [int(u) for u in args.unroll.split(",")]:
      c = demo.get_config(f"model={name}")
      c.model.unroll = unroll
      c.train.batch_size = args.batch
      model = build_model(c.model, num_classes=10, mean=c.data.mean, std=c.data.std)
      mesh = parallel.make_mesh(0)
      shape = (c.data.canvas_size, c.data.canvas_size, 1)
      rng = np.random.default_rng(0)
      batch = {"image": rng.random((args.batch, *shape), np.float32),
               "label": rng.integers(0, 10, args.batch).astype(np.int32)}
      with jax.set_mesh(mesh):
        state = train.replicated_state(model, c, shape, jax.random.key(0), mesh)
        step = train.make_train_step(c, mesh)
        gbatch = parallel.shard_batch(batch, mesh)
        key = jax.random.key(1)
        t0 = time.perf_counter()
        compiled = step.lower(state, gbatch, key).compile()
        compile_s = time.perf_counter() - t0
        for _ in range(args.warmup):
          state, m = compiled(state, gbatch, key)
        jax.block_until_ready(m)
        times = []
        for _ in range(args.repeats):
          t0 = time.perf_counter()
          state, m = compiled(state, gbatch, key)
          jax.block_until_ready(m)
          times.append(time.perf_counter() - t0)
      med = float(np.median(times))
      rows.append({"model": name, "devices": jax.device_count(), "unroll": unroll, "batch": args.batch,
                   "glimpses": int(c.train.num_glimpses), "compile_s": round(compile_s, 2),
                   "step_s_median": round(med, 4), "images_per_s": round(args.batch / med, 1),
                   "step_s_all": [round(t, 4) for t in times]})
      print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
  return rows


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--models", default="rsrnn,ff_cnn")
  p.add_argument("--devices", default="1,2")
  p.add_argument("--unroll", default="-1,1", help="-1 = full unroll (CPU default), 1 = rolled scan")
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--out", default="")
  p.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
  args = p.parse_args()
  if args._child:
    print(json.dumps(_measure(args)))
    return
  rows = []
  for n in args.devices.split(","):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}", "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, __file__, "--_child", "--models", args.models, f"--unroll={args.unroll}",
           "--batch", str(args.batch), "--warmup", str(args.warmup), "--repeats", str(args.repeats)]
    out = subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, text=True).stdout
    rows += json.loads(out.strip().splitlines()[-1])
  result = {"benchmark": "train_throughput", "machine": {"platform": platform.platform(),
            "cpus": os.cpu_count(), "python": platform.python_version()}, "rows": rows}
  text = json.dumps(result, indent=1)
  print(text)
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      f.write(text)


if __name__ == "__main__":
  main()
