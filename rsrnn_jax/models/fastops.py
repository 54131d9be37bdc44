"""Drop-in replacements for a 2×2 max-pool and a stride-1 SAME convolution, with gradients XLA:CPU runs fast.

Same values and gradients as ``nn.max_pool(x, (2, 2), strides=(2, 2))`` and ``lax.conv_general_dilated`` (the
max-pool bit for bit, the convolution to float rounding); only the programs differ. What they avoid on XLA:CPU
(jaxlib 0.10; measurements in docs/performance.md):

* The max-pool VJP is XLA's select-and-scatter, which XLA:CPU expands into a variadic reduce-window over four
  index iotas plus a scatter: 40–60% of a PGD iteration of the demo model. Here it is elementwise work.
* The input gradient of a convolution, as JAX emits it (a convolution with a reversed kernel and swapped
  feature dimensions), is 3–35× slower than a forward convolution inside a rolled loop (``lax.fori_loop``,
  ``lax.scan``). Here it *is* a forward convolution, with the kernel flipped and transposed explicitly.

:func:`conv_general_dilated` takes the fast path only on the CPU backend and only for what the models use
(NHWC/HWIO, stride 1, SAME padding, odd square kernel, no dilation, one feature group); everything else goes to
``lax.conv_general_dilated`` unchanged. Weight gradients are XLA's own in every case.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

_NHWC = lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1), out_spec=(0, 3, 1, 2))


# ---------------------------------------------------------------------------------------------------------------
# max-pool


def _window_max(x):
  """x [..., 2h, 2w, C] → (max over each 2×2 window [..., h, w, C], the four window entries in row-major order)."""
  *lead, h2, w2, c = x.shape
  xr = x.reshape(*lead, h2 // 2, 2, w2 // 2, 2, c)
  parts = (xr[..., 0, :, 0, :], xr[..., 0, :, 1, :], xr[..., 1, :, 0, :], xr[..., 1, :, 1, :])
  return jnp.maximum(jnp.maximum(parts[0], parts[1]), jnp.maximum(parts[2], parts[3])), parts


@jax.custom_vjp
def _pool_2x2(x):
  return _window_max(x)[0]


def _pool_2x2_fwd(x):
  # Saves which window entry is the (first) maximum, not x: the backward pass then reads 1 byte per output
  # instead of recomputing the window maxima (and whatever XLA fused into x) per input element.
  y, parts = _window_max(x)
  first = jnp.where(parts[0] == y, 0, jnp.where(parts[1] == y, 1, jnp.where(parts[2] == y, 2, 3)))
  return y, first.astype(jnp.int8)


def _pool_2x2_bwd(first, g):
  # The gradient goes to the first maximum of each window in row-major order, as XLA's select-and-scatter
  # (lax.reduce_window's max-pool VJP) does: the same result bit for bit, ties included (finite inputs).
  *lead, h, w, c = g.shape
  position = 2 * jnp.arange(2, dtype=jnp.int8).reshape(2, 1, 1, 1) + jnp.arange(2, dtype=jnp.int8).reshape(2, 1)
  chosen = first[..., :, None, :, None, :] == position  # [..., h, 2, w, 2, C]: window entry (a, b) is 2a + b
  grad = jnp.where(chosen, g[..., :, None, :, None, :], jnp.zeros((), g.dtype))
  return (grad.reshape(*lead, 2 * h, 2 * w, c),)


_pool_2x2.defvjp(_pool_2x2_fwd, _pool_2x2_bwd)


def max_pool_2x2(x):
  """``nn.max_pool(x, (2, 2), strides=(2, 2))`` (VALID: an odd last row/column is dropped), x [..., H, W, C]."""
  h, w = x.shape[-3] // 2 * 2, x.shape[-2] // 2 * 2
  if (h, w) != x.shape[-3:-1]:
    x = x[..., :h, :w, :]
  return _pool_2x2(x)


# ---------------------------------------------------------------------------------------------------------------
# convolution (NHWC / HWIO, stride 1, SAME, odd k × k kernel)


def _conv(x, w, precision):
  return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=_NHWC, precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_same(x, w, precision):
  return _conv(x, w, precision)


def _conv_same_fwd(x, w, precision):
  return _conv_same(x, w, precision), (x, w)


def _conv_same_bwd(precision, residuals, g):
  x, w = residuals
  # The input gradient as a forward convolution: the kernel flipped in space, its feature axes swapped.
  dx = _conv(g, jnp.flip(w, (0, 1)).swapaxes(2, 3), precision)
  dw = jax.vjp(lambda w_: _conv(x, w_, precision), w)[1](g)[0]
  return dx.astype(x.dtype), dw.astype(w.dtype)


_conv_same.defvjp(_conv_same_fwd, _conv_same_bwd)


def _fast_path(inputs, kernel, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
               feature_group_count) -> bool:
  k = kernel.shape[0] if kernel.ndim == 4 else 0
  return (jax.default_backend() == "cpu" and inputs.ndim == 4 and k % 2 == 1 and kernel.shape[1] == k
          and tuple(window_strides) == (1, 1) and padding == "SAME" and feature_group_count == 1
          and all(d == 1 for d in (lhs_dilation or (1,))) and all(d == 1 for d in (rhs_dilation or (1,)))
          and dimension_numbers == _NHWC and inputs.dtype == kernel.dtype)


def conv_general_dilated(inputs, kernel, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
  """``lax.conv_general_dilated`` with the signature ``flax.linen.Conv`` calls it with (its
  ``conv_general_dilated`` field); the fast path for stride-1 SAME NHWC convolutions on CPU."""
  if not kwargs and _fast_path(inputs, kernel, window_strides, padding, lhs_dilation, rhs_dilation,
                               dimension_numbers, feature_group_count):
    return _conv_same(inputs, kernel, precision)
  return lax.conv_general_dilated(inputs, kernel, window_strides, padding, lhs_dilation=lhs_dilation,
                                  rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                  feature_group_count=feature_group_count, precision=precision, **kwargs)
