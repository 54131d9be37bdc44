"""Tests of rsrnn_jax.models.retina against an independent NumPy/SciPy implementation of paper.md §1–2.

Reference sampler: scipy.ndimage.map_coordinates(order=1, mode='grid-constant', cval=0). Note that SciPy's
mode='constant' is *not* grid_sample's zero padding: it returns cval for every point outside [0, size−1] instead of
interpolating towards the zero border (checked in test_scipy_constant_mode_is_not_zero_padding).
"""
from __future__ import annotations

import functools

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import ndimage

from rsrnn_jax.models import retina

DENSITIES = (2.5, 10.0, 16.0)
FIXATIONS = np.array([[0.0, 0.0], [0.97, -0.95], [-0.99, 0.999], [0.31, -0.62], [-0.4, 0.05]])


# ------------------------------------------------------------------------------------------------------------------
# independent NumPy reference (the paper's form: sign/abs offset, atan2 angle)


def np_g(rho, d):
  return (d ** (rho / 2) - 1) / (np.sqrt(d) - 1)


def np_ginv(r, d):
  return 2 * np.log(1 + (np.sqrt(d) - 1) * r) / np.log(d)


def np_offset(f, d):
  return np.sign(f) * (1 - np_ginv(1 - np.abs(f), d))


def np_offset_inverse(fp, d):
  """f such that np_offset(f) = fp."""
  return np.sign(fp) * (1 - np_g(1 - np.abs(fp), d))


def np_view_grid(n):
  t = np.linspace(-1, 1, n)
  ux, uy = np.meshgrid(t, t, indexing="xy")
  return ux, uy


def np_retina_grid(f, n, d):
  f = np.asarray(f, np.float64)
  ux, uy = np_view_grid(n)
  fp = np_offset(f, d)
  vx = ux[None] - fp[:, 0, None, None]
  vy = uy[None] - fp[:, 1, None, None]
  rho, theta = np.hypot(vx, vy), np.arctan2(vy, vx)
  px = f[:, 0, None, None] + np_g(rho, d) * np.cos(theta)
  py = f[:, 1, None, None] + np_g(rho, d) * np.sin(theta)
  return np.stack([px, py], -1)


def np_crop_grid(f, n, s):
  ux, uy = np_view_grid(n)
  return np.stack([f[:, 0, None, None] + s * ux[None], f[:, 1, None, None] + s * uy[None]], -1)


def np_sample(images, grid):
  images = np.asarray(images, np.float64)
  b, h, w, c = images.shape
  col = (grid[..., 0] + 1) / 2 * (w - 1)
  row = (grid[..., 1] + 1) / 2 * (h - 1)
  out = np.zeros(grid.shape[:-1] + (c,))
  for i in range(b):
    for k in range(c):
      out[i, ..., k] = ndimage.map_coordinates(images[i, ..., k], [row[i], col[i]], order=1,
                                               mode="grid-constant", cval=0.0)
  return out


def jit(fn, **static):
  """jax.jit with the static keyword arguments bound (one compile instead of op-by-op eager dispatch)."""
  return jax.jit(functools.partial(fn, **static))


def rand_images(seed, shape=(2, 13, 17, 3)):
  return np.random.default_rng(seed).uniform(size=shape).astype(np.float32)


# ------------------------------------------------------------------------------------------------------------------
# bilinear_sample


def test_scipy_constant_mode_is_not_zero_padding():
  a = np.arange(1.0, 10.0).reshape(3, 3)
  pt = [[-0.5], [1.0]]  # half a pixel above the first row
  assert ndimage.map_coordinates(a, pt, order=1, mode="constant", cval=0)[0] == 0.0
  assert ndimage.map_coordinates(a, pt, order=1, mode="grid-constant", cval=0)[0] == pytest.approx(1.0)
  out = retina.bilinear_sample(jnp.asarray(a)[None, :, :, None], jnp.array([[[0.0, -1.5]]]))  # row −0.5
  np.testing.assert_allclose(out[0, 0, 0], 1.0, rtol=1e-6)


def test_bilinear_matches_scipy_and_jax_map_coordinates():
  images = rand_images(0)
  coords = np.random.default_rng(1).uniform(-1.4, 1.4, size=(2, 6, 5, 2)).astype(np.float32)
  out = jax.jit(retina.bilinear_sample)(images, coords)
  assert out.shape == (2, 6, 5, 3) and out.dtype == jnp.float32
  np.testing.assert_allclose(out, np_sample(images, coords.astype(np.float64)), atol=1e-5)
  # jax.scipy's mode='constant' does interpolate towards the zero border (unlike SciPy's)
  col = (coords[0, ..., 0] + 1) / 2 * 16
  row = (coords[0, ..., 1] + 1) / 2 * 12
  ref = jax.scipy.ndimage.map_coordinates(images[0, ..., 1], [row, col], order=1, mode="constant", cval=0.0)
  np.testing.assert_allclose(out[0, ..., 1], ref, atol=1e-5)


def test_bilinear_pixel_centres_and_outside():
  images = rand_images(2, (1, 5, 4, 2))
  h, w = 5, 4
  xs, ys = np.linspace(-1, 1, w), np.linspace(-1, 1, h)
  centres = np.stack(np.meshgrid(xs, ys, indexing="xy"), -1)[None].astype(np.float32)
  np.testing.assert_allclose(jax.jit(retina.bilinear_sample)(images, centres), images, atol=1e-6)

  half_x, half_y = 1.0 / (w - 1), 1.0 / (h - 1)  # half a pixel in normalised units
  pts = np.array([[[-1 - half_x, -1.0],  # half a pixel left of the top-left pixel → half its value
                   [1.0, 1 + half_y],  # half a pixel below the bottom-right pixel
                   [-1 - half_x, -1 - half_y],  # diagonal: a quarter
                   [-1 - 3 * half_x, 0.0],  # 1.5 pixels outside → 0
                   [1.0, 1 + 3 * half_y],
                   [5.0, -7.0],  # far away
                   [1.0, -1.0]]], np.float32)  # exact corner pixel
  out = np.asarray(jax.jit(retina.bilinear_sample)(images, pts[:, :, None, :]))[0, :, 0]
  np.testing.assert_allclose(out[0], 0.5 * images[0, 0, 0], rtol=1e-5)
  np.testing.assert_allclose(out[1], 0.5 * images[0, -1, -1], rtol=1e-5)
  np.testing.assert_allclose(out[2], 0.25 * images[0, 0, 0], rtol=1e-5)
  np.testing.assert_array_equal(out[3:6], 0.0)
  np.testing.assert_allclose(out[6], images[0, 0, -1], rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_bilinear_keeps_image_dtype(dtype):
  images = jnp.asarray(rand_images(3, (2, 6, 6, 1)), dtype)
  coords = jnp.zeros((2, 3, 3, 2), jnp.float32)
  out = jax.jit(retina.bilinear_sample)(images, coords)
  assert out.dtype == dtype and out.shape == (2, 3, 3, 1)
  out = jit(retina.retinal_transform, out_size=4, density_ratio=10.0)(images, jnp.zeros((2, 2)))
  assert out.dtype == dtype and out.shape == (2, 4, 4, 1)


# ------------------------------------------------------------------------------------------------------------------
# retina and crop against the reference


@pytest.mark.parametrize("d", DENSITIES)
def test_retinal_transform_matches_reference(d):
  images = rand_images(4, (FIXATIONS.shape[0], 19, 23, 3))
  fix = jnp.asarray(FIXATIONS, jnp.float32)
  grid = jit(retina.retina_grid, out_size=16, density_ratio=d)(fix)
  ref_grid = np_retina_grid(FIXATIONS, 16, d)
  np.testing.assert_allclose(grid, ref_grid, atol=1e-5)
  out = jit(retina.retinal_transform, out_size=16, density_ratio=d)(images, fix)
  assert out.shape == (5, 16, 16, 3) and out.dtype == jnp.float32
  np.testing.assert_allclose(out, np_sample(images, ref_grid), atol=1e-5)
  np.testing.assert_allclose(retina.fixation_offset(fix, d), np_offset(FIXATIONS, d), atol=1e-6)


@pytest.mark.parametrize("scale", [0.25, 0.5, 1.0])
def test_crop_matches_reference(scale):
  images = rand_images(5, (FIXATIONS.shape[0], 19, 23, 2))
  fix = jnp.asarray(FIXATIONS, jnp.float32)
  ref_grid = np_crop_grid(FIXATIONS, 12, scale)
  np.testing.assert_allclose(retina.crop_grid(fix, scale=scale, out_size=12), ref_grid, atol=1e-6)
  out = jit(retina.crop, scale=scale, out_size=12)(images, fix)
  assert out.shape == (5, 12, 12, 2)
  np.testing.assert_allclose(out, np_sample(images, ref_grid), atol=1e-5)


def test_full_crop_at_centre_is_identity():
  images = rand_images(6, (1, 9, 9, 2))
  np.testing.assert_allclose(jit(retina.crop, scale=1.0, out_size=9)(images, jnp.zeros((1, 2))), images, atol=1e-6)


# ------------------------------------------------------------------------------------------------------------------
# geometry


def test_foveal_magnification_grows_with_density():
  n = 129  # odd: the centre view pixel sits on the fovea for f = 0
  c = n // 2
  uniform = 2.0 / (n - 1)
  spacings = []
  for d, paper in zip((2.5, 8.0, 10.0, 12.0, 16.0), (1.27, 1.76, 1.88, 1.98, 2.16)):
    g = np.asarray(jit(retina.retina_grid, out_size=n, density_ratio=d)(jnp.zeros((1, 2))))[0]
    fovea = (g[c, c + 1, 0] - g[c, c - 1, 0]) / 2
    periphery = g[c, -1, 0] - g[c, -2, 0]
    predicted = (np.sqrt(d) - 1) / (0.5 * np.log(d))
    assert predicted == pytest.approx(paper, abs=0.006)
    assert uniform / fovea == pytest.approx(predicted, rel=0.015)
    assert periphery / fovea == pytest.approx(np.sqrt(d), rel=0.04)  # spacing ratio periphery/fovea = √d
    np.testing.assert_allclose(g[c, c], 0.0, atol=1e-7)
    spacings.append(fovea)
  assert np.all(np.diff(spacings) < 0)


def test_fovea_samples_the_fixation():
  rng = np.random.default_rng(7)
  f = rng.uniform(-1, 1, size=(6, 2)).astype(np.float32)
  f[0] = 0.0
  f[1] = [1.0, -1.0]
  for d in DENSITIES:
    fp = retina.fixation_offset(f, d)
    np.testing.assert_allclose(retina.retina_to_image(fp, f, density_ratio=d), f, atol=1e-6)

  # choose fixations whose fovea f' falls exactly on view pixels: that view pixel is the image sampled at f
  n, d = 11, 12.0
  t = np.linspace(-1, 1, n)
  ij = np.array([[5, 5], [0, 10], [3, 8], [9, 1]])  # (row, col)
  fp = np.stack([t[ij[:, 1]], t[ij[:, 0]]], -1)
  f = np_offset_inverse(fp, d)
  np.testing.assert_allclose(np_offset(f, d), fp, atol=1e-12)
  images = rand_images(8, (4, 15, 14, 2))
  out = np.asarray(jit(retina.retinal_transform, out_size=n, density_ratio=d)(images, f.astype(np.float32)))
  at_fix = np.asarray(jax.jit(retina.bilinear_sample)(images, f.astype(np.float32)[:, None, None, :]))[:, 0, 0]
  np.testing.assert_allclose(out[np.arange(4), ij[:, 0], ij[:, 1]], at_fix, atol=1e-5)


@pytest.mark.parametrize("d", DENSITIES)
def test_inverse_round_trips(d):
  rng = np.random.default_rng(int(d * 10))
  f = rng.uniform(-1, 1, size=(4, 2)).astype(np.float32)
  f[0] = 0.0
  u = rng.uniform(-1, 1, size=(4, 30, 2)).astype(np.float32)
  u[:, 0] = retina.fixation_offset(f, d)  # include ρ = 0 exactly
  p = retina.retina_to_image(u, f, density_ratio=d)
  np.testing.assert_allclose(retina.image_to_retina(p, f, density_ratio=d), u, atol=2e-5)
  q = rng.uniform(-1, 1, size=(4, 30, 2)).astype(np.float32)
  q[:, 0] = f
  back = retina.retina_to_image(retina.image_to_retina(q, f, density_ratio=d), f, density_ratio=d)
  np.testing.assert_allclose(back, q, atol=2e-5)
  np.testing.assert_allclose(retina.crop_to_image(retina.image_to_crop(q, f, scale=0.3), f, scale=0.3), q, atol=1e-6)
  np.testing.assert_allclose(retina.image_to_crop(retina.crop_to_image(u, f, scale=0.3), f, scale=0.3), u, atol=1e-5)


# ------------------------------------------------------------------------------------------------------------------
# gradients


@pytest.mark.parametrize("d", DENSITIES)
def test_fixation_offset_gradient(d):
  c = 1 - 1 / np.sqrt(d)
  with jax.enable_x64(True):
    off = functools.partial(retina.fixation_offset, density_ratio=d)
    assert jax.grad(off)(0.0) == pytest.approx(2 * c / np.log(d), rel=1e-12)
    assert jax.jvp(off, (0.0,), (1.0,))[1] == pytest.approx(2 * c / np.log(d), rel=1e-12)
    xs = np.array([0.0, 1e-9, -1e-9, 0.3, -0.7, 0.999, -1.0])
    fd = (np_offset(xs + 1e-7, d) - np_offset(xs - 1e-7, d)) / 2e-7  # central differences of the paper's form
    grads = jax.jit(jax.vmap(jax.grad(off)))(xs)
    np.testing.assert_allclose(grads, fd, rtol=1e-6)
    np.testing.assert_allclose(grads, 2 * c / np.log(d) / (1 - c * np.abs(xs)), rtol=1e-12)
    assert np.all(grads > 0)


def test_radial_map_gradient_finite_at_fovea():
  d = 10.0
  a, k = 0.5 * np.log(d), np.sqrt(d) - 1
  f = jnp.array([[0.3, -0.2]])
  fp = retina.fixation_offset(f, d)
  jac = jax.jit(jax.jacobian(lambda u: retina.retina_to_image(u, f, density_ratio=d)[0]))(fp)
  np.testing.assert_allclose(jac[:, 0], a / k * np.eye(2), rtol=1e-5)  # g'(0) = (ln d/2)/(√d − 1)
  jac_inv = jax.jit(jax.jacobian(lambda p: retina.image_to_retina(p, f, density_ratio=d)[0]))(f)
  np.testing.assert_allclose(jac_inv[:, 0], k / a * np.eye(2), rtol=1e-5)
  # derivative of the fovea location w.r.t. the fixation at the image centre is not zero
  fovea_centre = jax.jit(jax.grad(lambda f: retina.retina_to_image(jnp.zeros((1, 2)), f, density_ratio=d).sum()))
  gf = fovea_centre(jnp.zeros((1, 2)))
  assert np.all(np.isfinite(gf)) and np.all(np.abs(gf) > 0.1)


def test_check_grads_retina_and_crop():
  with jax.enable_x64(True):
    images = jnp.asarray(rand_images(9, (2, 9, 10, 2)), jnp.float64)
    fix = jnp.array([[0.1234, -0.3321], [-0.7113, 0.5871]], jnp.float64)
    centre = jnp.zeros((2, 2), jnp.float64)  # the evaluation's first fixation: f' has a sign/abs kink there
    modes = ("fwd", "rev")
    # w.r.t. the image and the fixations separately, and jointly
    fn = jit(retina.retinal_transform, out_size=7, density_ratio=12.0)
    check_grads(jax.jit(lambda im: fn(im, fix)), (images,), order=1, modes=modes)
    check_grads(jax.jit(lambda f: fn(images, f)), (fix,), order=1, modes=modes, eps=1e-6)
    check_grads(jit(retina.retinal_transform, out_size=6, density_ratio=2.5), (images, fix), order=1, modes=modes,
                eps=1e-6)
    fn = jit(retina.crop, out_size=6, scale=0.6)
    check_grads(jax.jit(lambda f: fn(images, f)), (fix,), order=1, modes=modes, eps=1e-6)
    check_grads(jit(retina.crop, out_size=7, scale=0.25), (images, fix), order=1, modes=modes, eps=1e-6)
    fn = jit(retina.retinal_transform, out_size=6, density_ratio=10.0)
    check_grads(jax.jit(lambda f: fn(images, f)), (centre,), order=1, modes=modes, eps=1e-6)
    # the sample coordinates get gradients too
    coords = jnp.asarray(np.random.default_rng(10).uniform(-1.1, 1.1, (2, 4, 3, 2)))
    check_grads(jax.jit(lambda c: retina.bilinear_sample(images, c)), (coords,), order=1, modes=modes, eps=1e-6)


# ------------------------------------------------------------------------------------------------------------------
# transformations, shapes, argument checks


def test_jit_and_vmap():
  images = jnp.asarray(rand_images(11, (3, 12, 12, 2)))
  fix = jnp.asarray(np.random.default_rng(12).uniform(-1, 1, (3, 2)), jnp.float32)
  fn = functools.partial(retina.retinal_transform, out_size=8, density_ratio=10.0)
  reference = np_sample(images, np_retina_grid(np.asarray(fix, np.float64), 8, 10.0))
  jitted = jax.jit(retina.retinal_transform, static_argnames=("out_size", "density_ratio"))
  np.testing.assert_allclose(jitted(images, fix, out_size=8, density_ratio=10.0), reference, atol=1e-5)
  # vmap over a time axis of fixations [T,B,2] and over examples with a unit batch inside
  fixs = jnp.stack([fix, -fix])
  per_t = jax.jit(jax.vmap(fn, in_axes=(None, 0)))(images, fixs)
  assert per_t.shape == (2, 3, 8, 8, 2)
  np.testing.assert_allclose(per_t[0], reference, atol=1e-5)
  per_ex = jax.jit(jax.vmap(lambda im, f: fn(im[None], f[None])[0]))(images, fix)
  np.testing.assert_allclose(per_ex, reference, atol=1e-5)
  assert jit(retina.crop, scale=0.5, out_size=5)(images, fix).shape == (3, 5, 5, 2)
  grid1 = jit(retina.crop_grid, scale=0.25, out_size=1)(fix)
  assert grid1.shape == (3, 1, 1, 2)
  np.testing.assert_allclose(grid1[:, 0, 0], fix)  # n = 1: the centre of the crop
  with jax.enable_x64(True):
    out = jit(retina.retinal_transform, out_size=4, density_ratio=10.0)(
        jnp.asarray(images, jnp.float64), jnp.asarray(fix, jnp.float64))
    assert out.dtype == jnp.float64 and out.shape == (3, 4, 4, 2)


@pytest.mark.parametrize("bad", [1.0, 0.5, -2.0, float("nan"), float("inf")])
def test_density_ratio_must_exceed_one(bad):
  fix = jnp.zeros((1, 2))
  with pytest.raises(ValueError, match="density_ratio"):
    retina.retina_grid(fix, out_size=4, density_ratio=bad)
  with pytest.raises(ValueError, match="density_ratio"):
    retina.fixation_offset(fix, bad)


def test_bad_static_args():
  fix = jnp.zeros((1, 2))
  with pytest.raises(ValueError, match="scale"):
    retina.crop_grid(fix, scale=0.0, out_size=4)
  with pytest.raises(TypeError, match="static"):
    jax.jit(lambda d: retina.retina_grid(fix, out_size=4, density_ratio=d))(10.0)


# ------------------------------------------------------------------------------------------------------------------
# property test


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(fx=st.floats(-1, 1), fy=st.floats(-1, 1), d=st.floats(1.5, 20))
def test_retina_grid_properties(fx, fy, d):
  n = 17
  f = np.array([[fx, fy]], np.float32)
  grid = np.asarray(retina.retina_grid(f, out_size=n, density_ratio=d))[0]
  assert np.all(np.isfinite(grid))
  fp = np.asarray(retina.fixation_offset(f, d))[0]
  assert np.all(np.abs(fp) <= 1 + 1e-6)
  np.testing.assert_allclose(retina.retina_to_image(fp[None], f, density_ratio=d)[0], f[0], atol=1e-5)

  ux, uy = np_view_grid(n)
  rho = np.hypot(ux - fp[0], uy - fp[1])
  radius = np.linalg.norm(grid - f[0], axis=-1)
  inner = rho <= 1
  # image radius g(ρ) ≤ 1 inside the retinal unit disk (inside the image when f = 0) ...
  assert np.all(radius[inner] <= 1 + 1e-5)
  # ... and the disk ρ ≤ 1 − max|f'| maps into the disk of radius 1 − max|f| around f, inside the image
  safe = rho <= 1 - np.abs(fp).max()
  assert np.all(np.abs(grid[safe]) <= 1 + 1e-5)
  # the view border on the side of the nearer image border lands on the image border (through the fovea)
  sx, sy = (1.0 if fx >= 0 else -1.0), (1.0 if fy >= 0 else -1.0)
  u = np.array([[[sx, fp[1]], [fp[0], sy]]], np.float32)
  p = np.asarray(retina.retina_to_image(u, f, density_ratio=d))[0]
  np.testing.assert_allclose(p, [[sx, fy], [fx, sy]], atol=2e-5)
