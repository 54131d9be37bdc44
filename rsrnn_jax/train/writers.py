"""Metric output: JSON lines + TensorBoard event files, and a terminal progress bar with img/s and ETA.

The JSON lines are strict JSON: a NaN or infinite value is written as ``null`` (a diverged step's loss).
"""
from __future__ import annotations

import json
import logging
import os
import sys

from tqdm import tqdm

from rsrnn_jax import workdir as workdir_lib


class MetricWriter:
  """Appends ``{"step": s, **scalars}`` to ``WORKDIR/metrics.jsonl`` and writes TensorBoard scalars."""

  def __init__(self, workdir: str, *, enabled: bool = True, filename: str = "metrics.jsonl",
               resume_step: int | None = None):
    self.enabled = enabled
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self._path = os.path.join(workdir, filename)
    if resume_step is not None and os.path.exists(self._path):
      # Steps after the restored checkpoint are trained again: drop their stale records.
      kept = [r for r in read_metrics(workdir, filename) if r.get("step", 0) <= resume_step]
      workdir_lib.write_text(self._path, "".join(workdir_lib.dumps(r) + "\n" for r in kept))
    try:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
    except ImportError:  # TensorBoard output is optional; JSON lines are always written.
      self._tb = None

  def write(self, step: int, scalars: dict, **lists) -> None:
    if not self.enabled:
      return
    record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}, **lists}
    with open(self._path, "a") as f:
      f.write(workdir_lib.dumps(record) + "\n")
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(k, float(v), step)
      for k, values in lists.items():
        for i, v in enumerate(values):
          self._tb.add_scalar(f"{k}/step{i + 1}", float(v), step)

  def close(self) -> None:
    if self._tb is not None:
      try:
        self._tb.close()
      except OSError as e:  # e.g. a full disk: metrics.jsonl is the record, and the loop's own error is the one
        logging.getLogger(__name__).warning("could not flush the TensorBoard events: %s", e)  # to report


def read_metrics(workdir: str, filename: str = "metrics.jsonl") -> list[dict]:
  path = os.path.join(workdir, filename)
  if not os.path.exists(path):
    return []
  records = []
  with open(path) as f:  # older files may hold bare NaN tokens: Python's reader accepts them
    for line in filter(str.strip, f):
      try:
        records.append(json.loads(line))
      except ValueError:  # a line cut short by a killed run: the step is logged again when trained again
        logging.getLogger(__name__).warning("skipping an unreadable line in %s: %.80s", path, line)
  return records


class Progress:
  """A tqdm bar over optimiser or eval steps (ETA from tqdm, img/s and loss in the postfix)."""

  def __init__(self, total: int, start: int = 0, *, enabled: bool = True, desc: str = "train"):
    self._bar = tqdm(total=total, initial=start, desc=desc, unit="step", dynamic_ncols=True,
                     disable=not enabled, file=sys.stderr, mininterval=1.0)
    self._last = start

  def update(self, step: int, **postfix) -> None:
    self._bar.update(step - self._last)
    self._last = step
    if postfix:
      self._bar.set_postfix({k: f"{v:.3g}" for k, v in postfix.items()}, refresh=False)

  def close(self) -> None:
    self._bar.close()
