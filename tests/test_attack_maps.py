"""Adversarial probability maps (rsrnn_jax/robustness/probmaps.py) and input-gradient norms per step
(rsrnn_jax/robustness/gradients.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsrnn_jax import attacks as A
from rsrnn_jax.robustness import gradients, probmaps
from tests.attack_helpers import B, K, images, untrained


def test_probability_maps_shape_range_and_cell_dependence():
  _, model, v = untrained()
  g, n = 4, 2
  x = images(3, n)
  cls = jnp.array([1, 7])
  maps = jax.device_get(probmaps.probability_maps(model, v, x, cls, grid=g, chunk=6))  # chunk ∤ n·G²: padded
  for key in ("1", "1&2"):
    assert maps[key].shape == (n, g, g)
    assert np.all(maps[key] >= 0) and np.all(maps[key] <= 1)
    assert np.all(maps[key].reshape(n, -1).std(-1) > 0)  # forced fixations change the answer
  # Cell (i, j) is the fixation (x_j, y_i); compare one cell with a direct forced forward pass.
  c = np.linspace(-1, 1, g)
  i, j = 1, 3
  fix = jnp.broadcast_to(jnp.array([c[j], c[i]]), (1, n, 2))

  @jax.jit
  def direct(x):
    one = model.apply(v, x, num_steps=1, train=False, fixations=fix, fixation_mask=jnp.array([True]))
    two = model.apply(v, x, num_steps=2, train=False, fixations=jnp.concatenate([jnp.zeros_like(fix), fix]),
                      fixation_mask=jnp.array([False, True]))
    return (jax.nn.softmax(one["logits"][0], -1)[jnp.arange(n), cls],
            jax.nn.softmax(two["logits"][1], -1)[jnp.arange(n), cls])

  p, p2 = direct(x)
  np.testing.assert_allclose(maps["1"][:, i, j], p, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(maps["1&2"][:, i, j], p2, rtol=1e-4, atol=1e-6)


def test_input_gradient_norms_per_step():
  _, model, v = untrained()
  x, y = images(4), jnp.arange(B) % K
  t = 2
  loss_t = lambda xx: jnp.sum(A.attack_loss(model.apply(v, xx, num_steps=3, train=False)["logits"][t], y))
  norms, want = jax.jit(lambda xx: (gradients.input_gradient_norms(model, v, xx, y, num_steps=3), jax.grad(loss_t)(xx)))(x)
  assert norms["ce"].shape == norms["margin"].shape == (3, B)
  np.testing.assert_allclose(norms["ce"][t], np.sqrt((np.asarray(want) ** 2).sum((1, 2, 3))), rtol=1e-4)
  s = gradients.gradient_summary({"ce": np.array([[1., 0., np.nan], [2., 2., 2.]])})["ce"]
  assert s["num_nonfinite"] == [1, 0] and s["zero_frac"][0] == pytest.approx(1 / 3) and s["median_norm"][1] == 2
