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
docs/scaling.md says how to install the CUDA build of jax and run this on a GPU machine.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.metadata
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
import numpy as np  # noqa: E402

from configs import common  # noqa: E402
from rsrnn_jax import attacks, data  # noqa: E402
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
VARIANTS = {"f32_default": ("float32", None), "f32_highest": ("float32", "highest"), "bf16": ("bfloat16", None)}
TOLERANCES = {"f32_highest": 1e-3, "f32_default": 2e-2, "bf16": 1e-1}  # relative logit / loss errors


def make_config(model: str, *, tiny: bool, dtype: str = "float32", unroll: int = 1, remat: bool = False,
                batch: int = 8):
  """configs/imagenet.py for ``model`` (shrunk to toy widths and 32² images with ``tiny``)."""
  c = benchlib.load_config(f"configs/imagenet.py:model={model}")
  if tiny:
    c.data.image_size, c.data.eval_resize = 32, 36
    common.set_model(c, model, stages=((4, 1, 1), (8, 1, 1), (8, 1, 1), (8, 1, 0)), out_size=16,
                     density_ratio=4.0)
    c.model.dorsal.saliency_size, c.model.dorsal.hidden, c.model.ior_size = 4, 4, 8
    c.train.num_glimpses = 2
  c.model.dtype, c.model.unroll, c.model.remat = dtype, int(unroll), bool(remat)
  c.train.batch_size = batch
  c.train.warmup_steps = 0  # the full learning rate from step 1: a few steps move the parameters
  return c


def mesh_of(device) -> jax.sharding.Mesh:
  return jax.sharding.Mesh(np.array([device]), (parallel.DATA_AXIS,))


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
# Numerics: accelerator vs CPU reference.


def _rel(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-6))


def _forward(model, num_steps: int):
  """(logits with forced fixations, logits and fixations with the policy's argmax) of an eval forward pass."""
  def fn(variables, images, scanpath):
    forced = model.apply(variables, images, num_steps=num_steps, train=False, fixations=scanpath,
                         fixation_mask=jnp.ones((num_steps,), bool))["logits"]
    free = model.apply(variables, images, num_steps=num_steps, train=False)
    return forced, free["logits"], free["fixations"]
  return jax.jit(fn)


def _train_losses(config, host_state, batches, device, steps: int) -> list[dict]:
  mesh = mesh_of(device)
  model, _ = train_state.model_from_config(config, _info(config))
  state = jax.device_put(host_state.replace(apply_fn=model.apply), parallel.replicated(mesh))
  step = train_step.make_train_step(config, mesh)
  out = []
  with jax.set_mesh(mesh):
    for i in range(steps):
      state, metrics = step(state, parallel.shard_batch(batches[i], mesh), jax.random.key(100 + i))
      out.append({k: float(metrics[k]) for k in ("loss", "ce", "grad_norm")})
  return out


def _info(config):
  shape, classes = benchlib.image_shape_and_classes(config)
  return data.DatasetInfo(config.data.name, classes, shape, 0, 0, ())


def numerics(sizes, tiny: bool, accel, cpu) -> dict:
  b, steps = sizes["numerics_batch"], sizes["numerics_steps"]
  ref_cfg = make_config("rsrnn", tiny=tiny, unroll=0, batch=b)  # full unroll: the fast CPU scan
  _, state, _ = benchlib.random_setup(ref_cfg, b, mesh_of(cpu), seed=0)
  host_state = jax.device_get(state)
  variables = train_state.variables_of(host_state)
  rng = np.random.default_rng(1)
  shape, classes = benchlib.image_shape_and_classes(ref_cfg)
  batches = [{"image": rng.uniform(0, 1, (b, *shape)).astype(np.float32),
              "label": rng.integers(0, classes, b).astype(np.int32)} for _ in range(steps)]
  T = int(ref_cfg.train.num_glimpses)
  scanpath = rng.uniform(-0.9, 0.9, (T, b, 2)).astype(np.float32)
  on = lambda dev, x: jax.device_put(x, dev)

  def forward(config, dev):
    model, _ = train_state.model_from_config(config, _info(config))
    return jax.device_get(_forward(model, T)(on(dev, variables), on(dev, batches[0]["image"]), on(dev, scanpath)))

  ref = forward(ref_cfg, cpu)
  out = {"batch": b, "steps": T, "reference": "f32 on " + str(cpu), "logits": {}, "train": {}}
  for name in sizes["logit_variants"]:
    dtype, precision = VARIANTS[name]
    cfg = make_config("rsrnn", tiny=tiny, dtype=dtype, unroll=1, batch=b)
    with jax.default_matmul_precision(precision) if precision else contextlib.nullcontext():
      forced, free, fix = forward(cfg, accel)
    err = _rel(forced, ref[0])
    out["logits"][name] = {"rel_err_forced": err, "tol": TOLERANCES[name], "ok": bool(err <= TOLERANCES[name]),
                           "rel_err_step1": _rel(free[0], ref[1][0]),
                           "argmax_fixations_equal": float(np.mean(np.all(np.isclose(fix, ref[2], atol=1e-4),
                                                                          axis=-1)))}
  ref_losses = _train_losses(ref_cfg, host_state, batches, cpu, steps)
  for name in sizes["train_variants"]:
    cfg = make_config("rsrnn", tiny=tiny, dtype=VARIANTS[name][0], unroll=1, batch=b)
    losses = _train_losses(cfg, host_state, batches, accel, steps)
    err = {k: max(abs(x[k] - r[k]) / max(abs(r[k]), 1e-6) for x, r in zip(losses, ref_losses))
           for k in ("loss", "ce")}
    # Gate on the cross-entropy: the REINFORCE part of the loss has a 0/1 reward (argmax = label) that a
    # rounding difference can flip for a near-tied example; its agreement is reported as loss_ok.
    out["train"][name] = {"losses": [x["loss"] for x in losses], "reference": [r["loss"] for r in ref_losses],
                          "rel_err_loss": err["loss"], "rel_err_ce": err["ce"], "tol": TOLERANCES[name],
                          "ok": bool(err["ce"] <= TOLERANCES[name]),
                          "loss_ok": bool(err["loss"] <= TOLERANCES[name])}
  out["ok"] = all(v["ok"] for sec in ("logits", "train") for v in out[sec].values())
  return out


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
    model, _ = train_state.model_from_config(cfg, _info(cfg))
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
            "versions": _versions(), "compilation_cache": jax.config.jax_compilation_cache_dir or None,
            "train": [], "attack": [], "skipped": [], "errors": []}
  if prior:
    result["resumed"] = prior.get("resumed", []) + [{k: prior.get(k) for k in ("elapsed_s", "machine", "versions")}]
    for k in ("peak", "numerics", "fed", "train", "attack"):
      if k in prior:
        result[k] = prior[k]
  seen: dict = {}  # longest time taken so far per kind of job (and per model for train jobs)
  for kind, name, thunk in jobs(sizes, args.tiny, accel, cpu, result, args.fed_decoder):
    if prior and _done(result, kind, name):
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
    _save(result, args.out)
    print(f"[gpu_check] {kind} {name} done in {took:.1f} s ({result['elapsed_s']} s elapsed)", flush=True)
  result["elapsed_s"] = round(time.perf_counter() - start, 1)
  return result


def _versions() -> dict:
  out = {"python": sys.version.split()[0]}
  for dist in ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda13-plugin", "flax", "optax", "numpy"):
    try:
      out[dist] = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
      pass
  out["jax"] = jax.__version__
  return out


def _prior(out: str) -> dict | None:
  """The JSON an earlier run wrote at ``out`` (``--resume``), or None where there is none."""
  if not out or not os.path.exists(out):
    return None
  with open(out) as f:
    return json.load(f)


def resume_mismatch(prior: dict, device_kind: str, tiny: bool) -> str:
  """Why ``--resume`` must not continue ``prior`` here (another device kind or size), or ""."""
  kind = (prior.get("device") or {}).get("kind")
  if kind != device_kind or bool(prior.get("tiny")) != tiny:
    return (f"--resume: the JSON at --out was measured on {kind!r}{' (--tiny)' if prior.get('tiny') else ''}, "
            f"this run is on {device_kind!r}{' (--tiny)' if tiny else ''}; pass another --out or drop --resume")
  return ""


def _done(result: dict, kind: str, name: str) -> bool:
  """Whether ``result`` (from an earlier run) already holds the row of job ``kind`` / ``name``."""
  if kind in ("train", "attack"):
    spec = json.loads(name)
    return any(all(row.get(k) == v for k, v in spec.items()) for row in result[kind])
  return kind in result


def _save(result: dict, out: str) -> None:
  if out:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
      json.dump(result, f, indent=1)


def tables(r: dict) -> str:
  lines = [f"device: {r['device']['kind']} ({r['device']['platform']}), jax {r['versions']['jax']}, "
           f"{r.get('elapsed_s')} s of a {r['budget_s']:.0f} s budget"
           + "".join(f" (resuming a run of {p.get('elapsed_s')} s)" for p in r.get("resumed", []))]
  n = r.get("numerics")
  if n:
    lines += ["", f"numerics vs {n['reference']} (batch {n['batch']}, T = {n['steps']}): "
              f"{'PASS' if n['ok'] else 'FAIL'}", "| variant | logits rel. err (forced) | step-1 rel. err | "
              "argmax fixations equal | train loss rel. err | CE rel. err | tol |", "|---|---|---|---|---|---|---|"]
    for name, v in n["logits"].items():
      t = n["train"].get(name, {})
      loss, ce = (f"{t[k]:.2e}" if k in t else "not run" for k in ("rel_err_loss", "rel_err_ce"))
      lines.append(f"| {name} | {v['rel_err_forced']:.2e} | {v['rel_err_step1']:.2e} | "
                   f"{v['argmax_fixations_equal']:.2f} | {loss} | {ce} | {v['tol']:.0e} |")
  p = r.get("peak")
  if p:
    lines += ["", f"matmul {p['n']}³ TFLOP/s: bf16 {p['bf16_tflops']}, f32 default {p['f32_default_tflops']}, "
              f"f32 highest {p['f32_highest_tflops']}; datasheet {p['datasheet_tflops'] or 'unknown device'}"]
  if r["train"]:
    lines += ["", "| model | batch | dtype | scan | remat | img/s | compile s | step ms | TFLOP/s | of matmul "
              "| GFLOP/img | program MB | device peak MB |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for t in r["train"]:
      lines.append(f"| {t['model']} | {t['batch']} | {t['dtype']} | {t['scan']} | {t['remat']} | "
                   f"{t['images_per_s']} | {t['compile_s']} | {t['median_s'] * 1e3:.1f} | {t['tflops_per_s']} | "
                   f"{t['of_matmul_peak']} | {t['gflop_per_image']} | {t.get('program_mb')} | "
                   f"{t.get('device_peak_mb')} |")
  f = r.get("fed")
  if f:
    lines += ["", f"fed rate ({f['model']} {f['dtype']} {f['scan']}, batch {f['batch']}, {f['workers']} workers on "
              f"{f['cpus']} cores, decoder {f.get('decoder_used', f['decoder'])}, {f['image_dtype']} hand-over): "
              f"{f['fed_images_per_s']} img/s fed vs {f['resident_images_per_s']} resident = starvation ratio "
              f"{f['starvation_ratio']}"]
  if r["attack"]:
    lines += ["", "| attack | steps | remat | batch | iterations | images × iterations / s | compile s | "
              "program MB |", "|---|---|---|---|---|---|---|---|"]
    for a in r["attack"]:
      lines.append(f"| {a['attack']} | {a['steps']} | {a['remat']} | {a['batch']} | {a['iterations']} | "
                   f"{a['images_x_iterations_per_s']} | {a['compile_s']} | {a.get('program_mb')} |")
  for s in r["skipped"]:
    lines.append(f"skipped {s['kind']} {s['job']}: {s['reason']}")
  for e in r["errors"]:
    lines.append(f"ERROR {e['kind']} {e['job']}: {e['error'][:300]}")
  return "\n".join(lines)


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
  prior = _prior(args.out) if args.resume else None
  why = prior and resume_mismatch(prior, getattr(jax.devices()[0], "device_kind", ""), args.tiny)
  if why:
    print(why, file=sys.stderr)
    return 2
  result = run(args, prior)
  result.setdefault("machine", {})["load_average_1_5_15_at_end"] = [round(x, 2) for x in os.getloadavg()]
  _save(result, args.out)
  print(tables(result))
  numerics_ok = (result.get("numerics") or {}).get("ok", True)
  return 0 if numerics_ok and not result["errors"] else 1


if __name__ == "__main__":
  sys.exit(main())
