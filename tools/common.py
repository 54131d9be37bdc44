"""What the analysis tools of tools/ share: the first test images of a run's data, and the JSON result each prints
and writes."""
from __future__ import annotations

import numpy as np

from rsrnn_jax import data, workdir


def first_test_images(data_cfg, n: int, batch: int = 500) -> tuple[np.ndarray, np.ndarray]:
  """The first ``n`` test images [n, H, W, C] and labels [n] of ``data_cfg`` (the eval split, padding dropped)."""
  images, labels = [], []
  for b in data.eval_batches(data_cfg, global_batch_size=min(batch, n), max_examples=n):
    keep = np.asarray(b["mask"]) > 0
    images.append(np.asarray(b["image"])[keep])
    labels.append(np.asarray(b["label"])[keep])
  return np.concatenate(images), np.concatenate(labels)


def emit(result: dict, out: str = "", echo: bool = True) -> None:
  """Writes ``result`` as strict JSON to ``out`` (atomically; none when empty) and prints it (``echo``)."""
  if out:
    workdir.write_json(out, result)
  if echo:
    print(workdir.dumps(result, indent=1))
