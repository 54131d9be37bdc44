"""APGD (Croce & Hein, ICML 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks"): AutoAttack's Auto-PGD in JAX, untargeted (CE or DLR) and targeted (APGD-T).

One run from x⁰ (N = ``num_steps`` iterations, η = step size, α = 0.75, ρ = 0.75):

  x⁰ = x + ε·t/‖t‖ (t uniform in [−1, 1] for L∞, Gaussian for L2; the L∞ start lies on the ball's surface),
  η⁰ = 2ε,   z^{k+1} = Π(x^k + η·s(∇f(x^k))),   s = sign (L∞) or g/‖g‖₂ (L2),
  x^{k+1} = Π(x^k + α_k·(z^{k+1} − x^k) + (1 − α_k)·(x^k − x^{k−1})),   α_0 = 1, α_k = α otherwise;
  the best point (highest loss), its gradient and whether it fooled the model are kept, and so is the last
  misclassified iterate.

At the checkpoints w_j (:func:`apgd_checkpoints`) η is halved and the iterate restarts from the best point
(with the best point's gradient), per example, when

  (1) the loss rose in at most ρ·(w_j − w_{j−1}) of the steps since the last checkpoint, or
  (2) η was not halved at the last checkpoint and the best loss has not improved since it.

This follows AutoAttack's code (autoattack/autopgd_base.py) rather than the paper where the two differ: the
checkpoint intervals are integers (first ⌊0.22·N⌋, each next one shorter by ⌊0.03·N⌋, at least ⌊0.06·N⌋, all
at least 1), and the first comparison of condition (1) is against 0, not f(x⁰) (AutoAttack's ``loss_steps[-1]``
is still zero there).

A run's result per example is its highest-loss point if that point fooled the model, else its last
misclassified iterate, else its highest-loss point. AutoAttack keeps the last misclassified iterate; we prefer
the highest-loss point among the fooling ones because an objective over several steps (the mean logits of
steps 1..T) is judged step by step, and its last fooling iterate can sit just past the boundary of the mean
while later steps are still right (demo checkpoint, ε = 0.03, first 100 test images, APGD-CE on the mean of
steps 1..8, 100 iterations, two start keys: steps 5-8 robust 13/14/14/14 and 14/15/14/16% with AutoAttack's
rule, 13/13/13/13 and 12/13/13/13% with this one). Over runs (``num_restarts`` random starts, times
``num_targets`` target classes for APGD-T) the fooling run with the highest best loss wins, else the highest
loss (``core.keep_stronger``). An example misclassified clean is attacked too and keeps its clean image only
when no run fooled the model (AutoAttack returns the clean image at once): under an objective over several
steps "misclassified" means wrong on the mean logits while single steps can still be right (an image right
at step 8 only, say); AutoAttack's shortcut left 4 of those 100 images robust at step 8. Success is always
"argmax ≠ true label", targeted or not. The runs are one ``lax.fori_loop`` around the ``lax.fori_loop`` of
iterations; all state is per example, so a batch sharded over a mesh's batch axis stays sharded.

Objective interface:

* ``logits_fn(images) -> logits [B, K]``, or ``-> (logits, extra [B])``: ``extra`` is added to the loss the
  attack ascends (e.g. a steering term, :func:`rsrnn_jax.attacks.objectives.steering_objective`); success and
  the clean prediction use the logits alone.
* EOT (stochastic models, e.g. sampled fixations): with ``eot_samples=n`` the function is called as
  ``logits_fn(images, key)`` with n fresh keys per evaluated point; the attack ascends the mean of the n
  per-draw losses (its gradient is the mean gradient), keeps the point with the best mean loss, and judges
  success by the argmax of the mean logits. Keys derive from ``rng`` only.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rsrnn_jax.attacks import arguments, core, loops

APGD_LOSSES = ("ce", "dlr")
_ALPHA = 0.75      # momentum
_RHO = 0.75        # condition (1): the loss rose in at most ρ of the steps
_NORMALIZE_EPS = 1e-12


def apgd_checkpoints(num_steps: int) -> tuple[int, ...]:
  """Iteration counts after which APGD checks its step size (AutoAttack's integer schedule).

  The first interval is max(⌊0.22·N⌋, 1); each next one is shorter by max(⌊0.03·N⌋, 1), down to
  max(⌊0.06·N⌋, 1). N = 100 gives (22, 41, 57, 70, 80, 87, 93, 99), the paper's p_j·N.
  """
  arguments.check_count("num_steps", num_steps, 0)
  interval = max(int(0.22 * num_steps), 1)
  shortest = max(int(0.06 * num_steps), 1)
  shrink = max(int(0.03 * num_steps), 1)
  out, t = [], interval
  while t <= num_steps:
    out.append(t)
    interval = max(interval - shrink, shortest)
    t += interval
  return tuple(out)


def _schedule_arrays(num_steps):
  """Per iteration i: whether a checkpoint follows it, and ρ·(its window length) (0 elsewhere)."""
  n = max(num_steps, 1)
  is_check, threshold = np.zeros(n, bool), np.zeros(n, np.float32)
  previous = 0
  for t in apgd_checkpoints(num_steps):
    is_check[t - 1], threshold[t - 1], previous = True, (t - previous) * _RHO, t
  return jnp.asarray(is_check), jnp.asarray(threshold)


def _per_example_norm(v, norm):
  axes = tuple(range(1, v.ndim))
  if norm == "linf":
    return jnp.max(jnp.abs(v), axis=axes, keepdims=True)
  return jnp.sqrt(jnp.sum(jnp.square(v), axis=axes, keepdims=True))


def _start(rng, x, eps_b, norm):
  """AutoAttack's random start x + ε·t/‖t‖ clipped to [0, 1]."""
  if norm == "linf":
    t = jax.random.uniform(rng, x.shape, x.dtype, -1.0, 1.0)
  else:
    t = jax.random.normal(rng, x.shape, x.dtype)
  return jnp.clip(x + eps_b * t / (_per_example_norm(t, norm) + _NORMALIZE_EPS), 0.0, 1.0)


def _project(v, x, eps_b, norm):
  if norm == "linf":  # AutoAttack's form: clip to [x − ε, x + ε], then to [0, 1] (exact, a box)
    return jnp.clip(jnp.clip(v, x - eps_b, x + eps_b), 0.0, 1.0)
  return core.ball_project(v, x, eps_b, norm)


def _direction(grad, norm):
  if norm == "linf":
    return jnp.sign(grad)
  return grad / (_per_example_norm(grad, norm) + _NORMALIZE_EPS)


def make_evaluator(logits_fn, labels, target, loss, eot_samples):
  """The objective of a run: ``evaluate(x, keys) -> (loss [B], fooled [B], gradient)`` and
  ``logits(x, keys) -> logits [B, K]``, averaged over the EOT draws of ``keys`` (None when ``eot_samples`` is
  None). loss: the attack loss toward ``labels`` (untargeted) or ``target`` (targeted, if given), plus the
  objective's extra term; fooled: argmax of the (mean) logits ≠ labels."""
  if target is None:
    loss_of = lambda z: core.attack_loss(z, labels, loss=loss)
  else:
    extra_kw = {"true_labels": labels} if loss == "dlr" else {}
    loss_of = lambda z: core.attack_loss(z, target, loss=loss, targeted=True, **extra_kw)

  def draw(x, key):
    out = logits_fn(x) if eot_samples is None else logits_fn(x, key)
    logits, extra = out if isinstance(out, tuple) else (out, None)
    value = loss_of(logits)
    return (value if extra is None else value + extra), logits.astype(jnp.float32)

  def mean_over_draws(x, keys):
    if eot_samples is None:
      return draw(x, None)
    values, logits = jax.vmap(draw, in_axes=(None, 0))(x, keys)
    return jnp.mean(values, axis=0), jnp.mean(logits, axis=0)

  def total(x, keys):
    value, logits = mean_over_draws(x, keys)
    return jnp.sum(value), (value, logits)  # a sum: each example's gradient is its own

  grad_fn = jax.grad(total, has_aux=True)

  def evaluate(x, keys):
    grad, (value, logits) = grad_fn(x, keys)
    return value, jnp.argmax(logits, axis=-1) != labels, grad

  return evaluate, lambda x, keys: mean_over_draws(x, keys)[1]


def _draw_keys(rng, index, eot_samples):
  if eot_samples is None:
    return None
  return jax.random.split(jax.random.fold_in(rng, index), eot_samples)


def apgd_run(evaluate, images, x_init, *, eps, num_steps: int, norm: str = "linf", eot_rng=None,
             eot_samples: int | None = None, unroll: bool | int = False):
  """One APGD run from ``x_init`` (see the module docstring); ``evaluate`` from :func:`make_evaluator`.

  Returns a dict of per-example results: ``x_best`` / ``loss_best`` (the highest-loss point and its loss),
  ``best_fooled`` (that point is misclassified), ``fooled`` (some iterate, or x_init, was misclassified),
  ``x_fooled`` (the last such iterate; x_init if none), ``step_sizes`` [num_steps, B] (η used at each
  iteration) and ``zero_grad`` (the gradient at x_init is exactly zero: AutoAttack's flag for an unreliable
  evaluation).
  """
  x = jnp.asarray(images)
  eps_b = arguments.per_example(eps, x)
  proj = lambda v: _project(v, x, eps_b, norm)
  pick = lambda m, a, b: jnp.where(m.reshape((-1,) + (1,) * (x.ndim - 1)), a, b)
  is_check, threshold = _schedule_arrays(num_steps)

  x0 = jnp.asarray(x_init, x.dtype)
  loss0, fooled0, grad0 = evaluate(x0, _draw_keys(eot_rng, 0, eot_samples))
  batch = x.shape[0]
  init = dict(x_adv=x0, x_old=x0, grad=grad0, step=jnp.broadcast_to(2.0 * eps_b, (batch,) + (1,) * (x.ndim - 1)),
              loss_prev=jnp.zeros_like(loss0), n_rises=jnp.zeros(batch, jnp.int32), loss_best=loss0, x_best=x0,
              grad_best=grad0, best_fooled=fooled0, best_at_check=loss0, reduced=jnp.ones(batch, bool),
              fooled=fooled0, x_fooled=x0,
              step_sizes=jnp.zeros((num_steps, batch), x.dtype))

  def body(i, s):
    a = jnp.where(i > 0, _ALPHA, 1.0).astype(x.dtype)
    x_adv = s["x_adv"]
    z = proj(x_adv + s["step"] * _direction(s["grad"], norm))
    x_new = proj(x_adv + (z - x_adv) * a + (x_adv - s["x_old"]) * (1 - a))
    loss, fooled, grad = evaluate(x_new, _draw_keys(eot_rng, i + 1, eot_samples))
    n_rises = s["n_rises"] + (loss > s["loss_prev"]).astype(jnp.int32)
    improved = loss > s["loss_best"]
    loss_best = jnp.where(improved, loss, s["loss_best"])
    x_best, grad_best = pick(improved, x_new, s["x_best"]), pick(improved, grad, s["grad_best"])
    # Checkpoint: halve η and restart from the best point where condition (1) or (2) holds.
    check = is_check[i]
    cond = (n_rises <= threshold[i]) | (~s["reduced"] & (s["best_at_check"] >= loss_best))
    reduce = check & cond
    return dict(
        x_adv=pick(reduce, x_best, x_new), x_old=x_adv, grad=pick(reduce, grad_best, grad),
        step=pick(reduce, s["step"] / 2, s["step"]), loss_prev=loss,
        n_rises=jnp.where(check, 0, n_rises), loss_best=loss_best, x_best=x_best, grad_best=grad_best,
        best_fooled=jnp.where(improved, fooled, s["best_fooled"]),
        best_at_check=jnp.where(check, loss_best, s["best_at_check"]),
        reduced=jnp.where(check, cond, s["reduced"]), fooled=s["fooled"] | fooled,
        x_fooled=pick(fooled, x_new, s["x_fooled"]),
        step_sizes=s["step_sizes"].at[i].set(s["step"].reshape(batch)))

  s = loops.iterate(num_steps, body, init, unroll=unroll)
  zero_grad = jnp.all(grad0.reshape(batch, -1) == 0, axis=-1)
  keys = ("x_best", "loss_best", "best_fooled", "fooled", "x_fooled", "step_sizes")
  return {k: s[k] for k in keys} | {"zero_grad": zero_grad}


def run_result(out):
  """A run's adversarial image per example (module docstring): its highest-loss point if that fooled the model,
  else its last misclassified iterate, else its highest-loss point."""
  shape = (-1,) + (1,) * (out["x_best"].ndim - 1)
  take_fooled = (out["fooled"] & ~out["best_fooled"]).reshape(shape)
  return jnp.where(take_fooled, out["x_fooled"], out["x_best"])


def ranked_targets(clean_logits, labels, num_targets: int):
  """[B, n]: per example the n = min(``num_targets``, K − 1) classes ranked highest by ``clean_logits`` [B, K]
  after the label (AutoAttack's targets of APGD-T and FAB-T)."""
  num_classes = clean_logits.shape[-1]
  masked = jnp.where(jax.nn.one_hot(labels, num_classes, dtype=bool), -jnp.inf, clean_logits)
  ranked = jnp.argsort(-masked, axis=-1)
  return ranked[:, :min(num_targets, num_classes - 1)].astype(labels.dtype)


def _check_args(loss, norm, num_steps, num_restarts, num_targets, eot_samples, rng, targeted, target):
  arguments.check_norm(norm)
  if loss not in APGD_LOSSES:
    raise ValueError(f"unknown APGD loss {loss!r}; choose one of {', '.join(APGD_LOSSES)}")
  arguments.check_count("num_steps", num_steps, 0)
  arguments.check_count("num_restarts", num_restarts, 1)
  arguments.check_count("num_targets", num_targets, 1)
  if eot_samples is not None:
    arguments.check_count("eot_samples", eot_samples, 1)
  if rng is None:
    raise ValueError("apgd needs an explicit PRNG key for its random starts: pass rng=")
  if target is not None and not targeted:
    raise ValueError("target= is only used with targeted=True")


def apgd(logits_fn, images, labels, *, eps, num_steps: int, norm: str = "linf", loss: str = "ce",
         targeted: bool = False, target=None, num_targets: int = 9, rng=None, num_restarts: int = 1,
         eot_samples: int | None = None, unroll: bool | int = False, return_info: bool = False):
  """APGD / APGD-T (module docstring) → adversarial images [B, ...]: per example a point that fooled the
  model, else the highest-loss point found (else, if only the clean image fooled it, the clean image).

  labels: the true classes [B] (always; success = argmax ≠ label). eps: scalar or [B] (L∞ / L2 radius).
  loss: ``ce`` or ``dlr``. ``targeted=True`` ascends the targeted loss (−CE to the target, or AutoAttack's
  targeted DLR) toward ``target`` [B], or — ``target=None`` — APGD-T: every one of the ``num_targets`` classes
  ranked highest by the clean logits after the label (at most K − 1), ``num_restarts`` runs each.
  eot_samples: None (deterministic ``logits_fn(images)``) or n ≥ 1 draws of ``logits_fn(images, key)``.
  unroll: the iteration loop (:func:`rsrnn_jax.attacks.loops.iterate`: False rolled, True unrolled, k per trip).
  return_info: also return ``{"fooled": [B], "zero_grad": [B]}`` — the returned image fools the model (or the
  clean one did); some run started from a point with an exactly zero gradient (AutoAttack's warning flag).
  ``num_steps``, ``num_restarts``, ``num_targets``, ``eot_samples`` are static; ``eps`` may be traced.
  """
  _check_args(loss, norm, num_steps, num_restarts, num_targets, eot_samples, rng, targeted, target)
  loops.check_unroll(unroll)
  arguments.check_nonneg("eps", eps)
  x = jnp.asarray(images)
  labels = jnp.asarray(labels)
  arguments.check_images_labels(x, labels)
  eps_b = arguments.per_example(eps, x)
  k_clean, k_runs = jax.random.split(rng)

  _, clean_logits_of = make_evaluator(logits_fn, labels, None, "ce", eot_samples)
  clean_logits = clean_logits_of(x, _draw_keys(k_clean, 0, eot_samples))
  if targeted and target is None:
    targets = ranked_targets(clean_logits, labels, num_targets)  # [B, min(num_targets, K − 1)]
    num_targets = targets.shape[1]
  else:
    num_targets = 1
    targets = None if target is None else jnp.asarray(target, labels.dtype).reshape(-1, 1)
    if targets is not None and targets.shape[0] != x.shape[0]:
      raise ValueError(f"target must have shape [{x.shape[0]}], got {jnp.shape(target)}")

  def body(r, carry):
    best, zero_grad = carry
    k_start, k_eot = jax.random.split(jax.random.fold_in(k_runs, r))
    t = None if targets is None else jax.lax.dynamic_index_in_dim(targets, r // num_restarts, 1, False)
    evaluate, _ = make_evaluator(logits_fn, labels, t, loss, eot_samples)
    out = apgd_run(evaluate, x, _start(k_start, x, eps_b, norm), eps=eps, num_steps=num_steps, norm=norm,
                   eot_rng=k_eot, eot_samples=eot_samples, unroll=unroll)
    candidate = (run_result(out), out["loss_best"], out["fooled"])
    return core.keep_stronger(best, candidate), zero_grad | out["zero_grad"]

  clean_fooled = jnp.argmax(clean_logits, axis=-1) != labels
  init = (x, jnp.full(clean_fooled.shape, -jnp.inf, jnp.float32), clean_fooled)
  (best_x, _, fooled), zero_grad = jax.lax.fori_loop(0, num_targets * num_restarts, body,
                                                     (init, jnp.zeros_like(clean_fooled)))
  best_x = jax.lax.stop_gradient(best_x).astype(x.dtype)
  return (best_x, {"fooled": fooled, "zero_grad": zero_grad}) if return_info else best_x


def apgd_targeted(logits_fn, images, labels, **kwargs):
  """APGD-T: ``apgd`` with the targeted DLR loss over the top ``num_targets`` (default 9) other classes."""
  return apgd(logits_fn, images, labels, loss="dlr", targeted=True, **kwargs)
