"""Synthetic ImageNet for the input-pipeline benches: fake ILSVRC2012 tars of JPEGs of ImageNet's sizes, and the
real ``imagenet100`` TFDS data set prepared from them (bench/input_pipeline.py, bench/fed_rate.py, gpu_check.py).

Sizes: 85% have a 500-pixel long side (ImageNet's most common size: 500×375, 500×333, 375×500...), 10% a long
side log-uniform in 600–1600, 5% in 150–450; aspect ratios 4:3, 3:2, 5:4, 1:1; a quarter portrait. Content:
smooth noise at three scales (about the bits per pixel of photos), JPEG quality 90: mean 118 KB and 0.25 MP per
image (ImageNet train: about 110 KB and 0.2 MP).
"""
from __future__ import annotations

import io
import math
import os
import tarfile
from concurrent import futures

import numpy as np
from PIL import Image

from rsrnn_jax import data
from rsrnn_jax.data import imagenet100

ASPECTS = ((4 / 3, 0.55), (3 / 2, 0.3), (5 / 4, 0.1), (1.0, 0.05))


def image_sizes(rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
  """(height, width) of ``n`` images following the distribution in the module docstring."""
  ratios, weights = zip(*ASPECTS)
  sizes = []
  for _ in range(n):
    u = rng.random()
    if u < 0.85:
      long = 500
    elif u < 0.95:
      long = int(round(math.exp(rng.uniform(math.log(600), math.log(1600)))))
    else:
      long = int(rng.integers(150, 451))
    short = int(round(long / rng.choice(ratios, p=weights)))
    sizes.append((long, short) if rng.random() < 0.25 else (short, long))
  return sizes


def synthetic_jpeg(rng: np.random.Generator, height: int, width: int, quality: int = 90) -> bytes:
  """A JPEG of smooth noise at three scales (1/16, 1/4 and full resolution) around mid grey."""
  out = np.full((height, width, 3), 128.0, np.float32)
  for amplitude, factor in ((60.0, 16), (30.0, 4), (10.0, 1)):
    small = amplitude * rng.standard_normal((max(height // factor, 1), max(width // factor, 1), 3), np.float32)
    if factor > 1:
      small = np.stack([np.asarray(Image.fromarray(small[..., c], mode="F").resize((width, height),
                                                                                  Image.BICUBIC))
                        for c in range(3)], axis=-1)
    out += small
  buf = io.BytesIO()
  Image.fromarray(np.clip(out, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=quality)
  return buf.getvalue()


def _image(job: tuple[int, int, int, int]) -> bytes:
  seed, index, height, width = job
  return synthetic_jpeg(np.random.default_rng([seed, index]), height, width)


def _add(tar: tarfile.TarFile, name: str, blob: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size = len(blob)
  tar.addfile(info, io.BytesIO(blob))


def write_fake_ilsvrc(manual_dir: str, num_train: int, num_val: int, seed: int = 0) -> dict:
  """ILSVRC2012_img_{train,val}.tar of synthetic JPEGs: ``num_train`` images spread over the 100 classes and
  ``num_val`` validation images named after lines of TFDS's ground truth that belong to the 100 classes."""
  os.makedirs(manual_dir, exist_ok=True)
  sizes = image_sizes(np.random.default_rng(seed), num_train + num_val)
  with futures.ThreadPoolExecutor(os.cpu_count()) as pool:  # PIL releases the GIL; one seed per image
    blobs = list(pool.map(_image, [(seed, i, h, w) for i, (h, w) in enumerate(sizes)]))
  wnids = imagenet100.CLASS_NAMES
  with tarfile.open(os.path.join(manual_dir, imagenet100.TRAIN_TAR), "w") as outer:
    for c, wnid in enumerate(wnids):
      inner_buf = io.BytesIO()
      with tarfile.open(fileobj=inner_buf, mode="w") as inner:
        for i in range(c, num_train, len(wnids)):
          _add(inner, f"{wnid}_{i}.JPEG", blobs[i])
      _add(outer, f"{wnid}.tar", inner_buf.getvalue())
  labels = imagenet100.read_validation_labels(imagenet100.default_validation_labels_path())
  lines = [i + 1 for i, wnid in enumerate(labels) if wnid.strip() in wnids][:num_val]
  with tarfile.open(os.path.join(manual_dir, imagenet100.VAL_TAR), "w") as tar:
    for line, blob in zip(lines, blobs[num_train:]):
      _add(tar, f"ILSVRC2012_val_{line:08d}.JPEG", blob)
  return {"images": len(blobs), "mean_kb": round(float(np.mean([len(b) for b in blobs])) / 1024, 1),
          "mean_megapixels": round(float(np.mean([h * w for h, w in sizes])) / 1e6, 3),
          "share_long_side_over_672": round(float(np.mean([max(s) >= 672 for s in sizes])), 3)}


def prepared_config(root: str, num_train: int, *, image_size: int = 336, eval_resize: int = 384, num_val: int = 32,
                    prefetch: int = 2):
  """The data config of an ``imagenet100`` prepared in ``root`` from ``num_train`` synthetic images, and the
  synthetic set's statistics."""
  stats = write_fake_ilsvrc(os.path.join(root, "manual"), num_train, num_val)
  cfg = data.default_data_config("imagenet100")
  cfg.data_dir, cfg.manual_dir = os.path.join(root, "tfds"), os.path.join(root, "manual")
  cfg.image_size, cfg.eval_resize, cfg.prefetch = image_size, eval_resize, prefetch
  data.dataset_info(cfg)  # prepares the TFDS data set (array_record)
  return cfg, stats
