"""Data: TFDS builders (``cluttered_fashion_mnist``, ``imagenet100``, ``coco_multilabel``) and the grain pipeline.

Importing this package registers the builders with TFDS, so ``tfds.data_source('cluttered_fashion_mnist', ...)``
and ``tfds.builder('imagenet100', ...)`` work after ``import rsrnn_jax.data``.
"""
from rsrnn_jax.data.cluttered import ClutteredFashionMnist, config_for as cluttered_config
from rsrnn_jax.data.fashion_mnist import find_fashion_mnist, load_fashion_mnist
from rsrnn_jax.data.coco import CocoMultilabel
from rsrnn_jax.data.imagenet100 import Imagenet100
from rsrnn_jax.data.pipeline import (
    DatasetInfo,
    clear_cache,
    dataset_info,
    default_data_config,
    eval_batches,
    is_multi_label,
    prepare,
    train_batches,
)

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
    "is_multi_label",
    "load_fashion_mnist",
    "prepare",
    "train_batches",
]
