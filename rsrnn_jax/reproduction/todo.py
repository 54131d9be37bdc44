"""``--dry_run``: what a reproduction would run, why, and about how long it would take, without running anything
or touching a run (no JAX).

Each run's stages are decided as :func:`rsrnn_jax.reproduction.stages.run_model` decides them
(:func:`~rsrnn_jax.reproduction.stages.decide_stages`; a run whose training config changed counts as trained
again). A stage to run is estimated from the times its setting's finished stages recorded: the median of the same
model's same stage (other seeds, or an earlier version of the run), else nothing (the table says so). Recorded
times belong to the device they ran on (``device`` in each record, listed with the totals). A stage a live process
is running now (the run's lock names it: :func:`rsrnn_jax.workdir.live_holder`) says so; an interrupted one says
what it resumes from (its last checkpoint, its attack journal).
"""
from __future__ import annotations

import os
import statistics

from rsrnn_jax import workdir
from rsrnn_jax.reproduction import runs
from rsrnn_jax.reproduction.stages import decide_stages, fingerprints, read_stages, resumes_from, retrain_reason


def pending(out_dir: str, configs: dict, order, plateau_examples: int = 0, only=None, rerun=()) -> list[dict]:
  """The stages that would run, in the order they would: one dict (model, seed, stage, why, ran: the seconds an
  interrupted stage that resumes has run) each. ``configs``:
  {model: {seed: {stage: config}}}; ``order``: the (model, seed) pairs in the order the runs go."""
  rows = []
  for model, seed in order:
    stage_configs = configs[model][seed]
    path = runs.run_dir(out_dir, model, seed)
    fps = fingerprints(stage_configs, plateau_examples)
    records = read_stages(path)
    retrain = retrain_reason(path, records, fps["train"])
    holder = workdir.live_holder(path)
    for stage, action, why in decide_stages(stage_configs, path, {} if retrain else records, fps, only, rerun):
      if action != "run":
        continue
      if retrain:
        why = f"{retrain}: trained again"
      elif why == "interrupted" and holder:  # the record a running process wrote when it started the stage
        why = f"running now (PID {holder['pid']}, since {holder.get('since', '?')})"
      resumed = why in ("interrupted", "its outputs are missing") and resumes_from(stage, path)
      if resumed:
        why += f", resumes from {resumed}"
      ran = float(records.get(stage, {}).get("seconds", 0.0)) if resumed else 0.0
      rows.append({"model": model, "seed": seed, "stage": stage, "why": why, "ran": ran})
  return rows


def recorded_times(out_dir: str) -> tuple[dict, dict]:
  """({(model, stage): [seconds of each finished stage]}, {device: number of those stages}) of ``out_dir``'s runs."""
  times, devices = {}, {}
  folder = os.path.join(out_dir, "runs")
  for model in sorted(os.listdir(folder)) if os.path.isdir(folder) else ():
    for seed_dir in sorted(os.listdir(os.path.join(folder, model))):
      for stage, rec in read_stages(os.path.join(folder, model, seed_dir)).items():
        if rec.get("done"):
          times.setdefault((model, stage), []).append(float(rec.get("seconds", 0.0)))
          device = rec.get("device", "not recorded")
          devices[device] = devices.get(device, 0) + 1
  return times, devices


def estimate(times: dict, model: str, stage: str, ran: float = 0.0) -> float | None:
  """Seconds ``stage`` of ``model`` should take (``times``: :func:`recorded_times`), less ``ran`` (what an
  interrupted stage that resumes has run); None without a recorded time."""
  recorded = times.get((model, stage))
  return max(statistics.median(recorded) - ran, 0.0) if recorded else None


TRAIN_MIN_S = 15 * 60  # --deadline: a training that would end past it starts with this much left (it stops)


def starts(stage: str, est: float | None, left: float) -> bool:
  """Whether ``stage``, estimated at ``est`` seconds (None: no recorded time), starts with ``left`` seconds to
  the deadline: if it should end by then; if nothing goes by, unless a training with under :data:`TRAIN_MIN_S`
  left (too little to reach a checkpoint); a training that would end later if ``TRAIN_MIN_S`` are left (it
  stops at its last checkpoint before the deadline: :func:`rsrnn_jax.train.loop.stops_after_save`)."""
  if left <= 0:
    return False
  if est is not None and est <= left:
    return True
  return left >= TRAIN_MIN_S if stage == "train" else est is None


def fitting(stages: list, estimates: list, left: float) -> tuple[int, bool]:
  """How many of ``stages`` (names; ``estimates``: their seconds, None: unknown) start, one after another, in
  ``left`` seconds (:func:`starts`), and whether the last of them stops at the deadline: the first stage that
  may not start stops the rest, and a training that would end past ``left`` is the last to start."""
  spent = 0.0
  for n, (stage, est) in enumerate(zip(stages, estimates)):
    if not starts(stage, est, left - spent):
      return n, False
    if est is not None and est > left - spent:
      return n + 1, True
    spent += est or 0.0
  return len(estimates), False


def hours(seconds: float) -> str:
  return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def estimates(out_dir: str, rows: list[dict], times: dict | None = None) -> list:
  """The :func:`estimate` of each of :func:`pending`'s ``rows`` (seconds still to run, or None); ``times``:
  :func:`recorded_times`' first part, if already read."""
  times = recorded_times(out_dir)[0] if times is None else times
  return [estimate(times, r["model"], r["stage"], r.get("ran", 0.0)) for r in rows]


def _fit_note(rows: list[dict], est: list, left: float, until: str) -> str:
  n, stopped = fitting([r["stage"] for r in rows], est, left)
  blind = sum(e is None for e in est[:n])
  return (f"; with --deadline {until}: the first {n} start"
          + (f" ({blind} without a recorded time: they may not end by then)" if blind else "")
          + (", the last a training that stops at its last checkpoint before then" if stopped else ""))


def describe(setting: str, out_dir: str, rows: list[dict], left: float | None = None, until: str = "") -> str:
  """The plan of one setting as text: a line of totals, then one table row per stage to run. With ``left``
  (seconds to the deadline ``until``), how many of them would start (:func:`fitting`)."""
  times, devices = recorded_times(out_dir)
  est = estimates(out_dir, rows, times)
  known = [e for e in est if e is not None]
  unknown = len(est) - len(known)
  head = (f"{setting}: {len(rows)} stage(s) to run"
          + (f", about {hours(sum(known))}" if known else "")
          + (f" ({'+ ' if known else ''}{unknown} without a recorded time to go by)" if unknown else "")
          + (f"; times recorded on {', '.join(f'{d} ({n})' for d, n in sorted(devices.items()))}" if devices else "")
          + (_fit_note(rows, est, left, until) if left is not None else ""))
  lines = [head]
  if rows:
    lines += ["", "| model | seed | stage | why | estimate |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['model']} | {r['seed']} | {r['stage']} | {r['why']} | {hours(e) if e is not None else '–'} |"
              for r, e in zip(rows, est)]
  return "\n".join(lines)
