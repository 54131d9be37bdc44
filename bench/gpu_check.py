"""GPU readiness check (issue 15): one command on a machine with one GPU; one JSON and printed tables.

  python bench/gpu_check.py [--budget_s 420] [--out bench/results/gpu_check.json]
  python bench/gpu_check.py --tiny     # the same code on CPU at toy sizes in seconds (tests/test_bench.py)
  python bench/gpu_check.py --resume   # keep the rows of --out's JSON, run only the jobs it lacks

Jobs run in priority order (peak, the configs/imagenet.py RS-RNN train step, numerics, then the rest with one
axis changed at a time) until ``--budget_s`` (wall time since start) is spent; a job whose estimated time (the
longest so far of its kind) does not fit is listed under ``skipped``. The JSON is rewritten after every job,
so a run killed by a timeout still leaves what it measured. Jobs:

* peak: measured TFLOP/s of a large bf16 / f32 matrix product next to the datasheet's dense peak.
* numerics: RS-RNN at the ImageNet config (batch 4, T = 4), parameters initialised once on the CPU. The
  logits on the accelerator (f32 at JAX's default precision, f32 at "highest", bf16) against the f32 CPU
  reference computed in this process on ``jax.devices("cpu")``, with every fixation forced to the same
  scanpath (so no argmax can flip); then with the policy's own argmax fixations (share of equal fixations);
  then 3 SGD steps (full learning rate, sampled fixations, same keys) on both: the cross-entropies must agree
  (the whole loss's agreement is reported too).
* train: the ImageNet-config train step (336² input, 64² retina, VGG-8 width 64; FF-CNN 224²) of RS-RNN, a
  1-D glimpse baseline (Base-Retina) and FF-CNN at batch 256 / 128, bfloat16 / float32, rolled scan
  (``model.unroll=1``) / unrolled (``unroll=T``), remat off / on: images/s, compile time apart, XLA's memory
  analysis, the device's peak memory (``memory_stats``, a process-wide high-water mark), and the achieved
  TFLOP/s = model FLOPs (XLA cost analysis of the unrolled step, remat recomputation not counted) ÷ step time.
* attack: PGD (5 iterations, ε = 2/255, batch 128, bf16) through 16 and 24 glimpse steps, remat off / on, and
  APGD when ``rsrnn_jax.attacks.apgd`` exists: images × iterations / s.
* fed: the fed rate (bench/fed_rate.py) of the configs/imagenet.py RS-RNN train step (bf16, batch 256, the
  unrolled training default): images/s with the real input pipeline (``os.cpu_count()`` grain workers, the
  default host decoder, uint8 hand-over) on synthetic ImageNet JPEGs (bench/synthetic_imagenet.py) against the
  same step on a resident batch; their ratio says whether this host's cores starve the GPU.
The numerics job and the configs live in bench/gpu_numerics.py, the JSON bookkeeping and tables in
bench/gpu_report.py. docs/scaling.md says how to install the CUDA build of jax and run this on a GPU machine.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402  (puts the repository on sys.path)
import fed_rate  # noqa: E402
import synthetic_imagenet  # noqa: E402

if "--tiny" in sys.argv:  # before JAX starts: the tiny run stays on the CPU even on a GPU machine
  os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import gpu_report  # noqa: E402
from gpu_numerics import dataset_info, make_config, mesh_of, numerics  # noqa: E402

from rsrnn_jax import attacks  # noqa: E402
from rsrnn_jax.attacks import objectives  # noqa: E402
from rsrnn_jax.train import parallel  # noqa: E402
from rsrnn_jax.train import state as train_state  # noqa: E402
from rsrnn_jax.train import step as train_step  # noqa: E402

# Dense datasheet peaks in TFLOP/s: (bf16 tensor cores, f32 through TF32 tensor cores, plain f32). Matched
# against ``device_kind`` in this order; anything else reports the measured matrix-product rate only.
DATASHEET_TFLOPS = (("H200", (989.4, 494.7, 66.9)), ("H100 PCIe", (756.0, 378.0, 51.2)),
                    ("H100", (989.4, 494.7, 66.9)), ("A100", (312.0, 156.0, 19.5)),
                    ("L4", (121.0, 60.0, 30.3)), ("A10", (125.0, 62.5, 31.2)))
FULL = dict(batches=(256, 128), attack_steps=(16, 24), attack_batch=128, iterations=5, numerics_batch=4,
            numerics_steps=3, warmup=2, repeats=5, matmul=8192, budget_s=420.0,
            logit_variants=("f32_default", "f32_highest", "bf16"), train_variants=("f32_default", "bf16"),
            fed_images=1024, fed_steps=30, fed_workers=os.cpu_count() or 1,
            guess_s={"numerics": 150.0, "peak": 20.0, "train": 60.0, "attack": 90.0, "fed": 120.0})
# --tiny: every function above runs, on fewer variants (each compilation takes seconds on a CPU).
TINY = dict(batches=(8, 4), attack_steps=(2, 3), attack_batch=4, iterations=2, numerics_batch=2,
            numerics_steps=2, warmup=1, repeats=2, matmul=128, budget_s=300.0,
            logit_variants=("bf16",), train_variants=("bf16",), fed_images=48, fed_steps=2, fed_workers=0,
            guess_s={"numerics": 10.0, "peak": 1.0, "train": 5.0, "attack": 5.0, "fed": 10.0})

def datasheet(device) -> dict:
  kind = getattr(device, "device_kind", "")
  for name, (bf16, tf32, f32) in DATASHEET_TFLOPS:
    if name in kind:
      return {"bf16": bf16, "tf32": tf32, "f32": f32, "matched": name}
  return {}


def memory(compiled, device) -> dict:
  out = {}
  try:
    m = compiled.memory_analysis()
    mb = lambda b: round(b / 2**20, 1)
    out.update(temp_mb=mb(m.temp_size_in_bytes), argument_mb=mb(m.argument_size_in_bytes),
               output_mb=mb(m.output_size_in_bytes), program_mb=mb(
                   m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes
                   - m.alias_size_in_bytes))
  except Exception as e:  # noqa: BLE001  (not every backend implements it)
    out["memory_analysis_error"] = repr(e)[:200]
  stats = device.memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    out["device_peak_mb"] = round(stats["peak_bytes_in_use"] / 2**20, 1)
    out["device_limit_mb"] = round(stats.get("bytes_limit", 0) / 2**20, 1)
  return out


def timed(fn, args, sizes, next_args=None) -> tuple[dict, object]:
  t = benchlib.time_compiled(fn, args, warmup=sizes["warmup"], repeats=sizes["repeats"], next_args=next_args)
  compiled = t.pop("compiled")
  return t, compiled


# ---------------------------------------------------------------------------------------------------------
# Peak, train and attack throughput.


def matmul_peak(sizes, accel) -> dict:
  n = sizes["matmul"]
  out = {"n": n, "datasheet_tflops": datasheet(accel)}
  for name, dtype, precision in (("bf16", jnp.bfloat16, None), ("f32_default", jnp.float32, None),
                                 ("f32_highest", jnp.float32, "highest")):
    a = jax.device_put(jax.random.normal(jax.random.key(0), (n, n), dtype), accel)
    fn = jax.jit(lambda x, y: x @ y) if precision is None else jax.jit(
        lambda x, y: jnp.matmul(x, y, precision=precision))
    t, _ = timed(fn, (a, a), {"warmup": 2, "repeats": 10})
    out[f"{name}_tflops"] = round(2 * n**3 / t["median_s"] / 1e12, 2)
  return out


def _flops_of(cost) -> float | None:
  """The "flops" entry of a cost analysis: a dict, a one-element list of dicts, or None where the backend has none."""
  cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost
  return float(cost["flops"]) if isinstance(cost, dict) and "flops" in cost else None


def _model_flops(config, state, batch, rng, cpu, cache: dict) -> float | None:
  """FLOPs of one train step from XLA's cost analysis of the unrolled step (a rolled loop counts once), lowered
  for the CPU: the count is the same program's on every backend, and the GPU's pre-compile analysis is empty."""
  key = (config.model.name, config.train.batch_size, config.model.dtype)
  if key not in cache:
    cfg = config.copy_and_resolve_references()
    cfg.model.unroll, cfg.model.remat = 0, False
    model, _ = train_state.model_from_config(cfg, dataset_info(cfg))
    mesh = mesh_of(cpu)
    on_cpu = jax.device_put((state.replace(apply_fn=model.apply), batch), parallel.replicated(mesh))
    with jax.set_mesh(mesh):
      lowered = jax.jit(functools.partial(train_step.train_step, config=cfg)).lower(*on_cpu, rng)
    cache[key] = _flops_of(lowered.cost_analysis())
  return cache[key]


def train_job(spec: dict, sizes, tiny: bool, accel, cpu, peak: dict, flops_cache: dict) -> dict:
  config = make_config(spec["model"], tiny=tiny, dtype=spec["dtype"], unroll=spec["unroll"],
                       remat=spec["remat"], batch=spec["batch"])
  mesh = mesh_of(accel)
  _, state, batch = benchlib.random_setup(config, spec["batch"], mesh)
  rng = jax.random.key(1)
  flops = _model_flops(config, state, batch, rng, cpu, flops_cache)
  with jax.set_mesh(mesh):
    t, compiled = timed(train_step.make_train_step(config, mesh), (state, batch, rng), sizes,
                        next_args=lambda out, a: (out[0], a[1], a[2]))
  tflops = flops / t["median_s"] / 1e12 if flops else None
  ref = peak.get("bf16_tflops" if spec["dtype"] == "bfloat16" else "f32_default_tflops")
  return {**spec, **t, "images_per_s": round(spec["batch"] / t["median_s"], 1),
          "gflop_per_image": round(flops / spec["batch"] / 1e9, 3) if flops else None,
          "tflops_per_s": round(tflops, 2) if tflops else None,
          "of_matmul_peak": round(tflops / ref, 3) if tflops and ref else None, **memory(compiled, accel)}


def attack_job(spec: dict, sizes, tiny: bool, accel) -> dict:
  config = make_config("rsrnn", tiny=tiny, dtype="bfloat16", unroll=1, remat=spec["remat"],
                       batch=sizes["attack_batch"])
  mesh = mesh_of(accel)
  model, state, batch = benchlib.random_setup(config, sizes["attack_batch"], mesh)
  eps, iters = 2 / 255, sizes["iterations"]

  def attack(variables, images, labels, key):
    fn = objectives.model_logits_fn(model, variables, horizon="step", attack_step=spec["steps"])
    if spec["attack"] == "apgd":
      return attacks.apgd(fn, images, labels, eps=eps, num_steps=iters, rng=key)
    return attacks.pgd(fn, images, labels, eps=eps, step_size=eps / 3, num_steps=iters, rng=key)

  args = (train_state.variables_of(state), batch["image"], batch["label"], jax.random.key(2))
  with jax.set_mesh(mesh):
    t, compiled = timed(jax.jit(attack), args, sizes)
  n = sizes["attack_batch"]
  return {**spec, "batch": n, "iterations": iters, **t,
          "images_x_iterations_per_s": round(n * iters / t["median_s"], 1), **memory(compiled, accel)}


def fed_job(sizes, tiny: bool, decoder: str = "turbo") -> dict:
  """The fed rate of the configs/imagenet.py RS-RNN step (module docstring) on this host's cores."""
  import tempfile
  config = make_config("rsrnn", tiny=tiny, dtype="bfloat16", unroll=0, batch=sizes["batches"][0])
  with tempfile.TemporaryDirectory() as root:
    tic = time.perf_counter()
    data_cfg, stats = synthetic_imagenet.prepared_config(root, sizes["fed_images"],
                                                         image_size=int(config.data.image_size),
                                                         eval_resize=int(config.data.eval_resize), prefetch=4)
    data_cfg.decoder = decoder
    prepare_s = time.perf_counter() - tic
    row = fed_rate.measure(config, data_cfg, workers=sizes["fed_workers"], steps=sizes["fed_steps"],
                           repeats=3 if not tiny else 1)
  return {**row, "model": "rsrnn", "dtype": "bfloat16", "scan": "unrolled", "synthetic_images": stats,
          "prepare_s": round(prepare_s, 1), "cpus": os.cpu_count(), "load_average_1": round(os.getloadavg()[0], 2)}


def train_specs(sizes, tiny: bool) -> list[dict]:
  """The grid in priority order: the configs/imagenet.py defaults first, then one axis changed at a time."""
  big, small = sizes["batches"]
  first = [("rsrnn", big, "bfloat16", 1, False), ("ff_cnn", big, "bfloat16", 1, False),
           ("base_retina", big, "bfloat16", 1, False), ("rsrnn", big, "bfloat16", 0, False),
           ("rsrnn", big, "bfloat16", 1, True), ("rsrnn", big, "float32", 1, False),
           ("rsrnn", small, "bfloat16", 1, False)]
  rest = [(m, b, d, u, r) for m in ("rsrnn", "base_retina", "ff_cnn") for b in (big, small)
          for d in ("bfloat16", "float32") for u in (1, 0) for r in (False, True)
          if m != "ff_cnn" or (u, r) == (1, False)]
  if tiny:  # one job per model; together they cover both dtypes, both scans and remat
    first = [("rsrnn", big, "bfloat16", 1, True), ("base_retina", small, "float32", 0, False),
             ("ff_cnn", big, "bfloat16", 1, False)]
  order = first if tiny else first + [s for s in rest if s not in first]
  return [dict(model=m, batch=b, dtype=d, unroll=u, remat=r, scan="rolled" if u == 1 else "unrolled")
          for m, b, d, u, r in order]


def attack_specs(sizes, tiny: bool) -> list[dict]:
  short, long = sizes["attack_steps"]
  specs = [("pgd", short, False), ("pgd", long, True), ("pgd", long, False), ("pgd", short, True)]
  if hasattr(attacks, "apgd"):  # rsrnn_jax/attacks/apgd.py, when present
    specs.insert(2, ("apgd", short, False))
  if tiny:  # remat on and off, and APGD when present
    specs = [("pgd", short, True), specs[2] if hasattr(attacks, "apgd") else ("pgd", long, False)]
  return [dict(attack=a, steps=s, remat=r) for a, s, r in specs]


# ---------------------------------------------------------------------------------------------------------
# Driver: budget, JSON, tables.


def jobs(sizes, tiny: bool, accel, cpu, result: dict, fed_decoder: str = "turbo"):
  """(kind, name, thunk) in priority order: the matrix-product peak (seconds), the configs/imagenet.py train
  step, the numerics, then the other train and attack jobs interleaved, one axis changed at a time."""
  flops_cache: dict = {}
  train = [("train", json.dumps(s), functools.partial(lambda s: train_job(
      s, sizes, tiny, accel, cpu, result.get("peak") or {}, flops_cache), s)) for s in train_specs(sizes, tiny)]
  attack = [("attack", json.dumps(s), functools.partial(lambda s: attack_job(s, sizes, tiny, accel), s))
            for s in attack_specs(sizes, tiny)]
  yield "peak", "peak", lambda: matmul_peak(sizes, accel)
  yield train[0]
  yield "numerics", "numerics", lambda: numerics(sizes, tiny, accel, cpu)
  yield "fed", "fed", lambda: fed_job(sizes, tiny, fed_decoder)
  yield from train[1:3] + attack[:1] + train[3:5] + attack[1:2] + train[5:6] + attack[2:] + train[6:]


def run(args, prior: dict | None = None) -> dict:
  sizes = TINY if args.tiny else FULL
  budget = args.budget_s or sizes["budget_s"]
  start = time.perf_counter()
  accel, cpu = jax.devices()[0], jax.devices("cpu")[0]
  result = {"bench": "gpu_check", "tiny": args.tiny, "budget_s": budget, "machine": benchlib.machine(),
            "device": {"kind": getattr(accel, "device_kind", ""), "platform": accel.platform,
                       "count": jax.device_count()},
            "versions": gpu_report.versions(), "compilation_cache": jax.config.jax_compilation_cache_dir or None,
            "train": [], "attack": [], "skipped": [], "errors": []}
  if prior:
    result["resumed"] = prior.get("resumed", []) + [{k: prior.get(k) for k in ("elapsed_s", "machine", "versions")}]
    for k in ("peak", "numerics", "fed", "train", "attack"):
      if k in prior:
        result[k] = prior[k]
  seen: dict = {}  # longest time taken so far per kind of job (and per model for train jobs)
  for kind, name, thunk in jobs(sizes, args.tiny, accel, cpu, result, args.fed_decoder):
    if prior and gpu_report.done(result, kind, name):
      continue
    key = (kind, json.loads(name).get("model")) if kind == "train" else (kind, None)
    estimate = seen.get(key, seen.get((kind, None), sizes["guess_s"][kind]))
    elapsed = time.perf_counter() - start
    if elapsed + estimate > budget:
      result["skipped"].append({"kind": kind, "job": name, "reason": f"budget: {elapsed:.0f} s spent, about "
                                f"{estimate:.0f} s needed, budget {budget:.0f} s"})
      continue
    tic = time.perf_counter()
    try:
      row = thunk()
    except Exception as e:  # noqa: BLE001  (one failing job, e.g. out of memory, must not end the check)
      result["errors"].append({"kind": kind, "job": name, "error": f"{type(e).__name__}: {e}"[:1000]})
      print(f"[gpu_check] {kind} {name}: {type(e).__name__}: {str(e)[:300]}", flush=True)
      continue
    took = time.perf_counter() - tic
    for k in {key, (kind, None)}:
      seen[k] = max(seen.get(k, 0.0), took)
    row["job_s"] = round(took, 1)
    if kind in ("train", "attack"):
      result[kind].append(row)
    else:
      result[kind] = row
    result["elapsed_s"] = round(time.perf_counter() - start, 1)
    gpu_report.save(result, args.out)
    print(f"[gpu_check] {kind} {name} done in {took:.1f} s ({result['elapsed_s']} s elapsed)", flush=True)
  result["elapsed_s"] = round(time.perf_counter() - start, 1)
  return result


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--tiny", action="store_true", help="toy sizes on the CPU (seconds; the test suite runs it)")
  p.add_argument("--budget_s", type=float, default=0.0, help="wall-time budget (default 420; --tiny 240)")
  p.add_argument("--resume", action="store_true",
                 help="keep the rows of the JSON at --out and run only the jobs it lacks (failed or skipped ones)")
  p.add_argument("--out", default=None, help="JSON path (default bench/results/gpu_check[_quick].json)")
  p.add_argument("--fed_decoder", default="turbo", choices=("turbo", "pil", "dali"),
                 help="config.data.decoder of the fed-rate job ('dali' falls back to 'turbo' without DALI)")
  args = p.parse_args(argv)
  if args.out is None:
    args.out = benchlib.default_out("gpu_check", args.tiny)  # --tiny: gpu_check_quick.json (git ignores it)
  if args.tiny:
    jax.config.update("jax_disable_most_optimizations", True)  # toy sizes: compile time is all there is
  prior = gpu_report.prior_result(args.out) if args.resume else None
  why = prior and gpu_report.resume_mismatch(prior, getattr(jax.devices()[0], "device_kind", ""), args.tiny)
  if why:
    print(why, file=sys.stderr)
    return 2
  result = run(args, prior)
  result.setdefault("machine", {})["load_average_1_5_15_at_end"] = [round(x, 2) for x in os.getloadavg()]
  gpu_report.save(result, args.out)
  print(gpu_report.tables(result))
  numerics_ok = (result.get("numerics") or {}).get("ok", True)
  return 0 if numerics_ok and not result["errors"] else 1


if __name__ == "__main__":
  sys.exit(main())
