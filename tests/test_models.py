"""Model structure: shapes, per-step outputs, rolled vs unrolled scan, forced fixations, dorsal stream."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsrnn_jax import dorsal, samplers
from rsrnn_jax.models import build_model
from tests.helpers import tiny_config

B, S = 4, 32


def _model(cfg):
  return build_model(cfg.model, num_classes=10, mean=cfg.data.mean, std=cfg.data.std)


def _images(seed=0):
  return jax.random.uniform(jax.random.key(seed), (B, S, S, 1))


@functools.lru_cache(maxsize=None)
def _init(model_name="rsrnn", norm="group", core="conv_gru"):
  cfg = tiny_config(model_name, **{"model.norm": norm, "model.core": core})
  model = _model(cfg)
  variables = model.init({"params": jax.random.key(0), "fixation": jax.random.key(1)}, _images(),
                         num_steps=2, train=False)
  return cfg, model, variables


@pytest.mark.parametrize("norm,core", [("group", "conv_gru"), ("batch", "conv_gru"), ("none", "gru")])
def test_rsrnn_output_shapes_every_step(norm, core):
  cfg, model, variables = _init("rsrnn", norm, core)
  out = model.apply(variables, _images(), num_steps=5, train=False)  # T at apply may differ from init
  s, g = cfg.model.dorsal.saliency_size, cfg.model.ior_size
  assert out["logits"].shape == (5, B, 10)
  assert out["fixations"].shape == (5, B, 2)
  assert out["log_probs"].shape == out["baselines"].shape == out["sigma"].shape == (5, B)
  assert out["saliency"].shape == out["probs"].shape == (5, B, s, s)
  assert out["ior"].shape == (5, B, g, g)
  np.testing.assert_allclose(out["probs"].sum(axis=(-1, -2)), 1.0, rtol=1e-5)
  assert np.all(np.isfinite(out["logits"]))
  # Logits differ between steps: each glimpse adds information.
  assert not np.allclose(out["logits"][0], out["logits"][-1])


def test_train_mode_batchnorm_updates_stats_inside_scan():
  cfg, model, variables = _init("rsrnn", "batch")
  out, new_vars = model.apply(variables, _images(), num_steps=3, train=True, mutable=["batch_stats"],
                              rngs={"fixation": jax.random.key(3)})
  before = jax.tree_util.tree_leaves(variables["batch_stats"])
  after = jax.tree_util.tree_leaves(new_vars["batch_stats"])
  assert any(not np.allclose(a, b) for a, b in zip(before, after))


def test_ff_cnn_repeats_logits_over_steps():
  cfg, model, variables = _init("ff_cnn", "batch")
  out = model.apply(variables, _images(), num_steps=3, train=False)
  assert set(out) == {"logits"} and out["logits"].shape == (3, B, 10)
  np.testing.assert_array_equal(out["logits"][0], out["logits"][2])


def test_rolled_and_unrolled_scan_agree():
  cfg, model, variables = _init()
  outs = []
  for unroll in (1, 2, -1):
    cfg.model.unroll = unroll
    m = _model(cfg)
    outs.append(m.apply(variables, _images(), num_steps=4, train=True, rngs={"fixation": jax.random.key(7)}))
  for other in outs[1:]:
    for k in ("logits", "fixations", "log_probs", "ior"):
      np.testing.assert_allclose(outs[0][k], other[k], rtol=1e-5, atol=1e-5)
  # Gradients agree too (the slow rolled path on CPU is only a speed issue).
  def loss(params, unroll):
    cfg.model.unroll = unroll
    return _model(cfg).apply({"params": params}, _images(), num_steps=3, train=False)["logits"].sum()
  g1 = jax.grad(loss)(variables["params"], 1)
  g2 = jax.grad(loss)(variables["params"], -1)
  for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_eval_is_deterministic_and_starts_at_centre():
  _, model, variables = _init()
  a = model.apply(variables, _images(), num_steps=3, train=False)
  b = model.apply(variables, _images(), num_steps=3, train=False)
  np.testing.assert_array_equal(a["fixations"], b["fixations"])
  np.testing.assert_array_equal(a["fixations"][0], 0.0)


def test_train_mode_samples_random_start_in_range():
  _, model, variables = _init()
  out = model.apply(variables, _images(), num_steps=3, train=True, rngs={"fixation": jax.random.key(5)})
  f0 = np.asarray(out["fixations"][0])
  assert np.all(np.abs(f0) <= 0.9) and not np.allclose(f0, 0.0)
  other = model.apply(variables, _images(), num_steps=3, train=True, rngs={"fixation": jax.random.key(6)})
  assert not np.allclose(out["fixations"], other["fixations"])


def test_forced_fixations_replace_the_policy_only_where_masked():
  _, model, variables = _init()
  forced = jnp.broadcast_to(jnp.array([0.5, -0.25]), (4, B, 2))
  mask = jnp.array([False, True, False, False])
  free = model.apply(variables, _images(), num_steps=4, train=False)
  out = model.apply(variables, _images(), num_steps=4, train=False, fixations=forced, fixation_mask=mask)
  np.testing.assert_allclose(out["fixations"][1], forced[1])
  np.testing.assert_allclose(out["fixations"][0], free["fixations"][0])  # centre start kept
  init = model.apply(variables, _images(), num_steps=2, train=False, init_fixations=forced[0])
  np.testing.assert_allclose(init["fixations"][0], forced[0])


def test_fixations_move_and_ior_accumulates():
  _, model, variables = _init()
  out = model.apply(variables, _images(), num_steps=6, train=False)
  fix = np.asarray(out["fixations"])
  moves = np.linalg.norm(np.diff(fix, axis=0), axis=-1)  # [T-1,B]
  assert np.mean(moves > 1e-3) > 0.8  # inhibition of return keeps the argmax policy moving
  ior = np.asarray(out["ior"]).sum(axis=(-1, -2))
  assert np.all(np.diff(ior, axis=0) <= 1e-4)  # the inhibited area only grows
  assert np.all(np.abs(fix) <= 1.0)


def test_no_gradient_through_fixation_choice_but_image_gradient_exists():
  _, model, variables = _init()
  def f(x):
    return model.apply(variables, x, num_steps=3, train=False)["logits"][-1].sum()
  g = jax.grad(f)(_images())
  assert np.all(np.isfinite(g)) and np.abs(g).sum() > 0
  def fixation_sum(x):
    return model.apply(variables, x, num_steps=3, train=False)["fixations"].sum()
  np.testing.assert_array_equal(jax.grad(fixation_sum)(_images()), 0.0)


# ----------------------------------------------------------------------------------------------- dorsal parts

def test_inhibition_of_return_update():
  m = jnp.ones((2, 9, 9))
  fix = jnp.array([[0.0, 0.0], [1.0, -1.0]])
  out = dorsal.inhibit(m, fix, jnp.array([0.2, 0.2]))
  assert out[0, 4, 4] == 0.0 and out[1, 0, 8] == 0.0  # the fixated cell is fully inhibited
  assert float(out[0, 0, 0]) > 0.99                      # far cells untouched
  again = dorsal.inhibit(out, fix, jnp.array([0.2, 0.2]))
  assert np.all(np.asarray(again) <= np.asarray(out)) and np.all(np.asarray(again) >= 0)


def test_tiny_sigma_gives_no_nan():
  m = jnp.ones((1, 8, 8))
  for sigma in (1e-6, 0.0):
    out = dorsal.inhibit(m, jnp.array([[0.1, 0.3]]), jnp.array([sigma]))
    assert np.all(np.isfinite(out))
  # The σ network's floor keeps σ ≥ sigma_min whatever its input.
  d = dorsal.Dorsal(saliency_size=4, hidden=4, sigma_init=0.2, sigma_min=0.05)
  feats = jnp.ones((2, 4, 4, 3))
  sampler = samplers.RetinaSampler(out_size=8, density_ratio=4.0)
  v = d.init({"params": jax.random.key(0)}, feats, jnp.ones((2, 5)), jnp.zeros((2, 2)), m.repeat(2, 0), sampler,
             sample=False)
  v = jax.tree_util.tree_map(lambda x: x * 0 - 1e4, v)  # push the σ pre-activation to −∞
  _, _, ior, maps = d.apply(v, feats, jnp.ones((2, 5)), jnp.zeros((2, 2)), m.repeat(2, 0), sampler, sample=False)
  assert np.all(np.asarray(maps["sigma"]) >= 0.05 - 1e-7) and np.all(np.isfinite(ior))


def test_cell_to_view_corners_and_centre():
  u = dorsal.cell_to_view(jnp.array([0, 3, 12, 15, 5]), 4)
  np.testing.assert_allclose(u[:4], [[-1, -1], [1, -1], [-1, 1], [1, 1]], atol=1e-6)
  np.testing.assert_allclose(u[4], [-1 / 3, -1 / 3], atol=1e-6)


def test_argmax_policy_picks_most_salient_uninhibited_cell():
  """With the retina centred, the chosen cell maps back to the image point the view cell shows."""
  sampler = samplers.RetinaSampler(out_size=8, density_ratio=4.0)
  u = dorsal.cell_to_view(jnp.array([5]), 4)
  p = sampler.view_to_image(u[:, None], jnp.zeros((1, 2)))[:, 0]
  grid = sampler.view_grid(jnp.zeros((1, 2)), 4)
  np.testing.assert_allclose(p[0], grid[0, 1, 1], atol=1e-6)
