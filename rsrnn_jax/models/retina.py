"""Retinal transform and crops: where each output sample looks in the input image (paper.md §1, §2).

Conventions (align_corners=True, like PyTorch ``grid_sample``):
* images ``[B,H,W,C]``; coordinates are normalised ``(x, y)`` in [-1,1]²: x = column (right), y = row (down),
  (-1,-1) = centre of the top-left pixel, (1,1) = centre of the bottom-right pixel; pixel = (p+1)/2·(size−1).
* fixations ``[B,2]`` as (x, y); "view" coordinates u are the normalised coordinates of the output image.

The retina (d = density ratio = the paper's b, d > 1), with a = ½·ln d and k = √d − 1:

    g(ρ)   = (d^(ρ/2) − 1)/(√d − 1) = expm1(a·ρ)/k          retinal radius → image radius, g(0)=0, g(1)=1
    g⁻¹(r) = 2·ln(1 + (√d − 1)·r)/ln d = log1p(k·r)/a
    f'     = sign(f)·(1 − g⁻¹(1 − |f|)) = −sign(f)·2·ln(1 − c|f|)/ln d,  c = 1 − 1/√d   (per axis)
    p(u)   = f + g(ρ)·v/ρ,  v = u − f',  ρ = |v|                                      (view → image)

The fovea sits at f' in the view (p(f') = f) and near-border fixations keep the image border on the view border.
Crops: p(u) = f + s·u (a square of side s × image side centred at f).

``density_ratio``, ``scale`` and ``out_size`` are static Python numbers (never traced).
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp


# ---------------------------------------------------------------------------------------------------------------
# static-argument checks and small helpers


def _static_float(name: str, value, *, greater_than: float) -> float:
  try:
    value = float(value)
  except (TypeError, jax.errors.ConcretizationTypeError) as e:
    raise TypeError(f"{name} must be a static Python float, got {type(value).__name__}") from e
  if not (math.isfinite(value) and value > greater_than):
    raise ValueError(f"{name} must be a finite number > {greater_than:g}, got {value!r}")
  return value


def _density(density_ratio) -> float:
  return _static_float("density_ratio", density_ratio, greater_than=1.0)


def _scale(scale) -> float:
  return _static_float("scale", scale, greater_than=0.0)


def _as_float(x):
  x = jnp.asarray(x)
  return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.asarray(0.0).dtype)


def _fix_like(fixations, u):
  """Reshape fixations [B,2] to broadcast against u [B,...,2]."""
  fixations = jnp.asarray(fixations, u.dtype)
  return fixations.reshape(fixations.shape[:1] + (1,) * (u.ndim - 2) + fixations.shape[-1:])


def view_grid(batch: int, out_size: int, dtype):
  """Uniform view grid u_ij = (linspace(-1,1,n)[j], linspace(-1,1,n)[i]), broadcast to [B,n,n,2].

  n = 1 gives the single centre point (0, 0), as PyTorch's affine_grid does.
  """
  out_size = int(out_size)
  if out_size < 1:
    raise ValueError(f"out_size must be a positive int, got {out_size}")
  t = jnp.linspace(-1.0, 1.0, out_size, dtype=dtype) if out_size > 1 else jnp.zeros((1,), dtype)
  grid = jnp.stack(jnp.meshgrid(t, t, indexing="xy"), axis=-1)  # grid[i, j] = (t[j], t[i])
  return jnp.broadcast_to(grid, (batch, out_size, out_size, 2))


def _radial(v, ratio, limit: float):
  """v·φ(|v|) for a radial profile φ(ρ) = F(ρ)/ρ with φ(0) = limit; finite value and gradient at v = 0.

  Double ``where``: below ρ = eps, where φ(ρ) = φ(0)·(1 + O(ρ)) equals φ(0) to machine precision, φ gets the safe
  radius 1 and the limit is used, so neither sqrt nor 1/ρ ever sees 0.
  """
  r2 = jnp.sum(v * v, axis=-1, keepdims=True)
  ok = r2 > jnp.finfo(v.dtype).eps ** 2
  rho = jnp.sqrt(jnp.where(ok, r2, 1.0))
  return v * jnp.where(ok, ratio(rho), limit)


# ---------------------------------------------------------------------------------------------------------------
# bilinear sampling


def bilinear_sample(images, coords):
  """Bilinear sample of images [B,H,W,C] at normalised coords [B,h,w,2] (x, y) → [B,h,w,C] (images' dtype).

  Every one of the four corner pixels that lies outside the image contributes 0 (PyTorch
  ``grid_sample(bilinear, padding_mode='zeros', align_corners=True)``). A gather, so gradients reach both the image
  and the coordinates.
  """
  images = jnp.asarray(images)
  coords = _as_float(coords)
  b, h, w, c = images.shape
  out_shape = coords.shape[:-1] + (c,)
  ctype = jnp.promote_types(images.dtype, coords.dtype)
  coords = coords.astype(ctype).reshape(b, -1, 2)
  x = (coords[..., 0] + 1.0) * (0.5 * (w - 1))  # pixel column
  y = (coords[..., 1] + 1.0) * (0.5 * (h - 1))  # pixel row
  x0, y0 = jnp.floor(x), jnp.floor(y)
  wx1, wy1 = x - x0, y - y0
  flat = images.reshape(b, h * w, c)
  out = jnp.zeros((b, coords.shape[1], c), ctype)
  for yi, wy in ((y0, 1.0 - wy1), (y0 + 1.0, wy1)):
    for xi, wx in ((x0, 1.0 - wx1), (x0 + 1.0, wx1)):
      inside = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
      index = jnp.clip(yi, 0, h - 1).astype(jnp.int32) * w + jnp.clip(xi, 0, w - 1).astype(jnp.int32)
      values = jnp.take_along_axis(flat, index[..., None], axis=1)  # [B,N,C]
      out = out + jnp.where(inside, wx * wy, 0.0)[..., None] * values
  return out.reshape(out_shape).astype(images.dtype)


# ---------------------------------------------------------------------------------------------------------------
# retina


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _offset(f, d: float):
  c = 1.0 - d ** -0.5
  return jnp.sign(f) * (-2.0 / math.log(d)) * jnp.log1p(-c * jnp.abs(f))


@_offset.defjvp
def _offset_jvp(d, primals, tangents):
  (f,), (t,) = primals, tangents
  c = 1.0 - d ** -0.5
  # d f'/df = 2c / (ln d · (1 − c|f|)), continuous through f = 0 (where sign/abs would give autodiff 0).
  return _offset(f, d), t * ((2.0 * c / math.log(d)) / (1.0 - c * jnp.abs(f)))


def fixation_offset(f, density_ratio):
  """Fovea position in the view, per axis: f' = sign(f)·(1 − g⁻¹(1 − |f|)) = −sign(f)·2·ln(1 − c|f|)/ln d.

  c = 1 − 1/√d. Odd, increasing, f'(±1) = ±1; its derivative 2c/(ln d·(1 − c|f|)) is exact at f = 0 (custom JVP).
  """
  return _offset(_as_float(f), _density(density_ratio))


def retina_to_image(u, fixations, *, density_ratio):
  """View coords u [B,...,2] → image coords p = f + g(ρ)·v/ρ; v = u − f', ρ = |v|, g(ρ) = (d^(ρ/2) − 1)/(√d − 1).

  g(ρ)/ρ = expm1(ρ·ln d/2)/((√d − 1)·ρ) → (ln d/2)/(√d − 1) at ρ = 0 (finite value and gradient there).
  """
  d = _density(density_ratio)
  u = _as_float(u)
  f = _fix_like(fixations, u)
  a, k = 0.5 * math.log(d), math.sqrt(d) - 1.0
  return f + _radial(u - fixation_offset(f, d), lambda rho: jnp.expm1(a * rho) / (k * rho), a / k)


def image_to_retina(p, fixations, *, density_ratio):
  """Image coords p [B,...,2] → view coords u = f' + g⁻¹(r)·w/r, w = p − f, r = |w| (inverse of retina_to_image).

  g⁻¹(r) = 2·ln(1 + (√d − 1)·r)/ln d; g⁻¹(r)/r → 2(√d − 1)/ln d at r = 0.
  """
  d = _density(density_ratio)
  p = _as_float(p)
  f = _fix_like(fixations, p)
  a, k = 0.5 * math.log(d), math.sqrt(d) - 1.0
  return fixation_offset(f, d) + _radial(p - f, lambda r: jnp.log1p(k * r) / (a * r), k / a)


def retina_grid(fixations, *, out_size, density_ratio):
  """Image coords [B,n,n,2] sampled by the n×n retinal view: retina_to_image on the uniform view grid."""
  fixations = _as_float(fixations)
  u = view_grid(fixations.shape[0], out_size, fixations.dtype)
  return retina_to_image(u, fixations, density_ratio=density_ratio)


def retinal_transform(images, fixations, *, out_size, density_ratio):
  """Retinal image [B,n,n,C] = bilinear_sample(images, retina_grid(fixations)); black outside the input image."""
  return bilinear_sample(images, retina_grid(fixations, out_size=out_size, density_ratio=density_ratio))


# ---------------------------------------------------------------------------------------------------------------
# crops (Crop-S / Crop-D)


def crop_to_image(u, fixations, *, scale):
  """View coords u [B,...,2] → image coords p = f + s·u (square of side s × image side centred at f)."""
  s = _scale(scale)
  u = _as_float(u)
  return _fix_like(fixations, u) + s * u


def image_to_crop(p, fixations, *, scale):
  """Image coords p [B,...,2] → crop view coords u = (p − f)/s (inverse of crop_to_image)."""
  s = _scale(scale)
  p = _as_float(p)
  return (p - _fix_like(fixations, p)) / s


def crop_grid(fixations, *, scale, out_size):
  """Image coords [B,n,n,2] sampled by an n×n crop: crop_to_image on the uniform view grid."""
  fixations = _as_float(fixations)
  u = view_grid(fixations.shape[0], out_size, fixations.dtype)
  return crop_to_image(u, fixations, scale=scale)


def crop(images, fixations, *, scale, out_size):
  """Crop [B,n,n,C]: the square of side s × image side centred at f, resampled bilinearly (zeros outside)."""
  return bilinear_sample(images, crop_grid(fixations, scale=scale, out_size=out_size))
