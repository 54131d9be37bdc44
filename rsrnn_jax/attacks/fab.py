"""FAB (Croce & Hein, ICML 2020, "Minimally distorted adversarial examples with a fast adaptive boundary
attack"): AutoAttack's minimum-norm attack in JAX, untargeted (FAB) and targeted (FAB-T), L∞ and L2.

FAB looks for the adversarial point closest to x. At the current point x¹ it linearises the decision boundary
between the true class y and every other class c: the hyperplane π_c = {z : f_c(x¹) − f_y(x¹) + ∇(f_c −
f_y)(x¹)·(z − x¹) = 0}, and picks the nearest one in the attacked norm, |f_c − f_y| / ‖∇(f_c − f_y)‖_* (‖·‖_*
the dual norm: L1 for L∞, L2 for L2). FAB-T only uses the boundary toward one target class t. One iteration:

  d₁ = P(x¹) − x¹,  d₀ = P(x) − x     (P: the projection onto π ∩ [0, 1]^d in the attacked norm, below)
  α  = min(‖d₁‖ / (‖d₁‖ + ‖d₀‖), α_max)
  x¹ ← clip((1 − α)(x¹ + η·d₁) + α(x + η·d₀), 0, 1)

a step past the boundary (overshoot η) that is biased toward the original image x (α). Whenever x¹ fools the
model (argmax ≠ y) it is kept if it is the closest adversarial point so far, and x¹ moves back toward x:
x¹ ← x + β(x¹ − x). AutoAttack's parameters: 100 iterations, α_max = 0.1, η = 1.05, β = 0.9; the first run
starts at x, every further restart at x + ε/2·t/‖t‖ (t uniform in [−1, 1]^d for L∞, Gaussian for L2). FAB-T
runs once toward each of the ``num_targets`` classes ranked highest by the clean logits after the label.

Projection onto π ∩ box (:func:`project_hyperplane`). Flip the sign of π so that w·x¹ ≥ b; to reach π the
point must lower w·z by r = w·x¹ − b, moving each coordinate toward the bound that lowers it (0 where w_i > 0,
1 where w_i < 0; room p_i). L∞: d_i(λ) = ∓min(λ, p_i), which lowers w·z by Σ |w_i|·min(λ, p_i); L2: d_i(α) =
−w_i·min(α, p_i/|w_i|), which lowers it by Σ w_i²·min(α, p_i/|w_i|). Both are one problem: the smallest s ≥ 0
with Σ a_i·min(s, q_i) = r, a piecewise-linear increasing function of s whose breakpoints are the q_i
(:func:`_solve_capped`: a bisection finds the breakpoints below the root, then the root is exact). When π
misses the box (r ≥ Σ a_i·q_i) every coordinate moves to its bound (the box point nearest π), as in AutoAttack
(autoattack/fab_projections.py, which also bisects).

Departures from AutoAttack, neither changing which examples are broken: every example of the batch is
attacked by every run (AutoAttack re-packs the still-robust ones; a run cannot make a broken example robust
again), and across runs the closest adversarial point wins (AutoAttack keeps the first one inside the ε-ball).
Examples misclassified clean keep their clean image (distance 0), as in AutoAttack.

``logits_fn(images) -> [B, K]``; the runs are one ``lax.fori_loop`` around the ``lax.fori_loop`` of iterations;
untargeted FAB differentiates all K logits per iteration (K backward passes, vmapped), FAB-T one difference.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from rsrnn_jax.attacks import arguments, loops
from rsrnn_jax.attacks.apgd import ranked_targets

FAB_DEFAULTS = dict(num_steps=100, alpha_max=0.1, eta=1.05, beta=0.9)  # AutoAttack's
_ZERO_WEIGHT_L2 = 1e-8   # L2: coordinates with |w_i| below this do not move (AutoAttack's threshold)
_MIN_STEP = 1e-8         # ‖d‖ floor in the bias α (AutoAttack's)
_BISECTIONS = 40         # halvings of log(hi / lo) in _solve_capped; float32 spans 2⁻¹²⁶..2¹²⁸: ends within 1 + 2e-10


def _flat_norm(v, norm):
  """Per-row norm of [N, D]: max |v| (linf) or ‖v‖₂ (l2)."""
  return jnp.max(jnp.abs(v), axis=-1) if norm == "linf" else jnp.sqrt(jnp.sum(jnp.square(v), axis=-1))


def _solve_capped(a, q, r):
  """Per row, the smallest s ≥ 0 with f(s) = Σ_i a_i·min(s, q_i) = r (a, q ≥ 0 [N, D]; 0 ≤ r < Σ a_i q_i [N]).

  f is piecewise linear and increasing, with breakpoints at the q_i. Between two breakpoints it is
  A + s·W, A = Σ_{q_i ≤ s} a_i q_i (the saturated coordinates), W = Σ_{q_i > s} a_i, so the root is
  s = (r − A) / W once the saturated set is known. That set is found by bisection on s, geometric (s spans
  orders of magnitude in L2, where q_i = room_i / |w_i|), from lo = r / Σ a_i (f(lo) ≤ lo·Σ a_i = r) and
  hi = max q_i (f(hi) = Σ a_i q_i > r): after ``_BISECTIONS`` halvings of log(hi / lo) the bracket is narrower
  than float32 resolves, so the saturated set {q_i ≤ lo} is the one an exact sort of the breakpoints gives
  (up to breakpoints within rounding of the root, where either choice gives the same s to rounding). Each
  halving is one pass over the row: no sort (XLA sorts slowly on the CPU: a sort of the breakpoints took 85% of
  a FAB iteration on 168² images), and AutoAttack's own projection bisects too."""
  tiny = jnp.finfo(q.dtype).tiny
  lo = r / jnp.maximum(jnp.sum(a, axis=-1), tiny)
  hi = jnp.max(q, axis=-1)
  f = lambda s: jnp.sum(a * jnp.minimum(s[:, None], q), axis=-1)

  def halve(_, bracket):
    lo, hi = bracket
    mid = jnp.sqrt(lo * hi)
    below = f(mid) <= r
    return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

  lo, _ = jax.lax.fori_loop(0, _BISECTIONS, halve, (lo, hi))
  saturated = q <= lo[:, None]
  a_k = jnp.sum(jnp.where(saturated, a * q, 0.0), axis=-1)
  w_k = jnp.sum(jnp.where(saturated, 0.0, a), axis=-1)
  return jnp.maximum((r - a_k) / jnp.where(w_k > 0, w_k, 1.0), 0.0)


def project_hyperplane(t, w, b, *, norm: str):
  """δ [N, D] with t + δ the point of {z : w·z = b} ∩ [0, 1]^D nearest t in ``norm`` (module docstring), or,
  if the hyperplane misses the box, the box corner that lowers |w·z − b| most. t, w [N, D], b [N]."""
  arguments.check_norm(norm)
  sign = jnp.where(jnp.sum(w * t, axis=-1) >= b, 1.0, -1.0)[:, None]
  w = w * sign
  r = jnp.sum(w * t, axis=-1) - b * sign[:, 0]                             # ≥ 0: how much w·z must drop
  moves = w != 0 if norm == "linf" else jnp.abs(w) >= _ZERO_WEIGHT_L2
  room = jnp.where(w > 0, t, 1.0 - t)                                       # distance to the lowering bound
  direction = jnp.where(w > 0, -1.0, 1.0)
  if norm == "linf":
    a, q = jnp.abs(w) * moves, room
  else:
    a, q = jnp.square(w) * moves, jnp.where(moves, room / jnp.where(moves, jnp.abs(w), 1.0), 0.0)
  reachable = r < jnp.sum(a * q, axis=-1)
  s = _solve_capped(a, q, jnp.where(reachable, r, 0.0))[:, None]
  step = jnp.minimum(s, q) if norm == "linf" else jnp.abs(w) * jnp.minimum(s, q)
  full = room  # π misses the box: every coordinate to its bound
  return jnp.where(moves, direction * jnp.where(reachable[:, None], step, full), 0.0)


def _boundaries(logits_fn, x, labels, target):
  """Per class c the boundary value f_c − f_y and its gradient at x: ([B, C], [C, B, ...]); C = K classes
  (untargeted; the label's own column is +inf, never chosen) or 1 (the target)."""
  logits, vjp = jax.vjp(logits_fn, x)
  k = logits.shape[-1]
  own = jax.nn.one_hot(labels, k, dtype=logits.dtype)
  if target is None:
    cot = jnp.eye(k, dtype=logits.dtype)[:, None, :] - own[None]            # [K, B, K]
  else:
    cot = (jax.nn.one_hot(target, k, dtype=logits.dtype) - own)[None]       # [1, B, K]
  grads = jax.vmap(lambda c: vjp(c)[0])(cot)
  values = jnp.einsum("cbk,bk->bc", cot, logits).astype(jnp.float32)
  if target is None:
    values = jnp.where(own > 0, jnp.inf, values)
  return values, grads


def _step(logits_fn, x0, x1, labels, target, norm, alpha_max, eta):
  """One FAB step from x1 (module docstring): the nearest linearised boundary, projected from x1 and x0."""
  batch = x0.shape[0]
  values, grads = _boundaries(logits_fn, x1, labels, target)
  g = grads.reshape(grads.shape[0], batch, -1).astype(jnp.float32)          # [C, B, D]
  dual = jnp.sum(jnp.abs(g), -1) if norm == "linf" else jnp.sqrt(jnp.sum(jnp.square(g), -1))
  nearest = jnp.argmin(jnp.abs(values) / (dual.T + 1e-12), axis=-1)          # [B]
  w = jnp.take_along_axis(jnp.moveaxis(g, 0, 1), nearest[:, None, None], 1)[:, 0]   # [B, D]
  value = jnp.take_along_axis(values, nearest[:, None], 1)[:, 0]
  flat1, flat0 = x1.reshape(batch, -1), x0.reshape(batch, -1)
  b = jnp.sum(w * flat1, -1) - value                                        # π: w·z = b
  d = project_hyperplane(jnp.concatenate([flat1, flat0]), jnp.concatenate([w, w]), jnp.concatenate([b, b]),
                         norm=norm)
  d1, d0 = d[:batch], d[batch:]
  a1, a0 = jnp.maximum(_flat_norm(d1, norm), _MIN_STEP), jnp.maximum(_flat_norm(d0, norm), _MIN_STEP)
  alpha = jnp.clip(a1 / (a1 + a0), 0.0, alpha_max)[:, None]
  new = jnp.clip((flat1 + eta * d1) * (1 - alpha) + (flat0 + eta * d0) * alpha, 0.0, 1.0)
  return new.reshape(x1.shape).astype(x1.dtype)


def fab_run(logits_fn, images, labels, x_init, *, norm: str, target=None, num_steps: int = 100,
            alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9):
  """One FAB run from ``x_init`` → (the closest adversarial point found [B, ...] (the clean image if none),
  its distance to ``images`` [B] (+inf if none)). ``target`` [B]: FAB-T toward it; None: untargeted."""
  x0 = jnp.asarray(images)
  batch = x0.shape[0]
  pick = lambda m, a, b: jnp.where(m.reshape((-1,) + (1,) * (x0.ndim - 1)), a, b)

  def body(_, s):
    x1, best, dist = s
    x1 = _step(logits_fn, x0, x1, labels, target, norm, alpha_max, eta)
    fooled = jnp.argmax(logits_fn(x1), axis=-1) != labels
    t = _flat_norm((x1 - x0).reshape(batch, -1).astype(jnp.float32), norm)
    closer = fooled & (t < dist)
    return (pick(fooled, x0 + (x1 - x0) * beta, x1), pick(closer, x1, best), jnp.where(closer, t, dist))

  init = (jnp.asarray(x_init, x0.dtype), x0, jnp.full((batch,), jnp.inf, jnp.float32))
  _, best, dist = loops.iterate(num_steps, body, init)
  return best, dist


def _start(rng, x, eps_b, norm):
  """AutoAttack's FAB restart: x + ε/2 · t/‖t‖, clipped to [0, 1]."""
  if norm == "linf":
    t = jax.random.uniform(rng, x.shape, x.dtype, -1.0, 1.0)
  else:
    t = jax.random.normal(rng, x.shape, x.dtype)
  size = _flat_norm(t.reshape(x.shape[0], -1), norm).reshape((-1,) + (1,) * (x.ndim - 1))
  return jnp.clip(x + 0.5 * eps_b * t / size, 0.0, 1.0)


def fab(logits_fn, images, labels, *, eps, norm: str = "linf", targeted: bool = False, target=None,
        num_targets: int = 9, num_restarts: int = 1, num_steps: int = 100, alpha_max: float = 0.1,
        eta: float = 1.05, beta: float = 0.9, rng=None, return_info: bool = False):
  """FAB / FAB-T (module docstring) → adversarial images [B, ...]: per example the closest adversarial point
  found if it lies within ``eps`` of the image, else the clean image.

  labels: the true classes [B]. eps: scalar or [B]; it sets the radius of the restarts' random starts and which
  points count (AutoAttack's rule). ``targeted=True``: FAB-T, one run per target and restart: toward ``target``
  [B], or — ``target=None`` — each of the ``num_targets`` classes ranked highest by the clean logits after the
  label (at most K − 1); else ``num_restarts`` runs.
  rng: the restarts' random starts (needed only when ``num_restarts`` > 1). return_info: also return
  ``{"fooled": [B], "distance": [B]}`` — the returned image fools the model; the norm of the closest adversarial
  point found, inside the ε-ball or not (+inf if none; 0 for an image misclassified clean): FAB's estimate of
  the minimal adversarial perturbation. Static: the counts; ``eps`` may be traced.
  """
  arguments.check_norm(norm)
  for name, value, minimum in (("num_steps", num_steps, 1), ("num_restarts", num_restarts, 1),
                               ("num_targets", num_targets, 1)):
    arguments.check_count(name, value, minimum)
  arguments.check_nonneg("eps", eps)
  if num_restarts > 1 and rng is None:
    raise ValueError("fab with num_restarts > 1 needs an explicit PRNG key for the random starts: pass rng=")
  x = jnp.asarray(images)
  labels = jnp.asarray(labels)
  arguments.check_images_labels(x, labels)
  eps_b = arguments.per_example(eps, x)
  clean_logits = logits_fn(x)
  clean_fooled = jnp.argmax(clean_logits, axis=-1) != labels
  if target is not None and not targeted:
    raise ValueError("target= is only used with targeted=True")
  targets = ranked_targets(clean_logits, labels, num_targets) if targeted and target is None else None
  if target is not None:
    targets = jnp.asarray(target, labels.dtype).reshape(-1, 1)
    if targets.shape[0] != x.shape[0]:
      raise ValueError(f"target must have shape [{x.shape[0]}], got {jnp.shape(target)}")
  runs = (targets.shape[1] if targeted else 1) * num_restarts

  def start_of(i):  # the first run (of each target) starts at the image, every further restart at random
    if num_restarts == 1:
      return x
    return jnp.where(i % num_restarts > 0, _start(jax.random.fold_in(rng, i), x, eps_b, norm), x)

  def body(i, carry):
    best, dist = carry
    start = start_of(i)
    target = None if targets is None else jax.lax.dynamic_index_in_dim(targets, i // num_restarts, 1, False)
    found, d = fab_run(logits_fn, x, labels, start, norm=norm, target=target, num_steps=num_steps,
                       alpha_max=alpha_max, eta=eta, beta=beta)
    closer = d < dist
    return jnp.where(closer.reshape((-1,) + (1,) * (x.ndim - 1)), found, best), jnp.where(closer, d, dist)

  init = (x, jnp.where(clean_fooled, 0.0, jnp.inf).astype(jnp.float32))
  best, dist = jax.lax.fori_loop(0, runs, body, init)
  fooled = dist <= eps_b.reshape(-1)
  adv = jax.lax.stop_gradient(jnp.where(fooled.reshape((-1,) + (1,) * (x.ndim - 1)), best, x)).astype(x.dtype)
  return (adv, {"fooled": fooled, "distance": dist}) if return_info else adv
