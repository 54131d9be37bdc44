"""Input pipeline: TFDS (array_record, no TensorFlow) + grain, numpy batches for the training loop.

Public API
  ``default_data_config(name)`` -> ConfigDict with every field below (configs/ start from it).
  ``dataset_info(data_config)`` -> ``DatasetInfo`` (num_classes, image_shape fed to the model, split sizes, names).
  ``train_batches(data_config, *, global_batch_size, seed, start_step=0, process_index=0, process_count=1)``
      infinite iterator of {'image': uint8 [b, H, W, C], 'label': int32 [b]}, b = global / processes
      (multi-label data sets, ``is_multi_label(cfg)``: 'label' is int32 multi-hot [b, K]); the train step maps
      the images to float32 in [0, 1] on the device (:func:`unit_float`). ``image_dtype='float32'``: the
      workers do that conversion instead (4× the bytes handed over). ``decoder='dali'`` on a GPU: 'image' is a
      jax.Array on the GPU already.
  ``eval_batches(data_config, *, global_batch_size, split=None, process_index=0, process_count=1,
                 max_examples=None)``
      finite iterator of {'image': float32 [b, H, W, C] in [0, 1], 'label', 'mask': float32 [b] (1 = real example,
      0 = padding)}.
Images are not normalised (mean/std live in the model).

``data_config`` fields
  name             'cluttered_fashion_mnist' | 'imagenet100' | 'coco_multilabel' (multi-label, 80 classes).
  data_dir         TFDS data dir the prepared datasets live in (None: $TFDS_DATA_DIR or ~/tensorflow_datasets).
  source_dir       cluttered: folder with the four Fashion-MNIST idx files (None: the Debian package's folder,
                   installed on demand when running as root; see ``fashion_mnist.find_fashion_mnist``).
  manual_dir       imagenet100: folder with ILSVRC2012_img_{train,val}.tar; coco_multilabel: folder with
                   train2014.zip, val2014.zip, annotations_trainval2014.zip (None: <data_dir>/downloads/manual).
  canvas_size      cluttered: canvas side S; images are (S, S, 1).
  num_clutter      cluttered: clutter fragments per image.
  clutter_size     cluttered: side of each fragment (px).
  clutter_seed     cluttered: generation seed (0 = the published builder configs).
  image_size       imagenet100, coco: side of the model input: RandomResizedCrop size (train) / centre crop (eval;
                   coco_multilabel: the whole image resized to image_size², no crop).
  eval_resize      imagenet100: eval resizes the shorter side to this before the centre crop (336/384 paper).
  cache_in_memory  decode the whole split once into a uint8 array and batch from memory (cluttered: ~550 MB
                   for 60k 96² images, the fast choice; needs fixed-size images, so not for imagenet100).
  num_workers      grain worker processes decoding/augmenting batches (0 = in the training process; ignored
                   with cache_in_memory, where batching is a numpy gather).
  prefetch         batches prepared ahead: by background threads with num_workers=0 (0 = off); with workers, the
                   batches each worker keeps ready (grain's per-worker buffer, at least 1).
  worker_threads   threads inside each grain worker preparing batches ahead (0, default: the worker's own loop,
                   and uint8 train batches are built in shared memory, handed over without a copy; issue 27's
                   first version ran ``prefetch`` threads per worker: bench/README.md).
  decoder          imagenet100, coco: 'turbo' (libjpeg-turbo + OpenCV, default) | 'pil' (PIL, torchvision's
                   exact pixels; slower) | 'dali' (training crops decoded on the GPU; falls back to 'turbo' with
                   one logged line without nvidia-dali or a GPU): :mod:`rsrnn_jax.data.decoders`.
  downscale        'turbo' training crops: 'fast' (default: JPEG decoded at 1/2, 1/4 or 1/8 scale where the crop
                   spans twice the output, bilinear up to a √2 shrink) | 'area' (full-size decode, area average
                   on every shrinking axis): :func:`rsrnn_jax.data.decoders.train_crop`.
  image_dtype      train batches: 'uint8' (default; converted on the device) | 'float32' (converted by the
                   workers, as before).
  train_split      TFDS split (slicing allowed, e.g. 'train[:50000]') used by ``train_batches``.
  eval_split       split used by ``eval_batches`` when ``split`` is None.
Other fields (e.g. the model's ``mean``/``std``) are allowed and ignored here.

Order and sharding. Example positions form one global stream per seed: ``grain.MapDataset.range(N)
.shuffle(seed).repeat()`` (a fresh permutation each epoch). Global batch k holds positions
[k·G, (k+1)·G); process p takes the contiguous block [k·G + p·b, k·G + (p+1)·b), so the processes' shards are
disjoint and concatenated in process order they are exactly the single-process batch. ``start_step=k`` starts at
batch k by index arithmetic (nothing before it is read). Augmentation draws from
``default_rng([aug_seed, position])``: it depends on (seed, position in the stream) only, not on the number of
processes or workers. Workers (``mp_prefetch``) each build whole batches, so their number does not change the
output either.

Eval: positions 0..n-1 of the split in order (n = max_examples if given and smaller), cut into
ceil(n / G) global batches, same contiguous per-process blocks; positions ≥ n are zero images with mask 0.
Every process gets the same number of batches (needed for collectives), every example appears exactly once.

Preparation and sources (each split read as records, or decoded once into memory): :mod:`rsrnn_jax.data.sources`.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
from typing import Iterator

import grain
from grain.multiprocessing import SharedMemoryArray
import ml_collections
from absl import flags
import numpy as np
import tensorflow_datasets as tfds
from ml_collections import config_dict

from rsrnn_jax.data import dali, registry, sources, tasks, transforms

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------
# Config and metadata.


def default_data_config(name: str = "cluttered_fashion_mnist") -> ml_collections.ConfigDict:
  """Every data field with its default for ``name`` (see the module docstring for their meaning; the data set's
  own defaults are its registry entry's ``defaults``)."""
  entry = registry.get(name)
  c = ml_collections.ConfigDict(dict(
      name=name,
      data_dir=config_dict.placeholder(str),
      source_dir=config_dict.placeholder(str),
      manual_dir=config_dict.placeholder(str),
      canvas_size=96,
      num_clutter=8,
      clutter_size=9,
      clutter_seed=0,
      image_size=336,
      eval_resize=384,
      cache_in_memory=False,
      num_workers=min(8, os.cpu_count() or 1),  # never changes the batches
      prefetch=2,
      decoder="turbo",
      downscale="fast",
      worker_threads=0,
      image_dtype="uint8",
      train_split="train",
      eval_split="validation",
  ))
  c.update(entry.defaults)
  return c


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  name: str
  num_classes: int
  image_shape: tuple[int, int, int]  # (H, W, C) of the batches' images, as fed to the model
  num_train: int                     # examples in train_split
  num_eval: int                      # examples in eval_split
  class_names: tuple[str, ...]
  multi_label: bool = False          # labels are multi-hot [K] (registry.is_multi_label)


_get = registry.field


def _check(cfg) -> str:
  return registry.get(cfg).name


def dataset_info(cfg) -> DatasetInfo:
  """Sizes and shapes of ``cfg``'s dataset (prepares it on first use)."""
  task = tasks.task_for(cfg)
  builder = sources.prepare(cfg)
  label = builder.info.features["label"]
  names = tuple(label.feature.names if isinstance(label, tfds.features.Sequence) else label.names)
  return DatasetInfo(
      name=_check(cfg), num_classes=len(names), image_shape=task.image_shape,
      num_train=len(builder.as_data_source(_get(cfg, "train_split", "train"))),
      num_eval=len(builder.as_data_source(_get(cfg, "eval_split", "test"))),
      class_names=names, multi_label=registry.is_multi_label(cfg))


# ---------------------------------------------------------------------------------------------------------
# Batches.


def local_batch_size(global_batch_size: int, process_index: int = 0, process_count: int = 1,
                     num_devices: int = 0) -> int:
  """This process's share of a global batch: checks that it splits evenly over the processes (and over
  ``num_devices`` devices when given) and returns ``global_batch_size // process_count``."""
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f"bad process_index={process_index} / process_count={process_count}")
  if num_devices and global_batch_size % num_devices:
    raise ValueError(f"batch size {global_batch_size} is not divisible by the {num_devices} devices; "
                     f"use a multiple of {num_devices}")
  if global_batch_size < 1 or global_batch_size % process_count:
    raise ValueError(f"global_batch_size {global_batch_size} is not divisible by process_count {process_count}")
  return global_batch_size // process_count


unit_float = transforms.unit_float
IMAGE_DTYPES = ("uint8", "float32")


def _image_dtype(cfg) -> str:
  dtype = str(_get(cfg, "image_dtype", "uint8"))
  if dtype not in IMAGE_DTYPES:
    raise ValueError(f"config.data.image_dtype={dtype!r}; choose one of {', '.join(IMAGE_DTYPES)}")
  return dtype


def _derived_seed(seed: int, purpose: int) -> int:
  return int(np.random.SeedSequence([int(seed) % 2**63, purpose]).generate_state(1)[0])


class _TrainBatch:
  """Batch ``step`` of this process (picklable, for grain worker processes)."""

  def __init__(self, source, task: tasks.Task, order, global_batch: int, local_batch: int, process_index: int,
               aug_seed: int, image_dtype: str = "uint8", gpu_decode: bool = False, shared_memory: bool = False):
    self.source, self.task, self.order = source, task, order
    self.global_batch, self.local_batch, self.process_index = global_batch, local_batch, process_index
    self.aug_seed, self.image_dtype, self.gpu_decode = aug_seed, image_dtype, gpu_decode
    self.shared_memory = shared_memory  # runs in grain worker processes (mp_prefetch)

  def __call__(self, step: int) -> dict[str, np.ndarray]:
    first = step * self.global_batch + self.process_index * self.local_batch
    positions = range(first, first + self.local_batch)
    indices = np.array([self.order[p] for p in positions], np.int64)
    if isinstance(self.source, sources.ArraySource):
      images, labels = self.source.images[indices], self.source.labels[indices]
    else:
      data, labels = self.source.fetch(indices)
      rngs = [np.random.default_rng([self.aug_seed, p]) for p in positions]
      if self.gpu_decode:  # records and crop boxes only: dali.decoded turns them into images on the GPU
        return {**dali.encoded_batch(data, rngs), "label": labels.astype(np.int32)}
      images = self._fill(data, rngs)
    images = images if self.image_dtype == "uint8" else unit_float(images)
    return {"image": images, "label": labels.astype(np.int32)}

  def _fill(self, data, rngs) -> np.ndarray:
    """The augmented images, each written straight into its slot of the batch; in a grain worker (uint8) the
    batch is allocated in shared memory, which grain hands over as it is (no copy into shared memory)."""
    shape = (len(data), *self.task.image_shape)
    shared = self.shared_memory and self.image_dtype == "uint8"
    images = SharedMemoryArray(shape, np.uint8) if shared else np.empty(shape, np.uint8)
    try:
      for i, (d, r) in enumerate(zip(data, rngs)):
        self.task.train(d, r, out=images[i])
    except BaseException:
      if shared:  # never handed over: nobody else would unlink it
        images.shm.unlink()
      raise
    return images


class _EvalBatch:
  """Eval batch ``k`` of this process, zero-padded past the last example."""

  def __init__(self, source, task: tasks.Task, num_examples: int, global_batch: int, local_batch: int,
               process_index: int):
    self.source, self.task, self.num_examples = source, task, num_examples
    self.global_batch, self.local_batch, self.process_index = global_batch, local_batch, process_index

  def __call__(self, k: int) -> dict[str, np.ndarray]:
    first = k * self.global_batch + self.process_index * self.local_batch
    positions = np.arange(first, first + self.local_batch)
    valid = positions < self.num_examples
    images = np.zeros((self.local_batch, *self.task.image_shape), np.uint8)
    labels = np.zeros((self.local_batch, *self.task.label_shape), np.int32)
    indices = positions[valid]
    if len(indices):
      if isinstance(self.source, sources.ArraySource):
        images[valid], labels[valid] = self.source.images[indices], self.source.labels[indices]
      else:
        data, labels[valid] = self.source.fetch(indices)
        images[valid] = np.stack([self.task.eval(d) for d in data])
    return {"image": unit_float(images), "label": labels, "mask": valid.astype(np.float32)}


def _worker_threads(cfg) -> int:
  threads = int(_get(cfg, "worker_threads", 0))
  if threads < 0:
    raise ValueError(f"config.data.worker_threads={threads}; use 0 (no threads) or more")
  return threads


def _iterate(cfg, batches: grain.MapDataset, source) -> Iterator[dict[str, np.ndarray]]:
  prefetch = int(_get(cfg, "prefetch", 2))
  workers = 0 if isinstance(source, sources.ArraySource) else int(_get(cfg, "num_workers", 0))
  threads = prefetch if workers == 0 else _worker_threads(cfg)
  read = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=prefetch if threads else 0)
  ds = batches.to_iter_dataset(read)
  if workers > 0:
    if not flags.FLAGS.is_parsed():  # grain's worker setup reads absl flags; outside absl.app use defaults
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=max(prefetch, 1)))
  return iter(ds)


def _shared_memory_output(cfg, source) -> bool:
  """Whether the train batches are built in shared memory: in grain workers without threads of their own (a
  batch waiting in a thread's buffer when the iterator closes would never be unlinked)."""
  return (not isinstance(source, sources.ArraySource) and int(_get(cfg, "num_workers", 0)) > 0
          and _worker_threads(cfg) == 0)


def train_batches(cfg, *, global_batch_size: int, seed: int, start_step: int = 0, process_index: int = 0,
                  process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """Infinite iterator of this process's training batches, from global batch ``start_step`` on.

  Deterministic in (data config, seed, global_batch_size, step); see the module docstring.
  """
  local = local_batch_size(global_batch_size, process_index, process_count)
  if start_step < 0:
    raise ValueError(f"start_step must be >= 0, got {start_step}")
  task = tasks.task_for(cfg)
  image_dtype = _image_dtype(cfg)
  gpu_decode = task.augments and dali.resolve(str(_get(cfg, "decoder", "turbo"))) == "dali"
  builder = sources.prepare(cfg)
  source = sources.source(cfg, builder, _get(cfg, "train_split", "train"), task)
  if len(source) == 0:
    raise ValueError(f"{_check(cfg)}: the train split is empty")
  order = grain.MapDataset.range(len(source)).shuffle(seed=_derived_seed(seed, 0) % 2**32).repeat()
  load = _TrainBatch(source, task, order, global_batch_size, local, process_index, _derived_seed(seed, 1),
                     image_dtype, gpu_decode, shared_memory=_shared_memory_output(cfg, source))
  steps = grain.MapDataset.range(start_step, sys.maxsize // (2 * global_batch_size)).map(load)
  batches = _iterate(cfg, steps, source)
  if gpu_decode:
    return dali.decoded(batches, task.image_shape[0], float_images=image_dtype == "float32")
  return batches


def eval_batches(cfg, *, global_batch_size: int, split: str | None = None, process_index: int = 0,
                 process_count: int = 1, max_examples: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """This process's batches of ``split`` (default ``eval_split``), each example once over all processes.

  ``max_examples`` (None or 0 = all) keeps the first N examples of the split.
  """
  local = local_batch_size(global_batch_size, process_index, process_count)
  task = tasks.task_for(cfg)
  builder = sources.prepare(cfg)
  source = sources.source(cfg, builder, split or _get(cfg, "eval_split", "test"), task)
  n = len(source) if not max_examples else min(int(max_examples), len(source))
  load = _EvalBatch(source, task, n, global_batch_size, local, process_index)
  steps = grain.MapDataset.range(math.ceil(n / global_batch_size)).map(load)
  return _iterate(cfg, steps, source)

