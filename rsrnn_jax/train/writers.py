"""Metric output: JSON lines + TensorBoard event files, and a terminal progress bar with img/s and ETA."""
from __future__ import annotations

import json
import os
import sys

from tqdm import tqdm


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
      with open(self._path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in kept)
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
      f.write(json.dumps(record) + "\n")
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(k, float(v), step)
      for k, values in lists.items():
        for i, v in enumerate(values):
          self._tb.add_scalar(f"{k}/step{i + 1}", float(v), step)

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str, filename: str = "metrics.jsonl") -> list[dict]:
  path = os.path.join(workdir, filename)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


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
