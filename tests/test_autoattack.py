"""attacks.autoattack (issue 25): AutoAttack's versions on any logits_fn, robust flags (each attack only on what the
earlier ones left), which attack broke each example, and one-line ValueErrors for bad input. Tiny linear models:
an example whose closed-form distance to the decision boundary exceeds ε is provably robust."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsrnn_jax import attacks

FAST = dict(iterations=8, queries=30, batch_size=8)


def _linear(seed=0, n=12, k=4):
  r = np.random.RandomState(seed)
  w, b = r.randn(16, k).astype(np.float32), r.randn(k).astype(np.float32)
  x = r.uniform(0.3, 0.7, (n, 4, 4, 1)).astype(np.float32)
  f = lambda u: u.reshape(u.shape[0], -1) @ jnp.asarray(w) + jnp.asarray(b)
  z = np.asarray(f(x))
  y = np.argmax(z, -1)
  y[0] = (y[0] + 1) % k  # one example misclassified clean
  v = w[None] - w[:, y].T[:, :, None]  # [n, d, k]: w_c − w_y
  dual = np.abs(v).sum(1)  # L∞ distance to the boundary of class c: (z_y − z_c) / ‖w_c − w_y‖₁
  gap = z[np.arange(n), y][:, None] - z
  dist = np.where(np.arange(k)[None] == y[:, None], np.inf, gap / np.maximum(dual, 1e-12)).min(1)
  return f, x, y, dist


def test_standard_version_flags_and_provably_robust_examples():
  f, x, y, dist = _linear()
  eps = float(np.median(dist[1:]))
  res = attacks.autoattack(f, x, y, eps=eps, rng=jax.random.key(0), **FAST)
  assert list(res.accuracy) == ["clean", "apgd-ce", "apgd-t", "fab-t", "square"]
  accs = list(res.accuracy.values())
  assert accs == sorted(accs, reverse=True) and res.notes == ()
  # the linear model: exactly the examples nearer the boundary than ε are broken, by the first attack (APGD-CE);
  # the others are provably robust and no attack "breaks" them
  np.testing.assert_array_equal(res.robust, dist > eps)
  assert res.broken_by[0] == "clean" and set(res.broken_by[1:][dist[1:] < eps]) == {"apgd-ce"}
  assert set(res.broken_by[res.robust]) == {""}
  pred = np.argmax(np.asarray(f(res.images)), -1)
  np.testing.assert_array_equal(pred == y, res.robust)
  assert np.abs(res.images - x).max() <= eps + 1e-6 and res.images.min() >= 0 and res.images.max() <= 1
  np.testing.assert_array_equal(res.images[res.robust], x[res.robust])
  assert res.robust_accuracy == res.accuracy["square"]


def test_each_attack_runs_on_what_the_earlier_ones_left():
  f, x, y, dist = _linear(seed=1)
  eps = float(np.max(dist[1:])) * 1.5  # every example breakable
  alone = attacks.autoattack(f, x, y, eps=eps, rng=jax.random.key(1), attacks=("fab-t",), **FAST)
  assert list(alone.accuracy) == ["clean", "fab-t"] and set(alone.broken_by[1:]) == {"fab-t"}
  both = attacks.autoattack(f, x, y, eps=eps, rng=jax.random.key(1), attacks=("apgd-ce", "fab-t"), **FAST)
  assert set(both.broken_by[1:]) == {"apgd-ce"} and both.accuracy["fab-t"] == both.accuracy["apgd-ce"] == 0.0


def test_plus_rand_and_l2_versions():
  f, x, y, dist = _linear(seed=2, n=6)
  plus = attacks.autoattack(f, x, y, eps=0.05, rng=jax.random.key(0), version="plus", **FAST)
  assert list(plus.accuracy) == ["clean", "apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"]
  noisy = lambda u, key: f(u) + 0.01 * jax.random.normal(key, (u.shape[0], 4))  # a randomised model
  rand = attacks.autoattack(noisy, x, y, eps=0.05, rng=jax.random.key(0), version="rand", **FAST)
  assert list(rand.accuracy) == ["clean", "apgd-ce", "apgd-dlr"]
  l2 = attacks.autoattack(f, x, y, eps=0.3, norm="l2", rng=jax.random.key(0), **FAST)
  assert "square" not in l2.accuracy and l2.notes[0].startswith("square: skipped")
  d = (l2.images - x).reshape(len(x), -1)
  assert np.sqrt((d ** 2).sum(1)).max() <= 0.3 + 1e-5


@pytest.mark.parametrize("change, match", [
    (dict(eps=-1.0), "eps must be a positive number"), (dict(eps="0.1"), "eps must be a positive number"),
    (dict(norm="l1"), "norm must be one of"), (dict(version="fast"), "version must be one of"),
    (dict(rng=None), "rng must be a JAX PRNG key"), (dict(batch_size=0), "batch_size must be an int >= 1"),
    (dict(images="x"), "images must be a non-empty float array"), (dict(images=2.0), "images must be finite"),
    (dict(labels=np.zeros(3, int)), "labels must be integer classes of shape"),
    (dict(labels=np.full(6, 9)), "labels must be classes in \\[0, 4\\)"),
    (dict(attacks=("pgd",)), "attacks must be distinct names"), (dict(logits_fn=3), "logits_fn must be a function"),
    (dict(logits_fn=lambda u: u.reshape(-1)), "logits_fn must return logits \\[B, K\\]")])
def test_bad_input_is_a_value_error_naming_the_argument(change, match):
  f, x, y, _ = _linear(n=6)
  kwargs = dict(logits_fn=f, images=x, labels=y, eps=0.1, rng=jax.random.key(0)) | change
  if isinstance(kwargs["images"], (str, float)):
    kwargs["images"] = np.full_like(x, 2.0) if kwargs["images"] == 2.0 else np.array(["x"] * 6)
  logits_fn, images, labels = kwargs.pop("logits_fn"), kwargs.pop("images"), kwargs.pop("labels")
  with pytest.raises(ValueError, match=match):
    attacks.autoattack(logits_fn, images, labels, **kwargs)


def test_repeated_calls_reuse_the_compiled_attacks():
  f, x, y, dist = _linear(n=8)
  traces = []

  def counted(u):  # the Python body runs once per trace
    traces.append(u.shape)
    return f(u)

  run = lambda eps, iterations=2: attacks.autoattack(counted, x, y, eps=eps, rng=jax.random.key(0),
                                                     attacks=("apgd-ce",), iterations=iterations, batch_size=8)
  first = run(0.05)
  n = len(traces)
  assert n > 0
  second = run(0.05)
  assert len(traces) == n  # same function, ε, budget and shapes: nothing traced again
  np.testing.assert_array_equal(first.images, second.images)
  run(0.06)
  assert len(traces) > n  # another ε is another program
  m = len(traces)
  run(0.05, iterations=3)
  assert len(traces) > m
