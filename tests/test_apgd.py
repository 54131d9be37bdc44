"""APGD / APGD-T and the DLR loss (issue 13): AutoAttack's step-size schedule and updates against a transliteration
of its loop, closed-form optimum, strength against PGD on a small trained network, EOT, data parallelism; and the
model-side hooks of the policy attacks (frozen scanpath, BPDA / straight-through, steering objective)."""
import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from rsrnn_jax import attacks as A
from rsrnn_jax.attacks import objectives as O
from rsrnn_jax.models import build_model, dorsal, samplers
from tests.helpers import tiny_config

# The package exports the function ``apgd``, which shadows its module as an attribute: import the module by name.
apgd_mod = importlib.import_module("rsrnn_jax.attacks.apgd")
TOL = 1e-6


def _mlp(params):
  def f(x):
    return jnp.tanh(x.reshape(x.shape[0], -1) @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]
  return f


def _random_mlp(seed, d, k, hidden=16, scale=3.0):
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  return {"w1": scale * jax.random.normal(k1, (d, hidden)) / np.sqrt(d),
          "b1": 0.5 * jax.random.normal(k3, (hidden,)),
          "w2": scale * jax.random.normal(k2, (hidden, k)) / np.sqrt(hidden), "b2": jnp.zeros((k,))}


def _assert_valid(adv, x, eps, norm):
  a, x = np.asarray(adv, np.float64), np.asarray(x, np.float64)
  assert adv.shape == x.shape and np.all(np.isfinite(a)) and a.min() >= 0.0 and a.max() <= 1.0
  d = (a - x).reshape(len(x), -1)
  dist = np.abs(d).max(1) if norm == "linf" else np.sqrt((d ** 2).sum(1))
  assert np.all(dist <= np.asarray(eps) + TOL), dist.max()


# ------------------------------------------------------------------------------------------------------------
# schedule and DLR
# ------------------------------------------------------------------------------------------------------------

def _autoattack_checks(n_iter):
  """AutoAttack's counters (autopgd_base.py, attack_single_run): the iterations after which it checks."""
  k, n_min, decr = max(int(0.22 * n_iter), 1), max(int(0.06 * n_iter), 1), max(int(0.03 * n_iter), 1)
  out, counter3 = [], 0
  for i in range(n_iter):
    counter3 += 1
    if counter3 == k:
      out.append(i + 1)
      counter3, k = 0, max(k - decr, n_min)
  return tuple(out)


def test_checkpoints_match_autoattack():
  # The paper: p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06); N = 100 gives p_j·N.
  p = [0.0, 0.22]
  while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1.0:
    p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
  assert A.apgd_checkpoints(100) == tuple(int(round(100 * q)) for q in p[1:]) == (22, 41, 57, 70, 80, 87, 93, 99)
  assert A.apgd_checkpoints(20) == (4, 7, 9) + tuple(range(10, 21))
  assert A.apgd_checkpoints(5) == (1, 2, 3, 4, 5) and A.apgd_checkpoints(0) == ()
  for n in range(0, 260):
    assert A.apgd_checkpoints(n) == _autoattack_checks(n), n


def test_dlr_hand_values():
  z = jnp.array([[2.0, 0.0, 1.0, -1.0], [0.5, 3.0, -2.0, 1.0]])
  # untargeted: −(z_y − max_{j≠y} z_j) / (z_π1 − z_π3): row 0, y=2: −(1 − 2)/(2 − 0); row 1, y=1: −(3 − 1)/(3 − 0.5)
  np.testing.assert_allclose(A.attack_loss(z, jnp.array([2, 1]), loss="dlr"), [0.5, -0.8], rtol=1e-6)
  # targeted: −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2): row 0, y=0, t=1: −2/2.5; row 1, y=1, t=3: −2/(3 + 0.75)
  got = A.attack_loss(z, jnp.array([1, 3]), loss="dlr", targeted=True, true_labels=jnp.array([0, 1]))
  np.testing.assert_allclose(got, [-0.8, -2.0 / 3.75], rtol=1e-6)
  # scale and shift invariant (AutoAttack's point of DLR)
  np.testing.assert_allclose(A.attack_loss(7.0 * z - 3.0, jnp.array([2, 1]), loss="dlr"), [0.5, -0.8], rtol=1e-5)
  with pytest.raises(ValueError, match="needs >= 3 classes"):
    A.attack_loss(z[:, :2], jnp.array([0, 1]), loss="dlr")
  with pytest.raises(ValueError, match="needs >= 4 classes"):
    A.attack_loss(z[:, :3], jnp.array([0, 1]), loss="dlr", targeted=True, true_labels=jnp.array([1, 0]))
  with pytest.raises(ValueError, match="true_labels"):
    A.attack_loss(z, jnp.array([0, 1]), loss="dlr", targeted=True)
  with pytest.raises(ValueError, match="unknown loss"):
    A.pgd(lambda x: x @ jnp.ones((4, 4)), jnp.zeros((2, 4)), jnp.array([0, 1]), eps=0.1, step_size=0.1,
          num_steps=1, loss="dlr", random_start=False)  # pgd keeps its own losses


@pytest.mark.parametrize("call, match", [
    (lambda f, x, y: A.apgd(f, x, y, eps=0.1, num_steps=2), "PRNG key"),
    (lambda f, x, y: A.apgd(f, x, y, eps=0.1, num_steps=2, loss="margin", rng=jax.random.key(0)), "APGD loss"),
    (lambda f, x, y: A.apgd(f, x, y, eps=0.1, num_steps=2, norm="l1", rng=jax.random.key(0)), "unknown norm"),
    (lambda f, x, y: A.apgd(f, x, y, eps=-0.1, num_steps=2, rng=jax.random.key(0)), "eps must be >= 0"),
    (lambda f, x, y: A.apgd(f, x, y, eps=0.1, num_steps=2, target=y, rng=jax.random.key(0)), "targeted=True"),
    (lambda f, x, y: A.apgd(f, x, y, eps=0.1, num_steps=2, num_restarts=0, rng=jax.random.key(0)), "num_restarts"),
])
def test_apgd_invalid_arguments(call, match):
  f = _mlp(_random_mlp(0, 16, 4))
  with pytest.raises(ValueError, match=match):
    call(f, jnp.full((2, 4, 4, 1), 0.5), jnp.array([0, 1]))


# ------------------------------------------------------------------------------------------------------------
# the algorithm: a transliteration of AutoAttack's loop, the closed-form optimum
# ------------------------------------------------------------------------------------------------------------

def _autoattack_reference(loss_grad, x, x_init, eps, n_iter, rho=0.75):
  """AutoAttack's attack_single_run (L∞), transliterated to numpy float32: (x_best, loss_best, step sizes)."""
  b = x.shape[0]
  k, n_min, decr = max(int(0.22 * n_iter), 1), max(int(0.06 * n_iter), 1), max(int(0.03 * n_iter), 1)
  x_adv = x_init.copy()
  x_best = x_adv.copy()
  loss_steps = np.zeros((n_iter, b), np.float32)
  loss_indiv, grad = loss_grad(x_adv)
  grad_best, loss_best = grad.copy(), loss_indiv.copy()
  step_size = np.full((b,) + (1,) * (x.ndim - 1), 2.0 * eps, np.float32)
  x_adv_old, counter3 = x_adv.copy(), 0
  loss_best_last_check, reduced_last_check = loss_best.copy(), np.ones(b, np.float32)
  steps = []
  for i in range(n_iter):
    grad2 = x_adv - x_adv_old
    x_adv_old = x_adv.copy()
    a = np.float32(0.75 if i > 0 else 1.0)
    x_adv_1 = x_adv + step_size * np.sign(grad)
    x_adv_1 = np.clip(np.minimum(np.maximum(x_adv_1, x - eps), x + eps), 0.0, 1.0)
    x_adv_1 = np.clip(np.minimum(np.maximum(x_adv + (x_adv_1 - x_adv) * a + grad2 * (1 - a), x - eps), x + eps),
                      0.0, 1.0)
    x_adv = x_adv_1
    loss_indiv, grad = loss_grad(x_adv)
    steps.append(step_size.reshape(b).copy())
    loss_steps[i] = loss_indiv
    ind = loss_indiv > loss_best
    x_best[ind], grad_best[ind], loss_best[ind] = x_adv[ind], grad[ind], loss_indiv[ind]
    counter3 += 1
    if counter3 == k:
      t = np.zeros(b, np.float32)
      for c in range(k):
        t += loss_steps[i - c] > loss_steps[i - c - 1]  # i − c − 1 = −1: the (still zero) last row
      fl = np.maximum((t <= k * rho).astype(np.float32),
                      (1.0 - reduced_last_check) * (loss_best_last_check >= loss_best))
      reduced_last_check, loss_best_last_check = fl.copy(), loss_best.copy()
      ind = fl > 0
      step_size[ind] /= 2.0
      x_adv[ind], grad[ind] = x_best[ind], grad_best[ind]
      counter3, k = 0, max(k - decr, n_min)
  return x_best, loss_best, np.stack(steps)


def _authors_targeted_dlr(z, y, t):
  """AutoAttack's dlr_loss_targeted, transliterated: −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2)."""
  s, u = jnp.sort(z, axis=1), jnp.arange(z.shape[0])
  return -(z[u, y] - z[u, t]) / (s[:, -1] - 0.5 * (s[:, -3] + s[:, -4]) + 1e-12)


@pytest.mark.parametrize("loss", ["ce", "dlr", "dlr-targeted"])
def test_apgd_run_matches_autoattack_loop(loss):
  f = _mlp(_random_mlp(1, 12, 4, hidden=8, scale=4.0))
  r = np.random.RandomState(0)
  x = np.clip(r.uniform(-0.1, 1.1, (6, 12)), 0, 1).astype(np.float32)
  y = jnp.asarray(r.randint(0, 4, 6))
  eps, n_iter = np.float32(0.25), 20
  if loss == "dlr-targeted":  # APGD-T's run toward its first target, the loss the authors' own formula
    t = apgd_mod.ranked_targets(f(jnp.asarray(x)), y, 9)[:, 0]
    evaluate, _ = apgd_mod.make_evaluator(f, y, t, "dlr", None)
    authors_grad = jax.grad(lambda v: jnp.sum(_authors_targeted_dlr(f(v), y, t)))
    value, _, grad = evaluate(jnp.asarray(x), None)
    np.testing.assert_allclose(value, _authors_targeted_dlr(f(jnp.asarray(x)), y, t), rtol=1e-5)
    np.testing.assert_allclose(grad, authors_grad(jnp.asarray(x)), rtol=1e-4, atol=1e-6)
  else:
    evaluate, _ = apgd_mod.make_evaluator(f, y, None, loss, None)
  x_init = np.asarray(apgd_mod._start(jax.random.key(3), jnp.asarray(x), eps, "linf"))
  loss_grad_jit = jax.jit(lambda v: evaluate(v, None))

  def loss_grad(v):
    value, _, grad = loss_grad_jit(jnp.asarray(v))
    return np.array(value), np.array(grad)

  ref_best, ref_loss, ref_steps = _autoattack_reference(loss_grad, x, x_init, eps, n_iter)
  run = jax.jit(functools.partial(apgd_mod.apgd_run, evaluate, eps=eps, num_steps=n_iter, norm="linf"))
  out = run(jnp.asarray(x), jnp.asarray(x_init))
  np.testing.assert_array_equal(np.asarray(out["step_sizes"]), ref_steps)
  assert len(np.unique(ref_steps[-1])) > 1  # the examples' step sizes diverged: the checkpoints were exercised
  np.testing.assert_allclose(np.asarray(out["x_best"]), ref_best, atol=1e-6)
  np.testing.assert_allclose(np.asarray(out["loss_best"]), ref_loss, rtol=1e-5, atol=1e-6)


def test_targets_are_the_authors_ranks_two_to_ten():
  """AutoAttack's APGD-T / FAB-T pass p (target_class = p + 2) aims at ``sort(logits)[1][:, -target_class]`` of the
  clean logits of an example it attacks (one classified correctly): the same class as ``ranked_targets[:, p]``."""
  z = jax.random.normal(jax.random.key(0), (64, 12))
  y = jnp.argmax(z, -1)  # attacked examples are classified correctly
  authors = jnp.stack([jnp.argsort(z, axis=1)[:, -c] for c in range(2, 11)], axis=1)
  np.testing.assert_array_equal(apgd_mod.ranked_targets(z, y, 9), authors)
  assert apgd_mod.ranked_targets(z[:, :4], jnp.argmax(z[:, :4], -1), 9).shape == (64, 3)  # at most K − 1


def test_run_result_prefers_the_highest_loss_point_among_fooling_ones():
  """Per example: the highest-loss point if it fooled, else the last misclassified iterate, else the best."""
  best, fooled_x = jnp.zeros((3, 2)), jnp.ones((3, 2))
  out = {"x_best": best, "x_fooled": fooled_x, "best_fooled": jnp.array([True, False, False]),
         "fooled": jnp.array([True, True, False])}
  np.testing.assert_array_equal(np.asarray(apgd_mod.run_result(out))[:, 0], [0.0, 1.0, 0.0])


def test_apgd_run_reports_whether_its_best_point_fooled():
  f = _mlp(_random_mlp(1, 12, 4, hidden=8, scale=4.0))
  r = np.random.RandomState(0)
  x = jnp.asarray(np.clip(r.uniform(-0.1, 1.1, (16, 12)), 0, 1).astype(np.float32))
  y = jnp.asarray(r.randint(0, 4, 16))
  evaluate, _ = apgd_mod.make_evaluator(f, y, None, "ce", None)
  out = apgd_mod.apgd_run(evaluate, x, apgd_mod._start(jax.random.key(3), x, 0.1, "linf"), eps=0.1, num_steps=10)
  np.testing.assert_array_equal(out["best_fooled"], jnp.argmax(f(out["x_best"]), -1) != y)
  assert np.all(np.asarray(out["fooled"])[np.asarray(out["best_fooled"])])
  assert 0 < int(np.sum(out["best_fooled"])) < 16  # both cases occur on this batch


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("targeted", [False, True])
def test_apgd_reaches_linear_optimum(norm, targeted):
  r = np.random.RandomState(0)
  d, bsz = 32, 6
  w, b = r.randn(d, 2).astype(np.float32), r.randn(2).astype(np.float32)
  x = r.uniform(0.35, 0.65, (bsz, d)).astype(np.float32)  # interior: the box never binds
  y = np.array([0, 1, 0, 1, 1, 0])
  eps = 0.05 if norm == "linf" else 0.3
  v = (w[:, 1 - y] - w[:, y]).T
  # A per-example bias puts the best reachable margin z_{1−y} − z_y at −1: the attack never succeeds, so the
  # returned point is the best (highest-loss) one; for two classes CE is a monotone function of that margin.
  gain = eps * (np.abs(v).sum(1) if norm == "linf" else np.linalg.norm(v, axis=1))
  margin0 = (x @ w + b)[np.arange(bsz), 1 - y] - (x @ w + b)[np.arange(bsz), y]
  bias = jnp.asarray((-1.0 - gain - margin0)[:, None] * np.eye(2, dtype=np.float32)[1 - y], jnp.float32)
  f = lambda u: u @ jnp.asarray(w) + jnp.asarray(b) + bias
  kw = dict(targeted=True, target=jnp.asarray(1 - y)) if targeted else {}
  # untargeted against y or targeted toward 1 − y: both ascend z_{1−y} − z_y, along v = w_{1−y} − w_y
  labels = jnp.asarray(y)
  adv = A.apgd(f, jnp.asarray(x), labels, eps=eps, num_steps=60, norm=norm, rng=jax.random.key(1), **kw)
  assert np.all(np.asarray(jnp.argmax(f(adv), -1)) == y)
  star = eps * np.sign(v) if norm == "linf" else eps * v / np.linalg.norm(v, axis=1, keepdims=True)
  np.testing.assert_allclose(np.asarray(adv) - x, star, atol=1e-6 if norm == "linf" else 2e-3)
  _assert_valid(adv, x, eps, norm)


def test_apgd_ascends_the_extra_term_and_attacks_misclassified_clean_images():
  x = jnp.asarray(np.random.RandomState(0).uniform(0.2, 0.8, (4, 3, 3, 1)), jnp.float32)
  y = jnp.array([0, 0, 1, 0])
  # Constant logits (zero gradient) plus an extra term Σ pixels: only the extra term can move the point.
  logits = jnp.array([[1.0, 0.0, 0.0]] * 4)
  objective = lambda v: (logits, jnp.sum(v.reshape(4, -1), axis=-1))
  adv = A.apgd(objective, x, y, eps=0.1, num_steps=8, rng=jax.random.key(0))
  # Example 2 is misclassified clean and still attacked (under a mean over steps, "misclassified" can hide
  # steps that are right): every example ends at the extra term's optimum.
  np.testing.assert_allclose(np.asarray(adv), np.asarray(x) + 0.1, atol=1e-6)


# ------------------------------------------------------------------------------------------------------------
# strength on a small trained network
# ------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_mlp():
  """A 64-64-64-4 ReLU MLP trained (seconds) on four noisy quadrant patterns of 8×8 images."""
  def data(n, seed):
    r = np.random.RandomState(seed)
    y = r.randint(0, 4, n)
    masks = np.zeros((4, 8, 8), np.float32)
    for c in range(4):
      masks[c, 4 * (c // 2):4 * (c // 2) + 4, 4 * (c % 2):4 * (c % 2) + 4] = 1.0
    x = np.clip(0.3 + 0.35 * masks[y] + 0.4 * r.randn(n, 8, 8), 0, 1)[..., None]
    return jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)

  def apply(p, x):
    h = jax.nn.relu(x.reshape(x.shape[0], -1) @ p["w1"] + p["b1"])
    h = jax.nn.relu(h @ p["w2"] + p["b2"])
    return h @ p["w3"] + p["b3"]

  x_train, y_train = data(2048, 0)
  ks = jax.random.split(jax.random.key(0), 3)
  params = {"w1": jax.random.normal(ks[0], (64, 64)) / 8, "b1": jnp.zeros(64),
            "w2": jax.random.normal(ks[1], (64, 64)) / 8, "b2": jnp.zeros(64),
            "w3": jax.random.normal(ks[2], (64, 4)) / 8, "b3": jnp.zeros(4)}
  opt = optax.adam(3e-3)

  @jax.jit
  def train(p):
    def step(carry, _):
      p, s = carry
      g = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(apply(p, x_train), y_train).mean())(p)
      u, s = opt.update(g, s)
      return (optax.apply_updates(p, u), s), None
    return jax.lax.scan(step, (p, opt.init(p)), None, length=600)[0][0]

  f = functools.partial(apply, train(params))
  x, y = data(256, 1)
  assert float(jnp.mean(jnp.argmax(f(x), -1) == y)) >= 0.9
  return f, x, y


def test_apgd_never_weaker_than_pgd_with_the_same_budget(trained_mlp):
  f, x, y = trained_mlp
  acc = lambda adv: float(jnp.mean(jnp.argmax(f(adv), -1) == y))
  steps, restarts = 20, 2
  apgd = jax.jit(functools.partial(A.apgd, f, num_steps=steps, num_restarts=restarts))
  apgd_dlr = jax.jit(functools.partial(A.apgd, f, num_steps=steps, num_restarts=restarts, loss="dlr"))
  apgd_t = jax.jit(functools.partial(A.apgd_targeted, f, num_steps=steps, num_targets=3))
  pgd = jax.jit(functools.partial(A.pgd_restarts, f, num_steps=steps, num_restarts=restarts))
  gaps = []
  for eps in (0.05, 0.08, 0.1):
    key = jax.random.key(int(eps * 100))
    adv_ce, adv_t = apgd(x, y, eps=eps, rng=key), apgd_t(x, y, eps=eps, rng=key)
    _assert_valid(adv_ce, x, eps, "linf")
    _assert_valid(adv_t, x, eps, "linf")
    a_ce, a_t, a_dlr = acc(adv_ce), acc(adv_t), acc(apgd_dlr(x, y, eps=eps, rng=key))
    # PGD with the same iterations and restarts, at three fixed step sizes: APGD-CE beats the best of them.
    a_pgd = min(acc(pgd(x, y, eps=eps, step_size=eps * s, rng=key)) for s in (0.1, 0.25, 0.5))
    assert a_ce <= a_pgd and a_t <= a_pgd, (eps, a_ce, a_t, a_pgd)
    assert a_dlr <= a_pgd + 1.5 / len(y), (eps, a_dlr, a_pgd)  # DLR: a different loss, within one example
    assert a_ce < acc(x)  # not vacuous
    gaps.append(a_pgd - a_ce)
  assert max(gaps) > 0  # and strictly stronger somewhere


def test_apgd_eot_averages_draws(trained_mlp):
  f, x, y = trained_mlp
  x, y = x[:32], y[:32]
  key = jax.random.key(0)
  det = A.apgd(f, x, y, eps=0.05, num_steps=10, rng=key)
  # two identical draws: their mean is exact, so the algorithm is the deterministic one
  ignoring_key = A.apgd(lambda v, k: f(v), x, y, eps=0.05, num_steps=10, rng=key, eot_samples=2)
  np.testing.assert_allclose(ignoring_key, det, atol=1e-6)
  # a randomised model (Gaussian input noise per draw): EOT over 4 draws still breaks it
  noisy = lambda v, k: f(jnp.clip(v + 0.05 * jax.random.normal(k, v.shape), 0, 1))
  adv = jax.jit(functools.partial(A.apgd, noisy, num_steps=10, eot_samples=4))(x, y, eps=0.15, rng=key)
  _assert_valid(adv, x, 0.15, "linf")
  assert float(jnp.mean(jnp.argmax(f(adv), -1) == y)) < 0.5 * float(jnp.mean(jnp.argmax(f(x), -1) == y))


def test_apgd_sharded_batch_matches_unsharded():
  assert jax.device_count() == 4
  mesh = jax.make_mesh((4,), ("data",))
  sharding = NamedSharding(mesh, P("data"))
  f = _mlp(_random_mlp(0, 32, 5))
  x = jnp.asarray(np.random.RandomState(3).uniform(0, 1, (8, 4, 4, 2)), jnp.float32)
  y = jnp.asarray(np.arange(8) % 5, jnp.int32)
  fn = jax.jit(functools.partial(A.apgd, f, num_steps=4, loss="dlr", targeted=True, num_targets=2,
                                 num_restarts=2))
  key = jax.random.key(7)
  ref = fn(x, y, eps=0.1, rng=key)
  out = fn(jax.device_put(x, sharding), jax.device_put(y, sharding), eps=0.1, rng=key)
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-6)
  assert out.sharding.is_equivalent_to(sharding, out.ndim), out.sharding
  _assert_valid(ref, x, 0.1, "linf")
  compiled = fn._cache_size()
  _assert_valid(fn(x, y, eps=0.2, rng=key), x, 0.2, "linf")
  assert fn._cache_size() == compiled  # ε is traced: one compilation serves every ε

  adv, info = A.apgd(f, x, y, eps=0.1, num_steps=4, rng=key, return_info=True)
  np.testing.assert_array_equal(info["fooled"], jnp.argmax(f(adv), -1) != y)
  assert not np.any(info["zero_grad"])
  flat = lambda v: jnp.zeros((v.shape[0], 5)).at[:, 0].set(1.0)  # constant logits: zero gradient everywhere
  _, info = A.apgd(flat, x, jnp.zeros(8, jnp.int32), eps=0.1, num_steps=2, rng=key, return_info=True)
  assert np.all(info["zero_grad"]) and not np.any(info["fooled"])


# ------------------------------------------------------------------------------------------------------------
# policy hooks: frozen scanpath, BPDA / straight-through, steering
# ------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def glimpse():
  cfg = tiny_config("rsrnn")
  model = build_model(cfg.model, num_classes=10, mean=cfg.data.mean, std=cfg.data.std)
  x = jax.random.uniform(jax.random.key(0), (4, 32, 32, 1))
  variables = model.init({"params": jax.random.key(0), "fixation": jax.random.key(1)}, x, num_steps=2,
                         train=False)
  return model, variables, x


def test_frozen_own_scanpath_and_bpda_leave_the_forward_pass_unchanged(glimpse):
  model, variables, x = glimpse
  free = model.apply(variables, x, num_steps=3, train=False)
  st = model.apply(variables, x, num_steps=3, train=False, bpda_tau=0.5)
  for k in free:  # straight-through adds exactly zero in the forward pass
    np.testing.assert_array_equal(st[k], free[k], err_msg=k)
  path = O.model_scanpath(model, variables, x, num_steps=3)
  np.testing.assert_array_equal(path, free["fixations"])
  frozen = O.frozen_scanpath_logits_fn(model, variables, path, horizon="avg", attack_step=3)(x)
  # equal up to float rounding (the compiled graphs differ); same predictions
  np.testing.assert_allclose(frozen, free["logits"].mean(0), atol=1e-5)
  np.testing.assert_array_equal(jnp.argmax(frozen, -1), jnp.argmax(free["logits"].mean(0), -1))
  with pytest.raises(ValueError, match="scanpath must be"):
    O.frozen_scanpath_logits_fn(model, variables, path[:2], attack_step=3)
  key = jax.random.key(5)  # one EOT draw of sampled fixations (apgd's eot_samples interface)
  drawn = model.apply(variables, x, num_steps=3, train=False, sample_fixations=True, rngs={"fixation": key})
  np.testing.assert_array_equal(O.keyed_logits_fn(model, variables, attack_step=3)(x, key), drawn["logits"][2])
  with pytest.raises(ValueError, match="bpda_tau"):
    model.apply(variables, x, num_steps=2, train=False, bpda_tau=0.0)


def test_bpda_gradient_through_the_fixation_path(glimpse):
  model, variables, x = glimpse
  i = 0
  z = model.apply(variables, x, num_steps=2, train=False)["logits"][1, i]
  a, b = (int(c) for c in jnp.argsort(-z)[:2])
  # A tiny model where moving the fixation changes the class: shift the classifier bias so that example i's top
  # two classes at step 2 are 1e-3 apart (the bias does not touch the features or the fixations).
  params = jax.tree_util.tree_map(lambda v: v, variables)
  classifier = params["params"]["step"]["classifier"]
  classifier["bias"] = classifier["bias"].at[b].add(z[a] - z[b] - 1e-3)
  free = model.apply(params, x, num_steps=2, train=False)
  assert int(jnp.argmax(free["logits"][1, i])) == a

  @jax.jit
  def moved_class(second):
    forced = free["fixations"].at[1].set(second)
    moved = model.apply(params, x, num_steps=2, train=False, fixations=forced, fixation_mask=jnp.ones(2, bool))
    return jnp.argmax(moved["logits"][1, i])

  grid = [(u, v) for u in (-0.8, 0.0, 0.8) for v in (-0.8, 0.0, 0.8)]
  assert any(int(moved_class(jnp.asarray(fx, jnp.float32))) != a for fx in grid), "the class never changes"

  @functools.partial(jax.jit, static_argnums=1)
  def grads(images, tau):
    def outputs(v):
      out = model.apply(params, v, num_steps=2, train=False, bpda_tau=tau)
      return out["logits"][1, i, b] - out["logits"][1, i, a], out["fixations"][1, i].sum()
    return (jax.grad(lambda v: outputs(v)[0])(images), jax.grad(lambda v: outputs(v)[1])(images))

  (g_plain, g_fix_plain), (g_bpda, g_fix_bpda) = grads(x, None), grads(x, 0.5)
  assert float(jnp.abs(g_bpda - g_plain)[i].sum()) > 1e-6  # the fixation path contributes to the margin
  assert float(jnp.abs(g_fix_bpda[i]).sum()) > 0
  np.testing.assert_array_equal(g_fix_plain, 0.0)  # the default stays detached
  objective = O.bpda_logits_fn(model, params, tau=0.5, horizon="step", attack_step=2)
  np.testing.assert_array_equal(objective(x), free["logits"][1])


def test_straight_through_dorsal_gradient_is_the_expected_location():
  sampler = samplers.CropSampler(out_size=8, scales=(0.5,))
  module = dorsal.Dorsal(saliency_size=4, hidden=4)
  feats = jax.random.normal(jax.random.key(0), (2, 4, 4, 3))
  pooled, fix, ior = jnp.zeros((2, 5)), jnp.array([[0.1, -0.2], [0.5, 0.4]]), jnp.ones((2, 8, 8))
  params = module.init(jax.random.key(1), feats, pooled, fix, ior, sampler, sample=False)

  def next_fix(f, tau):
    return module.apply(params, f, pooled, fix, ior, sampler, sample=False, straight_through_tau=tau)[0]

  def expected(f, tau):
    _, _, _, maps = module.apply(params, f, pooled, fix, ior, sampler, sample=False)
    logits = jnp.log(maps["probs"].reshape(2, -1))  # log-softmax of the logits: same softmax at any τ
    w = jax.nn.softmax(logits / tau, axis=-1)
    return jnp.einsum("bc,bcd->bd", w, dorsal.cell_locations(sampler, fix, 4))

  np.testing.assert_array_equal(next_fix(feats, 0.3), next_fix(feats, None))
  g_st = jax.jit(jax.grad(lambda f: next_fix(f, 0.3).sum()))(feats)
  g_expected = jax.jit(jax.grad(lambda f: expected(f, 0.3).sum()))(feats)
  np.testing.assert_allclose(g_st, g_expected, rtol=1e-4, atol=1e-6)
  assert float(jnp.abs(g_st).sum()) > 0
  np.testing.assert_array_equal(jax.jit(jax.grad(lambda f: next_fix(f, None).sum()))(feats), 0.0)
  # the chosen fixation is the location of the chosen cell
  _, _, _, maps = module.apply(params, feats, pooled, fix, ior, sampler, sample=False)
  cell = jnp.argmax(maps["probs"].reshape(2, -1), -1)
  locs = dorsal.cell_locations(sampler, fix, 4)
  np.testing.assert_allclose(next_fix(feats, None), locs[jnp.arange(2), cell], atol=1e-6)
  np.testing.assert_array_equal(dorsal.nearest_cell(sampler, fix, locs[jnp.arange(2), cell], 4), cell)


def test_steering_objective_on_the_models_own_scanpath(glimpse):
  model, variables, x = glimpse
  free = model.apply(variables, x, num_steps=3, train=False)
  path = free["fixations"]
  probs = free["probs"][:2].reshape(2, x.shape[0], -1)
  np.testing.assert_array_equal(O.scanpath_cells(model, path), jnp.argmax(probs, -1))
  objective = O.steering_objective(model, variables, path, weight=2.0, horizon="step", attack_step=3)
  logits, steer = objective(x)
  np.testing.assert_array_equal(logits, free["logits"][2])
  np.testing.assert_allclose(steer, 2.0 * jnp.mean(jnp.log(probs.max(-1)), axis=0), rtol=1e-4)
  g = jax.jit(jax.grad(lambda v: objective(v)[1].sum()))(x)
  assert float(jnp.abs(g).sum()) > 0  # the image can steer the policy
