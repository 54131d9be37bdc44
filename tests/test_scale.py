"""Precision and memory options: bfloat16 compute, rematerialised glimpse steps, the persistent compile cache."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from configs import imagenet
from rsrnn_jax import data, run
from rsrnn_jax.train import state as train_state
from rsrnn_jax.evaluation import clean
from rsrnn_jax.train import step as train_step
from tests.helpers import tiny_config


def _config(tiny_data, **overrides):
  c = tiny_config(**overrides)
  c.data.source_dir, c.data.data_dir = tiny_data["source_dir"], tiny_data["data_dir"]
  return c


def _fixed_batch(c, n=16):
  return {k: jnp.asarray(v) for k, v in next(data.train_batches(c.data, global_batch_size=n, seed=0)).items()}


def _dtypes(tree):
  return {str(x.dtype) for x in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)}


def test_bfloat16_model_trains_with_float32_params_and_optimizer_state(tiny_data):
  c = _config(tiny_data, **{"model.dtype": "bfloat16", "train.learning_rate": 2e-2, "train.warmup_steps": 0,
                            "train.num_train_steps": 1000})
  model, info = train_state.model_from_config(c)
  state = train_state.init_state(model, c, info.image_shape, jax.random.key(0))
  batch = _fixed_batch(c)
  # The convolutions really run in bfloat16.
  jaxpr = str(jax.make_jaxpr(lambda v, x: model.apply(v, x, num_steps=2, train=False))(
      train_state.variables_of(state), batch["image"]))
  assert "conv_general_dilated" in jaxpr and "bf16" in jaxpr
  step = jax.jit(lambda s, b, r: train_step.train_step(s, b, r, config=c))
  losses = []
  for _ in range(30):
    state, m = step(state, batch, jax.random.key(0))
    losses.append(float(m["ce"]))
    assert m["loss"].dtype == jnp.float32
  assert np.isfinite(losses).all() and losses[-1] < 0.8 * losses[0], losses
  assert _dtypes(state.params) == {"float32"} and _dtypes(state.opt_state) == {"float32"}


def test_gpu_config_computes_in_bfloat16_and_caches_compilations():
  c = imagenet.get_config()
  assert c.model.dtype == "bfloat16" and c.compilation_cache_dir


def test_remat_gives_the_same_outputs_and_gradients(tiny_data):
  c = _config(tiny_data)  # GroupNorm inside the scanned step
  batch = _fixed_batch(c, 8)
  results = []
  for remat in (False, True):
    c.model.remat = remat
    model, info = train_state.model_from_config(c)
    params = train_state.init_state(model, c, info.image_shape, jax.random.key(0)).params

    def loss(p, model=model):
      out = model.apply({"params": p}, batch["image"], num_steps=3, train=True,
                        rngs={"fixation": jax.random.key(3)})
      ce = optax.softmax_cross_entropy_with_integer_labels(out["logits"], batch["label"][None]).mean()
      return ce + jnp.mean(out["log_probs"]), out

    (value, out), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    results.append((value, out, grads))
  (v0, o0, g0), (v1, o1, g1) = results
  assert jax.tree_util.tree_structure(g0) == jax.tree_util.tree_structure(g1)  # same parameter tree
  np.testing.assert_allclose(v0, v1, rtol=1e-6)
  np.testing.assert_array_equal(o0["fixations"], o1["fixations"])
  for key in ("logits", "log_probs"):
    np.testing.assert_allclose(o0[key], o1[key], rtol=1e-5, atol=1e-6)
  for a, b in zip(jax.tree_util.tree_leaves(g0), jax.tree_util.tree_leaves(g1)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_compilation_cache_dir_is_applied_before_compiling(tmp_path, monkeypatch):
  before = jax.config.jax_compilation_cache_dir
  c = tiny_config(**{"compilation_cache_dir": str(tmp_path / "cache"), "train.num_train_steps": 1})
  seen = {}
  monkeypatch.setattr(clean, "train_and_evaluate",
                      lambda config, workdir, stop_at=None: seen.setdefault("dir", jax.config.jax_compilation_cache_dir))
  try:
    run.main(c, str(tmp_path / "work"), "train")
    assert seen["dir"] == str(tmp_path / "cache")
    jax.jit(lambda x: jnp.sin(x) * 41.0 + 17.0).lower(jnp.ones(7)).compile()  # a new program: written to it
    assert os.listdir(tmp_path / "cache")
  finally:
    run.configure_compilation_cache(tiny_config(**{"compilation_cache_dir": before}))
  assert jax.config.jax_compilation_cache_dir == before


def test_the_persistent_compilation_cache_is_on_by_default(monkeypatch):
  from configs import demo
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  assert demo.get_config().compilation_cache_dir == "~/.cache/rsrnn_jax/jax_cache"
  assert imagenet.get_config().compilation_cache_dir == "~/.cache/rsrnn_jax/jax_cache"
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/elsewhere")  # the user's JAX setting wins
  assert demo.get_config().compilation_cache_dir == "/elsewhere"
