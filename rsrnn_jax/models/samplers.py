"""Glimpse samplers: how a model looks at the image around a fixation.

A sampler is a small frozen dataclass over the pure functions of :mod:`rsrnn_jax.models.retina`:

* ``glimpses(images, fix)``: the list of views the ventral stream sees (one for the retina and Crop-S,
  two for Crop-D);
* ``view_index``: which of those views the dorsal stream looks through;
* ``view_grid(fix, size)``: image coordinates of a ``size × size`` view, used to warp image-space maps
  (inhibition of return) into the coordinates of the view the dorsal stream looks at;
* ``view_to_image(u, fix)``: view coordinates → image coordinates, used to turn the chosen cell of the
  dorsal probability map into the next fixation.

:class:`ImageView` is the view of a dorsal stream that looks at the whole image (the 1-D models' glance, a
"Dorsal CNN with a broad field of view"): its coordinates are the image's, whatever the fixation.

Models hold a sampler built from the config (:func:`make_sampler`); nothing else branches on its kind.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax.numpy as jnp

from rsrnn_jax.models import retina


@dataclasses.dataclass(frozen=True)
class RetinaSampler:
  """Retinal transform: dense fovea at the fixation, sparse periphery (paper.md §1)."""
  out_size: int
  density_ratio: float

  @property
  def num_glimpses(self) -> int:
    return 1

  @property
  def view_index(self) -> int:
    return 0

  def glimpses(self, images, fix):
    return [retina.retinal_transform(images, fix, out_size=self.out_size,
                                     density_ratio=self.density_ratio)]

  def view_grid(self, fix, size: int):
    return retina.retina_grid(fix, out_size=size, density_ratio=self.density_ratio)

  def view_to_image(self, u, fix):
    return retina.retina_to_image(u, fix, density_ratio=self.density_ratio)


@dataclasses.dataclass(frozen=True)
class CropSampler:
  """Square crops centred at the fixation, one per scale (Crop-S: one scale; Crop-D: two).

  Every crop is resampled to ``out_size × out_size``, so each scale gives the same number of samples.
  The dorsal stream looks through the largest crop.
  """
  out_size: int
  scales: Sequence[float]

  @property
  def num_glimpses(self) -> int:
    return len(self.scales)

  @property
  def view_index(self) -> int:
    """The glimpse the dorsal stream looks through: the largest crop (``view_grid``'s coordinates)."""
    return max(range(len(self.scales)), key=lambda i: self.scales[i])

  def glimpses(self, images, fix):
    return [retina.crop(images, fix, scale=s, out_size=self.out_size) for s in self.scales]

  def view_grid(self, fix, size: int):
    return retina.crop_grid(fix, scale=max(self.scales), out_size=size)

  def view_to_image(self, u, fix):
    return retina.crop_to_image(u, fix, scale=max(self.scales))


@dataclasses.dataclass(frozen=True)
class ImageView:
  """The whole image as a view: view coordinates are image coordinates (the glance of the 1-D models)."""

  def view_grid(self, fix, size: int):
    return retina.view_grid(fix.shape[0], size, fix.dtype)

  def view_to_image(self, u, fix):
    return jnp.broadcast_to(u, (fix.shape[0], *u.shape[1:]))


def make_sampler(cfg) -> RetinaSampler | CropSampler:
  """Builds a sampler from ``config.model.sampler`` (fields: kind, out_size, density_ratio, scales)."""
  if cfg.kind == "retina":
    return RetinaSampler(out_size=int(cfg.out_size), density_ratio=float(cfg.density_ratio))
  if cfg.kind == "crop":
    return CropSampler(out_size=int(cfg.out_size), scales=tuple(float(s) for s in cfg.scales))
  raise ValueError(f"unknown sampler kind {cfg.kind!r}; use 'retina' or 'crop'")

