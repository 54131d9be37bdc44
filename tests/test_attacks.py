"""Tests for rsrnn_jax.attacks: ball/box invariants, closed-form optima, strength on a tiny trained model,
compile-once, data parallelism, restarts, Square Attack, targets and ASR bookkeeping."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st
from jax.sharding import NamedSharding, PartitionSpec as P

from rsrnn_jax import attacks as A
from rsrnn_jax.attacks import square as attack_square

TOL = 1e-6


# ------------------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------------------

def _dist(adv, x, norm):
  d = (np.asarray(adv, np.float64) - np.asarray(x, np.float64)).reshape(len(x), -1)
  return np.abs(d).max(1) if norm == "linf" else np.sqrt((d ** 2).sum(1))


def _assert_valid(adv, x, eps, norm):
  assert adv.shape == x.shape and adv.dtype == x.dtype
  a = np.asarray(adv)
  assert np.all(np.isfinite(a))
  assert a.min() >= 0.0 and a.max() <= 1.0
  assert np.all(_dist(adv, x, norm) <= np.asarray(eps) + TOL), (_dist(adv, x, norm).max(), eps)


def _linear_logits(w, b):
  return lambda x: x.reshape(x.shape[0], -1) @ w + b


def _mlp_logits(params):
  def f(x):
    h = jnp.tanh(x.reshape(x.shape[0], -1) @ params["w1"] + params["b1"])
    return h @ params["w2"] + params["b2"]
  return f


def _random_mlp(key, d, k, hidden=16, scale=3.0):
  k1, k2, k3 = jax.random.split(key, 3)
  return {"w1": scale * jax.random.normal(k1, (d, hidden)) / np.sqrt(d),
          "b1": 0.5 * jax.random.normal(k3, (hidden,)),
          "w2": scale * jax.random.normal(k2, (hidden, k)) / np.sqrt(hidden), "b2": jnp.zeros((k,))}


def _images(seed, shape, boundary=True):
  r = np.random.RandomState(seed)
  x = r.uniform(-0.2, 1.2, shape) if boundary else r.uniform(0.0, 1.0, shape)  # some pixels exactly 0 / 1
  return jnp.asarray(np.clip(x, 0.0, 1.0), jnp.float32)


# ------------------------------------------------------------------------------------------------------------
# argument checking
# ------------------------------------------------------------------------------------------------------------

_X = jnp.full((2, 4, 4, 1), 0.5)
_Y = jnp.array([0, 1])
_F = _linear_logits(jnp.ones((16, 3)), jnp.zeros(3))
_KEY = jax.random.PRNGKey(0)


@pytest.mark.parametrize("call, match", [
    (lambda: A.pgd(_F, _X, _Y, eps=0.1, step_size=0.1, num_steps=1, norm="l1", rng=_KEY), "unknown norm"),
    (lambda: A.pgd(_F, _X, _Y, eps=0.1, step_size=0.1, num_steps=1, loss="hinge", rng=_KEY), "unknown loss"),
    (lambda: A.pgd(_F, _X, _Y, eps=-0.1, step_size=0.1, num_steps=1, rng=_KEY), "eps must be >= 0"),
    (lambda: A.pgd(_F, _X, _Y, eps=0.1, step_size=-1.0, num_steps=1, rng=_KEY), "step_size must be >= 0"),
    (lambda: A.pgd(_F, _X, _Y, eps=0.1, step_size=0.1, num_steps=-1, rng=_KEY), "num_steps must be >= 0"),
    (lambda: A.pgd(_F, _X, _Y, eps=0.1, step_size=0.1, num_steps=2.5, rng=_KEY), "num_steps must be a static"),
    (lambda: A.pgd(_F, _X, _Y, eps=0.1, step_size=0.1, num_steps=1), "rng"),
    (lambda: A.pgd(_F, _X, _Y[:1], eps=0.1, step_size=0.1, num_steps=1, rng=_KEY), "labels must have shape"),
    (lambda: A.fgsm(_F, _X, _Y, eps=jnp.array([-0.1, 0.1])), "eps must be >= 0"),
    (lambda: A.fgsm(_F, _X, _Y, eps=0.1, norm="linfinity"), "unknown norm"),
    (lambda: A.pgd_restarts(_F, _X, _Y, num_restarts=0, rng=_KEY, eps=0.1, step_size=0.1, num_steps=1),
     "num_restarts must be >= 1"),
    (lambda: A.square_attack(_F, _X, _Y, eps=0.1, num_queries=0, rng=_KEY), "num_queries must be >= 1"),
    (lambda: A.square_attack(_F, _X, _Y, eps=-1.0, num_queries=5, rng=_KEY), "eps must be >= 0"),
    (lambda: A.square_attack(_F, _X, _Y, eps=0.1, num_queries=5, rng=_KEY, p_init=0.0), "p_init"),
    (lambda: A.attack_loss(jnp.zeros((2, 3)), _Y, loss="hinge"), "unknown loss"),
    (lambda: A.project(_X, _X, eps=0.1, norm="l0"), "unknown norm"),
    (lambda: A.random_targets(_KEY, _Y, 1), "num_classes must be >= 2"),
    (lambda: A.attack_success(jnp.zeros((3,)), jnp.zeros((3,)), _Y), "must be"),
    (lambda: A.pgd(_F, _X.astype(jnp.int32), _Y, eps=1, step_size=1, num_steps=1, rng=_KEY), "floating"),
])
def test_invalid_arguments_raise_value_error(call, match):
  with pytest.raises(ValueError, match=match):
    call()


# ------------------------------------------------------------------------------------------------------------
# property tests: every output is in the ε-ball ∩ [0, 1], shape and dtype preserved
# ------------------------------------------------------------------------------------------------------------

_PB, _PSHAPE, _PK = 4, (5, 5, 2), 3
_PD = int(np.prod(_PSHAPE))


@functools.partial(jax.jit, static_argnames=("norm", "targeted", "loss"))
def _linear_attack(w, b, x, y, eps, step, key, *, norm, targeted, loss):
  return A.pgd(_linear_logits(w, b), x, y, eps=eps, step_size=step, num_steps=3, norm=norm, targeted=targeted,
               loss=loss, rng=key)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), eps_frac=st.floats(0.0, 1.0), norm=st.sampled_from(A.NORMS),
       targeted=st.booleans(), loss=st.sampled_from(A.LOSSES), big_step=st.booleans())
def test_pgd_output_in_ball_and_box(seed, eps_frac, norm, targeted, loss, big_step):
  r = np.random.RandomState(seed % (2 ** 31))
  eps = eps_frac * (0.5 if norm == "linf" else 4.0)
  w = jnp.asarray(r.randn(_PD, _PK) * 10 ** r.uniform(-3, 2), jnp.float32)  # widely varying gradient scales
  b = jnp.asarray(r.randn(_PK), jnp.float32)
  x = _images(seed % 1000, (_PB,) + _PSHAPE)
  y = jnp.asarray(r.randint(0, _PK, _PB), jnp.int32)
  step = eps * (3.0 if big_step else 0.25)  # a step larger than the ball must be projected back
  adv = _linear_attack(w, b, x, y, jnp.float32(eps), jnp.float32(step), jax.random.PRNGKey(seed),
                       norm=norm, targeted=targeted, loss=loss)
  _assert_valid(adv, x, eps, norm)


@functools.partial(jax.jit, static_argnames=("targeted",))
def _linear_square(w, b, x, y, eps, key, *, targeted):
  return A.square_attack(_linear_logits(w, b), x, y, eps=eps, num_queries=8, rng=key, targeted=targeted)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), eps=st.floats(0.0, 0.5), targeted=st.booleans())
def test_square_attack_output_in_ball_and_box(seed, eps, targeted):
  r = np.random.RandomState(seed % (2 ** 31))
  w = jnp.asarray(r.randn(_PD, _PK), jnp.float32)
  b = jnp.asarray(r.randn(_PK), jnp.float32)
  x = _images(seed % 1000, (_PB,) + _PSHAPE)
  y = jnp.asarray(r.randint(0, _PK, _PB), jnp.int32)
  adv = _linear_square(w, b, x, y, jnp.float32(eps), jax.random.PRNGKey(seed), targeted=targeted)
  _assert_valid(adv, x, eps, "linf")


@pytest.mark.parametrize("norm", A.NORMS)
def test_per_example_eps_and_project(norm):
  x = _images(0, (4, 3, 3, 2))
  y = jnp.array([0, 1, 2, 0])
  eps = jnp.array([0.0, 0.05, 0.2, 1.0])
  f = _mlp_logits(_random_mlp(jax.random.PRNGKey(0), 18, 3))
  adv = jax.jit(functools.partial(A.pgd, f, num_steps=2, norm=norm))(
      x, y, eps=eps, step_size=eps, rng=jax.random.key(1))  # typed keys work too
  _assert_valid(adv, x, eps, norm)
  np.testing.assert_array_equal(adv[0], x[0])  # ε = 0: untouched
  adv_fgsm = jax.jit(functools.partial(A.fgsm, f, norm=norm, targeted=True))(x, y, eps=eps)
  _assert_valid(adv_fgsm, x, eps, norm)
  # project: idempotent, identity inside the ball ∩ box, and lands in the ball from far away.
  proj = jax.jit(functools.partial(A.project, norm=norm))
  far = x + jax.random.normal(jax.random.PRNGKey(2), x.shape)
  p = proj(far, x, eps=eps)
  _assert_valid(p, x, eps, norm)
  np.testing.assert_allclose(proj(p, x, eps=eps), p, atol=1e-7)
  np.testing.assert_allclose(proj(adv, x, eps=eps), adv, atol=1e-7)


def test_project_hand_example():
  x = jnp.array([[0.5, 0.5, 0.95]])
  np.testing.assert_allclose(A.project(jnp.array([[0.9, 0.3, 1.2]]), x, eps=0.1, norm="linf"),
                             [[0.6, 0.4, 1.0]], atol=1e-7)
  # L2: δ = (0.3, 0.4, 0) has norm 0.5 → scaled to 0.1·(0.6, 0.8, 0).
  np.testing.assert_allclose(A.project(jnp.array([[0.8, 0.9, 0.95]]), x, eps=0.1, norm="l2"),
                             [[0.56, 0.58, 0.95]], atol=1e-7)


def test_attack_loss_values():
  z = jnp.array([[2.0, 0.0, 1.0]])
  y = jnp.array([2])
  lse = np.log(np.exp(2.0) + 1.0 + np.exp(1.0))
  np.testing.assert_allclose(A.attack_loss(z, y, loss="ce"), [lse - 1.0], rtol=1e-6)
  np.testing.assert_allclose(A.attack_loss(z, y, loss="ce", targeted=True), [1.0 - lse], rtol=1e-6)
  np.testing.assert_allclose(A.attack_loss(z, y, loss="margin"), [1.0])  # max other (2) − z_y (1)
  np.testing.assert_allclose(A.attack_loss(z, y, loss="margin", targeted=True), [-1.0])


# ------------------------------------------------------------------------------------------------------------
# closed form: linear two-class model
# ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("norm", A.NORMS)
@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("loss", A.LOSSES)
def test_pgd_reaches_linear_optimum(norm, targeted, loss):
  r = np.random.RandomState(0)
  d, bsz = 32, 6
  w = r.randn(d, 2).astype(np.float32)
  b = r.randn(2).astype(np.float32)
  x = r.uniform(0.35, 0.65, (bsz, d)).astype(np.float32)  # interior: the [0, 1] box never binds
  y = np.array([0, 1, 0, 1, 1, 0])
  eps, step, steps = (0.05, 0.02, 20) if norm == "linf" else (0.3, 0.1, 60)
  adv = A.pgd(_linear_logits(jnp.asarray(w), jnp.asarray(b)), jnp.asarray(x), jnp.asarray(y), eps=eps,
              step_size=step, num_steps=steps, norm=norm, targeted=targeted, loss=loss,
              rng=jax.random.PRNGKey(3))
  # The attacker ascends s·(z_other − z_y) with s = +1 (untargeted) / −1 (targeted toward y), i.e. along
  # v = s·(w_other − w_y): optimum δ* = ε·sign(v) (L∞) or ε·v/‖v‖₂ (L2), margin gain ε·‖v‖₁ or ε·‖v‖₂.
  s = -1.0 if targeted else 1.0
  v = s * (w[:, 1 - y] - w[:, y]).T  # [B, d]
  margin0 = s * ((x @ w + b)[np.arange(bsz), 1 - y] - (x @ w + b)[np.arange(bsz), y])
  if norm == "linf":
    delta_star, gain = eps * np.sign(v), eps * np.abs(v).sum(1)
  else:
    delta_star = eps * v / np.linalg.norm(v, axis=1, keepdims=True)
    gain = eps * np.linalg.norm(v, axis=1)
  best_margin = margin0 + gain
  # two classes: CE(z, y) = softplus(z_other − z_y), so the CE objective is a monotone function of the margin
  if loss == "margin":
    best = best_margin
  else:
    best = -np.log1p(np.exp(-best_margin)) if targeted else np.log1p(np.exp(best_margin))
  got = np.asarray(A.attack_loss(_linear_logits(w, b)(adv), jnp.asarray(y), loss=loss, targeted=targeted))
  np.testing.assert_allclose(got, best, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(np.asarray(adv) - x, delta_star, atol=1e-3 if norm == "l2" else 1e-6)


def test_pgd_unrolled_equals_rolled():
  r = np.random.RandomState(1)
  w, x = jnp.asarray(r.randn(16, 3), jnp.float32), jnp.asarray(r.uniform(0, 1, (4, 16)), jnp.float32)
  kw = dict(eps=0.1, step_size=0.03, num_steps=4, rng=jax.random.key(0))
  f = _linear_logits(w, jnp.zeros(3))
  y = jnp.array([0, 1, 2, 0])
  np.testing.assert_allclose(A.pgd(f, x, y, unroll=True, **kw), A.pgd(f, x, y, **kw), atol=1e-6)


def test_per_example_gradients_do_not_depend_on_batch():
  f = _mlp_logits(_random_mlp(jax.random.PRNGKey(0), 16, 4))
  x = _images(1, (6, 4, 4, 1))
  y = jnp.array([0, 1, 2, 3, 0, 1])
  run = jax.jit(functools.partial(A.pgd, f, eps=0.1, step_size=0.03, num_steps=4, random_start=False))
  np.testing.assert_allclose(run(x, y)[:2], run(x[:2], y[:2]), atol=1e-6)


# ------------------------------------------------------------------------------------------------------------
# a tiny undefended model trained on two Gaussian blobs of 8×8 images
# ------------------------------------------------------------------------------------------------------------

def _blobs(n, seed):
  r = np.random.RandomState(seed)
  y = r.randint(0, 2, n)
  x = np.clip(0.3 + 0.4 * y[:, None, None, None] + 0.15 * r.randn(n, 8, 8, 1), 0.0, 1.0)
  return jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)


@pytest.fixture(scope="module")
def blob_model():
  x_train, y_train = _blobs(512, 0)
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  params = {"w1": jax.random.normal(k1, (64, 32)) / 8.0, "b1": jnp.zeros(32),
            "w2": jax.random.normal(k2, (32, 2)) / np.sqrt(32), "b2": jnp.zeros(2)}

  def apply(p, x):
    return jax.nn.relu(x.reshape(x.shape[0], -1) @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]

  opt = optax.adam(1e-2)

  @jax.jit
  def train(p):
    def step(carry, _):
      p, s = carry
      g = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(apply(p, x_train),
                                                                                y_train).mean())(p)
      u, s = opt.update(g, s)
      return (optax.apply_updates(p, u), s), None
    return jax.lax.scan(step, (p, opt.init(p)), None, length=200)[0][0]

  params = train(params)
  x_test, y_test = _blobs(256, 1)
  return functools.partial(apply, params), x_test, y_test


def _acc(f, x, y):
  return float(jnp.mean(jnp.argmax(f(x), -1) == y))


def test_pgd_breaks_undefended_model(blob_model):
  f, x, y = blob_model
  clean = _acc(f, x, y)
  assert clean >= 0.95
  eps = 0.3
  adv_pgd = jax.jit(functools.partial(A.pgd, f, num_steps=10, norm="linf"))(
      x, y, eps=eps, step_size=eps / 4, rng=jax.random.PRNGKey(1))
  adv_fgsm = jax.jit(functools.partial(A.fgsm, f, norm="linf"))(x, y, eps=eps)
  adv_l2 = jax.jit(functools.partial(A.pgd, f, num_steps=10, norm="l2"))(
      x, y, eps=3.0, step_size=0.75, rng=jax.random.PRNGKey(1))
  _assert_valid(adv_pgd, x, eps, "linf")
  _assert_valid(adv_fgsm, x, eps, "linf")
  _assert_valid(adv_l2, x, 3.0, "l2")
  acc_pgd, acc_fgsm, acc_l2 = _acc(f, adv_pgd, y), _acc(f, adv_fgsm, y), _acc(f, adv_l2, y)
  assert acc_pgd <= 0.05 and acc_l2 <= 0.05
  assert acc_fgsm < clean
  assert acc_pgd <= acc_fgsm
  # a small ε barely moves these well-separated blobs: the attack is not vacuous
  adv_small = A.pgd(f, x, y, eps=0.02, step_size=0.01, num_steps=5, rng=jax.random.PRNGKey(1))
  assert _acc(f, adv_small, y) >= 0.9


def test_square_attack_reduces_accuracy(blob_model):
  f, x, y = blob_model
  eps = 0.3
  adv = jax.jit(functools.partial(A.square_attack, f, num_queries=100))(x, y, eps=eps, rng=jax.random.PRNGKey(2))
  _assert_valid(adv, x, eps, "linf")
  assert _acc(f, adv, y) <= 0.2 < _acc(f, x, y)


def test_square_schedule():
  p = lambda it, n=10000: pytest.approx(float(attack_square._square_fraction(0.8, it, n)), rel=1e-6)
  assert p(0) == p(10) == 0.8
  assert p(11) == p(50) == 0.4
  assert p(51) == 0.2 and p(201) == 0.1 and p(501) == 0.05
  assert p(8001) == p(9999) == 0.8 / 512
  # rescaled to the budget: iteration i of n behaves like iteration i·10000/n of 10,000
  assert p(0, 100) == 0.8 and p(1, 100) == 0.2 and p(5, 100) == 0.1 and p(6, 100) == 0.05
  assert p(99, 100) == 0.8 / 512


# ------------------------------------------------------------------------------------------------------------
# compile once; data parallel
# ------------------------------------------------------------------------------------------------------------

def test_attacks_compile_once_per_shape():
  traces = []
  params = _random_mlp(jax.random.PRNGKey(0), 16, 3)

  def logits_fn(x):
    traces.append(1)  # Python side effect: runs only while tracing
    return _mlp_logits(params)(x)

  attacks = {
      "pgd": (jax.jit(functools.partial(A.pgd, logits_fn, num_steps=3, norm="l2")), True),
      "square": (jax.jit(functools.partial(A.square_attack, logits_fn, num_queries=4)), False),
  }
  for name, (fn, has_step) in attacks.items():
    counts = []
    for seed, eps in ((0, 0.1), (1, 0.25)):
      x = _images(seed, (4, 4, 4, 1))
      y = jnp.asarray(np.random.RandomState(seed).randint(0, 3, 4), jnp.int32)
      kwargs = {"step_size": jnp.float32(eps / 2)} if has_step else {}
      jax.block_until_ready(fn(x, y, eps=jnp.float32(eps), rng=jax.random.PRNGKey(seed), **kwargs))
      counts.append(len(traces))
    assert fn._cache_size() == 1, name
    assert counts[0] == counts[1] > 0, name


@pytest.mark.parametrize("axis_type", ["explicit", "auto"])
def test_sharded_batch_matches_unsharded(axis_type):
  assert jax.device_count() == 4
  if axis_type == "explicit":
    mesh = jax.make_mesh((4,), ("data",))  # Explicit axes by default in JAX 0.10
  else:
    mesh = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  sharding = NamedSharding(mesh, P("data"))
  f = _mlp_logits(_random_mlp(jax.random.PRNGKey(0), 32, 5))
  x = _images(3, (8, 4, 4, 2))
  y = jnp.asarray(np.arange(8) % 5, jnp.int32)
  xs, ys = jax.device_put(x, sharding), jax.device_put(y, sharding)
  key = jax.random.PRNGKey(7)
  restarts = jax.jit(functools.partial(A.pgd_restarts, f, num_restarts=2, eps=0.5, step_size=0.2, num_steps=2,
                                       norm="l2", targeted=True, loss="margin"))
  fns = [restarts]
  if axis_type == "explicit":
    fns += [jax.jit(functools.partial(A.pgd, f, eps=0.1, step_size=0.03, num_steps=3, norm="linf")),
            jax.jit(functools.partial(A.square_attack, f, eps=0.1, num_queries=6))]
  for fn in fns:
    ref = fn(x, y, rng=key)
    out = fn(xs, ys, rng=key)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-6)
    assert out.sharding.is_equivalent_to(sharding, out.ndim), out.sharding
  adv = restarts(xs, ys, rng=key)
  stats = jax.jit(A.attack_success)(f(xs), f(adv), ys)
  ref_stats = A.attack_success(f(x), f(restarts(x, y, rng=key)), y)
  for k in ref_stats:
    np.testing.assert_allclose(stats[k], ref_stats[k])


# ------------------------------------------------------------------------------------------------------------
# restarts, targeted attacks, targets
# ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("targeted", [False, True])
def test_restarts_at_least_as_strong_as_each_run(targeted):
  k = 5
  params = _random_mlp(jax.random.PRNGKey(4), 16, k, hidden=32, scale=6.0)
  f = _mlp_logits(params)
  x = _images(5, (32, 4, 4, 1), boundary=False)
  y = jnp.argmax(f(x), -1)  # clean-correct by construction
  if targeted:
    y = A.random_targets(jax.random.PRNGKey(6), y, k)
  kw = dict(eps=0.06, step_size=0.03, num_steps=3, norm="linf", loss="margin", targeted=targeted)
  n, rng = 4, jax.random.PRNGKey(8)
  best = jax.jit(functools.partial(A.pgd_restarts, f, num_restarts=n, **kw))(x, y, rng=rng)
  _assert_valid(best, x, kw["eps"], "linf")
  single = jax.jit(functools.partial(A.pgd, f, **kw))
  runs = [single(x, y, rng=key) for key in jax.random.split(rng, n)]

  def score(a):
    logits = f(a)
    pred = np.asarray(jnp.argmax(logits, -1))
    success = pred == np.asarray(y) if targeted else pred != np.asarray(y)
    return success, np.asarray(A.attack_loss(logits, y, loss="margin", targeted=targeted))

  best_success, best_loss = score(best)
  losses = []
  for run in runs:
    success, loss = score(run)
    losses.append(loss)
    assert np.all(best_success >= success)
    same = best_success == success
    assert np.all(best_loss[same] >= loss[same] - 1e-5)
  # the restarts really differ, and succeed on more examples than a single run
  assert np.ptp(np.stack(losses), axis=0).max() > 1e-3
  assert best_success.sum() >= max(score(r)[0].sum() for r in runs)
  # the kept example is one of the runs
  dists = np.stack([np.abs(np.asarray(best) - np.asarray(r)).reshape(len(x), -1).max(1) for r in runs])
  assert np.all(dists.min(0) <= 1e-5)


@pytest.mark.parametrize("norm, eps", [("linf", 0.05), ("l2", 0.3)])
def test_targeted_pgd_raises_target_probability(norm, eps):
  k = 6
  f = _mlp_logits(_random_mlp(jax.random.PRNGKey(9), 27, k))
  x = _images(10, (16, 3, 3, 3), boundary=False)
  y = jnp.argmax(f(x), -1)
  targets = A.random_targets(jax.random.PRNGKey(11), y, k)
  adv = A.pgd(f, x, targets, eps=eps, step_size=eps / 4, num_steps=10, norm=norm, targeted=True,
              rng=jax.random.PRNGKey(12))
  _assert_valid(adv, x, eps, norm)
  p_clean = jax.nn.softmax(f(x))[jnp.arange(16), targets]
  p_adv = jax.nn.softmax(f(adv))[jnp.arange(16), targets]
  assert np.all(np.asarray(p_adv) > np.asarray(p_clean))
  # the untargeted attack lowers the probability of the true class instead
  adv_u = A.pgd(f, x, y, eps=eps, step_size=eps / 4, num_steps=10, norm=norm, rng=jax.random.PRNGKey(12))
  p_true = jax.nn.softmax(f(x))[jnp.arange(16), y]
  assert np.all(np.asarray(jax.nn.softmax(f(adv_u))[jnp.arange(16), y]) < np.asarray(p_true))


def test_random_targets():
  k = 7
  labels = jnp.asarray(np.random.RandomState(0).randint(0, k, 5000), jnp.int32)
  t1 = A.random_targets(jax.random.PRNGKey(0), labels, k)
  t2 = A.random_targets(jax.random.PRNGKey(0), labels, k)
  t3 = A.random_targets(jax.random.PRNGKey(1), labels, k)
  assert t1.shape == labels.shape and t1.dtype == labels.dtype
  np.testing.assert_array_equal(t1, t2)  # reproducible
  assert np.any(np.asarray(t1) != np.asarray(t3))  # depends on the key
  assert np.all(np.asarray(t1) != np.asarray(labels))
  assert np.all((np.asarray(t1) >= 0) & (np.asarray(t1) < k))
  # uniform over the other classes: for label 0 each of the 6 others gets ~1/6
  others = np.asarray(t1)[np.asarray(labels) == 0]
  freq = np.bincount(others, minlength=k)[1:] / len(others)
  assert np.all(np.abs(freq - 1 / 6) < 0.06)


# ------------------------------------------------------------------------------------------------------------
# attack_success: a hand-computed example (T = 2 steps, B = 4, K = 3)
# ------------------------------------------------------------------------------------------------------------

_CLEAN = np.array([
    [[2.0, 0.1, -1.0], [0.3, 1.5, 0.2], [0.9, 0.0, 0.5], [1.2, 1.1, -0.3]],  # argmax 0 1 0 0
    [[3.0, 0.0, 0.0], [0.0, 2.0, 1.0], [0.1, 0.2, 0.7], [0.4, 0.6, 0.5]],    # argmax 0 1 2 1
])
_ADV = np.array([
    [[0.5, 0.9, 0.1], [0.2, 1.0, 0.3], [0.0, 0.1, 0.4], [0.0, 0.2, 0.3]],    # argmax 1 1 2 2
    [[0.1, 0.2, 0.8], [0.0, 0.5, 0.6], [0.9, 0.1, 0.2], [0.7, 0.1, 0.2]],    # argmax 2 2 0 0
])
_LABELS = np.array([0, 1, 2, 0])
_TARGETS = np.array([1, 2, 0, 2])
_MASK = np.array([True, True, True, False])


def _check(stats, expected):
  for key, value in expected.items():
    np.testing.assert_allclose(np.asarray(stats[key]), value, rtol=1e-6, err_msg=key)


def test_attack_success_hand_example():
  # untargeted, all four examples.
  # step 0: clean correct {0,1,3}; adv wrong {0,3} → 2 successes; adv correct {1,2}.
  # step 1: clean correct {0,1,2}; adv wrong {0,1,2} (3 is correct) → 3 successes; adv correct {3}.
  _check(A.attack_success(_CLEAN, _ADV, _LABELS), {
      "num_clean_correct": [3, 3], "num_success": [2, 3], "num_adv_correct": [2, 1],
      "clean_acc": [0.75, 0.75], "adv_acc": [0.5, 0.25], "asr": [2 / 3, 1.0]})
  # untargeted, example 3 masked out.
  # step 0: clean correct {0,1}; success {0}.  step 1: clean correct {0,1,2}; success {0,1,2}.
  _check(A.attack_success(_CLEAN, _ADV, _LABELS, mask=_MASK), {
      "num_examples": [3, 3], "num_clean_correct": [2, 3], "num_success": [1, 3],
      "num_adv_correct": [2, 0], "clean_acc": [2 / 3, 1.0], "adv_acc": [2 / 3, 0.0], "asr": [0.5, 1.0]})
  # targeted (targets 1 2 0 2), example 3 masked out.
  # step 0: adv = target for {0} (and 3, masked) → 1 of 2.  step 1: adv = target for {1,2} → 2 of 3.
  _check(A.attack_success(_CLEAN, _ADV, _LABELS, targets=_TARGETS, mask=_MASK), {
      "num_clean_correct": [2, 3], "num_success": [1, 2], "asr": [0.5, 2 / 3],
      "clean_acc": [2 / 3, 1.0], "adv_acc": [2 / 3, 0.0]})
  # targeted, unmasked: step 0 success {0,3} of {0,1,3}; step 1 success {1,2} of {0,1,2}.
  _check(A.attack_success(_CLEAN, _ADV, _LABELS, targets=_TARGETS),
         {"num_success": [2, 2], "asr": [2 / 3, 2 / 3]})
  # no step axis → scalars, equal to step 0 above
  s0 = A.attack_success(_CLEAN[0], _ADV[0], _LABELS, targets=_TARGETS, mask=_MASK)
  assert s0["asr"].shape == ()
  _check(s0, {"num_clean_correct": 2, "num_success": 1, "asr": 0.5, "clean_acc": 2 / 3})
  # nothing clean-correct → ASR undefined (NaN), counts still usable
  s = A.attack_success(_CLEAN[0], _ADV[0], _LABELS, mask=np.zeros(4, bool))
  assert int(s["num_clean_correct"]) == 0 and np.isnan(s["asr"])
