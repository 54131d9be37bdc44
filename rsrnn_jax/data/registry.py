"""The dataset registry: one entry per data set; the pipeline, the config defaults, ``evaluation.compute`` and the
benches read it, so the facts of a data set (classes, image shape, labels) have one home.

An entry (:class:`DatasetEntry`) holds the TFDS builder of the data set (made from the data config), its number
of classes, the shape of the images fed to the model (from the data config alone: nothing is prepared), whether
its labels are single class ids or multi-hot, the pipeline's preprocessing for it (``task``, a kind of
``rsrnn_jax/data/tasks.py``) and the data-config defaults that differ from the shared ones.

Adding a data set = one builder module in ``rsrnn_jax/data/`` + one :func:`register` call here, with an existing
task kind (``cluttered``: fixed-size grey images; ``crop``: RGB RandomResizedCrop / centre crop; ``multilabel``:
``crop`` with multi-hot labels and a whole-image eval resize); a new kind of preprocessing adds a task class there.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Callable, Mapping

from rsrnn_jax.data import cluttered, coco, fashion_mnist, imagenet100


def field(cfg, name: str, default: Any = None) -> Any:
  """``cfg.name`` of a ConfigDict, dict or object; ``default`` when missing or None."""
  value = cfg.get(name, default) if hasattr(cfg, "get") else getattr(cfg, name, default)
  return default if value is None else value


@dataclasses.dataclass(frozen=True)
class DatasetEntry:
  """One data set. ``build(data_cfg, data_dir)`` returns its (unprepared) TFDS builder."""
  name: str                            # config.data.name
  build: Callable[[Any, pathlib.Path], Any]
  num_classes: int
  channels: int
  side_field: str                      # the data-config field with the image side: images are side × side
  side_default: int
  task: str                            # the pipeline's preprocessing kind: cluttered | crop | multilabel
  multi_label: bool = False            # labels are multi-hot [K] (sigmoid CE, mAP/F1 metrics), not class ids
  defaults: Mapping = dataclasses.field(default_factory=dict)  # data-config defaults of this data set

  def image_shape(self, cfg) -> tuple[int, int, int]:
    """(H, W, C) of the images the model is fed, from the data config."""
    side = int(field(cfg, self.side_field, self.side_default))
    return (side, side, self.channels)


_DATASETS: dict[str, DatasetEntry] = {}


def register(entry: DatasetEntry) -> DatasetEntry:
  if entry.name in _DATASETS:
    raise ValueError(f"dataset {entry.name!r} is already registered")
  _DATASETS[entry.name] = entry
  return entry


def names() -> tuple[str, ...]:
  """Registered data sets (valid ``config.data.name`` values)."""
  return tuple(_DATASETS)


def get(cfg_or_name) -> DatasetEntry:
  """The entry of a data set name or of a data config (its ``name``)."""
  name = cfg_or_name if isinstance(cfg_or_name, str) else field(cfg_or_name, "name")
  if name not in _DATASETS:
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(_DATASETS)}")
  return _DATASETS[name]


def image_shape(cfg) -> tuple[int, int, int]:
  """(H, W, C) of the images ``cfg``'s data set feeds the model (from the config; nothing is read)."""
  return get(cfg).image_shape(cfg)


def num_classes(cfg) -> int:
  return get(cfg).num_classes


def is_multi_label(cfg) -> bool:
  """True for data sets with multi-hot labels; known from the data config alone."""
  return get(cfg).multi_label


def labels_multi_hot(labels) -> bool:
  """The batch form of :func:`is_multi_label`: a multi-label data set's batches hold multi-hot labels [B, K],
  a single-label one's class ids [B] (what the losses and metrics see inside a jitted step)."""
  return labels.ndim == 2


def _cluttered_builder(cfg, data_dir):
  config = cluttered.config_for(int(field(cfg, "canvas_size", 96)), int(field(cfg, "num_clutter", 8)),
                                int(field(cfg, "clutter_size", 9)), int(field(cfg, "clutter_seed", 0)),
                                int(field(cfg, "item_size", cluttered.ITEM_SIZE)))
  return cluttered.ClutteredFashionMnist(config=config, data_dir=data_dir, source_dir=field(cfg, "source_dir"))


register(DatasetEntry(
    name="cluttered_fashion_mnist", build=_cluttered_builder, num_classes=len(fashion_mnist.CLASS_NAMES),
    channels=1, side_field="canvas_size", side_default=96, task="cluttered",
    defaults=dict(cache_in_memory=True, num_workers=0, eval_split="test")))
register(DatasetEntry(
    name="imagenet100", build=lambda cfg, data_dir: imagenet100.Imagenet100(data_dir=data_dir),
    num_classes=len(imagenet100.CLASS_NAMES), channels=3, side_field="image_size", side_default=336, task="crop"))
register(DatasetEntry(
    name="coco_multilabel", build=lambda cfg, data_dir: coco.CocoMultilabel(data_dir=data_dir),
    num_classes=coco.NUM_CLASSES, channels=3, side_field="image_size", side_default=336, task="multilabel",
    multi_label=True))
