"""Adversarial evaluation of a trained model (``--mode=attack``): PGD through the unrolled glimpse steps,
accuracy and attack success rate (ASR) at every step, adversarial probability maps, gradient-masking checks.

The paper's claim (paper.md §7–§8): RS-RNN resists PGD, and its accuracy *recovers* as it takes more glimpses
after the attack (attack the logits of step k, then run the attacked image for T_eval > k steps). This module
measures it on any checkpoint of the project and tells a real robustness gain from gradient masking.

Model-level wrappers (:func:`model_logits_fn`) turn a model into the ``logits_fn(images) -> [B, K]`` that the
pure attacks of :mod:`rsrnn_jax.attacks` ascend:

* ``horizon="step"``: the logits of attack step k of a k-step unroll (the authors' attack);
* ``horizon="avg"``:  the mean logits of steps 1..k (the authors' ``isAvgSteps`` option);
* ``horizon="full"``: the mean logits of steps 1..T_eval of a T_eval-step unroll, an attacker who targets
  the later steps too ("full horizon": the model cannot outrun it by taking more glimpses).

Averaging *logits* (not losses) keeps one ``[B, K]`` interface for every attack (CE, margin, restarts'
success test, Square). Fixations are the policy's argmax (deterministic, the evaluation policy) or, with
``fixations="sample"``, sampled; then each forward pass of the attacker averages the logits of
``eot_samples`` draws (EOT). The draws are fresh at every PGD iteration: their key is folded with an
order-independent integer hash of the queried images (so the attack stays a pure function of its inputs and
the result does not depend on how the batch is sharded). Evaluation under sampled fixations uses one fixed
draw per batch, the same for the clean and the adversarial images.

Targets (targeted attacks) are drawn uniformly from the other classes with the key
``fold_in(key(attack.target_seed), example index)``: the same image gets the same target whatever the batch,
the model or the profile.

The suite (:func:`run`) attacks the first ``attack.num_examples`` test images, data-parallel (batches sharded
over the mesh's ``data`` axis, parameters replicated). Each attack is ONE jitted function of
(variables, batch, clean logits, ε, keys) — attack, evaluation of the adversarial images for T_eval steps,
and the per-step counts — with ε passed as an array, so it compiles once per batch shape for every ε.
For each ε in ``attack.epsilons`` it runs:

* ``pgd_step``: PGD on the logits of step k (the profile's iterations, restarts, losses, EOT);
* ``pgd_avg`` / ``pgd_full``: the same on the other horizons in ``attack.horizons``;
* ``fgsm_step``: FGSM on step k (check 4);
* ``worst``: per example and per step, the worst case over every attack run on the example (including
  the check-3 attack); this is the honest robust accuracy, and the headline of the ``strong`` profile;

and records at every step 1..T_eval the accuracy, the clean accuracy and the ASR over the examples that were
clean-correct at that step (untargeted: adv wrong; targeted: adv predicts the target; attacks.attack_success),
from counts summed over batches with the padding masked out. The targeted attack (``pgd_step``, CE towards
the target) runs on ``attack.targeted_epsilons``.

Sanity checks (Carlini et al. 2019, "On evaluating adversarial robustness"; Athalye et al. 2018), each
reported pass / fail / skipped with its numbers (:func:`sanity_checks`, pure functions of the results):

1. accuracy does not rise with ε: clean, then every ε, then the large ε; at steps k and T_eval, for every
   PGD horizon; a rise above ``checks.monotone_tol`` fails;
2. at ``checks.large_eps`` the step-k attack brings step-k accuracy to chance (1/K + ``chance_tol``) or below;
3. the step-k attack with ``iteration_factor``× the iterations and ``extra_restarts`` more restarts (worst
   per example with the original) changes robust accuracy at step k by less than ``convergence_tol`` (1
   point), else "not converged" (at ``convergence_eps``, on the first ``convergence_examples``);
4. FGSM is not stronger than PGD: FGSM accuracy at step k >= PGD accuracy − ``fgsm_tol`` at every ε;
5. the gradient-free Square attack (margin loss, ``square_queries`` queries, at ``square_eps``) breaks no
   example that PGD did not: the count of examples misclassified at step k after Square but not after PGD
   must be at most floor(``square_tol`` × N). The tolerance (1% by default: 2 of 200) absorbs examples that
   sit on the decision boundary, where any extra search may flip them; a masked model loses many more;
6. input-gradient norms per step (loss on each step's logits w.r.t. the input, CE and margin, argmax
   fixations): fail on any NaN/inf, if at some step more than ``grad_zero_frac`` of the examples have an
   exactly zero gradient for every loss of the profile, or if the per-step median norms of the margin loss
   (no softmax saturation) span more than a factor ``grad_ratio`` (exploding/vanishing through the unroll);
7. full horizon vs step k: the paper's recovery is acc_T(step-k attack) − acc_k(step-k attack). It
   "survives" at an ε if acc_T under the full-horizon attack still exceeds acc_k under the step-k attack by
   more than ``monotone_tol``. Pass: it survives at every ε where the step-k attack shows a recovery;
   skipped when there is no recovery to test or the model has no glimpse steps.

Models without fixations (FF-CNN) repeat one answer over steps: the suite runs only the step horizon and
skips the probability maps and check 7.

Outputs in ``WORKDIR/attack_<profile>/`` (one directory per profile, so runs of both profiles coexist):
``results.json`` (every number, the config and the profile), ``report.md`` (tables and the check table),
the plots (``accuracy_per_step.png``, ``accuracy_bars.png``, ``asr_per_step.png``, ``prob_maps.png``) and
``prob_maps.npz``. :mod:`rsrnn_jax.report.results` writes the report and plots (also from a saved results.json).
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import sys
import time
import zlib

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from rsrnn_jax import attacks as A
from rsrnn_jax import data
from rsrnn_jax.train import parallel

log = logging.getLogger(__name__)

PROFILES = ("paper", "strong")


# Model-level objectives live in rsrnn_jax/attacks/objectives.py (re-exported here for the suite's callers).
from rsrnn_jax.attacks.objectives import (FIXATION_MODES, HORIZONS, eot_keys, horizon_steps,  # noqa: E402
                                          image_hash, model_logits_fn, reduce_horizon, step_logits)


def example_targets(target_seed: int, indices, labels, num_classes: int):
  """Per-example targets, uniform over the other classes, from key fold_in(key(target_seed), index)."""
  base = jax.random.key(int(target_seed))
  indices = jnp.asarray(indices, jnp.uint32)
  labels = jnp.asarray(labels, jnp.int32)
  one = lambda i, y: A.random_targets(jax.random.fold_in(base, i), y[None], num_classes)[0]
  return np.asarray(jax.vmap(one)(indices, labels))


# ----------------------------------------------------------------------------------------------------------
# One attack, jitted per batch shape
# ----------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class AttackSpec:
  """A named attack: ``kind`` pgd | fgsm | square on ``horizon`` (step, avg, full).

  The name does not take part in equality/hashing: two specs that run the same attack share one compilation.
  """
  name: str = dataclasses.field(compare=False)
  kind: str = "pgd"
  horizon: str = "step"
  losses: tuple = ("ce",)
  num_iterations: int = 5
  num_restarts: int = 1
  step_size: float = 1.0 / 3.0    # fraction of ε
  random_start: bool = True
  targeted: bool = False
  num_queries: int = 0            # square

  def cost(self, setup) -> float:
    """Relative work per image (glimpse-step evaluations; a backward pass counts as 2), for the ETA."""
    steps = horizon_steps(self.horizon, setup.attack_step, setup.eval_steps)
    draws = setup.eot_samples if setup.fixations == "sample" else 1
    if self.kind == "square":
      attack = self.num_queries * steps * draws
    elif self.kind == "fgsm":
      attack = 3 * steps * draws
    else:
      runs = len(self.losses) * self.num_restarts
      attack = runs * (3 * self.num_iterations + 1) * steps * draws + (len(self.losses) > 1) * runs * steps
    return float(attack + setup.eval_steps)


@dataclasses.dataclass(frozen=True)
class Setup:
  """What every attack of a run shares."""
  attack_step: int
  eval_steps: int
  norm: str = "linf"
  fixations: str = "argmax"
  eot_samples: int = 1


def _worst_of(logits_fn, candidates, labels, targeted: bool):
  """Per example, the strongest candidate: a successful one first, then the highest margin loss."""
  if len(candidates) == 1:
    return candidates[0]
  best_x, best_s, best_v = None, None, None
  for x in candidates:
    z = logits_fn(x)
    v = A.attack_loss(z, labels, loss="margin", targeted=targeted)
    pred = jnp.argmax(z, -1)
    s = pred == labels if targeted else pred != labels
    if best_x is None:
      best_x, best_s, best_v = x, s, v
      continue
    better = (s & ~best_s) | ((s == best_s) & (v > best_v))
    best_x = jnp.where(better.reshape((-1,) + (1,) * (x.ndim - 1)), x, best_x)
    best_s, best_v = jnp.where(better, s, best_s), jnp.where(better, v, best_v)
  return best_x


def run_attack(spec: AttackSpec, logits_fn, images, labels, *, eps, rng, norm: str = "linf"):
  """Adversarial images for ``spec`` (labels = targets when ``spec.targeted``)."""
  if spec.kind == "fgsm":
    return A.fgsm(logits_fn, images, labels, eps=eps, norm=norm, targeted=spec.targeted, loss=spec.losses[0])
  if spec.kind == "square":
    if norm != "linf":
      raise ValueError("the Square attack is L∞ only")
    return A.square_attack(logits_fn, images, labels, eps=eps, num_queries=spec.num_queries, rng=rng,
                           targeted=spec.targeted)
  if spec.kind != "pgd":
    raise ValueError(f"unknown attack kind {spec.kind!r}")
  step = spec.step_size * jnp.asarray(eps, jnp.float32)
  candidates = []
  for i, loss in enumerate(spec.losses):
    key = jax.random.fold_in(rng, i)
    kwargs = dict(eps=eps, step_size=step, num_steps=spec.num_iterations, norm=norm, targeted=spec.targeted,
                  random_start=spec.random_start, loss=loss)
    if spec.num_restarts > 1:
      candidates.append(A.pgd_restarts(logits_fn, images, labels, num_restarts=spec.num_restarts, rng=key,
                                       **kwargs))
    else:
      candidates.append(A.pgd(logits_fn, images, labels, rng=key, **kwargs))
  return _worst_of(logits_fn, candidates, labels, spec.targeted)


_COUNT_KEYS = ("num_examples", "num_clean_correct", "num_adv_correct", "num_success")


def attack_and_evaluate(variables, batch, clean_logits, eps, rng, eval_rng, *, model, spec: AttackSpec,
                        setup: Setup):
  """Attack one batch at ``eps`` and evaluate the adversarial images for T_eval steps (jit this).

  batch: image [B,H,W,C], label [B], mask [B], target [B]; clean_logits [T_eval,B,K] (from
  :func:`clean_logits_fn` with the same ``eval_rng``). Returns per-step counts (``num_*`` [T]), the
  per-example ``adv_correct`` and ``success`` [T,B] (False on padding) and the ``adv_images``.
  """
  x, y = batch["image"], batch["label"]
  mask = batch["mask"] > 0
  targets = batch["target"] if spec.targeted else None
  k_attack, k_eot = jax.random.split(rng)
  logits_fn = model_logits_fn(model, variables, horizon=spec.horizon, attack_step=setup.attack_step,
                              eval_steps=setup.eval_steps, fixations=setup.fixations,
                              eot_samples=setup.eot_samples, rng=k_eot)
  x_adv = run_attack(spec, logits_fn, x, targets if spec.targeted else y, eps=eps, rng=k_attack,
                     norm=setup.norm)
  adv_logits = step_logits(model, variables, x_adv, num_steps=setup.eval_steps, fixations=setup.fixations,
                           rng=eval_rng)
  stats = A.attack_success(clean_logits, adv_logits, y, targets=targets, mask=mask)
  adv_pred = jnp.argmax(adv_logits, -1)
  clean_correct = (jnp.argmax(clean_logits, -1) == y) & mask
  hit = adv_pred == targets if spec.targeted else adv_pred != y
  out = {k: stats[k] for k in _COUNT_KEYS}
  out["adv_correct"] = (adv_pred == y) & mask
  out["success"] = clean_correct & hit
  out["adv_images"] = x_adv
  return out


def make_attack_fn(model, spec: AttackSpec, setup: Setup):
  """``jit(attack_and_evaluate)`` for ``spec``: (variables, batch, clean_logits, eps, rng, eval_rng) → dict.

  ε is a traced argument: one compilation per batch shape serves every ε.
  """
  return jax.jit(functools.partial(attack_and_evaluate, model=model, spec=spec, setup=setup))


def clean_logits_fn(model, setup: Setup):
  """jit: (variables, images, eval_rng) → clean logits [T_eval, B, K]."""
  def fn(variables, images, eval_rng):
    return step_logits(model, variables, images, num_steps=setup.eval_steps, fixations=setup.fixations,
                       rng=eval_rng)
  return jax.jit(fn)


# ----------------------------------------------------------------------------------------------------------
# Aggregation over batches
# ----------------------------------------------------------------------------------------------------------

_to_host = parallel.to_host


def finalize_counts(counts: dict) -> dict:
  """Summed per-step counts → accuracies and ASR (None where no example was clean-correct)."""
  n = np.maximum(np.asarray(counts["num_examples"], np.float64), 1.0)
  ccc = np.asarray(counts["num_clean_correct"], np.float64)
  out = {k: [int(v) for v in counts[k]] for k in _COUNT_KEYS}
  out["clean_acc"] = [float(v) for v in ccc / n]
  out["adv_acc"] = [float(v) for v in np.asarray(counts["num_adv_correct"]) / n]
  out["asr"] = [float(s / c) if c > 0 else None for s, c in zip(counts["num_success"], ccc)]
  return out


class Sweep:
  """Runs one jitted attack over every batch for each ε and aggregates (counts summed over batches)."""

  def __init__(self, variables, batches, clean_logits, eval_keys, *, progress=None):
    self.variables, self.batches, self.clean_logits, self.eval_keys = variables, batches, clean_logits, eval_keys
    self.progress = progress

  def run(self, attack_fn, eps_values, rng, *, num_batches: int | None = None, weight: float = 0.0,
          label: str = "", keep_images: int = 0):
    """Returns a list (one per ε) of dicts: ``eps``, finalized counts, ``adv_correct``/``success`` [N,T]."""
    batches = self.batches[:num_batches] if num_batches else self.batches
    results = []
    for i, eps in enumerate(eps_values):
      total = None
      per_adv, per_succ, images = [], [], []
      for j, batch in enumerate(batches):
        if self.progress is not None:
          self.progress.set_postfix_str(f"{label} eps={eps:g}", refresh=False)
        key = jax.random.fold_in(jax.random.fold_in(rng, i), j)
        out = attack_fn(self.variables, batch, self.clean_logits[j], jnp.asarray(eps, jnp.float32), key,
                        self.eval_keys[j])
        if keep_images and j == 0:
          images.append(out["adv_images"])
        host = _to_host({k: out[k] for k in (*_COUNT_KEYS, "adv_correct", "success")})
        counts = {k: np.asarray(host[k], np.int64) for k in _COUNT_KEYS}
        total = counts if total is None else {k: total[k] + counts[k] for k in _COUNT_KEYS}
        mask = np.asarray(_to_host(batch["mask"])) > 0
        per_adv.append(np.asarray(host["adv_correct"])[:, mask].T)
        per_succ.append(np.asarray(host["success"])[:, mask].T)
        if self.progress is not None:
          self.progress.update(weight * len(mask))
      entry = {"eps": float(eps), **finalize_counts(total),
               "adv_correct": np.concatenate(per_adv), "success": np.concatenate(per_succ)}
      if keep_images:
        entry["adv_images"] = images[0]
      results.append(entry)
    return results


def per_example_stats(clean_correct, adv_correct, success=None):
  """Counts from per-example [N, T] boolean arrays (clean_correct, adv_correct) → finalized dict."""
  clean_correct = np.asarray(clean_correct, bool)
  adv_correct = np.asarray(adv_correct, bool)
  if success is None:
    success = clean_correct & ~adv_correct
  n, t = clean_correct.shape
  counts = {"num_examples": np.full(t, n), "num_clean_correct": clean_correct.sum(0),
            "num_adv_correct": adv_correct.sum(0), "num_success": np.asarray(success, bool).sum(0)}
  return finalize_counts(counts)


# ----------------------------------------------------------------------------------------------------------
# Adversarial probability maps (paper v1 Fig. 5)
# ----------------------------------------------------------------------------------------------------------

def grid_fixations(grid: int):
  """[G·G, 2] fixations (x, y) of the cells of a G×G grid, row-major: cell (i, j) = (x_j, y_i)."""
  c = jnp.linspace(-1.0, 1.0, grid)
  xx, yy = jnp.meshgrid(c, c, indexing="xy")
  return jnp.stack([xx, yy], -1).reshape(-1, 2)


def probability_maps(model, variables, images, classes, *, grid: int = 32, chunk: int = 256, mesh=None):
  """Probability of ``classes`` when the fixation is forced to every cell of a G×G grid.

  images [n,H,W,C], classes [n]. Returns ``{"1": [n,G,G], "1&2": [n,G,G]}``: "1" forces the first fixation
  to the cell and reads step 1; "1&2" keeps the model's own first fixation (the centre, in evaluation) and
  forces the second to the cell, reading step 2. Map cell (i, j) is the fixation (x_j, y_i) with
  x, y = linspace(−1, 1, G) (row = y, down). All n·G² forward passes run in one jitted ``lax.map`` over
  chunks of ``chunk`` (image, cell) pairs; chunks are sharded over ``mesh``'s data axis when they divide.
  """
  return make_probability_map_fn(model, grid=grid, chunk=chunk, mesh=mesh)(
      variables, jnp.asarray(images), jnp.asarray(classes, jnp.int32))


_PROB_MAP_FNS: dict = {}


def make_probability_map_fn(model, *, grid: int = 32, chunk: int = 256, mesh=None):
  """The jitted (variables, images [n,H,W,C], classes [n]) → maps function of :func:`probability_maps`."""
  key = (id(model), grid, chunk, id(mesh))
  if key in _PROB_MAP_FNS and _PROB_MAP_FNS[key][0] is model:
    return _PROB_MAP_FNS[key][1]
  fn = _build_probability_map_fn(model, grid, chunk, mesh)
  _PROB_MAP_FNS[key] = (model, fn)
  return fn


def _build_probability_map_fn(model, grid: int, chunk: int, mesh):
  cells = grid_fixations(grid)
  g2 = grid * grid

  def fn(variables, images, classes):
    n = images.shape[0]
    total = n * g2
    c = min(chunk, total)
    num_chunks = -(-total // c)
    pad = num_chunks * c - total
    img_idx = jnp.pad(jnp.repeat(jnp.arange(n), g2), (0, pad))
    fix = jnp.pad(jnp.tile(cells, (n, 1)), ((0, pad), (0, 0)))
    shard = None
    if mesh is not None and c % mesh.devices.size == 0:
      shard = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(parallel.DATA_AXIS))

    def body(args):
      idx, f = args
      x = images[idx]
      if shard is not None:
        x, f = jax.lax.with_sharding_constraint((x, f), shard)
      cls = classes[idx]
      zeros = jnp.zeros_like(f)
      one = model.apply(variables, x, num_steps=1, train=False, sample_fixations=False,
                        fixations=f[None], fixation_mask=jnp.array([True]))["logits"][0]
      two = model.apply(variables, x, num_steps=2, train=False, sample_fixations=False,
                        fixations=jnp.stack([zeros, f]), fixation_mask=jnp.array([False, True]))["logits"][1]
      pick = lambda z: jnp.take_along_axis(jax.nn.softmax(z, -1), cls[:, None], -1)[:, 0]
      return pick(one), pick(two)

    p1, p12 = jax.lax.map(body, (img_idx.reshape(num_chunks, c), fix.reshape(num_chunks, c, 2)))
    p1 = p1.reshape(-1)[:total].reshape(n, grid, grid)
    p12 = p12.reshape(-1)[:total].reshape(n, grid, grid)
    return {"1": p1, "1&2": p12}

  return jax.jit(fn)


# ----------------------------------------------------------------------------------------------------------
# Input-gradient norms per step (check 6)
# ----------------------------------------------------------------------------------------------------------

def input_gradient_norms(model, variables, images, labels, *, num_steps: int, fixations: str = "argmax",
                         rng=None, losses=("ce", "margin")):
  """Per-example L2 norm of d loss(logits of step t) / d input, for every step t and loss.

  One forward pass; the T·len(losses) backward passes are a lax.map over one-hot cotangents of the [L·T] vector
  of batch-summed losses (per-example gradients are exact: examples are independent in eval mode).
  Returns ``{loss: [T, B]}``.
  """
  def losses_fn(x):
    z = step_logits(model, variables, x, num_steps=num_steps, fixations=fixations, rng=rng)
    per = [jax.vmap(lambda zt: jnp.sum(A.attack_loss(zt, labels, loss=l)))(z) for l in losses]  # [T] each
    return jnp.concatenate(per)

  values, vjp = jax.vjp(losses_fn, images)
  eye = jnp.eye(values.shape[0], dtype=values.dtype)

  def norm_of(cotangent):
    (g,) = vjp(cotangent)
    return jnp.sqrt(jnp.sum(jnp.square(g.astype(jnp.float32)), axis=tuple(range(1, g.ndim))))

  norms = jax.lax.map(norm_of, eye)  # [L·T, B]; one backward pass at a time (memory of one gradient)
  norms = norms.reshape(len(losses), num_steps, -1)
  return {l: norms[i] for i, l in enumerate(losses)}


def gradient_summary(norms_by_loss: dict, mask=None) -> dict:
  """{loss: [T, N]} norms → per-step median/mean/max, fraction exactly zero, count non-finite."""
  out = {}
  for loss, norms in norms_by_loss.items():
    g = np.asarray(norms, np.float64)
    if mask is not None:
      g = g[:, np.asarray(mask, bool)]
    finite = np.isfinite(g)
    safe = np.where(finite, g, np.nan)
    out[loss] = {
        "median_norm": [float(v) for v in np.nanmedian(safe, axis=1)] if g.size else [],
        "mean_norm": [float(v) for v in np.nanmean(safe, axis=1)] if g.size else [],
        "max_norm": [float(v) for v in np.nanmax(safe, axis=1)] if g.size else [],
        "zero_frac": [float(v) for v in np.mean(g == 0, axis=1)] if g.size else [],
        "num_nonfinite": [int(v) for v in np.sum(~finite, axis=1)],
    }
  return out


# ----------------------------------------------------------------------------------------------------------
# Sanity checks: pure functions of the results dict
# ----------------------------------------------------------------------------------------------------------

def _check(cid: int, name: str, status: str, detail: str, **numbers) -> dict:
  return {"id": cid, "name": name, "status": status, "detail": detail, "numbers": numbers}


def _acc_at(entry, step: int) -> float:
  return float(entry["adv_acc"][step - 1])


def _pgd_attacks(section: dict) -> list[str]:
  return [name for name in section.get("attacks", {}) if name.startswith("pgd_")]


def check_monotone(results: dict, tol: float) -> dict:
  """1. Accuracy does not rise as ε grows (clean → ε list → large ε), at steps k and T_eval, per PGD attack."""
  k, t = results["attack_step"], results["eval_steps"]
  unt = results["untargeted"]
  clean = results["clean"]["accuracy_per_step"]
  curves, worst_rise, where = {}, -math.inf, ""
  for name in _pgd_attacks(unt):
    points = [(0.0, clean)] + [(e["eps"], e["adv_acc"]) for e in unt["attacks"][name]]
    large = results.get("large_eps", {}).get(name)
    if large is not None:
      points.append((large["eps"], large["adv_acc"]))
    points.sort(key=lambda p: p[0])
    for step in sorted({k, t}):
      accs = [float(p[1][step - 1]) for p in points]
      curves[f"{name}@{step}"] = {"eps": [p[0] for p in points], "acc": accs}
      for i in range(1, len(accs)):
        rise = accs[i] - accs[i - 1]
        if rise > worst_rise:
          worst_rise, where = rise, f"{name} step {step}: {accs[i - 1]:.3f} at ε={points[i - 1][0]:g} → " \
                                    f"{accs[i]:.3f} at ε={points[i][0]:g}"
  if not curves:
    return _check(1, "accuracy does not rise with ε", "skipped", "no PGD results")
  ok = worst_rise <= tol
  detail = (f"largest rise {max(worst_rise, 0):.3f} ≤ {tol:g}" if ok else
            f"accuracy rises by {worst_rise:.3f} > {tol:g} ({where})")
  return _check(1, "accuracy does not rise with ε", "pass" if ok else "fail", detail,
                max_rise=float(worst_rise), tol=tol, curves=curves)


def check_large_eps(results: dict, tol: float) -> dict:
  """2. At the large ε the step-k attack brings accuracy at step k to chance (1/K + tol) or below."""
  large = results.get("large_eps", {}).get("pgd_step")
  if large is None:
    return _check(2, "accuracy falls to chance at a large ε", "skipped", "large-ε attack not run")
  k, t = results["attack_step"], results["eval_steps"]
  chance = 1.0 / results["num_classes"]
  acc_k, acc_t = _acc_at(large, k), _acc_at(large, t)
  ok = acc_k <= chance + tol
  detail = (f"step-{k} accuracy {acc_k:.3f} at ε={large['eps']:g} (chance {chance:.3f} + {tol:g}); "
            f"step {t}: {acc_t:.3f}")
  if not ok:
    detail = "NOT at chance: " + detail + " — gradients may be masked"
  return _check(2, "accuracy falls to chance at a large ε", "pass" if ok else "fail", detail,
                eps=large["eps"], acc_at_k=acc_k, acc_at_T=acc_t, chance=chance, tol=tol)


def check_convergence(results: dict, tol: float) -> dict:
  """3. More iterations + restarts change robust accuracy (step k) by < tol, else "not converged"."""
  rows = results.get("convergence", [])
  if not rows:
    return _check(3, "attack converged (2× iterations + restarts)", "skipped", "not run")
  deltas = [abs(r["base_acc"] - r["strong_acc"]) for r in rows]
  worst = int(np.argmax(deltas))
  ok = max(deltas) < tol
  r = rows[worst]
  detail = (f"max Δacc {max(deltas):.3f} (ε={r['eps']:g}: {r['base_acc']:.3f} → {r['strong_acc']:.3f} with "
            f"{r['iterations']} it × {r['restarts']} restarts, {r['num_examples']} examples)")
  if not ok:
    detail = "not converged: " + detail
  return _check(3, "attack converged (2× iterations + restarts)", "pass" if ok else "fail", detail,
                rows=rows, max_delta=float(max(deltas)), tol=tol)


def check_fgsm(results: dict, tol: float) -> dict:
  """4. FGSM is not stronger than PGD (accuracy at step k, every ε)."""
  attacks = results["untargeted"]["attacks"]
  if "fgsm_step" not in attacks or "pgd_step" not in attacks:
    return _check(4, "FGSM not stronger than PGD", "skipped", "not run")
  k = results["attack_step"]
  rows = [{"eps": f["eps"], "fgsm_acc": _acc_at(f, k), "pgd_acc": _acc_at(p, k)}
          for f, p in zip(attacks["fgsm_step"], attacks["pgd_step"])]
  bad = [r for r in rows if r["fgsm_acc"] < r["pgd_acc"] - tol]
  ok = not bad
  gap = min(r["fgsm_acc"] - r["pgd_acc"] for r in rows)
  detail = (f"FGSM − PGD accuracy at step {k} ≥ {gap:.3f} at every ε" if ok else
            "FGSM stronger than PGD at ε=" + ", ".join(f"{r['eps']:g} ({r['fgsm_acc']:.3f} < {r['pgd_acc']:.3f})"
                                                     for r in bad))
  return _check(4, "FGSM not stronger than PGD", "pass" if ok else "fail", detail, rows=rows, tol=tol)


def check_square(results: dict, tol: float) -> dict:
  """5. The gradient-free attack breaks no example PGD did not (≤ floor(tol·N) such examples)."""
  sq = results.get("square")
  if not sq:
    return _check(5, "gradient-free attack finds nothing PGD missed", "skipped", "not run")
  allowed = int(math.floor(tol * sq["num_examples"]))
  ok = sq["square_only"] <= allowed
  detail = (f"Square ({sq['queries']} queries, ε={sq['eps']:g}) broke {sq['square_only']} of "
            f"{sq['num_examples']} examples PGD did not (allowed {allowed}); Square broke {sq['square_broken']}, "
            f"PGD {sq['pgd_broken']}")
  return _check(5, "gradient-free attack finds nothing PGD missed", "pass" if ok else "fail", detail,
                allowed=allowed, **{k: v for k, v in sq.items()})


def check_gradients(results: dict, zero_frac: float, ratio: float, losses=("ce",)) -> dict:
  """6. Input-gradient norms per step: no NaN/inf, not zero (for every attack loss), no explosion."""
  g = results.get("gradients")
  if not g:
    return _check(6, "input gradients healthy at every step", "skipped", "not run")
  per = g["per_loss"]
  problems = []
  nonfinite = sum(sum(v["num_nonfinite"]) for v in per.values())
  if nonfinite:
    problems.append(f"{nonfinite} non-finite gradient norms")
  used = [l for l in losses if l in per]
  if used:
    steps = len(per[used[0]]["zero_frac"])
    for s in range(steps):
      fracs = [per[l]["zero_frac"][s] for l in used]
      if min(fracs) > zero_frac:
        problems.append(f"step {s + 1}: {min(fracs):.0%} of examples have a zero gradient ({'/'.join(used)})")
  spread = None
  ref = per.get("margin") or per[next(iter(per))]
  med = np.asarray([v for v in ref["median_norm"]], np.float64)
  if med.size and np.all(np.isfinite(med)):
    lo, hi = float(med.min()), float(med.max())
    spread = math.inf if lo <= 0 else hi / lo
    if spread > ratio:
      problems.append(f"median margin-gradient norm spans ×{spread:.3g} over steps (> ×{ratio:g}): "
                      f"exploding/vanishing through the unroll")
  ok = not problems
  medians = ", ".join(f"{v:.3g}" for v in ref["median_norm"])
  detail = ("finite, non-zero; median margin-gradient norm per step: " + medians if ok else "; ".join(problems))
  return _check(6, "input gradients healthy at every step", "pass" if ok else "fail", detail,
                spread=spread, zero_frac_tol=zero_frac, ratio_tol=ratio, num_examples=g.get("num_examples"))


def check_full_horizon(results: dict, tol: float) -> dict:
  """7. Does the step-k attack's "recovery with more glimpses" survive a full-horizon attacker?"""
  attacks = results["untargeted"]["attacks"]
  if "pgd_full" not in attacks or "pgd_step" not in attacks:
    return _check(7, "recovery survives a full-horizon attack", "skipped",
                  "no full-horizon attack (model without glimpse steps, or 'full' not in horizons)")
  k, t = results["attack_step"], results["eval_steps"]
  rows = []
  for s, f in zip(attacks["pgd_step"], attacks["pgd_full"]):
    acc_k, acc_t, full_t = _acc_at(s, k), _acc_at(s, t), _acc_at(f, t)
    rows.append({"eps": s["eps"], "step_attack_acc_k": acc_k, "step_attack_acc_T": acc_t,
                 "full_attack_acc_k": _acc_at(f, k), "full_attack_acc_T": full_t,
                 "recovery": acc_t - acc_k, "recovery_under_full": full_t - acc_k})
  claimed = [r for r in rows if r["recovery"] > tol]
  if not claimed:
    return _check(7, "recovery survives a full-horizon attack", "skipped",
                  f"no recovery to test: step-{k} attack accuracy does not rise by > {tol:g} from step {k} to {t}",
                  rows=rows, tol=tol)
  lost = [r for r in claimed if r["recovery_under_full"] <= tol]
  ok = not lost
  show = ", ".join(f"ε={r['eps']:g}: {r['step_attack_acc_k']:.3f}→{r['step_attack_acc_T']:.3f} (full: "
                   f"{r['full_attack_acc_T']:.3f})" for r in claimed)
  detail = ("recovery survives: " if ok else "recovery does NOT survive at some ε: ") + show
  return _check(7, "recovery survives a full-horizon attack", "pass" if ok else "fail", detail,
                rows=rows, tol=tol)


def sanity_checks(results: dict, checks) -> list[dict]:
  """All seven checks on a results dict (``checks``: the ``config.attack.checks`` fields)."""
  get = lambda k: checks[k]
  return [
      check_monotone(results, float(get("monotone_tol"))),
      check_large_eps(results, float(get("chance_tol"))),
      check_convergence(results, float(get("convergence_tol"))),
      check_fgsm(results, float(get("fgsm_tol"))),
      check_square(results, float(get("square_tol"))),
      check_gradients(results, float(get("grad_zero_frac")), float(get("grad_ratio")),
                      tuple(results.get("losses", ("ce",)))),
      check_full_horizon(results, float(get("monotone_tol"))),
  ]


# ----------------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------------

def _require(cond, message):
  if not cond:
    raise ValueError(message)


def validate_attack_config(config) -> None:
  """One-line ValueErrors for impossible ``config.attack`` values."""
  _require("attack" in config, "config has no 'attack' section; build it with configs.common.attack_profile")
  _require(not data.is_multi_label(config.data), f"--mode=attack needs single-label data (one true class per "
           f"image for the attacks and the ASR); {config.data.name} is multi-label: evaluate it with --mode=eval")
  a = config.attack
  _require(a.profile in PROFILES, f"config.attack.profile={a.profile!r} is unknown; choose one of "
           f"{', '.join(PROFILES)}")
  _require(a.norm in A.NORMS, f"config.attack.norm must be one of {', '.join(A.NORMS)}, got {a.norm!r}")
  _require(a.fixations in FIXATION_MODES, f"config.attack.fixations must be argmax or sample, got {a.fixations!r}")
  _require(len(a.losses) > 0 and all(l in A.LOSSES for l in a.losses),
           f"config.attack.losses must be a non-empty tuple of {', '.join(A.LOSSES)}, got {a.losses!r}")
  _require("step" in a.horizons and all(h in HORIZONS for h in a.horizons),
           f"config.attack.horizons must contain 'step' and only {', '.join(HORIZONS)}, got {a.horizons!r}")
  for key in ("num_iterations", "num_restarts", "eot_samples", "attack_step", "batch_size"):
    _require(int(a[key]) >= 1, f"config.attack.{key} must be >= 1, got {a[key]!r}")
  _require(float(a.step_size) > 0, f"config.attack.step_size must be > 0 (a fraction of ε), got {a.step_size!r}")
  _require(int(a.num_examples) >= 0, f"config.attack.num_examples must be >= 0, got {a.num_examples!r}")
  _require(len(a.epsilons) > 0 and all(float(e) > 0 for e in a.epsilons),
           f"config.attack.epsilons must be a non-empty list of positive ε, got {a.epsilons!r}")
  _require(all(float(e) > 0 for e in a.targeted_epsilons),
           f"config.attack.targeted_epsilons must be positive, got {a.targeted_epsilons!r}")
  t_eval = eval_steps_of(config)
  _require(t_eval >= int(a.attack_step), f"config.attack.eval_steps (T_eval={t_eval}) must be >= "
           f"config.attack.attack_step={a.attack_step}")
  _require(int(a.prob_map.grid) >= 2, f"config.attack.prob_map.grid must be >= 2, got {a.prob_map.grid!r}")
  _require(0 <= int(a.prob_map.num_images) <= int(a.batch_size),
           f"config.attack.prob_map.num_images must be in [0, attack.batch_size], got {a.prob_map.num_images!r}")
  _require(int(a.prob_map.chunk) >= 1, f"config.attack.prob_map.chunk must be >= 1, got {a.prob_map.chunk!r}")
  c = a.checks
  _require(int(c.iteration_factor) >= 1, f"config.attack.checks.iteration_factor must be >= 1")
  _require(int(c.extra_restarts) >= 0, f"config.attack.checks.extra_restarts must be >= 0")
  _require(int(c.square_queries) >= 0, f"config.attack.checks.square_queries must be >= 0 (0 = skip check 5)")
  _require(float(c.large_eps) >= 0, f"config.attack.checks.large_eps must be >= 0 (0 = skip check 2)")


def eval_steps_of(config) -> int:
  return int(config.attack.eval_steps) or int(config.eval.num_glimpses)


def profile_overrides(attack_cfg) -> dict:
  """Fields of ``attack_cfg`` that define a profile and differ from the named profile's definition."""
  from configs import common
  ref = common.attack_profile(attack_cfg.profile)
  out = {}
  for key in common.ATTACK_PROFILE_FIELDS:
    mine, theirs = attack_cfg[key], ref[key]
    if isinstance(mine, (list, tuple)):
      mine, theirs = list(mine), list(theirs)
    if mine != theirs:
      out[key] = {"config": mine, "profile": theirs}
  return out


def describe_profile(a) -> str:
  """A one-line description of the attack the config runs."""
  step = f"ε/{1 / a.step_size:.3g}" if a.step_size > 0 else "0"
  fix = "argmax fixations" if a.fixations == "argmax" else f"sampled fixations, EOT over {a.eot_samples} draws"
  return (f"{a.norm.upper().replace('LINF', 'L∞')} PGD, {a.num_iterations} iterations, step {step}, "
          f"{'random start' if a.random_start else 'no random start'}, {a.num_restarts} restart(s) × loss "
          f"{'+'.join(a.losses)} (worst per example), objectives {'/'.join(a.horizons)}, {fix}")


def _middle(values):
  values = sorted(float(v) for v in values)
  return values[len(values) // 2]


def _first_examples(batches_np, n: int, mesh):
  """Sharded batches holding (about) the first ``n`` examples: whole batches, then the first rows of the next
  one (rounded up to a multiple of the device count)."""
  ndev = mesh.devices.size
  left = n
  for b in batches_np:
    if left <= 0:
      return
    rows = len(b["mask"])
    if left < rows:
      rows = min(rows, -(-left // ndev) * ndev)
    sub = {k: np.asarray(v)[:rows] for k, v in b.items()}
    yield parallel.shard_batch({k: sub[k] for k in ("image", "label", "mask")}, mesh)
    left -= int((sub["mask"] > 0).sum()) * jax.process_count()


def _batches_for(n_examples: int, batch_size: int, total_batches: int) -> int:
  return total_batches if n_examples <= 0 else min(total_batches, max(1, -(-n_examples // batch_size)))


# ----------------------------------------------------------------------------------------------------------
# The suite
# ----------------------------------------------------------------------------------------------------------

def _load_subset(config, info, mesh):
  """The first attack.num_examples eval examples as sharded batches with targets and indices."""
  a = config.attack
  parallel.local_batch_size(int(a.batch_size), mesh)
  p_index, p_count = jax.process_index(), jax.process_count()
  local = int(a.batch_size) // p_count
  batches = []
  for j, b in enumerate(data.eval_batches(config.data, global_batch_size=int(a.batch_size),
                                          process_index=p_index, process_count=p_count,
                                          max_examples=int(a.num_examples) or None)):
    first = j * int(a.batch_size) + p_index * local
    index = np.arange(first, first + local, dtype=np.int64)
    b = dict(b)
    b["index"] = index.astype(np.int32)
    b["target"] = example_targets(int(a.target_seed), index, b["label"], info.num_classes).astype(np.int32)
    b["label"] = b["label"].astype(np.int32)
    batches.append(b)
  if not batches:
    raise ValueError("the eval split is empty: nothing to attack")
  return batches


def _attack_specs(config, has_steps: bool):
  a = config.attack
  base = dict(losses=tuple(a.losses), num_iterations=int(a.num_iterations), num_restarts=int(a.num_restarts),
              step_size=float(a.step_size), random_start=bool(a.random_start))
  horizons = [h for h in a.horizons if has_steps or h == "step"]
  specs = {f"pgd_{h}": AttackSpec(name=f"pgd_{h}", horizon=h, **base) for h in horizons}
  specs["fgsm_step"] = AttackSpec(name="fgsm_step", kind="fgsm", losses=(a.losses[0],))
  targeted = AttackSpec(name="pgd_step", targeted=True, **base)
  c = a.checks
  conv = dataclasses.replace(specs["pgd_step"], name="pgd_step_converged",
                             num_iterations=int(a.num_iterations) * int(c.iteration_factor),
                             num_restarts=int(a.num_restarts) + int(c.extra_restarts))
  square = AttackSpec(name="square_step", kind="square", losses=("margin",), num_queries=int(c.square_queries))
  return specs, targeted, conv, square


def run(config, workdir: str) -> dict:
  """``--mode=attack``: the whole suite on the latest checkpoint of ``workdir`` (or eval.checkpoint_path)."""
  from rsrnn_jax.evaluation import clean as evaluate
  from rsrnn_jax.train import state as train_state
  from rsrnn_jax.models import has_fixations, is_recurrent

  validate_attack_config(config)
  t_start = time.perf_counter()
  model, state, info, mesh = evaluate.load_model(config, workdir)
  variables = train_state.variables_of(state)
  a = config.attack
  with jax.set_mesh(mesh):
    results = run_suite(model, variables, config, info, mesh, has_steps=is_recurrent(config.model),
                        has_fixations=has_fixations(config.model))
  results["checkpoint_step"] = int(jax.device_get(state.step))
  results["timing"]["total_s"] = time.perf_counter() - t_start
  out_dir = os.path.join(workdir, f"attack_{a.profile}")
  if jax.process_index() == 0:
    from rsrnn_jax.report import results as report
    report.write_all(results, out_dir)
    log.info("attack results in %s", out_dir)
    for c in results["checks"]:
      log.info("check %d %-45s %s: %s", c["id"], c["name"], c["status"].upper(), c["detail"])
  return results


def run_suite(model, variables, config, info, mesh, *, has_steps: bool = True, has_fixations: bool = True,
              progress: bool = True) -> dict:
  """Every attack, the probability maps and the sanity checks → the results dict (no files written).

  ``has_steps``: the logits change with the step (else only the step-k horizon is run);
  ``has_fixations``: the model takes fixations (else no probability maps).
  """
  a = config.attack
  k, t_eval = int(a.attack_step), eval_steps_of(config)
  setup = Setup(attack_step=k, eval_steps=t_eval, norm=a.norm, fixations=a.fixations,
                eot_samples=int(a.eot_samples))
  timing = {}
  tic = time.perf_counter()
  batches_np = _load_subset(config, info, mesh)
  batches = [parallel.shard_batch(b, mesh) for b in batches_np]
  # Host copies of the global batches (every process sees the same arrays in a multi-process run).
  labels_host = [np.asarray(_to_host(b["label"])) for b in batches]
  masks = [np.asarray(_to_host(b["mask"])) > 0 for b in batches]
  n_examples = int(sum(m.sum() for m in masks))
  bs = int(a.batch_size)
  timing["data_s"] = time.perf_counter() - tic

  specs, targeted_spec, conv_spec, square_spec = _attack_specs(config, has_steps)
  c = a.checks
  eps_list = [float(e) for e in a.epsilons]
  teps_list = [float(e) for e in a.targeted_epsilons] if a.targeted else []
  conv_eps = [float(e) for e in c.convergence_eps] or [_middle(eps_list)]
  conv_batches = _batches_for(int(c.convergence_examples), bs, len(batches))
  sq_eps = float(c.square_eps) or _middle(eps_list)
  sq_batches = _batches_for(int(c.square_examples), bs, len(batches))
  run_square = int(c.square_queries) > 0 and a.norm == "linf"
  large_eps = float(c.large_eps)
  pm = a.prob_map
  run_maps = has_fixations and int(pm.num_images) > 0 and bool(teps_list or float(pm.eps))
  pm_eps = float(pm.eps) or (max(teps_list) if teps_list else 0.0)

  # Work estimate for the progress bar (relative glimpse-step evaluations × images).
  w = lambda spec: spec.cost(setup)
  bsz = lambda nb: sum(len(m) for m in masks[:nb])
  total = (sum(w(s) for s in specs.values()) * len(eps_list) * bsz(len(batches))
           + (w(specs["pgd_step"]) * bsz(len(batches)) if large_eps > 0 else 0)
           + w(targeted_spec) * len(teps_list) * bsz(len(batches))
           + w(conv_spec) * len(conv_eps) * bsz(conv_batches)
           + (w(square_spec) * bsz(sq_batches) if run_square else 0))
  bar = tqdm(total=total, desc=f"attack[{a.profile}]", unit="work", dynamic_ncols=True, file=sys.stderr,
             disable=not progress or jax.process_index() != 0, mininterval=1.0,
             bar_format="{l_bar}{bar}| {percentage:.0f}% [{elapsed}<{remaining}] {postfix}")

  seed_key = jax.random.key(int(a.seed))
  key_for = lambda name: jax.random.fold_in(seed_key, zlib.crc32(name.encode()) & 0x7FFFFFFF)
  eval_base = key_for("eval")
  eval_keys = [jax.random.fold_in(eval_base, j) for j in range(len(batches))]

  # Clean logits once per batch (the same eval keys as the adversarial evaluations).
  tic = time.perf_counter()
  clean_fn = clean_logits_fn(model, setup)
  clean_logits = [clean_fn(variables, b["image"], eval_keys[j]) for j, b in enumerate(batches)]
  clean_host = [np.asarray(_to_host(z)) for z in clean_logits]
  clean_correct = np.concatenate([(np.argmax(z, -1) == y[None])[:, m].T
                                  for z, y, m in zip(clean_host, labels_host, masks)])  # [N, T]
  clean_acc = clean_correct.mean(0) if len(clean_correct) else np.zeros(t_eval)
  timing["clean_s"] = time.perf_counter() - tic

  sweep = Sweep(variables, batches, clean_logits, eval_keys, progress=bar)
  fns = {}

  def fn_for(spec):
    key = (spec, )
    if key not in fns:
      fns[key] = make_attack_fn(model, spec, setup)
    return fns[key]

  # Untargeted attacks at every ε.
  untargeted = {}
  for name, spec in specs.items():
    tic = time.perf_counter()
    untargeted[name] = sweep.run(fn_for(spec), eps_list, key_for(name), weight=w(spec), label=name)
    timing[f"untargeted_{name}_s"] = time.perf_counter() - tic

  # Check 2: the step-k attack at a large ε.
  large = {}
  if large_eps > 0:
    tic = time.perf_counter()
    large["pgd_step"] = sweep.run(fn_for(specs["pgd_step"]), [large_eps], key_for("large"),
                                  weight=w(specs["pgd_step"]), label="large ε")[0]
    timing["large_eps_s"] = time.perf_counter() - tic

  # Check 3: more iterations and restarts (worst per example with the original attack).
  convergence, conv_entries = [], {}
  if conv_eps:
    tic = time.perf_counter()
    conv_res = sweep.run(fn_for(conv_spec), conv_eps, key_for(conv_spec.name), num_batches=conv_batches,
                         weight=w(conv_spec), label="convergence")
    n_conv = len(conv_res[0]["adv_correct"]) if conv_res else 0
    for e, r in zip(conv_eps, conv_res):
      base = _find_eps(untargeted["pgd_step"], e)
      if base is None:  # ε outside the list: the base attack on the same examples
        base = sweep.run(fn_for(specs["pgd_step"]), [e], key_for("pgd_step"), num_batches=conv_batches,
                         label="convergence base")[0]
      base_k = base["adv_correct"][:n_conv, k - 1]
      strong_k = base_k & r["adv_correct"][:, k - 1]
      conv_entries[e] = r["adv_correct"]
      convergence.append({"eps": e, "num_examples": int(n_conv), "iterations": conv_spec.num_iterations,
                          "restarts": conv_spec.num_restarts, "base_acc": float(base_k.mean()),
                          "strong_acc": float(strong_k.mean()), "converged_attack_acc": float(r["adv_acc"][k - 1])})
    timing["convergence_s"] = time.perf_counter() - tic

  # Targeted attack.
  targeted = {}
  if teps_list:
    tic = time.perf_counter()
    targeted["pgd_step"] = sweep.run(fn_for(targeted_spec), teps_list, key_for("targeted"),
                                     weight=w(targeted_spec), label="targeted")
    timing["targeted_s"] = time.perf_counter() - tic

  # Check 5: Square attack (gradient-free) vs PGD on the same examples.
  square = None
  if run_square:
    tic = time.perf_counter()
    sq = sweep.run(fn_for(square_spec), [sq_eps], key_for("square"), num_batches=sq_batches,
                   weight=w(square_spec), label="square")[0]
    n_sq = len(sq["adv_correct"])
    base = _find_eps(untargeted["pgd_step"], sq_eps)
    if base is None:
      base = sweep.run(fn_for(specs["pgd_step"]), [sq_eps], key_for("pgd_step"), num_batches=sq_batches,
                       label="square base")[0]
    sq_broken = ~sq["adv_correct"][:, k - 1]
    pgd_broken = ~base["adv_correct"][:n_sq, k - 1]
    square = {"eps": sq_eps, "queries": square_spec.num_queries, "num_examples": int(n_sq),
              "square_broken": int(sq_broken.sum()), "pgd_broken": int(pgd_broken.sum()),
              "square_only": int((sq_broken & ~pgd_broken).sum()),
              "square_acc_k": float(sq["adv_acc"][k - 1]), "square_acc_T": float(sq["adv_acc"][t_eval - 1])}
    timing["square_s"] = time.perf_counter() - tic
  bar.close()

  # Check 6: input-gradient norms per step.
  tic = time.perf_counter()
  gradients = None
  if int(c.grad_examples) > 0:
    grad_fn = jax.jit(functools.partial(input_gradient_norms, model, num_steps=t_eval, fixations=a.fixations))
    per = {"ce": [], "margin": []}
    for j, sub in enumerate(_first_examples(batches_np, int(c.grad_examples), mesh)):
      g = _to_host(grad_fn(variables, sub["image"], sub["label"], rng=eval_keys[j]))
      sub_mask = np.asarray(_to_host(sub["mask"])) > 0
      for l in per:
        per[l].append(np.asarray(g[l])[:, sub_mask])
    norms = {l: np.concatenate(v, axis=1) for l, v in per.items()}
    gradients = {"num_examples": int(norms["ce"].shape[1]), "per_loss": gradient_summary(norms)}
  timing["gradients_s"] = time.perf_counter() - tic

  # Worst case per example and step over every untargeted attack run at each ε.
  worst = []
  for i, e in enumerate(eps_list):
    correct = np.ones_like(clean_correct)
    for name in untargeted:
      correct &= untargeted[name][i]["adv_correct"]
    if e in conv_entries:
      n_conv = len(conv_entries[e])
      correct[:n_conv] &= conv_entries[e]
    worst.append({"eps": e, **per_example_stats(clean_correct, correct, clean_correct & ~correct),
                  "adv_correct": correct})
  untargeted["worst"] = worst

  # Probability maps.
  prob_maps = None
  if run_maps:
    tic = time.perf_counter()
    prob_maps = _probability_map_section(model, variables, config, mesh, batches, clean_host, eval_keys,
                                         clean_logits, fn_for(targeted_spec), pm_eps, key_for("targeted"),
                                         teps_list)
    timing["prob_maps_s"] = time.perf_counter() - tic

  strip = lambda entries: [{kk: v for kk, v in e.items() if kk not in ("adv_correct", "success", "adv_images")}
                           for e in entries]
  results = {
      "profile": a.profile,
      "profile_description": describe_profile(a),
      "profile_overrides": profile_overrides(a),
      "headline": "pgd_step" if a.profile == "paper" else "worst",
      "model": config.model.name,
      "num_classes": int(info.num_classes),
      "num_examples": n_examples,
      "attack_step": k,
      "eval_steps": t_eval,
      "train_steps": int(config.train.num_glimpses),
      "norm": a.norm,
      "fixations": a.fixations,
      "losses": list(a.losses),
      "clean": {"accuracy_per_step": [float(v) for v in clean_acc],
                "num_correct_per_step": [int(v) for v in clean_correct.sum(0)]},
      "untargeted": {"epsilons": eps_list, "attacks": {n: strip(v) for n, v in untargeted.items()}},
      "targeted": {"epsilons": teps_list, "attacks": {n: strip(v) for n, v in targeted.items()}},
      "large_eps": {n: strip([v])[0] for n, v in large.items()},
      "convergence": convergence,
      "square": square,
      "gradients": gradients,
      "prob_maps": prob_maps,
      "timing": timing,
      "config": config.to_dict(),
  }
  if results["profile_overrides"]:
    log.warning("config.attack differs from the %r profile in %s; the report lists the differences "
                "(select a profile with configs/demo.py:attack=NAME)", a.profile,
                ", ".join(results["profile_overrides"]))
  results["checks"] = sanity_checks(results, c)
  return results


def _find_eps(entries, eps):
  for e in entries:
    if abs(e["eps"] - eps) <= 1e-12 * max(1.0, abs(eps)):
      return e
  return None


def _probability_map_section(model, variables, config, mesh, batches, clean_host, eval_keys, clean_logits,
                             targeted_fn, eps, targeted_key, teps_list):
  """Targeted adversarial images of the first batch at ``eps`` → probability maps of their targets."""
  a = config.attack
  pm = a.prob_map
  k_idx = [i for i, e in enumerate(teps_list) if abs(e - eps) <= 1e-12 * max(1.0, eps)]
  # The same key as the targeted sweep at this ε (identical adversarial images when ε is in the list).
  i = k_idx[0] if k_idx else len(teps_list)
  key = jax.random.fold_in(jax.random.fold_in(targeted_key, i), 0)
  out = targeted_fn(variables, batches[0], clean_logits[0], jnp.asarray(eps, jnp.float32), key, eval_keys[0])
  adv = np.asarray(_to_host(out["adv_images"]))
  b = {k: np.asarray(v) for k, v in _to_host({k: batches[0][k] for k in ("image", "label", "mask", "target",
                                                                             "index")}).items()}
  mask = b["mask"] > 0
  t = eval_steps_of(config)
  correct = (np.argmax(clean_host[0][t - 1], -1) == b["label"]) & mask
  order = [i for i in np.flatnonzero(correct)] + [i for i in np.flatnonzero(~correct & mask)]
  pick = np.asarray(order[:int(pm.num_images)], np.int64)
  x_adv, x_clean = adv[pick], np.asarray(b["image"])[pick]
  targets, labels = b["target"][pick], b["label"][pick]
  grid, chunk = int(pm.grid), int(pm.chunk)
  maps_adv = _to_host(probability_maps(model, variables, x_adv, targets, grid=grid, chunk=chunk, mesh=mesh))
  maps_clean = _to_host(probability_maps(model, variables, x_clean, targets, grid=grid, chunk=chunk, mesh=mesh))
  own = jax.jit(lambda v, x: model.apply(v, x, num_steps=2, train=False, sample_fixations=False))(
      variables, jnp.asarray(x_adv))
  probs = np.asarray(jax.nn.softmax(own["logits"], -1))  # [2, n, K]
  rnd = lambda m: np.round(np.asarray(m, np.float64), 5).tolist()
  return {
      "eps": float(eps), "grid": grid, "indices": [int(v) for v in b["index"][pick]],
      "labels": [int(v) for v in labels], "targets": [int(v) for v in targets],
      "own_fixations": np.asarray(own["fixations"]).transpose(1, 0, 2).round(5).tolist(),  # [n, 2, 2]
      "own_target_prob": [[float(probs[s, i, targets[i]]) for s in range(2)] for i in range(len(pick))],
      "adv": {"1": rnd(maps_adv["1"]), "1&2": rnd(maps_adv["1&2"])},
      "clean": {"1": rnd(maps_clean["1"]), "1&2": rnd(maps_clean["1&2"])},
      "adv_images": x_adv, "clean_images": x_clean,  # arrays: saved to prob_maps.npz, not to JSON
  }
