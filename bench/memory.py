"""Peak memory with and without rematerialised glimpse steps (``config.model.remat``): a train step and PGD.

  python bench/memory.py            # demo model, batch 64: train step (T=4), PGD through 16 and 24 steps
  python bench/memory.py --quick    # smoke run: batch 8, rolled scan only, train T=4 and PGD through 16 steps

Per case, scan unroll (-1 = auto: full for training on CPU, rolled otherwise; 1 = rolled) and remat setting,
in a fresh subprocess (so the process's peak RSS belongs to that case alone): XLA's own accounting of the
compiled program (``jit(f).lower(...).compile().memory_analysis()``: temp =
activations and other scratch, plus arguments, outputs and code), and the process peak RSS (``ru_maxrss``) after
one call, with the RSS before compiling for reference. One host device, the batch unsharded, so temp bytes are
the whole batch's. JSON → bench/results/memory.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys

import benchlib

MB = 2 ** 20


def _rss_mb() -> float:
  return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def _case(args) -> dict:
  import jax
  import jax.numpy as jnp

  from rsrnn_jax.train import parallel
  from rsrnn_jax.train import state as train_state
  from rsrnn_jax.train import step as train_step
  config = benchlib.load_config(args.config)
  config.model.remat = args.remat
  config.model.unroll = args.unroll
  kind, steps = args.case.split(":")
  steps = int(steps)
  if kind == "train":
    config.train.num_glimpses = steps
  mesh = parallel.make_mesh(1)
  model, state, batch = benchlib.random_setup(config, args.batch, mesh)
  with jax.set_mesh(mesh):
    if kind == "train":
      fn, call = train_step.make_train_step(config, mesh), (state, batch, jax.random.key(1))
    else:
      attack, _ = benchlib.pgd_fn(config, model, steps, args.iterations)
      eps = jnp.asarray(float(config.attack.epsilons[0]), jnp.float32)
      fn, call = jax.jit(attack), (train_state.variables_of(state), batch["image"], batch["label"], eps,
                                   jax.random.key(1))
    rss_before = _rss_mb()
    t = benchlib.time_compiled(fn, call, warmup=0, repeats=1)
  mem = t.pop("compiled").memory_analysis()
  row = {"case": kind, "steps": steps, "unroll": args.unroll, "remat": args.remat, "batch": args.batch,
         "temp_mb": round(mem.temp_size_in_bytes / MB, 2), "argument_mb": round(mem.argument_size_in_bytes / MB, 2),
         "output_mb": round(mem.output_size_in_bytes / MB, 2),
         "code_mb": round(mem.generated_code_size_in_bytes / MB, 2),
         "rss_before_compile_mb": rss_before, "peak_rss_mb": _rss_mb(), "compile_s": t["compile_s"],
         "call_s": t["median_s"]}
  if kind == "pgd":
    row["iterations"] = args.iterations
  return row


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default="configs/demo.py")
  p.add_argument("--cases", default="train:4,pgd:16,pgd:24", help="train:T (train step with T "
                 "glimpses) and pgd:T (PGD through T steps)")
  p.add_argument("--unrolls", default="-1,1", help="scan unroll settings: -1 auto (layers.scan_unroll), 1 rolled")
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--iterations", type=int, default=5, help="PGD iterations")
  p.add_argument("--quick", action="store_true", help="smoke test: batch 8, 2 PGD iterations, rolled, train:4,pgd:16")
  p.add_argument("--out", default=None, help="default bench/results/memory[_quick].json")
  p.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--case", default="", help=argparse.SUPPRESS)
  p.add_argument("--remat", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--unroll", type=int, default=-1, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.quick:
    args.batch, args.iterations, args.cases, args.unrolls = 8, 2, "train:4,pgd:16", "1"
  if args._child:
    print(json.dumps([_case(args)]))
    return None
  result = {"benchmark": "memory", "quick": args.quick, "config": args.config, "machine": benchlib.machine(),
            "rows": []}
  for case in args.cases.split(","):
    for unroll in args.unrolls.split(","):
      for remat in (False, True):
        child = [f"--config={args.config}", f"--case={case}", f"--unroll={unroll}", f"--batch={args.batch}",
                 f"--iterations={args.iterations}"] + (["--remat"] if remat else [])
        rows = benchlib.run_child(os.path.abspath(__file__), child, devices=1)
        result["rows"] += rows
        print(json.dumps(rows[0]), file=sys.stderr, flush=True)
  return benchlib.write(result, args.out if args.out is not None else benchlib.default_out("memory", args.quick))


if __name__ == "__main__":
  main()
