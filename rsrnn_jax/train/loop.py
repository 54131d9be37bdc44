"""The training loop: resumable (the latest Orbax checkpoint in ``WORKDIR/checkpoints`` is restored and the input
pipeline restarts at the same batch, so ``kill -9`` followed by the same command finishes the same run), then
evaluation of the state it holds.
"""
from __future__ import annotations

import logging
import time

import jax
import numpy as np

from rsrnn_jax import configlib, data
from rsrnn_jax.train import checkpoints, parallel, writers
from rsrnn_jax.train.losses import per_step_metric_name
from rsrnn_jax.train.state import learning_rate_schedule, model_from_config, replicated_state
from rsrnn_jax.train.step import make_train_step

log = logging.getLogger(__name__)


def train_and_evaluate(config, workdir: str):
  """Trains ``config`` in ``workdir`` (resuming from its latest checkpoint), then evaluates."""
  configlib.validate(config)
  info = data.dataset_info(config.data)
  model, _ = model_from_config(config, info)
  mesh = parallel.make_mesh(config.num_devices)
  parallel.local_batch_size(config.train.batch_size, mesh)
  manager = checkpoints.manager(workdir, config, create=True)
  meta = checkpoints.metadata(config, info)
  checkpoints.check_compatible(manager, meta)

  rng = jax.random.key(config.seed)
  init_rng, step_rng = jax.random.split(rng)
  with jax.set_mesh(mesh):
    state = replicated_state(model, config, info.image_shape, init_rng, mesh)
    state = checkpoints.restore_latest(manager, state) or state
    start = int(jax.device_get(state.step))
    total = int(config.train.num_train_steps)
    if start:
      log.info("resumed from step %d in %s", start, workdir)
    step_fn = make_train_step(config, mesh)
    batches = data.train_batches(config.data, global_batch_size=config.train.batch_size,
                                 seed=config.seed, start_step=start,
                                 process_index=jax.process_index(), process_count=jax.process_count())
    writer = writers.MetricWriter(workdir, enabled=jax.process_index() == 0, resume_step=start)
    progress = writers.Progress(total, start, enabled=jax.process_index() == 0)
    window_t, window_n = time.perf_counter(), 0
    try:
      for step in range(start, total):
        batch = parallel.shard_batch(next(batches), mesh)
        state, metrics = step_fn(state, batch, jax.random.fold_in(step_rng, step))
        window_n += config.train.batch_size
        done = step + 1
        if done % config.train.log_every == 0 or done == total:
          metrics = jax.device_get(metrics)
          elapsed = time.perf_counter() - window_t
          scalars = {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0}
          scalars["images_per_sec"] = window_n / max(elapsed, 1e-9)
          scalars["learning_rate"] = float(learning_rate_schedule(config.train)(step))
          key = per_step_metric_name(info.multi_label)
          acc = [float(a) for a in metrics[key]]
          writer.write(done, scalars, **{key: acc})
          progress.update(done, loss=scalars["loss"], acc=acc[-1], img_s=scalars["images_per_sec"])
          window_t, window_n = time.perf_counter(), 0
        else:
          progress.update(done)
        if done % config.train.checkpoint_every == 0 or done == total:
          checkpoints.save(manager, done, state, meta)
    finally:  # an interrupted run still commits the checkpoint being written
      manager.wait_until_finished()
      progress.close()
      writer.close()
  results = None
  if config.train.eval_at_end:
    from rsrnn_jax.evaluation import clean as evaluate  # local import: evaluate imports this module
    results = evaluate.evaluate(config, workdir)
  return results
