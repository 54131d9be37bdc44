"""The speed-ups of rsrnn_jax.models.fastops / layers change programs, not numbers: max-pool bit for bit, the
convolution's gradients to float rounding, the ReLU/max-pool swap exactly, the whole model's outputs and
gradients and a PGD attack as with the plain Flax layers (nn.Conv, nn.max_pool; docs/performance.md)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsrnn_jax.attacks import core, loops
from rsrnn_jax.attacks.objectives import model_logits_fn
from rsrnn_jax.models import fastops, layers
from tests import attack_helpers

DN = ("NHWC", "HWIO", "NHWC")


def _flax_pool(x):
  return nn.max_pool(x, (2, 2), strides=(2, 2))


def _tied(shape, seed):
  """Random values with many ties: ReLU-like zeros (whole zero windows too) and repeated positive values."""
  x = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
  x = np.where(x < 0.3, 0.0, np.round(x, 1))
  x[0, 0, 0, 0] = x[0, 0, 1, 0] = x[0, 1, 0, 0] = 2.0
  return jnp.asarray(x)


@pytest.mark.parametrize("shape", [(3, 8, 8, 5), (2, 7, 9, 3), (1, 2, 2, 1)])
def test_max_pool_bit_for_bit_with_ties(shape):
  x = _tied(shape, 0)
  g = jnp.asarray(np.random.default_rng(1).normal(size=(shape[0], shape[1] // 2, shape[2] // 2, shape[3])),
                  jnp.float32)
  for jit in (False, True):
    wrap = jax.jit if jit else (lambda f: f)
    y0, vjp0 = jax.vjp(wrap(_flax_pool), x)
    y1, vjp1 = jax.vjp(wrap(fastops.max_pool_2x2), x)
    np.testing.assert_array_equal(y1, y0)
    np.testing.assert_array_equal(vjp1(g)[0], vjp0(g)[0])


@pytest.mark.parametrize("b,h,w,cin,cout,k", [(2, 8, 8, 1, 5, 3), (2, 7, 5, 3, 4, 3), (2, 6, 6, 4, 3, 5),
                                              (2, 4, 4, 8, 6, 3), (2, 5, 5, 7, 3, 1)])
def test_fast_conv_values_and_gradients(b, h, w, cin, cout, k):
  rng = np.random.default_rng(k + cin)
  x = jnp.asarray(rng.normal(size=(b, h, w, cin)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(k, k, cin, cout)), jnp.float32)
  g = jnp.asarray(rng.normal(size=(b, h, w, cout)), jnp.float32)
  dn = jax.lax.conv_dimension_numbers(x.shape, kernel.shape, DN)
  ref = lambda x, kern: jax.lax.conv_general_dilated(x, kern, (1, 1), "SAME", dimension_numbers=dn)
  new = lambda x, kern: fastops.conv_general_dilated(x, kern, (1, 1), "SAME", dimension_numbers=dn)
  assert "custom_vjp_call" in str(jax.make_jaxpr(new)(x, kernel))  # the fast path is taken
  y0, vjp0 = jax.vjp(ref, x, kernel)
  y1, vjp1 = jax.jit(lambda x, kern: jax.vjp(new, x, kern))(x, kernel)
  np.testing.assert_allclose(y1, y0, rtol=1e-6, atol=1e-6)
  for got, want in zip(vjp1(g), vjp0(g)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("strides,padding,groups", [((2, 2), "SAME", 1), ((1, 1), "VALID", 1),
                                                    ((1, 1), "SAME", 2)])
def test_fast_conv_other_convolutions_are_lax(strides, padding, groups):
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 6, 6, 4)), jnp.float32)
  kernel = jnp.asarray(np.random.default_rng(1).normal(size=(3, 3, 4 // groups, 4)), jnp.float32)
  dn = jax.lax.conv_dimension_numbers(x.shape, kernel.shape, DN)
  args = (x, kernel, strides, padding)
  kw = dict(dimension_numbers=dn, feature_group_count=groups)
  new = lambda x, kern: fastops.conv_general_dilated(x, kern, strides, padding, **kw)
  assert "custom_vjp_call" not in str(jax.make_jaxpr(new)(x, kernel))
  np.testing.assert_array_equal(fastops.conv_general_dilated(*args, **kw),
                                jax.lax.conv_general_dilated(*args, **kw))


class _ReferenceStages(nn.Module):
  """layers.ConvStages as it was: nn.Conv, norm, ReLU, then nn.max_pool (same parameter names)."""
  stages: tuple
  norm: str

  @nn.compact
  def __call__(self, x):
    for i, (features, num_convs, pool) in enumerate(self.stages):
      for j in range(num_convs):
        x = nn.Conv(features, (3, 3), use_bias=self.norm == "none", name=f"stage{i}_conv{j}")(x)
        x = layers.norm_layer(self.norm, train=False, dtype=jnp.float32, name=f"stage{i}_norm{j}")(x)
        x = nn.relu(x)
      if pool:
        x = _flax_pool(x)
    return x


@pytest.mark.parametrize("norm", ["none", "group"])
def test_conv_stages_match_plain_flax_layers(norm):
  stages = ((4, 2, 1), (8, 1, 1), (8, 1, 0))
  x = _tied((3, 12, 12, 1), 2)
  fast = layers.ConvStages(stages, norm=norm)
  ref = _ReferenceStages(stages, norm)
  params = fast.init(jax.random.key(0), x, train=False)
  assert jax.tree.structure(params) == jax.tree.structure(ref.init(jax.random.key(0), x))

  def loss(module, kwargs):
    return lambda p, x: jnp.sum(jnp.sin(module.apply(p, x, **kwargs)))

  v1, g1 = jax.jit(jax.value_and_grad(loss(fast, {"train": False}), argnums=(0, 1)))(params, x)
  v0, g0 = jax.jit(jax.value_and_grad(loss(ref, {}), argnums=(0, 1)))(params, x)
  np.testing.assert_allclose(v1, v0, rtol=1e-5)
  for got, want in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.fixture
def plain_flax_layers(monkeypatch):
  """Makes the models use nn.Conv and nn.max_pool (the layers before the speed-ups) while active."""
  def use():
    monkeypatch.setattr(layers, "conv", lambda features, kernel, **kw: nn.Conv(features, kernel, **kw))
    monkeypatch.setattr(fastops, "max_pool_2x2", _flax_pool)
  return use


@pytest.mark.slow
def test_model_and_pgd_match_plain_flax_layers(plain_flax_layers):
  """A tiny RS-RNN: logits, the image gradient of the attack loss and PGD (rolled loop; unrolled; 2 iterations
  per loop trip) are those of the model built from the plain Flax layers with PGD's rolled loop."""
  _, model, variables = attack_helpers.untrained("rsrnn")
  x = attack_helpers.images(0, 6)
  labels = jnp.arange(6) % attack_helpers.K

  def run(unroll):
    logits_fn = model_logits_fn(model, variables, horizon="step", attack_step=3)
    loss = lambda z: jnp.sum(core.attack_loss(logits_fn(z), labels))
    attack = lambda z: core.pgd(logits_fn, z, labels, eps=0.05, step_size=0.02, num_steps=3, rng=jax.random.key(3),
                                unroll=unroll)
    return jax.jit(lambda z: (logits_fn(z), jax.grad(loss)(z), attack(z)))(x)

  new = {unroll: run(unroll) for unroll in (False, True, 2)}
  plain_flax_layers()
  logits0, grad0, adv0 = run(False)
  for logits, grad, adv in new.values():
    np.testing.assert_allclose(logits, logits0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad, grad0, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(adv, adv0, atol=1e-6)


def test_loop_unroll_values():
  body = lambda i, c: c * 1.5 + i
  want = jax.lax.fori_loop(0, 5, body, 1.0)
  for unroll in (False, True, 1, 2, 5, 9):
    assert float(loops.iterate(5, body, 1.0, unroll=unroll)) == float(want)
  assert float(loops.iterate(0, body, 1.0, unroll=True)) == 1.0
  for bad in (0, -1, 1.5, "2"):
    with pytest.raises(ValueError, match="unroll"):
      loops.iterate(5, body, 1.0, unroll=bad)


def test_scan_unroll_auto():
  """Auto (-1): full unroll for training on every backend; evaluation and attacks roll the scan."""
  assert layers.scan_unroll(-1, 8, train=True) == 0
  assert layers.scan_unroll(-1, 8, train=False) == 1
  assert layers.scan_unroll(0, 8, train=False) == 0 and layers.scan_unroll(3, 8) == 3
  assert layers.scan_unroll(8, 8) == 0


def test_pgd_traced_num_steps_one_compilation():
  """num_steps as a traced scalar: the same results as static counts, from one compilation."""
  _, model, variables = attack_helpers.untrained("rsrnn")
  x = attack_helpers.images(1, 4)
  labels = jnp.arange(4) % attack_helpers.K
  logits_fn = model_logits_fn(model, variables, horizon="step", attack_step=2)
  kw = dict(eps=0.05, step_size=0.02, rng=jax.random.key(5))
  traced = jax.jit(lambda z, n: core.pgd(logits_fn, z, labels, num_steps=n, **kw))
  for n in (0, 1, 3):
    want = core.pgd(logits_fn, x, labels, num_steps=n, **kw)
    np.testing.assert_allclose(traced(x, jnp.int32(n)), want, atol=1e-6)
  assert traced._cache_size() == 1
  with pytest.raises(ValueError, match="static"):
    core.pgd(logits_fn, x, labels, num_steps=jnp.int32(2), unroll=True, **kw)
  with pytest.raises(ValueError, match="num_steps"):
    core.pgd(logits_fn, x, labels, num_steps=jnp.float32(2), **kw)
