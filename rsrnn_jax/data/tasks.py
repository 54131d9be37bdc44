"""Per-dataset decoding and preprocessing: one task class per kind of data set (a registry entry's ``task``)."""
from __future__ import annotations

import abc

import numpy as np
from PIL import Image

from rsrnn_jax.data import coco, decoders, registry, transforms


def _into(out: np.ndarray | None, image: np.ndarray) -> np.ndarray:
  if out is None:
    return image
  out[...] = image
  return out


class Task(abc.ABC):
  """Per-dataset decoding and preprocessing (one subclass per data set)."""
  channels: int
  image_shape: tuple[int, int, int]
  augments: bool = False
  label_shape: tuple[int, ...] = ()  # () class id; (K,) multi-hot

  def labels(self, records) -> np.ndarray:
    """int32 labels of decoded TFDS records: class ids [n] (multi-hot [n, K] in multi-label tasks)."""
    return np.array([int(r["label"]) for r in records], np.int32).reshape(-1, *self.label_shape)

  @abc.abstractmethod
  def train(self, data, rng: np.random.Generator, out: np.ndarray | None = None) -> np.ndarray:
    """Decoded, augmented training image; written into ``out`` (its slot in the batch) when given."""

  @abc.abstractmethod
  def eval(self, data) -> np.ndarray:
    """Decoded, preprocessed evaluation image."""


class ClutteredTask(Task):
  channels = 1

  def __init__(self, cfg):
    self.image_shape = registry.image_shape(cfg)

  def train(self, data, rng, out=None):
    del rng  # no augmentation: the task is already randomised by construction
    return _into(out, transforms.decode(data, 1))

  def eval(self, data):
    return transforms.decode(data, 1)


class ImagenetTask(Task):
  channels = 3
  augments = True

  def __init__(self, cfg):
    self.size = int(registry.field(cfg, "image_size", 336))
    self.resize = int(registry.field(cfg, "eval_resize", 384))
    if self.resize < self.size:
      raise ValueError(f"eval_resize ({self.resize}) must be >= image_size ({self.size})")
    self.image_shape = registry.image_shape(cfg)
    self.decoder = decoders.check(str(registry.field(cfg, "decoder", "turbo")))  # "dali": eval decodes as "turbo"
    self.downscale = decoders.check_downscale(str(registry.field(cfg, "downscale", "fast")))

  @staticmethod
  def _pil(data):
    if isinstance(data, np.ndarray):  # already decoded (tfds.testing.mock_data)
      return Image.fromarray(data.reshape(data.shape[0], data.shape[1], -1)[..., :3]).convert("RGB")
    return transforms.decode_pil(bytes(data), 3)

  def train(self, data, rng, out=None):
    if self.decoder == "pil":
      return _into(out, transforms.to_array(transforms.random_resized_crop(self._pil(data), self.size, rng), 3))
    return decoders.train_crop(data, self.size, rng, out=out, downscale=self.downscale)

  def eval(self, data):
    if self.decoder == "pil":
      return transforms.to_array(transforms.resize_center_crop(self._pil(data), self.resize, self.size), 3)
    return decoders.resize_center_crop(decoders.decode_rgb(data), self.resize, self.size)


class CocoTask(ImagenetTask):
  """Train: RandomResizedCrop + flip, as ImageNet. Eval: the whole image resized to image_size² (no crop: a
  centre crop could cut away labelled objects; the authors' loader does Resize((S, S))). Multi-hot labels."""
  label_shape = (coco.NUM_CLASSES,)

  def eval(self, data):
    if self.decoder == "pil":
      return transforms.to_array(self._pil(data).resize((self.size, self.size), Image.BILINEAR), 3)
    return decoders.resize(decoders.decode_rgb(data), self.size, self.size)

  def labels(self, records):
    return np.stack([coco.multi_hot(np.asarray(r["label"], np.int64).reshape(-1)) for r in records]).reshape(
        -1, *self.label_shape)


_TASKS = {"cluttered": ClutteredTask, "crop": ImagenetTask, "multilabel": CocoTask}  # registry task kinds


def task_for(cfg) -> Task:
  """The decoding and preprocessing of ``cfg``'s data set (its registry entry's ``task`` kind)."""
  return _TASKS[registry.get(cfg).task](cfg)
