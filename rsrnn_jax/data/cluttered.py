"""TFDS builder ``cluttered_fashion_mnist``: one Fashion-MNIST item on a large black canvas among clutter.

The CPU demo task of the project, in the spirit of Cluttered Translated MNIST (Mnih et al., 2014, "Recurrent
Models of Visual Attention"): a glimpse model has to find the item before it can classify it.

Each example
  * ``image``: uint8 (S, S, 1), PNG-encoded. The i-th Fashion-MNIST item of the split (28×28) pasted at a
    uniformly random position (fully inside the canvas) on a black S×S canvas, plus ``num_clutter`` fragments:
    random ``clutter_size``² crops of OTHER random items of the same split, each pasted at a uniformly random
    position. Pixels are combined with ``max``, so clutter never erases the item (it may overlap it).
    Crops are taken where the source item has ink (up to 4 draws, first with ≥ 10% ink pixels, else the
    inkiest), so every fragment is visible clutter rather than an empty black square.
  * ``label``: the item's class (ClassLabel with Fashion-MNIST's 10 names); example i keeps item i's label.
  * ``position``: int32 (2,) = (row, col) of the item's top-left corner on the canvas.

Splits: ``train`` (60,000) and ``test`` (10,000), from the official splits; example i is built around item i
(examples are stored in that order: ``disable_shuffling``).

Determinism: everything random is drawn up front from ``np.random.default_rng(SeedSequence([seed, split_id]))``
(``split_id`` 0 = train, 1 = test), so the same config and source files give identical bytes.

Items can be drawn larger than 28×28 (``item_size``): every item of the split is first resized to
``item_size``² (bilinear, PIL), and fragments are cut from the resized items, so ``clutter_size`` is always in
canvas pixels.

Configs are named ``c{canvas}_n{clutter}_f{fragment}`` (plus ``_i{item}`` when item_size != 28 and ``_s{seed}``
when seed != 0). Predefined: ``c96_n8_f9`` (default: 96² canvas, 8 fragments of 9², item = 8.5% of the canvas,
clutter ≈ 7%), ``c60_n4_f8`` (the RAM paper's 60² / 4×8² recipe) and ``c168_n8_f32_i100`` (the paper's
proportions: a 168² image for 32² glimpses = 336 : 64, the item 35% of the image as ImageNet's objects on
average, the demo's clutter scaled with the item; docs/design.md). Any other values: ``config_for(canvas, clutter, fragment)``,
or just the name, e.g. ``tfds.data_source('cluttered_fashion_mnist/c128_n16_f12', ...)``: names are parsed.

The raw files come from ``find_fashion_mnist(source_dir)`` (builder kwarg ``source_dir``; default: the Debian
package ``dataset-fashion-mnist``). Nothing is downloaded.
"""
from __future__ import annotations

import dataclasses
import re
import struct
import zlib
from concurrent import futures
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from rsrnn_jax.data import fashion_mnist

NAME = "cluttered_fashion_mnist"
ITEM_SIZE = 28
SPLIT_IDS = {"train": 0, "test": 1}
_CHUNK = 2048  # examples rendered per vectorised step
_INK_THRESHOLD = 32  # a pixel counts as ink above this value
_MIN_INK_FRACTION = 0.10
_CROP_DRAWS = 4

_CITATION = r"""@article{xiao2017fashion,
  author  = {Han Xiao and Kashif Rasul and Roland Vollgraf},
  title   = {Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning Algorithms},
  journal = {arXiv preprint arXiv:1708.07747},
  year    = {2017}
}
@inproceedings{mnih2014ram,
  author    = {Volodymyr Mnih and Nicolas Heess and Alex Graves and Koray Kavukcuoglu},
  title     = {Recurrent Models of Visual Attention},
  booktitle = {Advances in Neural Information Processing Systems},
  year      = {2014}
}"""


@dataclasses.dataclass(eq=False)
class ClutteredConfig(tfds.core.BuilderConfig):
  """Canvas side, number and side of clutter fragments, and the generation seed."""
  canvas_size: int = 96
  num_clutter: int = 8
  clutter_size: int = 9
  seed: int = 0
  item_size: int = ITEM_SIZE

  def __reduce__(self):  # unpickle to the canonical object: TFDS compares configs by identity
    return config_for, (self.canvas_size, self.num_clutter, self.clutter_size, self.seed, self.item_size)


def config_name(canvas_size: int, num_clutter: int, clutter_size: int, seed: int = 0,
                item_size: int = ITEM_SIZE) -> str:
  name = f"c{canvas_size}_n{num_clutter}_f{clutter_size}"
  if item_size != ITEM_SIZE:
    name += f"_i{item_size}"
  return name if seed == 0 else f"{name}_s{seed}"


_NAME_RE = re.compile(r"^c(\d+)_n(\d+)_f(\d+)(?:_i(\d+))?(?:_s(\d+))?$")


def _make_config(canvas_size: int, num_clutter: int, clutter_size: int, seed: int = 0,
                 item_size: int = ITEM_SIZE) -> ClutteredConfig:
  if item_size < 1:
    raise ValueError(f"item_size must be >= 1, got {item_size}")
  if canvas_size < item_size:
    raise ValueError(f"canvas_size must be >= item_size ({item_size}), got {canvas_size}")
  if not 1 <= clutter_size <= item_size:
    raise ValueError(f"clutter_size must be in [1, item_size = {item_size}], got {clutter_size}")
  if num_clutter < 0 or seed < 0:
    raise ValueError("num_clutter and seed must be >= 0")
  return ClutteredConfig(
      name=config_name(canvas_size, num_clutter, clutter_size, seed, item_size),
      description=(f"{canvas_size}x{canvas_size} canvas, one Fashion-MNIST item drawn {item_size}x{item_size}, "
                   f"{num_clutter} clutter fragments of {clutter_size}x{clutter_size}, seed {seed}"),
      canvas_size=canvas_size, num_clutter=num_clutter, clutter_size=clutter_size, seed=seed,
      item_size=item_size)


_CONFIGS: dict[str, ClutteredConfig] = {}  # one object per name: tfds compares configs by identity


def config_for(canvas_size: int = 96, num_clutter: int = 8, clutter_size: int = 9, seed: int = 0,
               item_size: int = ITEM_SIZE) -> ClutteredConfig:
  """The builder config for these values (the predefined object when one matches)."""
  name = config_name(canvas_size, num_clutter, clutter_size, seed, item_size)
  if name not in _CONFIGS:
    _CONFIGS[name] = _make_config(canvas_size, num_clutter, clutter_size, seed, item_size)
  return _CONFIGS[name]


DEFAULT_CONFIG = config_for(96, 8, 9)
PAPER_GEOMETRY_CONFIG = config_for(168, 8, 32, item_size=100)
_PREDEFINED = [DEFAULT_CONFIG, config_for(60, 4, 8), PAPER_GEOMETRY_CONFIG]


# ---------------------------------------------------------------------------------------------------------
# Generation (pure numpy; usable without TFDS, e.g. for plots and tests).


@dataclasses.dataclass(frozen=True)
class ClutterPlan:
  """Every random draw of one split, made up front (so rendering can go in any chunking)."""
  position: np.ndarray          # int32 [N, 2]: item top-left (row, col) on the canvas
  clutter_source: np.ndarray    # int64 [N, K]: index of the item each fragment is cut from (never the example's)
  clutter_crop: np.ndarray      # int32 [N, K, 2]: fragment top-left inside its source item
  clutter_position: np.ndarray  # int32 [N, K, 2]: fragment top-left on the canvas


def scale_items(images: np.ndarray, item_size: int) -> np.ndarray:
  """The items uint8 [N, 28, 28] resized to [N, item_size, item_size] (bilinear; deterministic)."""
  if images.shape[1:] == (item_size, item_size):
    return images
  size = (item_size, item_size)
  return np.stack([np.asarray(Image.fromarray(x).resize(size, Image.Resampling.BILINEAR)) for x in images])


def make_plan(images: np.ndarray, *, canvas_size: int, num_clutter: int, clutter_size: int, seed: int,
              split: str) -> ClutterPlan:
  """Draws positions, clutter sources and crops for every item of ``images`` (uint8 [N, m, m], m ≤ canvas)."""
  n, h, w = images.shape
  if h != w or h > canvas_size or clutter_size > h:
    raise ValueError(f"expected square items at most {canvas_size} px with fragments of {clutter_size} px "
                     f"inside them, got {h}x{w}")
  if num_clutter and n < 2:
    raise ValueError("clutter needs at least 2 items in the split")
  k, f, s = num_clutter, clutter_size, canvas_size
  rng = np.random.default_rng(np.random.SeedSequence([seed, SPLIT_IDS[split]]))
  position = rng.integers(0, s - h + 1, size=(n, 2)).astype(np.int32)
  offset = rng.integers(1, max(n, 2), size=(n, k))  # never 0: a fragment comes from another item
  source = (np.arange(n)[:, None] + offset) % n
  crops = rng.integers(0, h - f + 1, size=(_CROP_DRAWS, n, k, 2))
  clutter_position = rng.integers(0, s - f + 1, size=(n, k, 2)).astype(np.int32)

  # Pick, per fragment, the first draw with enough ink (else the inkiest), from the summed-area table.
  ink = np.zeros((n, h + 1, h + 1), np.int32)
  ink[:, 1:, 1:] = (images > _INK_THRESHOLD).cumsum(1, dtype=np.int32).cumsum(2, dtype=np.int32)
  src = source[None]
  r, c = crops[..., 0], crops[..., 1]
  counts = ink[src, r + f, c + f] - ink[src, r, c + f] - ink[src, r + f, c] + ink[src, r, c]  # [D, N, K]
  good = counts >= _MIN_INK_FRACTION * f * f
  choice = np.where(good.any(0), good.argmax(0), counts.argmax(0))  # [N, K]
  crop = np.take_along_axis(crops, choice[None, ..., None], axis=0)[0].astype(np.int32)
  return ClutterPlan(position, source, crop, clutter_position)


def render(images: np.ndarray, plan: ClutterPlan, start: int, stop: int, *, canvas_size: int,
           clutter_size: int) -> np.ndarray:
  """Canvases uint8 [stop - start, S, S] of examples start..stop-1 of ``plan`` (fastest in chunks of ~2k)."""
  b, f, s = stop - start, clutter_size, canvas_size
  h, w = images.shape[1:]
  sl = slice(start, stop)
  canvas = np.zeros(b * s * s, np.uint8)  # flat indices: ~3x faster than 3-D fancy indexing
  items = images.reshape(-1)
  base = (np.arange(b) * (s * s))[:, None]

  def paste(src_offset, src_pattern, top_left, dst_pattern):
    top_left = top_left.astype(np.int64)
    dst = base + (top_left[:, 0] * s + top_left[:, 1])[:, None] + dst_pattern
    # Indices are unique within one example, so one fancy assignment per fragment loses no update.
    canvas[dst] = np.maximum(canvas[dst], items[src_offset[:, None] + src_pattern])

  frag_src = (np.arange(f)[:, None] * w + np.arange(f)).ravel()
  frag_dst = (np.arange(f)[:, None] * s + np.arange(f)).ravel()
  for j in range(plan.clutter_source.shape[1]):
    crop = plan.clutter_crop[sl, j].astype(np.int64)
    offset = plan.clutter_source[sl, j] * (h * w) + crop[:, 0] * w + crop[:, 1]
    paste(offset, frag_src, plan.clutter_position[sl, j], frag_dst)
  item_dst = (np.arange(h)[:, None] * s + np.arange(w)).ravel()
  paste(np.arange(start, stop, dtype=np.int64) * (h * w), np.arange(h * w), plan.position[sl], item_dst)
  return canvas.reshape(b, s, s)


def generate(images: np.ndarray, *, canvas_size: int, num_clutter: int, clutter_size: int, seed: int,
             split: str, item_size: int = ITEM_SIZE) -> tuple[np.ndarray, np.ndarray]:
  """All canvases uint8 [N, S, S] and item positions int32 [N, 2] of a split, in memory."""
  images = scale_items(images, item_size)
  plan = make_plan(images, canvas_size=canvas_size, num_clutter=num_clutter, clutter_size=clutter_size,
                   seed=seed, split=split)
  canvas = np.zeros((len(images), canvas_size, canvas_size), np.uint8)
  for i in range(0, len(images), _CHUNK):
    stop = min(i + _CHUNK, len(images))
    canvas[i:stop] = render(images, plan, i, stop, canvas_size=canvas_size, clutter_size=clutter_size)
  return canvas, plan.position


def _png_chunk(tag: bytes, data: bytes) -> bytes:
  return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def encode_png_gray(image: np.ndarray) -> bytes:
  """Minimal 8-bit greyscale PNG (filter None, zlib level 3); ~2x faster than PIL's encoder, and zlib
  releases the GIL. Decoded by any PNG reader (tests check PIL gets the pixels back)."""
  h, w = image.shape
  raw = np.zeros((h, w + 1), np.uint8)  # every row starts with its filter-type byte (0 = None)
  raw[:, 1:] = image
  return (b"\x89PNG\r\n\x1a\n"
          + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
          + _png_chunk(b"IDAT", zlib.compress(raw.tobytes(), 3))
          + _png_chunk(b"IEND", b""))


# ---------------------------------------------------------------------------------------------------------
# The TFDS builder.


class ClutteredFashionMnist(tfds.core.GeneratorBasedBuilder):
  """Cluttered Fashion-MNIST: an item at a random position on a larger canvas, among clutter."""

  name = NAME
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = _PREDEFINED
  DEFAULT_BUILDER_CONFIG_NAME = DEFAULT_CONFIG.name

  def __init__(self, *, source_dir: str | None = None, **kwargs):
    kwargs.setdefault("file_format", "array_record")
    self._source_dir = source_dir
    super().__init__(**kwargs)

  @classmethod
  def get_builder_config(cls, name: str, version=None):
    found = super().get_builder_config(name, version)
    if found is not None:
      return found
    m = _NAME_RE.match(name)
    if m is None:
      return None
    s, k, f, item, seed = (int(g) if g else 0 for g in m.groups())
    return config_for(s, k, f, seed, item or ITEM_SIZE)

  def _info(self) -> tfds.core.DatasetInfo:
    s = self.builder_config.canvas_size
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(s, s, 1), encoding_format="png"),
            "label": tfds.features.ClassLabel(names=list(fashion_mnist.CLASS_NAMES)),
            "position": tfds.features.Tensor(shape=(2,), dtype=np.int32),
        }),
        supervised_keys=("image", "label"),
        disable_shuffling=True,
        homepage="https://github.com/zalandoresearch/fashion-mnist",
        citation=_CITATION,
        license="MIT (Fashion-MNIST)",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    folder = fashion_mnist.find_fashion_mnist(self._source_dir)
    return {split: self._generate_examples(folder, split) for split in ("train", "test")}

  def _generate_examples(self, folder, split: str) -> Iterator[tuple[int, dict]]:
    cfg = self.builder_config
    images, labels = fashion_mnist.load_fashion_mnist(folder, split)
    images = scale_items(images, cfg.item_size)
    plan = make_plan(images, canvas_size=cfg.canvas_size, num_clutter=cfg.num_clutter,
                     clutter_size=cfg.clutter_size, seed=cfg.seed, split=split)
    n = len(images)

    def encoded_chunk(start):  # in a helper thread: numpy and zlib release the GIL
      stop = min(start + _CHUNK, n)
      canvas = render(images, plan, start, stop, canvas_size=cfg.canvas_size, clutter_size=cfg.clutter_size)
      return [encode_png_gray(c) for c in canvas]

    with futures.ThreadPoolExecutor(1) as pool:  # render + encode chunk k+1 while TFDS serialises chunk k
      pending = pool.submit(encoded_chunk, 0)
      for start in range(0, n, _CHUNK):
        pngs = pending.result()
        if start + _CHUNK < n:
          pending = pool.submit(encoded_chunk, start + _CHUNK)
        for i, png in enumerate(pngs, start):
          yield i, {"image": png, "label": int(labels[i]), "position": plan.position[i]}
