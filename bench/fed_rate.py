"""The fed rate: end-to-end training images/s with the real input pipeline on JPEG files, against the same
compiled train step on one device-resident batch (the starvation ratio = fed ÷ resident; 1 = the pipeline keeps
up). Used by bench/input_pipeline.py (``--fed_workers``) and bench/gpu_check.py (the ``fed`` job).

``measure(config, data_cfg, workers=..., steps=...)``: ``config`` is a full training config (model, train step);
its ``data`` section is replaced by ``data_cfg`` (the synthetic imagenet100 of bench/input_pipeline.py) with
``num_workers`` = ``workers``. The fed loop is the training loop's own (rsrnn_jax/train/loop.py): ``next`` on
``data.train_batches``, ``parallel.shard_batch``, the jitted step, dispatched asynchronously, the state
blocked on only at the end; ``warmup`` steps first (worker start-up, the first batches prefetched).

``small_cpu_config()``: configs/imagenet.py's RS-RNN at 336² with toy widths (float32), whose CPU train step is
fast enough (about 100–200 images/s on 2 cores) that the pipeline, sharing those cores, decides the fed rate.
"""
from __future__ import annotations

import statistics
import time

import benchlib

CPU_STAGES = ((8, 1, 1), (16, 1, 1), (16, 1, 1), (16, 1, 0))


def small_cpu_config(batch: int):
  from configs import common
  c = benchlib.load_config("configs/imagenet.py:model=rsrnn")
  common.set_model(c, "rsrnn", stages=CPU_STAGES, out_size=32, density_ratio=10.0)
  c.model.dtype, c.train.batch_size, c.train.warmup_steps = "float32", batch, 0
  return c


def _step_setup(config):
  import jax

  from rsrnn_jax import data
  from rsrnn_jax.train import parallel
  from rsrnn_jax.train import state as train_state
  from rsrnn_jax.train.step import make_train_step
  mesh = parallel.make_mesh()
  info = data.dataset_info(config.data)
  model, _ = train_state.model_from_config(config, info)
  with jax.set_mesh(mesh):
    state = train_state.replicated_state(model, config, info.image_shape, jax.random.key(0), mesh)
  return mesh, state, make_train_step(config, mesh)


def _run(step_fn, state, next_batch, steps: int, mesh):
  """(seconds for ``steps`` steps, state): batches from ``next_batch()``, dispatched without waiting."""
  import jax
  tic = time.perf_counter()
  with jax.set_mesh(mesh):
    for i in range(steps):
      state, _ = step_fn(state, next_batch(), jax.random.key(i))
    jax.block_until_ready(state)
  return time.perf_counter() - tic, state


def measure(config, data_cfg, *, workers: int, steps: int, warmup: int = 3, repeats: int = 3) -> dict:
  """Images/s fed by the pipeline with ``workers`` workers and on one resident batch; the ratio of the two."""
  import jax

  from rsrnn_jax import data
  from rsrnn_jax.data import dali
  from rsrnn_jax.train import parallel
  config = config.copy_and_resolve_references()
  mean, std = config.data.mean, config.data.std  # the model's normalisation
  config.data = data_cfg.copy_and_resolve_references()
  config.data.mean, config.data.std, config.data.num_workers = mean, std, workers
  batch = int(config.train.batch_size)
  mesh, state, step_fn = _step_setup(config)
  batches = data.train_batches(config.data, global_batch_size=batch, seed=0)
  tic = time.perf_counter()
  first = parallel.shard_batch(next(batches), mesh)
  compile_tic = time.perf_counter()
  with jax.set_mesh(mesh):
    step_fn = step_fn.lower(state, first, jax.random.key(0)).compile()
  compile_s = time.perf_counter() - compile_tic
  _, state = _run(step_fn, state, lambda: parallel.shard_batch(next(batches), mesh), warmup, mesh)
  startup_s = time.perf_counter() - tic - compile_s
  fed, resident = [], []
  for _ in range(repeats):  # alternated, so that a change in the machine's load hits both
    t, state = _run(step_fn, state, lambda: parallel.shard_batch(next(batches), mesh), steps, mesh)
    fed.append(steps * batch / t)
    t, state = _run(step_fn, state, lambda: first, steps, mesh)
    resident.append(steps * batch / t)
  del batches
  f, r = statistics.median(fed), statistics.median(resident)
  return {"workers": workers, "batch": batch, "steps": steps, "repeats": repeats,
          "decoder": str(config.data.decoder), "decoder_used": dali.resolve(str(config.data.decoder)),
          "image_dtype": str(config.data.image_dtype),
          "fed_images_per_s": round(f, 1), "resident_images_per_s": round(r, 1),
          "starvation_ratio": round(f / r, 3), "fed_all": [round(x, 1) for x in fed],
          "resident_all": [round(x, 1) for x in resident], "compile_s": round(compile_s, 2),
          "startup_s": round(startup_s, 2), "devices": jax.device_count(), "backend": jax.default_backend()}
