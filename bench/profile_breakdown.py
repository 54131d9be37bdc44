"""Where the time of one PGD iteration or one train step goes: XLA ops grouped by model part, forward/backward.

  python bench/profile_breakdown.py --program pgd   [--batch 100] [--steps 4]   # one PGD iteration
  python bench/profile_breakdown.py --program train [--batch 64]  [--steps 4]   # one train step (AdamW)
  python bench/profile_breakdown.py --program pgd --top 30 --out /tmp/p.json

The program (demo config, random init, one host device by default) is compiled, run ``--warmup`` times, then
``--repeats`` times under ``jax.profiler.trace``. Every XLA:CPU op (thunk) event of the trace is matched to its
instruction in the optimised HLO and grouped by the model part its ``op_name`` metadata names (sampler,
encoder1 stage i, ConvGRU core, encoder2, dorsal stream, classifier, ...) and by pass (forward, or backward:
``transpose(...)`` in the name). Also reported: XLA's cost analysis (flops, bytes accessed) and the number of
HLO instructions, which do not depend on the machine's load.

The shares are the point, not the milliseconds: other processes on the machine stretch every op, and ops run
concurrently on XLA:CPU's thread pool, so the summed op time can exceed the wall time. Run it pinned to one
core (``taskset -c 1``) for shares that other load distorts least.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import shutil
import sys
import tempfile
import time

import benchlib

# Model parts, matched in order against an op's op_name metadata (first match wins).
PARTS = (("sampler", ("take_along_axis", "retina", "bilinear")),
         ("encoder1", ("encoder1",)), ("core (ConvGRU)", ("/core/",)), ("encoder2", ("encoder2",)),
         ("dorsal", ("dorsal",)), ("classifier", ("classifier",)), ("glimpse resize", ("step/jit(resize",)),
         ("loss / update", ("attack_loss", "optax", "adam", "logsumexp", "sign", "clip")))


def part_of(op_name: str) -> str:
  for part, keys in PARTS:
    if any(k in op_name for k in keys):
      if part == "encoder1":  # per stage: stage0 (Cin = image channels) differs from the others
        m = re.search(r"encoder1_\d+/(stage\d+)", op_name)
        return f"encoder1 {m.group(1)}" if m else part
      return part
  return "other" if op_name else "no metadata (XLA-made)"


def hlo_index(hlo_text: str) -> dict:
  """instruction name → (op_name metadata, first 160 characters of its definition)."""
  out = {}
  for line in hlo_text.splitlines():
    m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (.*)", line)
    if not m or m.group(1) in out:
      continue
    meta = re.search(r'op_name="([^"]*)"', line)
    out[m.group(1)] = (meta.group(1) if meta else "", m.group(2)[:160])
  return out


def op_kind(name: str, definition: str) -> str:
  base = re.sub(r"[.\d]+$", "", name)
  if base.startswith("ynn_fusion") or "convolution(" in definition or base.startswith("conv"):
    return "conv/dot"
  if "iota" in base:
    return "iota"
  if "scatter" in base:
    return "scatter"
  if "gather" in base or "gather(" in definition:
    return "gather"
  if "reduce-window" in base or "select-and-scatter" in definition:
    return "reduce-window"
  if "copy" in base or "transpose" in base:
    return "copy/transpose"
  return "elementwise/other"


def trace_events(trace_dir: str) -> list:
  paths = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)
  if not paths:
    raise RuntimeError(f"no perfetto trace under {trace_dir}")
  data = json.load(gzip.open(paths[0]))
  events = data["traceEvents"] if isinstance(data, dict) else data
  return [e for e in events if e.get("ph") == "X"]


def breakdown(events, index, calls: int, top: int) -> dict:
  """Per part × pass and per op kind: ms per call and share of the summed op time."""
  by_part, by_kind, by_op = collections.Counter(), collections.Counter(), collections.Counter()
  for e in events:
    name = e["name"]
    if name not in index:
      continue  # runtime events (executor, python), not XLA ops
    op_name, definition = index[name]
    ms = e.get("dur", 0) / 1e3 / calls
    phase = "bwd" if "transpose(" in op_name else "fwd"
    by_part[(part_of(op_name), phase)] += ms
    by_kind[op_kind(name, definition)] += ms
    by_op[name] += ms
  total = sum(by_part.values()) or 1.0
  row = lambda ms: {"ms": round(ms, 2), "share": round(ms / total, 4)}
  return {"op_ms_per_call": round(total, 2),
          "parts": {f"{p} [{ph}]": row(v) for (p, ph), v in by_part.most_common()},
          "kinds": {k: row(v) for k, v in by_kind.most_common()},
          "top_ops": [{"op": k, **row(v), "part": part_of(index[k][0]), "hlo": index[k][1]}
                      for k, v in by_op.most_common(top)]}


def build_program(args):
  """(jitted fn, args) of one PGD iteration or one train step at the demo config's shapes."""
  import jax
  import jax.numpy as jnp

  from rsrnn_jax.attacks import core, objectives
  from rsrnn_jax.train import parallel
  from rsrnn_jax.train import state as train_state
  from rsrnn_jax.train import step as train_step
  config = benchlib.load_config(args.config)
  config.train.num_glimpses = args.steps
  mesh = parallel.make_mesh(config.num_devices)
  model, state, batch = benchlib.random_setup(config, args.batch, mesh)
  if args.program == "train":
    with jax.set_mesh(mesh):
      return train_step.make_train_step(config, mesh), (state, batch, jax.random.key(1)), mesh
  variables = train_state.variables_of(state)

  def pgd_iteration(variables, x, x_adv, labels, eps):
    logits_fn = objectives.model_logits_fn(model, variables, horizon="step", attack_step=args.steps)
    grad = jax.grad(lambda z: jnp.sum(core.attack_loss(logits_fn(z), labels)))(x_adv)
    return core.project(x_adv + 0.25 * eps * jnp.sign(grad), x, eps=eps, norm="linf")

  x = batch["image"]
  return jax.jit(pgd_iteration), (variables, x, x, batch["label"], jnp.float32(0.03)), mesh


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--program", choices=("pgd", "train"), default="pgd")
  p.add_argument("--config", default="configs/demo.py")
  p.add_argument("--batch", type=int, default=None, help="default 100 (pgd) / 64 (train)")
  p.add_argument("--steps", type=int, default=4, help="glimpse steps unrolled (T)")
  p.add_argument("--devices", type=int, default=1)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--top", type=int, default=15)
  p.add_argument("--trace_dir", default="", help="keep the trace here (default: a temporary directory)")
  p.add_argument("--out", default="", help="also write the JSON here")
  args = p.parse_args(argv)
  args.batch = args.batch or (100 if args.program == "pgd" else 64)
  benchlib.set_host_devices(args.devices)
  machine = benchlib.machine()
  import jax
  fn, fn_args, mesh = build_program(args)
  advance = (lambda out, a: (out[0], *a[1:])) if args.program == "train" else (lambda out, a: a)
  with jax.set_mesh(mesh):
    tic = time.perf_counter()
    compiled = fn.lower(*fn_args).compile()
    compile_s = round(time.perf_counter() - tic, 3)
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    hlo = compiled.as_text()
    for _ in range(args.warmup):
      fn_args = advance(jax.block_until_ready(compiled(*fn_args)), fn_args)
    trace_dir = args.trace_dir or tempfile.mkdtemp(prefix="profile_breakdown_")
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      for _ in range(args.repeats):
        fn_args = advance(jax.block_until_ready(compiled(*fn_args)), fn_args)
  result = {"benchmark": "profile_breakdown", "program": args.program, "config": args.config,
            "batch": args.batch, "steps": args.steps, "devices": args.devices, "compile_s": compile_s,
            "flops": cost.get("flops"), "bytes_accessed": cost.get("bytes accessed"),
            "hlo_instructions": sum(1 for line in hlo.splitlines() if " = " in line),
            **breakdown(trace_events(trace_dir), hlo_index(hlo), args.repeats, args.top),
            "machine": {**benchlib.machine(), **machine}}
  if not args.trace_dir:
    shutil.rmtree(trace_dir, ignore_errors=True)
  _print_tables(result)
  return benchlib.write(result, args.out) if args.out else result


def _print_tables(r):
  print(f"{r['program']} batch {r['batch']} T={r['steps']}: {r['op_ms_per_call']} ms of ops per call; "
        f"{r['flops'] / 1e9:.2f} GFLOP, {r['bytes_accessed'] / 1e6:.0f} MB accessed, "
        f"{r['hlo_instructions']} HLO instructions, compile {r['compile_s']} s", file=sys.stderr)
  for title in ("parts", "kinds"):
    for k, v in r[title].items():
      print(f"  {v['share'] * 100:5.1f}%  {v['ms']:8.2f} ms  {k}", file=sys.stderr)
  for o in r["top_ops"]:
    print(f"  {o['share'] * 100:5.1f}%  {o['op']:28s} {o['part']:18s} {o['hlo'][:90]}", file=sys.stderr)


if __name__ == "__main__":
  main()
