"""Adversarial attacks (paper.md §7): PGD / FGSM (L∞ and L2), PGD with restarts, and ASR; the parts every attack
of this package shares (losses, projection; argument checks: :mod:`rsrnn_jax.attacks.arguments`). Square:
:mod:`rsrnn_jax.attacks.square`.

Every attack is composed from four small pure parts, combined inside ONE loop (:mod:`rsrnn_jax.attacks.loops`):

* an **initialiser** — a random start in the ε-ball (``_random_init``),
* a **loss** — the per-example quantity the attacker *ascends* (``attack_loss``: CE or margin, with the
  targeted sign folded in; also AutoAttack's DLR, used by :mod:`rsrnn_jax.attacks.apgd`),
* a **step** — L∞: ``step_size · sign(g)``; L2: ``step_size · g / ‖g‖₂`` per example (``_ascent_step``),
* a **projection** — onto the ε-ball of the given norm, then onto the image box [0, 1] (``project``).

Conventions
-----------
* ``logits_fn(images) -> [B, K]``: the attacked model, images in **[0, 1]**, shape [B, H, W, C] (any rank ≥ 2
  works; axis 0 is the batch). For the recurrent models wrap the model so that it returns the logits of the
  attacked step (the paper attacks the last of k steps). The model must treat examples independently (eval mode,
  no batch statistics) for per-example attacks to be meaningful.
* ``labels`` are the true classes when ``targeted=False`` and the **target** classes when ``targeted=True``.
* Gradients are taken of the **sum** of the per-example losses, so each example's gradient (and thus its step)
  is its own and does not depend on the batch size or on the other examples (unlike a ``mean`` loss, which only
  rescales it — irrelevant for sign / normalised steps, but a sum keeps the per-example semantics exact).
* ``eps`` and ``step_size`` may be Python floats, 0-d arrays (traced under ``jit``: one compilation serves every
  ε) or per-example arrays of shape [B]. With ``norm="l2"`` ε is an L2 radius per example.
  Concrete negative values raise ``ValueError``; a *traced* ε cannot be checked and is clamped at 0.
* ``num_queries`` / ``num_restarts`` are static Python ints; ``num_steps`` (pgd) a static int or a traced int scalar.
* Randomness comes only from explicit PRNG keys (raw ``PRNGKey`` or typed ``jax.random.key``).
* All functions are pure and jittable; wrap them with ``jax.jit(functools.partial(pgd, logits_fn, ...))``.
  They work unchanged on inputs sharded over a mesh's batch axis (every op is per-example or elementwise, so
  ``jit`` propagates the batch sharding).
* Attacks return ``lax.stop_gradient`` of the adversarial images, in the input dtype.

Projection note (L2): the ball projection is followed by clipping to [0, 1]. Clipping moves every coordinate
towards the clean pixel (which lies in [0, 1]), so the result stays inside the ball; it is a feasible point of
ball ∩ box, not the exact Euclidean projection onto the intersection (the usual choice, as in advertorch).
For L∞ the two clips are the exact projection onto the intersection (a box).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from rsrnn_jax.attacks import loops
from rsrnn_jax.attacks.arguments import (LOSSES, check_count, check_images_labels, check_loss, check_nonneg,
                                         check_norm, per_example)

Array = jax.Array
LogitsFn = Callable[[Array], Array]

ATTACK_LOSSES = LOSSES + ("dlr",)      # attack_loss also computes AutoAttack's DLR (apgd)

_TINY = 1e-30
_L2_SAFETY = 1.0 - 1e-6


# ----------------------------------------------------------------------------------------------------------
# The parts
# ----------------------------------------------------------------------------------------------------------

def _sum_per_example(v):
  return jnp.sum(v, axis=tuple(range(1, v.ndim)), keepdims=True)


def _l2_norm(v):
  """Per-example L2 norm [B,1,...,1], computed after rescaling by the max |v| so tiny values don't underflow."""
  scale = jnp.max(jnp.abs(v), axis=tuple(range(1, v.ndim)), keepdims=True)
  safe = jnp.maximum(scale, _TINY)
  return jnp.sqrt(_sum_per_example(jnp.square(v / safe))) * scale


def attack_loss(logits, labels, *, loss="ce", targeted=False, true_labels=None):
  """Per-example loss [B] that the attacker ascends.

  untargeted (labels = true classes)      targeted (labels = target classes)
    ce:     CE(logits, y)                     −CE(logits, t)
    margin: max_{j≠y} z_j − z_y               z_t − max_{j≠t} z_j
    dlr:    −(z_y − max_{j≠y} z_j)            −(z_y − z_t)
            / (z_π1 − z_π3 + 1e-12)           / (z_π1 − (z_π3 + z_π4)/2 + 1e-12)   (y = ``true_labels``)
  A positive margin means the attack succeeded (argmax ≠ y, resp. argmax = t); so does a positive untargeted
  DLR. DLR (Croce & Hein 2020) is AutoAttack's scale-invariant loss: z_π1 ≥ z_π2 ≥ … are the sorted logits;
  untargeted it needs K ≥ 3 classes, targeted K ≥ 4 and the true classes as ``true_labels`` (targeted DLR
  measures the target against the true class, not against the runner-up).
  """
  if loss not in ATTACK_LOSSES:
    raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(ATTACK_LOSSES)}")
  z = jnp.asarray(logits).astype(jnp.float32)
  if z.ndim != 2:
    raise ValueError(f"logits must be [B, K], got shape {z.shape}")
  if loss == "dlr":
    return _dlr_loss(z, labels, targeted, true_labels)
  onehot = jax.nn.one_hot(labels, z.shape[-1], dtype=jnp.bool_)
  z_label = jnp.sum(jnp.where(onehot, z, 0.0), axis=-1)
  if loss == "ce":
    value = jax.nn.logsumexp(z, axis=-1) - z_label  # CE toward `labels`
  else:
    z_other = jnp.max(jnp.where(onehot, -jnp.inf, z), axis=-1)
    value = z_other - z_label  # margin away from `labels`
  return -value if targeted else value


def _dlr_loss(z, labels, targeted, true_labels):
  """AutoAttack's DLR loss (untargeted: labels = true classes; targeted: labels = targets) on f32 logits."""
  k = z.shape[-1]
  need = 4 if targeted else 3
  if k < need:
    raise ValueError(f"the {'targeted ' if targeted else ''}DLR loss needs >= {need} classes, got {k}; "
                     "use loss='ce'")
  top = jax.lax.top_k(z, need)[0]  # [B, need], descending
  pick = lambda cls: jnp.sum(jnp.where(jax.nn.one_hot(cls, k, dtype=jnp.bool_), z, 0.0), axis=-1)
  if not targeted:
    onehot = jax.nn.one_hot(labels, k, dtype=jnp.bool_)
    z_other = jnp.max(jnp.where(onehot, -jnp.inf, z), axis=-1)
    return -(pick(labels) - z_other) / (top[:, 0] - top[:, 2] + 1e-12)
  if true_labels is None:
    raise ValueError("the targeted DLR loss needs the true classes: pass true_labels=")
  return -(pick(true_labels) - pick(labels)) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def _is_success(logits, labels, targeted):
  pred = jnp.argmax(logits, axis=-1)
  return pred == labels if targeted else pred != labels


def attack_score(logits, labels, *, loss="ce", targeted=False):
  """(loss value [B], success [B]) of adversarial candidates: what :func:`keep_stronger` ranks them by."""
  return attack_loss(logits, labels, loss=loss, targeted=targeted), _is_success(logits, labels, targeted)


def keep_stronger(best, candidate, *, force=False):
  """Per example, the stronger of two adversarial candidates (the one keep-the-better rule of the package).

  ``best`` and ``candidate`` are ``(images [B, ...], value [B], success [B])`` (value, success from
  :func:`attack_score`). A successful candidate beats an unsuccessful one; among equals the higher loss value
  wins; ties keep ``best``. ``force`` (a bool or [B] mask) takes the candidate regardless. Returns the new triple.
  """
  best_x, best_value, best_success = best
  x, value, success = candidate
  better = force | (success & ~best_success) | ((success == best_success) & (value > best_value))
  pick = better.reshape((-1,) + (1,) * (x.ndim - 1))
  return (jnp.where(pick, x, best_x), jnp.where(better, value, best_value),
          jnp.where(better, success, best_success))


def ball_project(x_adv, x, eps_b, norm):
  """project() with ε already broadcast against x (:func:`arguments.per_example`): the attacks' inner projection."""
  delta = x_adv - x
  if norm == "linf":
    delta = jnp.clip(delta, -eps_b, eps_b)
  else:
    # Outside points land at radius ε·(1 − 1e-6): float32 rounding of the norm (~1e-7 relative) and of x + δ
    # then cannot push them out of the ball. Points inside (‖δ‖ ≤ ε) are untouched, so this is idempotent.
    n = _l2_norm(delta)
    shrink = eps_b * _L2_SAFETY / jnp.maximum(n, _TINY)
    delta = delta * jnp.where(n > eps_b, shrink, 1.0).astype(x.dtype)
  return jnp.clip(x + delta, 0.0, 1.0)


def project(x_adv, x, *, eps, norm):
  """Projects x_adv onto {‖x_adv − x‖ ≤ ε} ∩ [0, 1]^d, per example (ε: scalar or [B]).

  L∞: clip δ to [−ε, ε], then x + δ to [0, 1] (exact projection onto the intersection, a box).
  L2: rescale δ to norm ε·(1 − 1e-6) if it is longer than ε, then clip to [0, 1] (stays in the ball, see
  the module docstring; the 1e-6 margin absorbs float32 rounding).
  """
  check_norm(norm)
  check_nonneg("eps", eps)
  x = jnp.asarray(x)
  return ball_project(jnp.asarray(x_adv, dtype=x.dtype), x, per_example(eps, x), norm)


def _random_init(rng, x, eps_b, norm):
  """A uniform random point of the ε-ball around x (before clipping to the box)."""
  if norm == "linf":
    delta = jax.random.uniform(rng, x.shape, x.dtype, -1.0, 1.0) * eps_b
  else:
    # Uniform in the L2 ball: a Gaussian direction, radius ε·U^(1/d).
    k_dir, k_rad = jax.random.split(rng)
    direction = jax.random.normal(k_dir, x.shape, x.dtype)
    direction = direction / jnp.maximum(_l2_norm(direction), _TINY)
    d = int(np.prod(x.shape[1:]))
    u = jax.random.uniform(k_rad, (x.shape[0],) + (1,) * (x.ndim - 1), x.dtype)
    delta = direction * eps_b * u ** (1.0 / d)
  return x + delta


def _ascent_step(grad, step_b, norm):
  """The update that ascends the loss: step·sign(g) (L∞) or step·g/‖g‖₂ (L2; zero if g = 0)."""
  if norm == "linf":
    return step_b * jnp.sign(grad)
  n = _l2_norm(grad)
  return step_b * jnp.where(n > 0, grad / jnp.maximum(n, _TINY), 0.0)


def _loss_grad_fn(logits_fn, labels, loss, targeted):
  def total(x_adv):
    # Sum (not mean) of per-example losses: d total / d x_adv[i] = d loss_i / d x_adv[i].
    return jnp.sum(attack_loss(logits_fn(x_adv), labels, loss=loss, targeted=targeted))
  return jax.grad(total)


# ----------------------------------------------------------------------------------------------------------
# Gradient attacks
# ----------------------------------------------------------------------------------------------------------

def pgd(logits_fn: LogitsFn, images, labels, *, eps, step_size, num_steps: int, norm: str = "linf",
        targeted: bool = False, random_start: bool = True, loss: str = "ce", rng=None, unroll: bool | int = False):
  """Projected gradient ascent of ``attack_loss`` in the ε-ball (L∞ or L2) ∩ [0, 1]; returns the last iterate.

  x₀ = Π(x + U(ball)) if ``random_start`` else x;  x_{k+1} = Π(x_k + step(∇ Σ_i loss_i(x_k))).
  ``targeted=True``: ``labels`` are the targets and the attack descends CE to them (or raises their margin).
  ``unroll``: the iteration loop (:func:`rsrnn_jax.attacks.loops.iterate`): False (default) a rolled loop,
  True every iteration in the compiled program, k iterations per loop trip; the same result in every case.
  ``num_steps`` may also be an integer scalar array (traced under jit: one compilation for every count).
  """
  check_norm(norm)
  check_loss(loss)
  check_nonneg("eps", eps)
  check_nonneg("step_size", step_size)
  loops.check_steps(num_steps, unroll)
  if random_start and rng is None:
    raise ValueError("random_start=True needs an explicit PRNG key: pass rng=")
  x = jnp.asarray(images)
  labels = jnp.asarray(labels)
  check_images_labels(x, labels)
  eps_b = per_example(eps, x)
  step_b = per_example(step_size, x)
  grad_fn = _loss_grad_fn(logits_fn, labels, loss, targeted)
  proj = lambda xa: ball_project(xa, x, eps_b, norm)

  x_adv = proj(_random_init(rng, x, eps_b, norm)) if random_start else x

  def body(_, xa):
    return proj(xa + _ascent_step(grad_fn(xa), step_b, norm))

  x_adv = loops.iterate(num_steps, body, x_adv, unroll=unroll)
  return jax.lax.stop_gradient(x_adv).astype(x.dtype)


def fgsm(logits_fn: LogitsFn, images, labels, *, eps, norm: str = "linf", targeted: bool = False,
         loss: str = "ce"):
  """Fast gradient (sign) method: one PGD step of size ε from the clean image (FGSM for L∞, FGM for L2)."""
  return pgd(logits_fn, images, labels, eps=eps, step_size=eps, num_steps=1, norm=norm, targeted=targeted,
             random_start=False, loss=loss)


def pgd_restarts(logits_fn: LogitsFn, images, labels, *, num_restarts: int, rng, **pgd_kwargs):
  """PGD from ``num_restarts`` random starts; keeps, per example, the worst case over the restarts.

  Restart i runs ``pgd(..., rng=jax.random.split(rng, num_restarts)[i], **pgd_kwargs)``. "Worst case" is
  lexicographic: a successful adversarial (misclassified, or classified as the target) beats an unsuccessful
  one; among equals the higher ``attack_loss`` (same ``loss`` / ``targeted`` as the attack) wins; ties keep
  the earlier restart (:func:`keep_stronger`). Hence the result is, per example, at least as strong as every
  single restart.
  All restarts run inside one rolled loop (one compiled PGD body).
  """
  check_count("num_restarts", num_restarts, 1)
  if rng is None:
    raise ValueError("pgd_restarts needs an explicit PRNG key: pass rng=")
  if "rng" in pgd_kwargs:
    raise ValueError("pass the PRNG key once, as rng=")
  loss = pgd_kwargs.get("loss", "ce")
  targeted = pgd_kwargs.get("targeted", False)
  check_loss(loss)
  x = jnp.asarray(images)
  labels = jnp.asarray(labels)
  check_images_labels(x, labels)
  keys = jax.random.split(rng, num_restarts)

  def body(i, carry):
    x_adv = pgd(logits_fn, x, labels, rng=keys[i], **pgd_kwargs)
    score = attack_score(logits_fn(x_adv), labels, loss=loss, targeted=targeted)
    return keep_stronger(carry, (x_adv, *score), force=i == 0)

  init = (x, jnp.full(x.shape[:1], -jnp.inf, jnp.float32), jnp.zeros(x.shape[:1], jnp.bool_))
  best_x, _, _ = loops.iterate(num_restarts, body, init)
  return jax.lax.stop_gradient(best_x)


# ----------------------------------------------------------------------------------------------------------
# Targets and success rates
# ----------------------------------------------------------------------------------------------------------

def random_targets(rng, labels, num_classes: int):
  """Per example a target drawn uniformly from the K−1 classes other than its label (deterministic in rng).

  (The paper's scripts used ``randint(0, K)``, which may equal the label; here a target never does.)
  """
  check_count("num_classes", num_classes, 2)
  labels = jnp.asarray(labels)
  offset = jax.random.randint(rng, labels.shape, 1, num_classes, dtype=labels.dtype)
  return (labels + offset) % num_classes


def attack_success(clean_logits, adv_logits, labels, *, targets=None, mask=None):
  """Per-step accuracy and attack success rate (paper.md §7, calculate_asr.py).

  clean_logits, adv_logits: [T, B, K] (per recurrent step) or [B, K]; labels [B] (true classes);
  targets [B] (targeted attack) or None; mask [B] (bool/0-1: which examples count, e.g. batch padding) or None.
  Per step s, over the counted examples:
    untargeted ASR(s) = #{clean correct(s) ∧ adv wrong(s)} / #{clean correct(s)}
    targeted   ASR(s) = #{clean correct(s) ∧ adv predicts target(s)} / #{clean correct(s)}
  Returns a dict of [T] arrays (scalars for [B, K] inputs): ``clean_acc``, ``adv_acc`` (accuracy w.r.t. the
  true labels), ``asr`` (NaN where no example is clean-correct; aggregate over batches with the counts),
  ``num_clean_correct``, ``num_success``, ``num_adv_correct`` and ``num_examples``.
  """
  clean = jnp.asarray(clean_logits)
  adv = jnp.asarray(adv_logits)
  for name, a in (("clean_logits", clean), ("adv_logits", adv)):
    if a.ndim not in (2, 3):
      raise ValueError(f"{name} must be [T, B, K] or [B, K], got shape {a.shape}")
  no_step_axis = clean.ndim == 2 and adv.ndim == 2
  clean = clean if clean.ndim == 3 else clean[None]
  adv = adv if adv.ndim == 3 else adv[None]
  if clean.shape[1:] != adv.shape[1:] or (clean.shape[0] != adv.shape[0] and 1 not in (clean.shape[0],
                                                                                         adv.shape[0])):
    raise ValueError(f"clean_logits {clean.shape} and adv_logits {adv.shape} do not match (steps, batch, classes)")
  batch = clean.shape[1]
  labels = jnp.asarray(labels)
  if labels.shape != (batch,):
    raise ValueError(f"labels must have shape [{batch}], got {labels.shape}")
  if targets is not None and jnp.shape(targets) != (batch,):
    raise ValueError(f"targets must have shape [{batch}], got {jnp.shape(targets)}")
  if mask is None:
    mask = jnp.ones((batch,), jnp.bool_)
  else:
    if jnp.shape(mask) != (batch,):
      raise ValueError(f"mask must have shape [{batch}], got {jnp.shape(mask)}")
    mask = jnp.asarray(mask).astype(jnp.bool_)

  clean_pred = jnp.argmax(clean, axis=-1)  # [T, B]
  adv_pred = jnp.argmax(adv, axis=-1)
  clean_correct = (clean_pred == labels) & mask
  adv_correct = (adv_pred == labels) & mask
  hit = adv_pred != labels if targets is None else adv_pred == jnp.asarray(targets)
  success = clean_correct & hit

  count = lambda v: jnp.sum(v, axis=-1, dtype=jnp.int32)
  num_steps = success.shape[0]
  out = {
      "num_examples": count(mask),
      "num_clean_correct": count(clean_correct),
      "num_adv_correct": count(adv_correct),
      "num_success": count(success),
  }
  out = {k: jnp.broadcast_to(v, (num_steps,)) for k, v in out.items()}
  n = out["num_examples"].astype(jnp.float32)
  out["clean_acc"] = out["num_clean_correct"] / n
  out["adv_acc"] = out["num_adv_correct"] / n
  out["asr"] = out["num_success"] / out["num_clean_correct"].astype(jnp.float32)
  if no_step_axis:
    out = {k: v[0] for k, v in out.items()}
  return out
