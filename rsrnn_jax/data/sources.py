"""Where a data set's records come from: its TFDS builder prepared on first use, and each split read as records
or decoded once into memory (``cache_in_memory``). :mod:`rsrnn_jax.data.pipeline` batches from these sources.

Preparation. The first use of a dataset runs ``download_and_prepare`` into data_dir (logged). Concurrent
processes take an exclusive ``fcntl.flock`` on ``<data_dir>/.<dataset>-<config>-<version>.lock`` and re-check
before preparing, so on one machine (or a shared file system with working locks) exactly one process prepares
while the others wait and then reuse it. TFDS itself writes into a uniquely named temporary folder renamed
into place at the end, so a reader never sees a half-written dataset; if locks do not work across hosts and two
hosts race, the loser's rename fails and it reuses the winner's copy.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import pathlib
import time
from concurrent import futures

import numpy as np
import tensorflow_datasets as tfds

from rsrnn_jax import workdir as workdir_lib
from rsrnn_jax.data import fashion_mnist, registry, tasks

log = logging.getLogger(__name__)

_get = registry.field
_CACHE: dict[tuple, "ArraySource"] = {}


def data_dir(cfg) -> pathlib.Path:
  """The TFDS data dir of ``cfg`` (``data_dir`` or $TFDS_DATA_DIR or ~/tensorflow_datasets)."""
  d = _get(cfg, "data_dir") or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
  return pathlib.Path(d).expanduser()


# ---------------------------------------------------------------------------------------------------------
# Builders and preparation.


def _make_builder(cfg) -> tfds.core.DatasetBuilder:
  return registry.get(cfg).build(cfg, data_dir(cfg))


def _is_prepared(builder) -> bool:
  return (pathlib.Path(builder.data_dir) / "dataset_info.json").is_file()


@contextlib.contextmanager
def _file_lock(path: pathlib.Path):
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def prepare(cfg) -> tfds.core.DatasetBuilder:
  """Builder of ``cfg``'s dataset, prepared (generated into data_dir on first use, under a file lock)."""
  builder = _make_builder(cfg)
  if _is_prepared(builder):
    return _source_checked(cfg, builder)
  cfg_name = builder.builder_config.name if builder.builder_config else "default"
  lock = data_dir(cfg) / f".{builder.name}-{cfg_name}-{builder.version}.lock"
  with _file_lock(lock):
    builder = _make_builder(cfg)  # another process may have finished while we waited
    if not _is_prepared(builder):
      log.info("Preparing TFDS dataset %s/%s into %s (first use; later runs reuse it)",
               builder.name, cfg_name, data_dir(cfg))
      start = time.perf_counter()
      manual_dir = _get(cfg, "manual_dir")
      dl_config = tfds.download.DownloadConfig(manual_dir=os.fspath(pathlib.Path(manual_dir).expanduser())
                                               if manual_dir else None)
      try:
        builder.download_and_prepare(download_config=dl_config)
      except OSError:
        if not _is_prepared(_make_builder(cfg)):  # a racing host may have renamed its copy into place
          raise
      log.info("Prepared %s/%s in %.1f s", builder.name, cfg_name, time.perf_counter() - start)
      _source_checked(cfg, builder, record=True)
  return _source_checked(cfg, _make_builder(cfg))


def _source_checked(cfg, builder, *, record: bool = False):
  if registry.get(cfg).task == "cluttered":  # which idx files it was built from (fashion_mnist.check_source)
    fashion_mnist.source_record(builder.data_dir, _get(cfg, "source_dir"), write=record)
  return builder


# ---------------------------------------------------------------------------------------------------------
# Sources.


class RecordSource:
  """(encoded image, label) records of one split; decoding is left to the task (faster than TFDS's)."""

  def __init__(self, builder, split: str, task: tasks.Task):
    self._task = task
    self._batched = True
    self._where = os.fspath(builder.data_dir)
    with workdir_lib.damaged_dataset(self._where):
      try:
        self._ds = builder.as_data_source(split, decoders={"image": tfds.decode.SkipDecoding()})
        self._probe()
      except ModuleNotFoundError:  # tfds.testing.mock_data needs TF to encode its fakes: let TFDS decode
        self._ds = builder.as_data_source(split)
        self._probe()

  def _probe(self):
    if len(self._ds):
      try:
        self._ds.__getitems__([0])
      except TypeError:  # mock_data's batched read is broken: read one by one
        self._batched = False
        self._ds[0]

  def __len__(self) -> int:
    return len(self._ds)

  def fetch(self, indices) -> tuple[list, np.ndarray]:
    indices = [int(i) for i in indices]
    with workdir_lib.damaged_dataset(self._where):
      # A batched read starts threads (latency on remote storage); on local files one by one costs a third of
      # the CPU (0.085 against 0.23 ms per ImageNet record, bench/input_pipeline.py's synthetic set).
      batched = self._batched and "://" in self._where
      records = self._ds.__getitems__(indices) if batched else [self._ds[i] for i in indices]
    return [r["image"] for r in records], self._task.labels(records)


@dataclasses.dataclass
class ArraySource:
  images: np.ndarray  # uint8 [N, H, W, C]
  labels: np.ndarray  # int32 [N]

  def __len__(self) -> int:
    return len(self.labels)


def decode_split(source: RecordSource, task: tasks.Task, chunk: int = 1024, threads: int = 2) -> ArraySource:
  n = len(source)
  images = np.empty((n, *task.image_shape), np.uint8)
  labels = np.empty((n, *task.label_shape), np.int32)

  def work(start: int) -> None:
    stop = min(start + chunk, n)
    data, labels[start:stop] = source.fetch(range(start, stop))
    for i, d in enumerate(data, start):
      images[i] = task.eval(d)

  with futures.ThreadPoolExecutor(threads) as pool:  # zlib (PNG) and PIL release the GIL
    for _ in pool.map(work, range(0, n, chunk)):
      pass
  return ArraySource(images, labels)


def source(cfg, builder, split: str, task: tasks.Task):
  if not _get(cfg, "cache_in_memory", False):
    return RecordSource(builder, split, task)
  if task.augments:
    raise ValueError(f"cache_in_memory needs fixed-size, unaugmented images; set it False for {registry.get(cfg).name}")
  key = (os.fspath(builder.data_dir), split, task.image_shape)
  if key not in _CACHE:
    start = time.perf_counter()
    _CACHE[key] = decode_split(RecordSource(builder, split, task), task)
    log.info("Decoded %s[%s] into memory: %d images, %.0f MB, %.1f s", builder.name, split, len(_CACHE[key]),
             _CACHE[key].images.nbytes / 2**20, time.perf_counter() - start)
  return _CACHE[key]


def clear_cache() -> None:
  """Frees the decoded splits kept by ``cache_in_memory``."""
  _CACHE.clear()
