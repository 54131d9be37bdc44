"""Compute per step (rsrnn_jax/evaluation/compute.py): XLA's cost analysis against hand counts, and per-step / once /
total on tiny models of every kind."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsrnn_jax.evaluation import compute
from tests.helpers import tiny_config


def _layer_macs(module, shape):
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  v = jax.eval_shape(lambda x: module.init(jax.random.key(0), x), x)
  return compute.flops(lambda v, x: module.apply(v, x), v, x) / 2


def test_cost_analysis_matches_hand_counts_for_dense_and_conv():
  assert _layer_macs(nn.Dense(32, use_bias=False), (8, 64)) == 8 * 64 * 32
  # VALID 3×3 conv, 10×10×4 → 8×8×8: every output takes 9·4 MACs per channel.
  assert _layer_macs(nn.Conv(8, (3, 3), use_bias=False, padding="VALID"), (1, 10, 10, 4)) == 8 * 8 * 8 * 9 * 4
  # SAME padding: XLA counts only the taps that fall inside the input, (3n − 2)² per channel pair, not n²·9.
  assert _layer_macs(nn.Conv(8, (3, 3), use_bias=False, padding="SAME"), (1, 10, 10, 4)) == 28 * 28 * 8 * 4


@functools.lru_cache(maxsize=None)
def _row(name):
  return compute.model_compute(tiny_config(name))


@pytest.mark.parametrize("name", ["dram", "s3ta", "ff_cnn"])
def test_per_step_once_and_total_are_consistent(name):
  c = tiny_config(name)
  row = _row(name)
  per_step, once = row["gmacs_per_step"] * 1e9, row["gmacs_once"] * 1e9
  # Linear in T: total(T) = once + T·per_step, up to a few hundred flops of per-step bookkeeping.
  np.testing.assert_allclose(compute.forward_macs(c, 3), once + 3 * per_step, rtol=5e-3)
  assert row["gmacs_total_eval"] == pytest.approx((once + c.eval.num_glimpses * per_step) / 1e9, rel=1e-9)
  if name == "ff_cnn":
    assert per_step == 0 and once > 0  # logits computed once
  elif name == "s3ta":
    assert 0 < per_step < 0.2 * once   # the backbone runs once; an attention step is cheap
  else:  # each glimpse is sampled and encoded anew; the glance (one encoder pass on the whole image) once
    assert per_step > 0 and 0.2 * per_step < once < per_step


def test_glimpse_cost_counts_one_encoder_per_crop():
  ratio = _row("dram")["gmacs_per_step"] / _row("gfnet_m")["gmacs_per_step"]
  assert 1.5 < ratio < 2.0  # two VGG passes, one shared GRU and dorsal stream
