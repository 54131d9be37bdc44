"""Data: TFDS builders (``cluttered_fashion_mnist``, ``imagenet100``, ``coco_multilabel``), their registry and the
grain pipeline.

Importing this package registers the builders with TFDS, so ``tfds.data_source('cluttered_fashion_mnist', ...)``
and ``tfds.builder('imagenet100', ...)`` work after ``import rsrnn_jax.data``. The facts of each data set (classes,
image shape, single/multi-label, builder) live in :mod:`rsrnn_jax.data.registry`.
"""
from rsrnn_jax.data.cluttered import ClutteredFashionMnist, config_for as cluttered_config
from rsrnn_jax.data.fashion_mnist import find_fashion_mnist, load_fashion_mnist
from rsrnn_jax.data.coco import CocoMultilabel
from rsrnn_jax.data.imagenet100 import Imagenet100
from rsrnn_jax.data.registry import image_shape, is_multi_label, labels_multi_hot, num_classes
from rsrnn_jax.data.pipeline import (
    DatasetInfo,
    dataset_info,
    default_data_config,
    eval_batches,
    local_batch_size,
    train_batches,
    unit_float,
)
from rsrnn_jax.data.sources import clear_cache, prepare

__all__ = [
    "ClutteredFashionMnist",
    "CocoMultilabel",
    "DatasetInfo",
    "Imagenet100",
    "clear_cache",
    "cluttered_config",
    "dataset_info",
    "default_data_config",
    "eval_batches",
    "find_fashion_mnist",
    "image_shape",
    "is_multi_label",
    "labels_multi_hot",
    "load_fashion_mnist",
    "local_batch_size",
    "num_classes",
    "prepare",
    "train_batches",
    "unit_float",
]
