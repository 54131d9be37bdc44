"""The training loop: resumable (the newest good Orbax checkpoint in ``WORKDIR/checkpoints`` is restored and the
input pipeline restarts at the same batch, so ``kill -9`` followed by the same command finishes the same run),
then evaluation of the state it holds in memory.

Nothing good is lost: a damaged newest checkpoint is set aside and the previous one used
(:func:`rsrnn_jax.train.checkpoints.restore_newest_good`); a non-finite loss or gradient stops the run before the
next save (``train.nonfinite='stop'``, the default: the last good checkpoint stays, and the error names the step
and what to change) or skips the step (``'skip'``). ``config.json`` is written when the run's first step has run
(every check passed) and appended to ``config_history.jsonl``; a run that diverges puts the previous one back.
SIGINT/SIGTERM (under ``launch.py``) stop the run with one line naming the step and the newest checkpoint; a
checkpoint save in progress completes first. A fixation policy that has become deterministic (its REINFORCE loss
stays at 0: no gradient is left to change where the model looks) is reported once with a warning
(:class:`PolicyWatch`).

A time limit (``stop_at``, epoch seconds: a session's or a scheduler job's end) stops the training at its last
regular checkpoint that falls before it: after each save, if the next save would come past ``stop_at`` at the pace
of the last interval, training stops there, every step it ran saved (:func:`stops_after_save`). Only the regular
checkpoints exist, so retention and the checkpoints a run is read at stay as they are; the same command resumes.
"""
from __future__ import annotations

import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from rsrnn_jax import configlib, data
from rsrnn_jax import workdir as workdir_lib
from rsrnn_jax.train import checkpoints, parallel, writers
from rsrnn_jax.train.losses import per_step_metric_name
from rsrnn_jax.train.state import learning_rate_schedule, model_from_config, replicated_state
from rsrnn_jax.train.step import make_train_step

log = logging.getLogger(__name__)


def check_batch_size(config, field: str, mesh) -> None:
  """One line naming the config field if ``config.<field>`` does not split over the processes and devices."""
  section, key = field.split(".")
  value = int(config[section][key])
  try:
    parallel.local_batch_size(value, mesh)
  except ValueError as e:
    raise workdir_lib.UserError(f"config.{field}={value}: {e}") from None


def train(config, workdir: str, stop_at: float | None = None):
  """Trains ``config`` in ``workdir`` (resuming from its newest good checkpoint); returns what
  :func:`rsrnn_jax.evaluation.clean.evaluate` takes as ``loaded``: (model, state, info, mesh). The clean
  evaluation after training (``eval_at_end``) is :func:`rsrnn_jax.evaluation.clean.train_and_evaluate`.
  ``stop_at`` (epoch seconds): stop at the last checkpoint before then (:func:`stops_after_save`); the state
  returned is then that checkpoint's, short of ``num_train_steps``."""
  configlib.validate(config)
  checkpoints.check_before_data(config, os.path.join(workdir, "checkpoints"))
  info = data.dataset_info(config.data)
  model, _ = model_from_config(config, info)
  mesh = parallel.make_mesh(config.num_devices)
  check_batch_size(config, "train.batch_size", mesh)
  if config.train.eval_at_end:
    check_batch_size(config, "eval.batch_size", mesh)
  manager = checkpoints.manager(workdir, config, create=True)
  meta = checkpoints.metadata(config, info)
  checkpoints.check_compatible(manager, meta)

  init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
  with jax.set_mesh(mesh):
    state = replicated_state(model, config, info.image_shape, init_rng, mesh)
    found = checkpoints.restore_newest_good(manager, state, meta, set_aside=True)
    start = 0 if found is None else found[1]
    total = int(config.train.num_train_steps)
    if start > total:
      raise workdir_lib.UserError(
          f"config.train.num_train_steps={total} is below the newest checkpoint (step {start}) in "
          f"{manager.directory}: pass --config.train.num_train_steps={start} or more to continue training, "
          f"or --mode=eval to evaluate step {start}")
    if found is not None:
      state = found[0]
      log.info("resumed from step %d in %s", start, workdir)
    state = _train(config, workdir, state, manager, meta, info, mesh, step_rng, start, stop_at)
  return model, state, info, mesh


def stops_after_save(now: float, stop_at: float | None, interval_s: float, interval_steps: int,
                     steps_to_next: int) -> bool:
  """Whether training stops at the save it has just made: the next save, ``steps_to_next`` steps away at the
  pace of the last ``interval_steps`` steps (``interval_s`` seconds, since the previous save or the start, so
  the first interval counts its compilation too), would come after ``stop_at``."""
  if stop_at is None or steps_to_next <= 0:
    return False
  return now + interval_s * steps_to_next / max(interval_steps, 1) > stop_at


class _TimeLimit:
  """``stop_at`` seen at each save of a training that started at step ``start``: :meth:`reached` after the save
  of step ``done`` says whether to stop there (:func:`stops_after_save`; process 0's answer, on every process:
  their clocks differ, and all must stop at the same step)."""

  def __init__(self, stop_at: float | None, start: int, every: int, total: int):
    self.stop_at, self.every, self.total = stop_at, every, total
    self.saved_t, self.saved_step = time.perf_counter(), start

  def reached(self, done: int) -> bool:
    if self.stop_at is None:
      return False
    now = time.perf_counter()
    late = stops_after_save(time.time(), self.stop_at, now - self.saved_t, done - self.saved_step,
                            min(self.every - done % self.every, self.total - done))
    self.saved_t, self.saved_step = now, done
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      late = bool(multihost_utils.broadcast_one_to_all(np.asarray(late)))
    return late


@jax.jit
def _track(bad, finite, step):
  """bad = [first non-finite step or -1, number of non-finite steps], updated with this step's flag."""
  first = jnp.where((bad[0] < 0) & ~finite, step, bad[0])
  return jnp.stack([first, bad[1] + (~finite).astype(jnp.int32)])


def _train(config, workdir, state, manager, meta, info, mesh, step_rng, start: int, stop_at=None):
  """Steps ``start+1 .. num_train_steps`` (fewer with ``stop_at``): logs, checks the finite-loss flag, saves;
  returns the last state."""
  total = int(config.train.num_train_steps)
  step_fn = make_train_step(config, mesh)
  batches = data.train_batches(config.data, global_batch_size=config.train.batch_size, seed=config.seed,
                               start_step=start, process_index=jax.process_index(),
                               process_count=jax.process_count())
  writer = writers.MetricWriter(workdir, enabled=jax.process_index() == 0, resume_step=start)
  progress = writers.Progress(total, start, enabled=jax.process_index() == 0)
  guard, policy_watch = _Guard(config, manager), PolicyWatch()
  window_t, window_n = time.perf_counter(), 0
  done, previous_config = start, False
  limit = _TimeLimit(stop_at, start, int(config.train.checkpoint_every), total)
  try:
    for step in range(start, total):
      batch = parallel.shard_batch(next(batches), mesh)
      state, metrics = step_fn(state, batch, jax.random.fold_in(step_rng, step))
      done = step + 1
      if previous_config is False and jax.process_index() == 0:  # training has started: the workdir's run now
        previous_config = configlib.record_config(workdir, config.to_dict(), step=start)
      guard.track(metrics.pop("finite"), done)
      window_n += config.train.batch_size
      log_now = done % config.train.log_every == 0 or done == total
      save_now = done % config.train.checkpoint_every == 0 or done == total
      if log_now:
        scalars, acc = _scalars(config, info, metrics, step, window_n / max(time.perf_counter() - window_t, 1e-9))
        scalars.update(guard.scalars())
        policy_watch.see(done, scalars)
        writer.write(done, scalars, **{per_step_metric_name(info.multi_label): acc})
        progress.update(done, loss=scalars["loss"], acc=acc[-1], img_s=scalars["images_per_sec"])
        window_t, window_n = time.perf_counter(), 0
      else:
        progress.update(done)
      if log_now or save_now:
        guard.check()  # raises before a save if a step went non-finite (policy 'stop')
      if save_now:
        checkpoints.save(manager, done, state, meta)
        if limit.reached(done):
          log.info("stopped at step %d of %d: the next checkpoint would come after the time limit; checkpoint %d "
                   "is saved and the same command resumes from it", done, total, done)
          break
  except Diverged as e:
    if previous_config is not False:
      configlib.restore_config(workdir, previous_config, event="diverged", step=e.step)
    raise
  except workdir_lib.Interrupted as e:
    raise e.because(_interrupted_line(manager, done)) from None
  finally:  # an interrupted run keeps every checkpoint it completed
    manager.wait_until_finished()
    progress.close()
    writer.close()
  return state


def _interrupted_line(manager, done: int) -> str:
  last = manager.latest_step()
  if last is None:
    return f"interrupted at step {done}; no checkpoint was saved yet; run the same command to start again"
  return f"interrupted at step {done}; checkpoint {last} is the latest; run the same command to resume"


def _scalars(config, info, metrics, step: int, images_per_sec: float):
  metrics = jax.device_get(metrics)
  scalars = {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0}
  scalars["images_per_sec"] = images_per_sec
  scalars["learning_rate"] = float(learning_rate_schedule(config.train)(step))
  return scalars, [float(a) for a in metrics[per_step_metric_name(info.multi_label)]]


class PolicyWatch:
  """Warns once when the logged REINFORCE loss has stayed below ``tol`` in size for ``logs`` logs in a row.

  The loss is −(R − b)·log π(a) for the sampled fixations: it is 0 exactly when π(a) = 1, a deterministic
  policy, whose softmax has saturated and gives REINFORCE no gradient: the policy cannot change any more. A policy
  that died this way may still pick an image-dependent fixation, or the same scanpath for every image (the clean
  evaluation's ``policy`` statistics tell which: docs/zoo.md § A policy can still die).
  """

  def __init__(self, tol: float = 1e-4, logs: int = 5):
    self.tol, self.logs = tol, logs
    self.since, self.count, self.warned = None, 0, False

  def see(self, step: int, scalars: dict) -> None:
    loss = scalars.get("policy_loss")
    if loss is None or self.warned:
      return
    if abs(loss) >= self.tol:
      self.since, self.count = None, 0
      return
    self.since, self.count = self.since or step, self.count + 1
    if self.count >= self.logs:
      self.warned = True
      log.warning("the fixation policy has been deterministic since step %d (|policy loss| < %g in %d logs in a "
                  "row): REINFORCE has no gradient left, so where the model looks will not change any more "
                  "(docs/zoo.md § A policy can still die)", self.since, self.tol, self.count)


class Diverged(workdir_lib.UserError):
  """A non-finite loss or gradient under ``train.nonfinite='stop'``; ``step`` is the first such step."""

  def __init__(self, message: str, step: int):
    super().__init__(message)
    self.step = step


class _Guard:
  """The finite-loss guard: accumulates the steps' ``finite`` flags on the device, read at log and save points."""

  def __init__(self, config, manager):
    self.config, self.manager = config, manager
    self.policy = config.train.get("nonfinite", "stop")
    self.bad = jnp.array([-1, 0], jnp.int32)
    self.reported = 0

  def track(self, finite, step: int) -> None:
    self.bad = _track(self.bad, finite, step)

  def scalars(self) -> dict:
    return {"skipped_steps": float(jax.device_get(self.bad)[1])} if self.policy == "skip" else {}

  def check(self) -> None:
    first, count = (int(v) for v in jax.device_get(self.bad))
    if first < 0:
      return
    t = self.config.train
    if self.policy == "skip":
      if count > self.reported:
        log.warning("skipped %d step(s) with a non-finite loss or gradient so far (first: step %d)", count, first)
        self.reported = count
      return
    last = self.manager.latest_step()
    kept = f"checkpoint {last} is kept" if last is not None else "no checkpoint was saved"
    clip = f" or --config.train.grad_clip (now {t.grad_clip})" if float(t.grad_clip) else ""
    raise Diverged(
        f"training diverged: the loss or a gradient became NaN/Inf at step {first}; stopped without saving "
        f"({kept}). Lower --config.train.learning_rate (now {t.learning_rate}){clip} and run the same command "
        f"again, or pass --config.train.nonfinite=skip to skip such steps", first)
