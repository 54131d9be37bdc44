"""Image decoding and the torchvision-style augmentations of the paper, with PIL and numpy only.

* ``decode``: PNG/JPEG bytes -> uint8 (H, W, C). Unfiltered 8-bit PNGs (what ``cluttered_fashion_mnist``
  writes) take a zlib-only fast path (~10x faster than PIL); anything else goes through PIL.
* ``random_resized_crop``: torchvision ``RandomResizedCrop(size, scale=(0.08, 1), ratio=(3/4, 4/3))`` (10 tries,
  then a centre crop of clamped aspect ratio), bilinear, followed by a horizontal flip with p = 0.5.
* ``resize_center_crop``: torchvision ``Resize(resize)`` (shorter side to ``resize``) + ``CenterCrop(size)``.
* ``draft=True`` (both transforms, :func:`draft_decode`): a JPEG not decoded yet is decoded at 1/2, 1/4 or 1/8
  scale (libjpeg's DCT scaling, PIL's ``Image.draft``) when the region the transform reads still spans the
  output's size at that scale; the crop geometry and the random draws are unchanged, the pixels differ slightly
  (DCT-domain instead of bilinear downscaling). Only images at least twice the output across that region gain:
  at 336² from ImageNet's mostly 500×375 images, about 8% (bench/input_pipeline.py). Off by default.
* ``unit_float``: uint8 -> float32 in [0, 1], the pipeline's one conversion (numpy or jax).
All randomness comes from the numpy ``Generator`` passed in. :mod:`rsrnn_jax.data.decoders` has the faster
host implementations of the same transforms (``config.data.decoder``).
"""
from __future__ import annotations

import io
import math
import struct
import zlib

import numpy as np
from PIL import Image

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3}  # colour type -> channels (grey, RGB)


def _decode_png_unfiltered(data: bytes) -> np.ndarray | None:
  """uint8 (H, W, C) for a non-interlaced 8-bit grey/RGB PNG whose rows all use filter 0, else None."""
  if not data.startswith(_PNG_SIGNATURE):
    return None
  pos, idat, header = 8, [], None
  while pos + 8 <= len(data):
    length, tag = struct.unpack_from(">I4s", data, pos)
    body = data[pos + 8:pos + 8 + length]
    pos += 12 + length
    if tag == b"IHDR":
      header = struct.unpack(">IIBBBBB", body)
    elif tag == b"IDAT":
      idat.append(body)
    elif tag == b"IEND":
      break
    elif tag == b"PLTE" or tag == b"tRNS":
      return None
  if header is None:
    return None
  w, h, depth, colour, _, _, interlace = header
  if depth != 8 or colour not in _PNG_CHANNELS or interlace:
    return None
  c = _PNG_CHANNELS[colour]
  raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8)
  if raw.size != h * (w * c + 1):
    return None
  rows = raw.reshape(h, w * c + 1)
  if rows[:, 0].any():  # some row uses a Sub/Up/Average/Paeth filter: let PIL undo it
    return None
  return rows[:, 1:].reshape(h, w, c)


def _pil_mode(channels: int) -> str:
  return {1: "L", 3: "RGB"}[channels]


def decode_pil(data: bytes, channels: int) -> Image.Image:
  """Decoded PIL image in mode L (channels=1) or RGB (channels=3)."""
  img = Image.open(io.BytesIO(data))
  mode = _pil_mode(channels)
  return img if img.mode == mode else img.convert(mode)


def to_array(img: Image.Image, channels: int) -> np.ndarray:
  a = np.asarray(img, np.uint8)
  return a.reshape(a.shape[0], a.shape[1], channels)


def decode(data: bytes | np.ndarray, channels: int) -> np.ndarray:
  """PNG/JPEG bytes (or an already decoded array) -> uint8 (H, W, channels)."""
  if isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 3:
    return data
  data = bytes(data)
  fast = _decode_png_unfiltered(data)
  if fast is not None and fast.shape[-1] == channels:
    return fast
  return to_array(decode_pil(data, channels), channels)


def unit_float(images):
  """uint8 images -> float32 in [0, 1] (numpy or jax arrays, inside jit too); float images pass unchanged. The
  one conversion: the train step applies it on the device, the workers with ``image_dtype='float32'``."""
  if images.dtype != np.uint8:
    return images
  return images.astype(np.float32) * np.float32(1 / 255)


def random_resized_crop_box(height: int, width: int, rng: np.random.Generator,
                            scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
  """(top, left, h, w) of a torchvision RandomResizedCrop window."""
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target_area = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(*log_ratio))
    w = int(round(math.sqrt(target_area * aspect)))
    h = int(round(math.sqrt(target_area / aspect)))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return top, left, h, w
  # Fallback: central crop with the aspect ratio clamped to the range.
  in_ratio = width / height
  if in_ratio < ratio[0]:
    w, h = width, int(round(width / ratio[0]))
  elif in_ratio > ratio[1]:
    h, w = height, int(round(height * ratio[1]))
  else:
    w, h = width, height
  return (height - h) // 2, (width - w) // 2, h, w


def draft_decode(img: Image.Image, box_w: float, box_h: float, out_w: int, out_h: int) -> tuple[float, float]:
  """Reduced-size JPEG decode: sets ``img`` (opened, not yet decoded) to decode at the smallest scale 1/d
  (d = 2, 4 or 8) at which its ``box_w``×``box_h`` region still spans at least ``out_w``×``out_h`` pixels.
  Returns the (x, y) factors from the original to the new size; (1, 1) when nothing changes (not a JPEG,
  already decoded, or the region is less than twice the output)."""
  w, h = img.size
  if getattr(img, "format", None) != "JPEG" or box_w < 2 * out_w or box_h < 2 * out_h:
    return 1.0, 1.0
  img.draft(img.mode, (math.ceil(w * out_w / box_w), math.ceil(h * out_h / box_h)))  # no-op once decoded
  return img.width / w, img.height / h


def random_resized_crop(img: Image.Image, size: int, rng: np.random.Generator, *, flip: bool = True,
                        scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), draft: bool = False) -> Image.Image:
  """RandomResizedCrop(size) (bilinear) then, if ``flip``, RandomHorizontalFlip(0.5).

  ``draft``: decode a JPEG at reduced size when the crop allows it (module docstring); same random draws.
  """
  top, left, h, w = random_resized_crop_box(img.height, img.width, rng, scale, ratio)
  sx, sy = draft_decode(img, w, h, size, size) if draft else (1.0, 1.0)
  box = (left, top, left + w, top + h) if (sx, sy) == (1.0, 1.0) else (
      left * sx, top * sy, (left + w) * sx, (top + h) * sy)
  out = img.resize((size, size), Image.BILINEAR, box=box)
  if flip and rng.random() < 0.5:
    out = out.transpose(Image.FLIP_LEFT_RIGHT)
  return out


def resize_center_crop(img: Image.Image, resize: int, size: int, *, draft: bool = False) -> Image.Image:
  """Resize(resize) (shorter side, bilinear) then CenterCrop(size), as torchvision does them.

  ``draft``: decode a JPEG at reduced size when its shorter side is at least twice ``resize`` (module
  docstring); the resized size is computed from the original size, so the geometry is unchanged.
  """
  w, h = img.size
  if w <= h:
    new_w, new_h = resize, int(resize * h / w)
  else:
    new_w, new_h = int(resize * w / h), resize
  if draft:
    draft_decode(img, w, h, new_w, new_h)
  if (new_w, new_h) != img.size:
    img = img.resize((new_w, new_h), Image.BILINEAR)
  if size > min(new_w, new_h):
    raise ValueError(f"centre crop {size} larger than the resized image {new_w}x{new_h}")
  top = int(round((new_h - size) / 2.0))
  left = int(round((new_w - size) / 2.0))
  return img.crop((left, top, left + size, top + size))
