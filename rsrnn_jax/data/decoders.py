"""JPEG decoding and the crop transforms on the host, fast: ``config.data.decoder`` picks the implementation.

* ``"turbo"`` (default): libjpeg-turbo through ``simplejpeg`` (decode straight to RGB, no PIL image object), the
  crop's resize with OpenCV written straight into the image's slot of the batch, the flip in place. Same crop
  boxes and flips as ``"pil"`` from the same generator (both call :func:`transforms.random_resized_crop_box`,
  then draw the flip; :func:`train_crop` takes the size from the JPEG header and draws before decoding). The
  training crops' shrinking, ``config.data.downscale``:

  - ``"fast"`` (default): where the box spans at least twice the output on both axes, libjpeg decodes the JPEG
    at 1/2, 1/4 or 1/8 scale (DCT domain; the box is mapped to the nearest pixel of the smaller image), then
    OpenCV's bilinear wherever no axis shrinks by more than √2 (the tent's variance, 1/6 px², is then at
    least as close to PIL's antialiased tent, f²/6, as the area box's f²/12), area average beyond.
  - ``"area"``: the full-size decode, bilinear when enlarging, area average on every shrinking axis (issue
    27's first version).

  The pixels differ from PIL's antialiased bilinear by the filter; on textured JPEGs (tests/test_decoders.py,
  120 crops) the mean by about 0.1 grey level, the contrast by under 1%, the fine detail (Laplacian energy) by
  +8.5% ("fast") and +5.5% ("area"), against +15% for plain bilinear on every crop. The JPEG decode itself is
  bit-identical to PIL's (both libjpeg-turbo). bench/README.md has the speeds.
* ``"pil"``: :mod:`rsrnn_jax.data.transforms` as before (torchvision's PIL semantics); the reference.
* ``"dali"``: the training crops are decoded on the GPU by NVIDIA DALI (nvJPEG), :mod:`rsrnn_jax.data.dali`;
  workers only read the records and draw the boxes. Needs ``nvidia-dali-cuda*`` (not in requirements.txt) and a
  GPU: without either, :func:`rsrnn_jax.data.dali.resolve` logs one line and falls back to ``"turbo"``.
  Evaluation batches always decode on the host (``"turbo"``).
Non-JPEG data (the PNG fast path of the cluttered set, arrays from ``tfds.testing.mock_data``) and JPEGs that
libjpeg-turbo's RGB conversion refuses (CMYK) go through :func:`transforms.decode`.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import simplejpeg

from rsrnn_jax.data import transforms

DECODERS = ("turbo", "pil", "dali")
DOWNSCALES = ("fast", "area")  # config.data.downscale: the "turbo" training crops' shrinking (train_crop)
LINEAR_UP_TO = math.sqrt(2)  # "fast": bilinear up to this shrink factor (see the module docstring)
_JPEG_SOI = b"\xff\xd8"
_cv2_threads_set = False


def check(decoder: str) -> str:
  if decoder not in DECODERS:
    raise ValueError(f"config.data.decoder={decoder!r}; choose one of {', '.join(DECODERS)}")
  return decoder


def check_downscale(downscale: str) -> str:
  if downscale not in DOWNSCALES:
    raise ValueError(f"config.data.downscale={downscale!r}; choose one of {', '.join(DOWNSCALES)}")
  return downscale


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


def resize(img: np.ndarray, height: int, width: int, out: np.ndarray | None = None, *,
           linear_up_to: float = 1.0) -> np.ndarray:
  """``img`` (H, W, C) resized to (height, width, C) with OpenCV: bilinear when no axis shrinks by more than
  ``linear_up_to`` (1: when both grow), else area average on the shrinking axes (first) and bilinear on a
  growing one. ``out``: a C-contiguous uint8 (height, width, C) array to write into (e.g. the image's slot in
  the batch: no copy afterwards)."""
  _single_thread_cv2()
  h, w, c = img.shape
  dst = None if out is None else out.reshape(height, width) if c == 1 else out
  if (h, w) == (height, width):
    if out is None:
      return img
    out[...] = img
    return out
  if h <= linear_up_to * height and w <= linear_up_to * width:
    res = cv2.resize(img, (width, height), dst=dst, interpolation=cv2.INTER_LINEAR)
  elif h >= height and w >= width:
    res = cv2.resize(img, (width, height), dst=dst, interpolation=cv2.INTER_AREA)
  else:  # one axis shrinks (by more than linear_up_to), the other grows: two one-axis passes
    res = cv2.resize(img, (width, h) if w > width else (w, height), interpolation=cv2.INTER_AREA)
    res = cv2.resize(res, (width, height), dst=dst, interpolation=cv2.INTER_LINEAR)
  return out if out is not None else res.reshape(height, width, c)


def crop_and_flip(rng: np.random.Generator, height: int, width: int, *, flip: bool = True):
  """The RandomResizedCrop box (top, left, h, w) and the flip of one image: the draws of
  :func:`transforms.random_resized_crop`, in its order, from ``rng``."""
  box = transforms.random_resized_crop_box(height, width, rng)
  return box, bool(flip and rng.random() < 0.5)


def random_resized_crop(img: np.ndarray, size: int, rng: np.random.Generator, *, flip: bool = True,
                        out: np.ndarray | None = None) -> np.ndarray:
  """RandomResizedCrop(size) + RandomHorizontalFlip(0.5) of a decoded uint8 (H, W, C) image, written into
  ``out`` (C-contiguous (size, size, C)) when given. Without ``out`` a flipped result is a reversed view."""
  (top, left, h, w), flipped = crop_and_flip(rng, img.shape[0], img.shape[1], flip=flip)
  return _flipped(resize(img[top:top + h, left:left + w], size, size, out), flipped, out)


def _flipped(res: np.ndarray, flip: bool, out: np.ndarray | None) -> np.ndarray:
  """``res`` mirrored left-right if ``flip``: in place in ``out`` (OpenCV), else as a reversed view."""
  if not flip:
    return res
  return res[:, ::-1] if out is None else cv2.flip(out, 1, dst=out)


def _header_size(data) -> tuple[int, int] | None:
  """(height, width) of JPEG bytes that libjpeg-turbo decodes to RGB, else None (PNG, CMYK, decoded arrays)."""
  if isinstance(data, np.ndarray) or bytes(data[:2]) != _JPEG_SOI:
    return None
  try:
    height, width, colorspace, _ = simplejpeg.decode_jpeg_header(bytes(data))
  except ValueError:
    return None
  return (height, width) if colorspace in ("Gray", "YCbCr", "RGB") else None


def dct_factor(box_h: int, box_w: int, size: int) -> int:
  """The largest of 1, 2, 4, 8 by which a JPEG can be decoded smaller (libjpeg's DCT scaling) with its
  ``box_h``×``box_w`` region still spanning at least ``size``×``size`` pixels."""
  factor = 1
  while factor < 8 and min(box_h, box_w) >= 2 * factor * size:
    factor *= 2
  return factor


def train_crop(data, size: int, rng: np.random.Generator, *, flip: bool = True, out: np.ndarray | None = None,
               downscale: str = "fast") -> np.ndarray:
  """Decode + RandomResizedCrop(size) + RandomHorizontalFlip(0.5) of JPEG bytes (or anything
  :func:`decode_rgb` reads), the same draws from ``rng`` as :func:`random_resized_crop` (the box from the
  JPEG header's size, before decoding). ``downscale`` (:data:`DOWNSCALES`): ``"fast"`` decodes at 1/2, 1/4 or
  1/8 scale where the box spans at least twice ``size`` (:func:`dct_factor`) and resizes bilinearly where no
  axis then shrinks by more than √2; ``"area"``: full-size decode, area average on every shrinking axis."""
  if check_downscale(downscale) == "area" or (hw := _header_size(data)) is None:
    return random_resized_crop(decode_rgb(data), size, rng, flip=flip, out=out)
  (top, left, h, w), flipped = crop_and_flip(rng, *hw, flip=flip)
  factor = dct_factor(h, w, size)
  if factor == 1:
    img = simplejpeg.decode_jpeg(bytes(data), colorspace="RGB")
  else:  # libjpeg's scaled size is ceil(side / factor): pixel i covers [i·factor, (i+1)·factor) of the original
    img = simplejpeg.decode_jpeg(bytes(data), colorspace="RGB", min_height=-(-hw[0] // factor),
                                 min_width=-(-hw[1] // factor))
    bottom, right = min(round((top + h) / factor), img.shape[0]), min(round((left + w) / factor), img.shape[1])
    top, left = round(top / factor), round(left / factor)
    h, w = bottom - top, right - left
  return _flipped(resize(img[top:top + h, left:left + w], size, size, out, linear_up_to=LINEAR_UP_TO), flipped, out)


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
