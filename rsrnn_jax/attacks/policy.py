"""Attacks on the fixation policy of a glimpse model (issue 13): BPDA / straight-through and the scanpath search.

Every attack of the package differentiates only through the bilinear sampling at the fixations actually taken:
the fixation choice (argmax of the dorsal map) is piecewise constant. These two attacks also move the fixations
(Athalye et al. 2018; R-Blur's ``FixationAwareAPGDAttack``). Both keep the model's forward pass; only what the
attacker differentiates changes, and both are judged on the free model:

* :func:`bpda_attack`: APGD-CE on :func:`rsrnn_jax.attacks.objectives.bpda_logits_fn` at each temperature τ
  (the forward pass is the free model's, the backward pass differentiates the expected next fixation); the
  worst image per example over τ, ranked by the free model's margin.
* :func:`scanpath_attack`: the scanpath search. K candidate scanpaths: the model's own clean scanpath and K − 1
  random ones that respect inhibition of return (:func:`random_scanpaths`). APGD-CE on the model made to walk
  each (frozen) scanpath; every candidate image is re-scored on the free model (:func:`scanpath_search`). The
  scanpath on which the frozen model is weakest is the worst scanpath; a last APGD-CE on the free model with a
  steering term (:func:`rsrnn_jax.attacks.objectives.steering_objective`) tries to make the model's own policy
  walk it. The worst image per example over the frozen candidates and the steered one, on the free model.

A naive surrogate can be weaker than plain PGD: the suite never lets these replace the other attacks (worst
case per example), and check 9 tests that each one alone still breaks what the reference attack broke.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from rsrnn_jax.attacks import core
from rsrnn_jax.attacks.apgd import apgd
from rsrnn_jax.attacks.objectives import (bpda_logits_fn, frozen_scanpath_logits_fn, horizon_steps, model_scanpath,
                                          steering_objective)
from rsrnn_jax.models import dorsal


def _margin(logits, labels):
  return core.attack_loss(logits, labels, loss="margin")


def pick_per_example(index, candidates):
  """``candidates`` [P, B, ...] → [B, ...]: candidate ``index[b]`` for every example b."""
  onehot = jax.nn.one_hot(index, candidates.shape[0], dtype=candidates.dtype)  # [B, P]
  shape = (candidates.shape[0], candidates.shape[1]) + (1,) * (candidates.ndim - 2)
  return jnp.sum(candidates * onehot.T.reshape(shape), axis=0)


def random_scanpaths(rng, model, *, num_paths: int, num_steps: int, batch: int, radius: float | None = None):
  """[num_paths, num_steps, B, 2] random scanpaths that respect inhibition of return.

  Every path starts at the image centre (the evaluation's first fixation). Each next fixation is a cell of the
  dorsal map seen from the current fixation (:func:`rsrnn_jax.models.dorsal.cell_locations`: the places the
  policy can choose), uniform over the cells farther than ``radius`` (default: the dorsal stream's initial IOR
  width σ) from every earlier fixation; uniform over all cells when none is that far.
  """
  size = int(dict(model.dorsal or {}).get("saliency_size", dorsal.Dorsal.saliency_size))
  if radius is None:
    radius = float(dict(model.dorsal or {}).get("sigma_init", dorsal.Dorsal.sigma_init))

  def one_path(key):
    fix = jnp.zeros((batch, 2), jnp.float32)
    path = [fix]
    for t, k in enumerate(jax.random.split(key, max(num_steps - 1, 1))[:num_steps - 1]):
      locs = dorsal.cell_locations(model.dorsal_view, fix, size)  # [B, s², 2]
      seen = jnp.stack(path, axis=1)  # [B, t + 1, 2]
      d2 = jnp.sum((locs[:, :, None, :] - seen[:, None, :, :]) ** 2, axis=-1)  # [B, s², t + 1]
      free = jnp.min(d2, axis=-1) > radius ** 2
      free = jnp.where(jnp.any(free, axis=-1, keepdims=True), free, True)
      cell = jax.random.categorical(k, jnp.where(free, 0.0, -jnp.inf), axis=-1)
      fix = jnp.take_along_axis(locs, cell[:, None, None], axis=1)[:, 0]
      path.append(fix)
    return jnp.stack(path)  # [n, B, 2]

  return jax.vmap(one_path)(jax.random.split(rng, num_paths))


def scanpath_search(frozen_attack, free_logits_fn, images, labels, paths, rng):
  """Attack along each candidate scanpath; the worst per example.

  frozen_attack(path [n, B, 2], key) → (adversarial images, the frozen model's margin loss on them [B]);
  paths [P, n, B, 2]. The candidates are attacked one after the other (``lax.map``: one compiled attack).
  Returns ``x_free`` (per example the candidate image with the highest margin loss on the free model),
  ``free_margin`` [B], ``worst_index`` [B] (the candidate whose frozen model is weakest: highest frozen margin)
  and ``worst_path`` [n, B, 2] (that candidate's scanpath).
  """
  keys = jax.random.split(rng, paths.shape[0])

  def one(args):
    path, key = args
    x_adv, frozen_margin = frozen_attack(path, key)
    return x_adv, frozen_margin, _margin(free_logits_fn(x_adv), labels)

  xs, frozen_margins, free_margins = jax.lax.map(one, (paths, keys))  # [P, B, ...], [P, B], [P, B]
  best_free = jnp.argmax(free_margins, axis=0)
  worst = jnp.argmax(frozen_margins, axis=0)
  worst_path = jnp.transpose(pick_per_example(worst, jnp.transpose(paths, (0, 2, 1, 3))), (1, 0, 2))
  return {"x_free": pick_per_example(best_free, xs), "free_margin": jnp.max(free_margins, axis=0),
          "worst_index": worst, "worst_path": worst_path, "frozen_margins": frozen_margins}


def _horizon_kwargs(victim):
  s = victim.setup
  return dict(horizon=victim.horizon, attack_step=s.attack_step, eval_steps=s.eval_steps)


def _untargeted_only(name, targeted):
  if targeted:
    raise ValueError(f"the {name} attack is untargeted (the suite's targeted attack is PGD)")


def bpda_attack(victim, images, labels, *, eps, rng, norm, targeted, taus, num_iterations, num_restarts):
  """APGD-CE through the straight-through fixation choice at every τ of ``taus``; worst on the free model."""
  _untargeted_only("bpda", targeted)
  free = victim.logits_fn()
  candidates = []
  for i, tau in enumerate(taus):
    objective = bpda_logits_fn(victim.model, victim.variables, tau=float(tau), **_horizon_kwargs(victim))
    candidates.append(apgd(objective, images, labels, eps=eps, num_steps=num_iterations, norm=norm,
                           num_restarts=num_restarts, rng=jax.random.fold_in(rng, i)))
  return _worst_on_free(free, candidates, labels)


def _worst_on_free(free, candidates, labels):
  best = None
  for x in candidates:
    z = free(x)
    candidate = (x, _margin(z, labels), jnp.argmax(z, -1) != labels)
    best = candidate if best is None else core.keep_stronger(best, candidate)
  return best[0]


def scanpath_attack(victim, images, labels, *, eps, rng, norm, targeted, candidates, num_iterations,
                    steer_weight):
  """The scanpath search (module docstring) → adversarial images, plus ``info`` per example: ``worst_path``
  (0 = the model's own clean scanpath, else a random one) and ``steered`` (the steered image won)."""
  _untargeted_only("scanpath", targeted)
  model, variables, hk = victim.model, victim.variables, _horizon_kwargs(victim)
  n = horizon_steps(victim.horizon, victim.setup.attack_step, victim.setup.eval_steps)
  k_paths, k_search, k_steer = jax.random.split(rng, 3)
  own = model_scanpath(model, variables, images, num_steps=n)[None]
  paths = own if candidates == 1 else jnp.concatenate(
      [own, random_scanpaths(k_paths, model, num_paths=candidates - 1, num_steps=n, batch=images.shape[0])])
  free = victim.logits_fn()

  def frozen_attack(path, key):
    frozen = frozen_scanpath_logits_fn(model, variables, path, **hk)
    x_adv = apgd(frozen, images, labels, eps=eps, num_steps=num_iterations, norm=norm, rng=key)
    return x_adv, _margin(frozen(x_adv), labels)

  found = scanpath_search(frozen_attack, free, images, labels, paths, k_search)
  steer = steering_objective(model, variables, found["worst_path"], weight=steer_weight, **hk)
  x_steer = apgd(steer, images, labels, eps=eps, num_steps=num_iterations, norm=norm, rng=k_steer)
  z = free(x_steer)
  best = core.keep_stronger((found["x_free"], found["free_margin"], found["free_margin"] > 0),
                            (x_steer, _margin(z, labels), jnp.argmax(z, -1) != labels))
  steered = jnp.all((best[0] == x_steer).reshape(images.shape[0], -1), axis=-1)
  return best[0], {"worst_path": found["worst_index"].astype(jnp.int32), "steered": steered}
