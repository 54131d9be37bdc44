"""``--deadline``: start a stage only if it should end before a given time.

For a reproduction with a wall-clock limit: a session, or a scheduler's job, on a machine whose disk does not
outlive it. A stage cut off there loses more than its time: an attack's journal (robustness/journal.py) holds
adversarial images, too large to carry, so an adaptive stage stopped an hour in starts over on the next machine.
With a deadline the command stops *starting* stages instead, and every stage it starts should finish.

A stage's estimate is what ``--dry_run`` shows (:mod:`rsrnn_jax.reproduction.todo`): the median time the same
model's same stage recorded in this setting, less what an interrupted stage that resumes (a training from its
checkpoint, an attack from its journal) has already run. A stage with no recorded time starts (nothing to go by;
it resumes if cut off). The first stage that would end past the deadline stops the command's work: nothing is
written for it, and no later stage starts, even a shorter one, so the order stays the command's (seed by seed,
the transfer source first; choose another with ``--models``, ``--seeds``, ``--stages``). The report is drawn as
usual; the same command goes on from there. With ``--jobs`` each job decides for its own stages.

A training is the exception, as its checkpoints are small enough to carry (tools/keep_runs.py): with at least
:data:`~rsrnn_jax.reproduction.todo.TRAIN_MIN_S` left it starts even if it would end later, and stops at its last
regular checkpoint before the deadline (:func:`rsrnn_jax.train.loop.stops_after_save`); that stops the command,
and the same command resumes the training from that checkpoint, on this machine or another.
"""
from __future__ import annotations

import datetime
import re
import time

from rsrnn_jax.reproduction import todo
from rsrnn_jax.reproduction.stages import stage_outputs

_FORMS = "HH:MM (the next such time), +DURATION (e.g. +2h30m, +90m) or a date and time (e.g. 2026-12-07T15:00)"


def parse(text: str, now: float | None = None) -> float:
  """``--deadline TEXT`` as epoch seconds: ``HH:MM`` (local time, today or else tomorrow), ``+2h30m`` / ``+90m``
  / ``+1.5h`` (from ``now``; more than zero), or an ISO date and time (local unless it names its zone; one already
  past starts nothing: how ``--jobs`` hands each job the deadline). ValueError: any other form."""
  now = time.time() if now is None else now
  text = text.strip()
  rel = re.fullmatch(r"\+(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?", text)
  clock = re.fullmatch(r"(\d{1,2}):(\d{2})", text)
  if rel and any(rel.groups()) and float(rel[1] or 0) + float(rel[2] or 0) > 0:
    return now + 3600 * float(rel[1] or 0) + 60 * float(rel[2] or 0)
  if clock and int(clock[1]) < 24 and int(clock[2]) < 60:
    day = datetime.datetime.fromtimestamp(now).replace(hour=int(clock[1]), minute=int(clock[2]), second=0,
                                                       microsecond=0)
    return day.timestamp() if day.timestamp() > now else (day + datetime.timedelta(days=1)).timestamp()
  try:
    return datetime.datetime.fromisoformat(text).timestamp()
  except ValueError:
    raise ValueError(f"--deadline expects {_FORMS}; got {text!r}") from None


def iso(at: float) -> str:
  """``at`` as the local date and time :func:`parse` reads back (what ``--jobs`` passes to each job)."""
  return datetime.datetime.fromtimestamp(at).isoformat(timespec="seconds")


class Deadline:
  """The deadline ``at`` (epoch seconds) of one command, over all its settings; ``clock``: the time now."""

  def __init__(self, at: float, clock=time.time):
    self.at, self.clock, self.stopped = at, clock, ""

  def refuses(self, out_dir: str, model: str, seed: int, stage: str, ran: float = 0.0) -> str:
    """Why ``stage`` of run (``model``, ``seed``) of the setting in ``out_dir`` may not start now ("" if it may),
    ``ran`` seconds of it already run (it resumes). A refusal
    stops the command: every later stage is refused too (:attr:`stopped` says where it stopped)."""
    if self.stopped:
      return f"the command stopped {self.stopped} (--deadline)"
    left = self.at - self.clock()
    est = todo.estimate(todo.recorded_times(out_dir)[0], model, stage, ran)
    if todo.starts(stage, est, left):
      return ""
    if left <= 0:
      why = f"the deadline {iso(self.at)} has passed"
    elif est is not None and est > left and stage != "train":
      why = f"about {todo.hours(est)} to run, {todo.hours(left)} left before the deadline {iso(self.at)}"
    else:
      why = (f"{todo.hours(left)} left before the deadline {iso(self.at)}: a training starts with "
             f"{todo.hours(todo.TRAIN_MIN_S)} or more, to reach a checkpoint")
    self.stopped = f"before {model}/seed{seed} {stage}"
    return why

  def bounded(self, train_fn, name: str):
    """``train_fn`` (a stage function) stopped at its last checkpoint before the deadline; a training that
    stops there stops the command (:attr:`stopped` names run ``name``'s training)."""
    def train(config, run_dir):
      train_fn(config, run_dir, stop_at=self.at)
      if not stage_outputs("train", config, run_dir):
        self.stopped = f"in {name} train, at its last checkpoint before the deadline"
    return train
