"""JPEG decoding and the crop transforms on the host, fast: ``config.data.decoder`` picks the implementation.

* ``"turbo"`` (default): libjpeg-turbo through ``simplejpeg`` (decode straight to RGB, no PIL image object), the
  crop's resize with OpenCV, the flip as a reversed view that the copy into the batch makes for free. 1.55× the
  images per CPU-second of ``"pil"`` in the train transform (bench/README.md § Latest numbers). Same crop boxes and flips as ``"pil"``
  from the same generator (both call :func:`transforms.random_resized_crop_box`, then draw the flip); the pixels
  differ by the resize filter: OpenCV's bilinear (enlarging) or area average (shrinking), per axis, on the
  integer crop box, where PIL's antialiased bilinear also weighs the pixels just outside the box (mean absolute
  difference 0.2–0.6 grey levels of 255; the JPEG decode itself is bit-identical, both are libjpeg-turbo).
* ``"pil"``: :mod:`rsrnn_jax.data.transforms` as before (torchvision's PIL semantics); the reference.
* ``"dali"``: the training crops are decoded on the GPU by NVIDIA DALI (nvJPEG), :mod:`rsrnn_jax.data.dali`;
  workers only read the records and draw the boxes. Needs ``nvidia-dali-cuda*`` (not in requirements.txt) and a
  GPU: without either, :func:`rsrnn_jax.data.dali.resolve` logs one line and falls back to ``"turbo"``.
  Evaluation batches always decode on the host (``"turbo"``).
Non-JPEG data (the PNG fast path of the cluttered set, arrays from ``tfds.testing.mock_data``) and JPEGs that
libjpeg-turbo's RGB conversion refuses (CMYK) go through :func:`transforms.decode`.
"""
from __future__ import annotations

import cv2
import numpy as np
import simplejpeg

from rsrnn_jax.data import transforms

DECODERS = ("turbo", "pil", "dali")
_JPEG_SOI = b"\xff\xd8"
_cv2_threads_set = False


def check(decoder: str) -> str:
  if decoder not in DECODERS:
    raise ValueError(f"config.data.decoder={decoder!r}; choose one of {', '.join(DECODERS)}")
  return decoder


def _single_thread_cv2() -> None:
  """OpenCV's own thread pool would compete with the grain workers: one thread per process."""
  global _cv2_threads_set
  if not _cv2_threads_set:
    cv2.setNumThreads(1)
    _cv2_threads_set = True


def decode_rgb(data) -> np.ndarray:
  """uint8 (H, W, 3) of JPEG bytes (libjpeg-turbo), or of anything :func:`transforms.decode` reads."""
  if isinstance(data, np.ndarray):  # tfds.testing.mock_data: decoded already
    a = np.asarray(data, np.uint8).reshape(data.shape[0], data.shape[1], -1)[..., :3]
    return a if a.shape[-1] == 3 else np.repeat(a[..., :1], 3, axis=-1)
  data = bytes(data)
  if data[:2] == _JPEG_SOI:
    try:
      return simplejpeg.decode_jpeg(data, colorspace="RGB")
    except ValueError:  # e.g. CMYK, which TurboJPEG does not convert to RGB: PIL does
      pass
  return transforms.decode(data, 3)


def jpeg_size(data) -> tuple[int, int]:
  """(height, width) of JPEG bytes from the header alone (microseconds; for boxes drawn before decoding)."""
  height, width, _, _ = simplejpeg.decode_jpeg_header(bytes(data))
  return height, width


def resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
  """``img`` (H, W, C) resized to (height, width, C): per axis bilinear when enlarging, area average when
  shrinking (OpenCV), the shrinking axis first."""
  _single_thread_cv2()
  h, w, c = img.shape
  if (h, w) == (height, width):
    return img
  if h >= height and w >= width:
    out = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
  elif h <= height and w <= width:
    out = cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
  else:  # one axis shrinks, the other grows: two one-axis passes
    out = cv2.resize(img, (width, h) if w > width else (w, height), interpolation=cv2.INTER_AREA)
    out = cv2.resize(out, (width, height), interpolation=cv2.INTER_LINEAR)
  return out.reshape(height, width, c)


def crop_and_flip(rng: np.random.Generator, height: int, width: int, *, flip: bool = True):
  """The RandomResizedCrop box (top, left, h, w) and the flip of one image: the draws of
  :func:`transforms.random_resized_crop`, in its order, from ``rng``."""
  box = transforms.random_resized_crop_box(height, width, rng)
  return box, bool(flip and rng.random() < 0.5)


def random_resized_crop(img: np.ndarray, size: int, rng: np.random.Generator, *, flip: bool = True) -> np.ndarray:
  """RandomResizedCrop(size) + RandomHorizontalFlip(0.5) of a decoded uint8 (H, W, C) image. A flipped result
  is a reversed view (no copy): stacking it into the batch makes the copy."""
  (top, left, h, w), flipped = crop_and_flip(rng, img.shape[0], img.shape[1], flip=flip)
  out = resize(img[top:top + h, left:left + w], size, size)
  return out[:, ::-1] if flipped else out


def resize_center_crop(img: np.ndarray, resize_to: int, size: int) -> np.ndarray:
  """Resize(resize_to) (shorter side) + CenterCrop(size) of a decoded uint8 image, torchvision's geometry (the
  sizes and offsets of :func:`transforms.resize_center_crop`)."""
  h, w = img.shape[:2]
  new_w, new_h = (resize_to, int(resize_to * h / w)) if w <= h else (int(resize_to * w / h), resize_to)
  if size > min(new_w, new_h):
    raise ValueError(f"centre crop {size} larger than the resized image {new_w}x{new_h}")
  out = resize(img, new_h, new_w)
  top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
  return out[top:top + size, left:left + size]
