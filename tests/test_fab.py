"""FAB / FAB-T (issue 25, rsrnn_jax/attacks/fab.py): the projection onto a hyperplane ∩ box against a generic
solver, the minimal perturbation on linear models (closed-form distance to the decision boundary), targeted
mode, jit with a traced ε, argument checks, and the suite's entry in the adaptive profile's cascade."""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from rsrnn_jax import attacks as A
from rsrnn_jax.robustness import plan, profiles, registry

# ------------------------------------------------------------------------------------------------------------
# the projection
# ------------------------------------------------------------------------------------------------------------


def _reference_projection(t, w, b, norm):
  """The nearest point of {z: w·z = b} ∩ [0, 1]^d to t, by scipy (an LP for L∞, a QP for L2)."""
  d = len(t)
  if norm == "linf":  # variables (δ, λ): min λ, −λ ≤ δ ≤ λ, w·δ = b − w·t, −t ≤ δ ≤ 1 − t
    a_ub = np.block([[np.eye(d), -np.ones((d, 1))], [-np.eye(d), -np.ones((d, 1))]])
    res = optimize.linprog(np.r_[np.zeros(d), 1.0], A_ub=a_ub, b_ub=np.zeros(2 * d),
                           A_eq=np.r_[w, 0.0][None], b_eq=[b - w @ t],
                           bounds=[(-ti, 1 - ti) for ti in t] + [(0, None)])
    return res.x[-1]
  res = optimize.minimize(lambda v: v @ v, np.zeros(d), jac=lambda v: 2 * v, method="SLSQP",
                          bounds=[(-ti, 1 - ti) for ti in t],
                          constraints=[{"type": "eq", "fun": lambda v: w @ (t + v) - b, "jac": lambda v: w}],
                          options={"ftol": 1e-12, "maxiter": 500})
  return np.sqrt(res.fun)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_is_the_nearest_point_of_hyperplane_and_box(norm):
  r = np.random.RandomState(0)
  n, d = 12, 7
  t = r.uniform(0, 1, (n, d))
  t[:, 0] = 0.0  # points on the box's faces
  w = r.randn(n, d)
  w[:, 1] = 0.0  # a coordinate the hyperplane does not depend on
  b = np.sum(w * r.uniform(0, 1, (n, d)), 1)  # the hyperplane meets the box
  delta = np.asarray(A.project_hyperplane(jnp.asarray(t, jnp.float32), jnp.asarray(w, jnp.float32),
                                          jnp.asarray(b, jnp.float32), norm=norm), np.float64)
  z = t + delta
  assert np.all(z >= -1e-6) and np.all(z <= 1 + 1e-6)
  np.testing.assert_allclose(np.sum(w * z, 1), b, atol=1e-4)
  np.testing.assert_array_equal(delta[:, 1], 0.0)
  size = np.abs(delta).max(1) if norm == "linf" else np.linalg.norm(delta, axis=1)
  ref = np.array([_reference_projection(t[i], w[i], b[i], norm) for i in range(n)])
  np.testing.assert_allclose(size, ref, rtol=1e-3, atol=1e-5)
  # a hyperplane beyond the box: the box corner that comes closest (every coordinate at its bound)
  far = np.asarray(A.project_hyperplane(jnp.asarray(t[:1], jnp.float32), jnp.asarray(np.abs(w[:1]), jnp.float32),
                                        jnp.asarray([-1.0], jnp.float32), norm=norm))
  np.testing.assert_allclose(t[0] + far[0], np.where(w[0] != 0, 0.0, t[0]), atol=1e-6)


def _capped_root_by_sorting(a, q, r):
  """The root of Σ a_i·min(s, q_i) = r in float64, walking the sorted breakpoints (the exact reference)."""
  order = np.argsort(q)
  qs, as_ = q[order], a[order]
  saturated = np.cumsum(as_ * qs) - as_ * qs
  free = np.cumsum(as_[::-1])[::-1]
  k = min(int(np.sum(saturated + qs * free <= r)), len(q) - 1)
  return max((r - saturated[k]) / free[k], 0.0)


@pytest.mark.parametrize("case,d", [("pixels", 5000), ("l2_wide", 5000), ("l2_wide", 6)])
def test_the_capped_root_matches_an_exact_sort_of_the_breakpoints(case, d):
  """_solve_capped bisects instead of sorting (a sort of 168² breakpoints was most of a FAB step on the CPU):
  its root agrees with the sorted-breakpoint solution in float64, with many tied breakpoints (8-bit pixels'
  rooms, as in an L∞ projection of an image), breakpoints over 10 orders of magnitude (L2: room / |w|), and
  few breakpoints, each of which moves the root (a bracket left too wide shows there)."""
  fab_lib = importlib.import_module("rsrnn_jax.attacks.fab")  # the module (the package exports the function)
  r = np.random.RandomState(1)
  n = 16
  if case == "pixels":
    q = r.randint(0, 256, (n, d)) / 255.0
    a = np.abs(r.randn(n, d))
  else:
    w = r.randn(n, d) * 10.0 ** r.uniform(-8, 2, (n, d))
    a, q = w ** 2, r.uniform(0, 1, (n, d)) / np.abs(w)
  total = np.sum(a * q, 1)
  fraction = np.r_[0.0, 1e-9, 1e-4, r.uniform(0, 1, n - 4), 1 - 1e-3]  # nearer Σ a q float32 cannot resolve r
  target = total * fraction
  got = np.asarray(fab_lib._solve_capped(jnp.asarray(a, jnp.float32), jnp.asarray(q, jnp.float32),
                                         jnp.asarray(target, jnp.float32)), np.float64)
  want = np.array([_capped_root_by_sorting(a[i], q[i], target[i]) for i in range(n)])
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-12)
  # the root solves its equation to float32 precision
  f = np.sum(a * np.minimum(got[:, None], q), 1)
  np.testing.assert_allclose(f, target, rtol=1e-4, atol=1e-6 * total.max())


# ------------------------------------------------------------------------------------------------------------
# the minimal perturbation on linear models
# ------------------------------------------------------------------------------------------------------------

def _linear(seed=0, d=32, k=4, n=8):
  r = np.random.RandomState(seed)
  w, b = r.randn(d, k).astype(np.float32), r.randn(k).astype(np.float32)
  x = r.uniform(0.4, 0.6, (n, d)).astype(np.float32)  # interior: the nearest boundary point lies in the box
  f = lambda u: u @ jnp.asarray(w) + jnp.asarray(b)
  return f, w, x, np.argmax(x @ w + b, -1)


def _boundary_distance(w, x, y, f, norm, classes=None):
  """Closed form: min over classes c ≠ y of |z_c − z_y| / ‖w_c − w_y‖_* (dual norm: L1 for L∞, L2 for L2)."""
  z = np.asarray(f(x))
  out = []
  for i in range(len(x)):
    v = (w - w[:, [y[i]]]).T
    dual = np.abs(v).sum(1) if norm == "linf" else np.linalg.norm(v, axis=1)
    dist = np.where(np.arange(w.shape[1]) == y[i], np.inf, (z[i, y[i]] - z[i]) / np.maximum(dual, 1e-12))
    out.append(dist.min() if classes is None else dist[classes[i]])
  return np.array(out)


def _norm(v, norm):
  v = np.asarray(v, np.float64).reshape(len(v), -1)
  return np.abs(v).max(1) if norm == "linf" else np.linalg.norm(v, axis=1)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_finds_the_closest_boundary_point_of_a_linear_model(norm):
  f, w, x, y = _linear()
  star = _boundary_distance(w, x, y, f, norm)
  fab = jax.jit(lambda u, e: A.fab(f, u, jnp.asarray(y), eps=e, norm=norm, return_info=True))
  adv, info = fab(x, 1.0)
  dist = np.asarray(info["distance"])
  # FAB's estimate of the minimal perturbation: never below the true one, within 1% of it (100 iterations)
  assert np.all(dist >= star * (1 - 1e-4)) and np.all(dist <= star * 1.01), (dist / star)
  assert np.all(np.asarray(info["fooled"])) and np.all(np.argmax(np.asarray(f(adv)), -1) != y)
  np.testing.assert_allclose(_norm(adv - x, norm), dist, rtol=1e-5)
  # ε between the distances of the examples: a point counts only inside the ε-ball, else the clean image
  eps = float(np.median(star))
  adv, info = fab(x, eps)
  inside = dist <= eps
  assert 0 < inside.sum() < len(x)
  np.testing.assert_array_equal(np.asarray(info["fooled"]), inside)
  np.testing.assert_array_equal(np.asarray(adv)[~inside], x[~inside])
  assert np.all(_norm(np.asarray(adv) - x, norm) <= eps + 1e-6)
  # per-example ε (traced): the same answers
  _, again = fab(x, jnp.full((len(x),), eps))
  np.testing.assert_array_equal(np.asarray(again["fooled"]), inside)


def test_fab_t_attacks_its_targets_in_rank_order():
  # Label 0. Class 1 ranks first (logit −0.1) but its boundary is far (x₀ = 0.7: L∞ distance 0.2); class 2
  # ranks second (logit −1) and its boundary is near (x₁ = 0.55: 0.05).
  def f(u):
    return jnp.stack([jnp.zeros(u.shape[0]), -0.1 + 0.5 * (u[:, 0] - 0.5), -1.0 + 20.0 * (u[:, 1] - 0.5)], -1)
  x, y = jnp.full((2, 2), 0.5), jnp.zeros(2, jnp.int32)
  for targets, want, cls in ((1, 0.2, 1), (2, 0.05, 2)):
    adv, info = A.fab(f, x, y, eps=0.3, targeted=True, num_targets=targets, return_info=True)
    np.testing.assert_allclose(np.asarray(info["distance"]), want, rtol=0.01)
    np.testing.assert_array_equal(np.argmax(np.asarray(f(adv)), -1), cls)
  _, info = A.fab(f, x, y, eps=0.3, targeted=True, target=jnp.array([2, 1]), return_info=True)  # given targets
  np.testing.assert_allclose(np.asarray(info["distance"]), [0.05, 0.2], rtol=0.01)
  _, info = A.fab(f, x, y, eps=0.3, return_info=True)  # untargeted: the nearest boundary
  np.testing.assert_allclose(np.asarray(info["distance"]), 0.05, rtol=0.01)


def test_fab_restarts_and_examples_misclassified_clean():
  f, w, x, y = _linear(seed=1, n=6)
  y = y.copy()
  y[0] = (y[0] + 1) % 4  # misclassified clean: kept as is, distance 0
  adv, info = A.fab(f, x, jnp.asarray(y), eps=0.5, norm="l2", num_restarts=2, num_steps=20,
                    rng=jax.random.key(0), return_info=True)
  np.testing.assert_array_equal(np.asarray(adv)[0], x[0])
  assert float(info["distance"][0]) == 0.0 and bool(info["fooled"][0])
  star = _boundary_distance(w, x, y, f, "l2")
  assert np.all(np.asarray(info["distance"])[1:] <= star[1:] * 1.05)


@pytest.mark.parametrize("kwargs, match", [
    (dict(norm="l1"), "unknown norm"), (dict(num_steps=0), "num_steps must be >= 1"),
    (dict(num_targets=0, targeted=True), "num_targets must be >= 1"), (dict(eps=-0.1), "eps must be >= 0"),
    (dict(num_restarts=2), "needs an explicit PRNG key"), (dict(num_restarts=1.5), "num_restarts must be")])
def test_fab_rejects_bad_arguments(kwargs, match):
  f, _, x, y = _linear(n=2)
  with pytest.raises(ValueError, match=match):
    A.fab(f, x, jnp.asarray(y), **{"eps": 0.1, **kwargs})


# ------------------------------------------------------------------------------------------------------------
# the suite: FAB-T in the adaptive profile's cascade
# ------------------------------------------------------------------------------------------------------------

def test_fab_t_joins_the_adaptive_cascade_after_apgd_t():
  from configs import demo
  c = demo.get_config("attack=adaptive")
  p = plan.make_plan(c, 5, has_steps=True, has_fixations=True)
  names = list(p.untargeted)
  assert names.index("apgd_t_step") + 1 == names.index("fab_t_step") < names.index("square_step")
  opts = p.untargeted["fab_t_step"].opts
  assert opts == {"num_iterations": c.attack.num_iterations, "num_restarts": 1, "num_targets": 9}
  c.attack.fab.num_iterations = 7  # its own budget (the reproduction's adaptive_fab_iterations sets it)
  assert plan.make_plan(c, 5, has_steps=True, has_fixations=True).untargeted["fab_t_step"].opts["num_iterations"] == 7
  assert profiles.profile_overrides(c.attack)["fab.num_iterations"] == {"config": 7, "profile": 0}
  c.attack.fab.targets = 0
  with pytest.raises(ValueError, match="config.attack.fab.targets must be >= 1"):
    profiles.validate_attack_config(c)
  assert registry.get("fab").title == "FAB" and registry.title("fab_t_step") == "FAB-T on step k"
  f, _, x, y = _linear(n=4)
  victim = type("Victim", (), {"logits_fn": lambda self: f})()
  adv = registry.get("fab_t").run(victim, x, jnp.asarray(y), eps=1.0, rng=jax.random.key(0), norm="linf",
                                  targeted=False, num_iterations=20, num_restarts=1, num_targets=3)
  assert np.all(np.argmax(np.asarray(f(adv)), -1) != y)
