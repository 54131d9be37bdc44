"""Model structure: shapes, per-step outputs, rolled vs unrolled scan, forced fixations, dorsal stream, the zoo
(presets, S3TA, Crop-D)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import common
from rsrnn_jax.models import dorsal
from rsrnn_jax.models import samplers
from rsrnn_jax.models import MODELS, build_model, has_fixations, is_recurrent, s3ta
from tests.helpers import tiny_config

B, S = 4, 32


def _model(cfg):
  return build_model(cfg.model, num_classes=10, mean=cfg.data.mean, std=cfg.data.std)


def _images(seed=0):
  return jax.random.uniform(jax.random.key(seed), (B, S, S, 1))


@functools.lru_cache(maxsize=None)
def _init(model_name="rsrnn", norm=None, core=None):
  """Tiny model ``model_name`` (its preset's norm and core unless given) and its variables."""
  overrides = {"model.norm": norm, "model.core": core}
  cfg = tiny_config(model_name, **{k: v for k, v in overrides.items() if v is not None})
  model = _model(cfg)
  variables = model.init({"params": jax.random.key(0), "fixation": jax.random.key(1)}, _images(),
                         num_steps=2, train=False)
  return cfg, model, variables


@pytest.mark.parametrize("name,norm,core", [("rsrnn", "group", "conv_gru"), ("rsrnn", "batch", "conv_gru"),
                                            ("rsrnn", "none", "gru"), ("base_retina", None, None),
                                            ("dram", None, None), ("gfnet_m", None, None)])
def test_glimpse_model_output_shapes_every_step(name, norm, core):
  cfg, model, variables = _init(name, norm, core)
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


def test_s3ta_attends_softly_with_maps_that_change_over_steps():
  cfg, model, variables = _init("s3ta")
  out = model.apply(variables, _images(), num_steps=4, train=False)
  heads = cfg.model.attention.heads
  assert set(out) == {"logits", "attention"} and out["logits"].shape == (4, B, 10)
  assert out["attention"].shape == (4, B, heads, 4, 4)  # 32×32 image, two pools → 8×8; three → 4×4
  np.testing.assert_allclose(out["attention"].sum(axis=(-1, -2)), 1.0, rtol=1e-5)
  assert not np.allclose(out["attention"][0], out["attention"][1])  # the LSTM state moves the queries
  assert not np.allclose(out["logits"][0], out["logits"][-1])
  # Attention is differentiable: the loss reaches the image through it and through the backbone.
  g = jax.grad(lambda x: model.apply(variables, x, num_steps=2, train=False)["logits"][-1].sum())(_images())
  assert np.all(np.isfinite(g)) and np.abs(g).sum() > 0
  # Fixation arguments (shared signature with the glimpse models) are accepted and ignored.
  forced = model.apply(variables, _images(), num_steps=4, train=False, init_fixations=jnp.ones((B, 2)))
  np.testing.assert_array_equal(forced["logits"], out["logits"])


def test_spatial_basis_is_the_cosine_basis():
  basis = np.asarray(s3ta.spatial_basis(4, 6, 3))
  assert basis.shape == (4, 6, 9)
  np.testing.assert_allclose(basis[..., 0], 1.0)  # u = v = 0: constant
  y, x = 2, 5
  np.testing.assert_allclose(basis[y, x, 1 * 3 + 2], np.cos(np.pi * (y + 0.5) / 4) * np.cos(2 * np.pi * (x + 0.5) / 6),
                             rtol=1e-6)


def test_crop_d_has_one_encoder_per_scale():
  cfg, model, variables = _init("dram")
  assert cfg.model.sampler.scales == (0.25, 0.5) and model.sampler.view_index == 1
  step = variables["params"]["step"]
  assert {"encoder1_0", "encoder1_1"} <= set(step) and "encoder1_2" not in step
  assert samplers.CropSampler(out_size=8, scales=(0.5, 0.25)).view_index == 0


def _outside_the_large_crop(x):
  """``x`` with every pixel outside the centre's 0.5 crop (DRAM's large crop at the first fixation, and the 2 px
  its bilinear samples reach beyond it) replaced."""
  lo, hi = S // 4 - 2, 3 * S // 4 + 2
  inside = jnp.zeros((S, S, 1)).at[lo:hi, lo:hi].set(1.0)
  return x * inside + 0.5 * (1 - inside)


@pytest.mark.parametrize("name", ["base_retina", "dram", "gfnet_m"])
def test_one_d_models_glance_at_the_whole_image_once(name):
  """The 1-D models' dorsal stream reads a glance (the whole image at the glimpse side, its own CNN, once):
  pixels outside every crop change the saliency, and the next fixation can be anywhere on the image. Without
  the glance a crop model's saliency sees only its largest crop."""
  cfg, model, variables = _init(name)
  assert cfg.model.glance and "glance" in variables["params"] and "glance" not in variables["params"]["step"]
  assert isinstance(model.dorsal_view, samplers.ImageView)
  x = _images()
  a = model.apply(variables, x, num_steps=1, train=False)
  b = model.apply(variables, _outside_the_large_crop(x), num_steps=1, train=False)
  assert not np.allclose(a["saliency"][0], b["saliency"][0])
  locs = dorsal.cell_locations(model.dorsal_view, jnp.zeros((1, 2)), 4)
  np.testing.assert_allclose([locs.min(), locs.max()], [-1.0, 1.0])  # the whole image, wherever the fixation
  if name == "dram":  # the same model without the glance: its saliency is blind outside the large crop
    blind = model.clone(glance=False)
    v = blind.init({"params": jax.random.key(0), "fixation": jax.random.key(1)}, x, num_steps=1, train=False)
    a = blind.apply(v, x, num_steps=1, train=False)
    b = blind.apply(v, _outside_the_large_crop(x), num_steps=1, train=False)
    np.testing.assert_allclose(a["saliency"][0], b["saliency"][0], atol=1e-6)
    assert blind.dorsal_view is blind.sampler


def test_the_glance_is_trained_by_the_policy_loss_only():
  """The glance CNN changes where the model looks, never what it answers at a given fixation: the classification
  loss has no gradient into it, the REINFORCE log-probabilities have."""
  _, model, variables = _init("gfnet_m")
  x = _images()

  def grads(f):
    return jax.grad(lambda p: f(model.apply({**variables, "params": p}, x, num_steps=2, train=False)))(
        variables["params"])["glance"]

  norm = lambda g: sum(float(jnp.abs(v).sum()) for v in jax.tree_util.tree_leaves(g))  # noqa: E731
  assert norm(grads(lambda o: o["logits"].sum())) == 0.0
  assert norm(grads(lambda o: o["log_probs"].sum())) > 0.0


def test_the_glance_features_are_scale_free():
  """``glance_norm`` (the 1-D presets): scaling the glance CNN's last conv leaves the saliency unchanged, so
  the policy loss cannot inflate the saliency through the glance's weights (the paper-geometry GF-Net-m's
  collapse onto one corner, docs/zoo.md). Without it the saliency changes with that scale."""
  cfg, model, variables = _init("gfnet_m", "none")  # unnormalised stages, as in the demo settings
  assert cfg.model.glance_norm and model.glance_norm
  x = _images()

  def saliency(m, v, scale):
    glance = dict(v["params"]["glance"])
    last = sorted(k for k in glance if k.startswith("stage"))[-1]
    glance[last] = jax.tree_util.tree_map(lambda w: w * scale, glance[last])  # its conv's kernel and bias
    params = {**v["params"], "glance": glance}
    return np.asarray(m.apply({**v, "params": params}, x, num_steps=1, train=False)["saliency"][0])

  def change(m, v):  # the largest change of the saliency, relative to its largest value
    a, b = saliency(m, v, 1.0), saliency(m, v, 10.0)
    return np.abs(a - b).max() / np.abs(a).max()

  assert change(model, variables) < 0.01  # GroupNorm's ε only
  plain = model.clone(glance_norm=False)
  v = plain.init({"params": jax.random.key(0), "fixation": jax.random.key(1)}, x, num_steps=1, train=False)
  assert change(plain, v) > 0.5


def test_whole_image_models_can_resize_their_input():
  """``input_size``: the whole-image models see the image resized first (the paper-geometry setting's 2/3),
  differentiably, so attacks on the full image see through the resize."""
  for name in ("ff_cnn", "s3ta"):
    cfg, model, variables = _init(name, "batch")
    small = model.clone(input_size=S // 2)
    v = small.init(jax.random.key(0), _images(), num_steps=2, train=False)
    x = _images(1)
    resized = jax.image.resize(x, (B, S // 2, S // 2, 1), "linear", antialias=True)
    np.testing.assert_allclose(small.apply(v, x, num_steps=2, train=False)["logits"],
                               model.clone().apply(v, resized, num_steps=2, train=False)["logits"], atol=1e-5)
    g = jax.grad(lambda im: small.apply(v, im, num_steps=2, train=False)["logits"].sum())(x)
    assert g.shape == x.shape and float(jnp.abs(g).sum()) > 0


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


@pytest.mark.parametrize("name", ["rsrnn", "dram"])
def test_training_skips_the_last_steps_dorsal_without_changing_what_is_used(name):
  """Training runs the last step without the dorsal stream (its action is never used): every output the losses
  read is the same as with the dorsal at every step (bpda_tau keeps the one-scan path and its forward values),
  fixation RNG included; the last step's dorsal outputs are zeros."""
  _, model, variables = _init(name)
  rngs = {"fixation": jax.random.key(5)}
  split = model.apply(variables, _images(3), num_steps=4, train=True, rngs=rngs)
  whole = model.apply(variables, _images(3), num_steps=4, train=True, rngs=rngs, bpda_tau=1.0)
  assert set(split) == set(whole)
  np.testing.assert_array_equal(split["fixations"], whole["fixations"])  # the same sampled scanpaths
  for k in ("logits", "baselines"):  # the last step runs in a program of its own: float rounding may differ
    np.testing.assert_allclose(split[k], whole[k], rtol=1e-5, atol=1e-6)
  for k in set(whole) - {"logits", "fixations", "baselines"}:
    np.testing.assert_allclose(split[k][:-1], whole[k][:-1], rtol=1e-5, atol=1e-6)
    assert not np.any(split[k][-1]) and np.any(whole[k][-1]), k


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


def _bump_dorsal(ior_floor, combine="product", out_bias=0.0, height=10.0):
  """A Dorsal whose saliency is feature + out_bias (softplus of it for the product): one salient spot of the
  given height at view cell (row 2, col 1) = flat index 9."""
  d = dorsal.Dorsal(saliency_size=4, hidden=1, sigma_init=0.05, sigma_min=0.01, learn_sigma=False,
                    ior_floor=ior_floor, combine=combine)
  feats = jnp.zeros((1, 4, 4, 1)).at[0, 2, 1, 0].set(height)
  sampler = samplers.RetinaSampler(out_size=8, density_ratio=4.0)
  ior = jnp.ones((1, 9, 9))
  v = d.init({"params": jax.random.key(0)}, feats, jnp.ones((1, 2)), jnp.zeros((1, 2)), ior, sampler, sample=False)
  v = {"params": {"saliency_conv": {"kernel": jnp.zeros((3, 3, 1, 1)).at[1, 1].set(1.0), "bias": jnp.zeros(1)},
                  "saliency_out": {"kernel": jnp.ones((1, 1, 1, 1)), "bias": jnp.full((1,), out_bias)}}}
  def choose(ior_map):
    fix, _, _, maps = d.apply(v, feats, jnp.ones((1, 2)), jnp.zeros((1, 2)), ior_map, sampler, sample=False)
    return np.asarray(fix[0]), maps
  choose.dorsal, choose.variables, choose.inputs = d, v, (feats, jnp.ones((1, 2)), jnp.zeros((1, 2)), ior, sampler)
  cell = lambda i: np.asarray(sampler.view_to_image(dorsal.cell_to_view(jnp.array([i]), 4)[:, None],
                                                     jnp.zeros((1, 2)))[0, 0])
  return choose, cell


def _spot_inhibited(cell):
  """An IOR map that inhibits only the image point of view cell 9 (the salient spot)."""
  x, y = cell(9)
  g = np.linspace(-1, 1, 9)
  return jnp.asarray(((g[None, :] - x) ** 2 + (g[:, None] - y) ** 2 > 0.2)[None].astype(np.float32))


@pytest.mark.parametrize("combine", ["product", "log"])
def test_ior_floor_breaks_the_all_inhibited_tie_by_saliency_not_by_the_corner(combine):
  """The corner flaw: once the IOR map is 0 everywhere, S ⊙ M = 0 and argmax picks cell 0 (top-left corner).
  With the floor the policy goes back to the most salient point; an un-inhibited cell still beats it."""
  choose, cell = _bump_dorsal(ior_floor=0.01, combine=combine)
  np.testing.assert_allclose(choose(jnp.zeros((1, 9, 9)))[0], cell(9), atol=1e-5)
  paper, _ = _bump_dorsal(ior_floor=0.0)
  np.testing.assert_allclose(paper(jnp.zeros((1, 9, 9)))[0], [-1.0, -1.0], atol=1e-5)  # S ⊙ M: cell 0, the corner
  # Inhibit only a spot of height 4. Product: 0.01·softplus(4) = 0.04 < softplus(0) = 0.69 elsewhere.
  # Log: 4 + log(0.01) = −0.6 < 0 elsewhere.
  choose, cell = _bump_dorsal(ior_floor=0.01, combine=combine, height=4.0)
  fix, maps = choose(_spot_inhibited(cell))
  assert np.linalg.norm(fix - cell(9)) > 0.2
  expect = 4.0 if combine == "log" else np.log1p(np.exp(4.0))
  np.testing.assert_allclose(maps["saliency"][0, 2, 1], expect, rtol=1e-5)


def test_log_combine_has_no_absorbing_state_where_the_product_has_one():
  """Push the saliency's level down (output bias −30): the product's softplus(S) is ~0 on every cell, so the
  policy is uniform and its gradient vanishes (the dead-saliency failure of the demo runs). The log form's
  P ∝ exp(S)·Γ does not depend on the level: same policy, same gradient as at bias 0."""
  def policy_and_grad(combine, out_bias):
    choose, _ = _bump_dorsal(ior_floor=0.01, combine=combine, out_bias=out_bias)
    d, v, inputs = choose.dorsal, choose.variables, choose.inputs
    def logp(params):
      _, _, _, maps = d.apply({"params": params}, *inputs, sample=False)
      return jnp.log(maps["probs"][0, 0, 0])  # log-probability of a cell away from the spot
    g = jax.grad(logp)(v["params"])
    return float(jnp.exp(logp(v["params"]))), float(optax.global_norm(g))
  p_log0, g_log0 = policy_and_grad("log", 0.0)
  p_log, g_log = policy_and_grad("log", -30.0)
  p_prod0, g_prod0 = policy_and_grad("product", 0.0)
  p_prod, g_prod = policy_and_grad("product", -30.0)
  assert p_prod0 < 1e-3 and g_prod0 > 0.1                      # alive at bias 0: the spot takes the mass
  np.testing.assert_allclose(p_prod, 1 / 16, rtol=1e-3)        # dead: uniform over the 16 cells ...
  assert g_prod < 1e-6                                         # ... and no gradient to leave it
  np.testing.assert_allclose([p_log, g_log], [p_log0, g_log0], rtol=1e-4)
  assert p_log < 1e-3 and g_log > 0.1


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


# ---------------------------------------------------------------------------------------------------- presets

def test_presets_compose_the_shared_parts():
  vgg = common.vgg8(64)
  p = {name: common.model_preset(name) for name in MODELS}
  assert p["rsrnn"].encoder1 + p["rsrnn"].encoder2 == vgg and p["rsrnn"].core == "conv_gru"
  for name in ("base_retina", "dram", "gfnet_m"):
    assert p[name].encoder1 == vgg and p[name].encoder2 == () and p[name].core == "gru"
    assert p[name].core_features == 512 and p[name].glance  # the dorsal stream's glance (paper.md §3, v1)
  assert "glance" not in p["rsrnn"]  # RS-RNN's dorsal stream reads its own retinal maps (AAAI draft)
  assert p["base_retina"].sampler.kind == "retina"
  assert (p["dram"].sampler.kind, p["gfnet_m"].sampler.kind) == ("crop", "crop")
  assert p["s3ta"].stages == p["ff_cnn"].stages == vgg
  # Which code paths apply: fixations (REINFORCE, fixation figure, probability maps) and per-step horizons.
  assert [name for name in MODELS if has_fixations(p[name])] == ["rsrnn", "base_retina", "dram", "gfnet_m"]
  assert [name for name in MODELS if not is_recurrent(p[name])] == ["ff_cnn"]
  with pytest.raises(ValueError, match="unknown model"):
    common.model_preset("resnet")


def test_set_model_sets_the_models_training_fields():
  c = common.get_base_config()
  assert c.train.loss_steps == "all"
  common.set_model(c, "s3ta")
  assert c.model.name == "s3ta" and c.train.loss_steps == "last"  # S3TA: loss on the last step
  common.set_model(c, "dram")
  assert c.train.loss_steps == "all"  # switching back does not keep S3TA's value

