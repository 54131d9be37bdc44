"""One attack over a set of batches and ε values: the jitted attack-and-evaluate step and the aggregation.

An :class:`AttackSpec` names a registered attack (:mod:`rsrnn_jax.robustness.registry`), the objective it
ascends (horizon), whether it is targeted, and its options. :func:`make_attack_fn` turns it into ONE jitted
function of (variables, batch, clean logits, ε, keys) — attack, evaluation of the adversarial images for
T_eval steps, and the per-step counts — with ε passed as an array, so it compiles once per batch shape for
every ε. :class:`Sweep` runs it over the batches for each ε and sums the counts (padding masked out) into
accuracy, clean accuracy and attack success rate (ASR) per step, plus the per-example [N, T] arrays the worst
case and the checks are computed from.
"""
from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from rsrnn_jax.attacks import core
from rsrnn_jax.robustness import registry
from rsrnn_jax.attacks.objectives import horizon_steps, step_logits
from rsrnn_jax.models import predict
from rsrnn_jax.train import parallel

COUNT_KEYS = ("num_examples", "num_clean_correct", "num_adv_correct", "num_success")
_to_host = parallel.to_host


@dataclasses.dataclass(frozen=True)
class Setup:
  """What every attack of a run shares."""
  attack_step: int
  eval_steps: int
  norm: str = "linf"
  fixations: str = "argmax"
  eot_samples: int = 1
  track_fixations: bool = False  # also report per example whether the adversarial image moved the scanpath


@dataclasses.dataclass(frozen=True)
class AttackSpec:
  """A named run of the registered attack ``attack`` on ``horizon`` (step, avg, full).

  ``options`` are the attack's options as sorted (name, value) pairs (hashable: the spec is a static argument
  of the jitted step). The name does not take part in equality/hashing: two specs that run the same attack
  share one compilation. Build specs with :func:`make_spec`.
  """
  name: str = dataclasses.field(compare=False)
  attack: str = "pgd"
  horizon: str = "step"
  targeted: bool = False
  options: tuple = ()

  @property
  def opts(self) -> dict:
    return dict(self.options)

  def replace(self, name: str, **options) -> "AttackSpec":
    """The same attack under another name with some options changed."""
    return make_spec(name, self.attack, horizon=self.horizon, targeted=self.targeted, **{**self.opts, **options})

  def cost(self, setup: Setup) -> float:
    """Relative work per image (glimpse-step evaluations; a backward pass counts as 2), for the ETA."""
    steps = horizon_steps(self.horizon, setup.attack_step, setup.eval_steps)
    draws = setup.eot_samples if setup.fixations == "sample" else 1
    return float(registry.get(self.attack).cost(self.opts) * steps * draws + setup.eval_steps)


def make_spec(name: str, attack: str, *, horizon: str = "step", targeted: bool = False, **options) -> AttackSpec:
  """An :class:`AttackSpec`; ``options`` must be exactly the keyword options of the attack's ``run``."""
  takes = registry.get(attack).option_names
  if set(options) != takes:
    raise ValueError(f"attack {attack!r} takes the options {', '.join(sorted(takes)) or '(none)'}; got "
                     f"{', '.join(sorted(options)) or '(none)'}")
  return AttackSpec(name=name, attack=attack, horizon=horizon, targeted=targeted,
                    options=tuple(sorted(options.items())))


def spec_from_profile(attack: str, a, *, horizon: str = "step", targeted: bool = False,
                      name: str | None = None) -> AttackSpec:
  """The spec of ``attack`` with its options as ``config.attack`` (``a``) sets them."""
  return make_spec(name or registry.result_name(attack, horizon), attack, horizon=horizon, targeted=targeted,
                   **registry.get(attack).options(a))


def run_attack(spec: AttackSpec, victim, images, labels, *, eps, rng, norm: str = "linf"):
  """(adversarial images, info) for ``spec`` against ``victim`` (labels = targets when ``spec.targeted``);
  ``info``: the per-example [B] arrays the attack reports besides its images (empty for most)."""
  entry = registry.get(spec.attack)
  out = entry.run(victim, images, labels, eps=eps, rng=rng, norm=norm, targeted=spec.targeted, **spec.opts)
  return out if isinstance(out, tuple) else (out, {})


def attack_and_evaluate(variables, batch, clean_logits, eps, rng, eval_rng, resources=None, *, model,
                        spec: AttackSpec, setup: Setup):
  """Attack one batch at ``eps`` and evaluate the adversarial images for T_eval steps (jit this).

  batch: image [B,H,W,C], label [B], mask [B], target [B]; clean_logits [T_eval,B,K] (from
  :func:`clean_logits_fn` with the same ``eval_rng``); resources: what the attack's ``prepare`` returned.
  Returns per-step counts (``num_*`` [T]), the per-example ``adv_correct`` and ``success`` [T,B] (False on
  padding), the ``adv_images`` and ``info`` (the attack's per-example [B] arrays; with
  ``setup.track_fixations`` also ``scanpath_changed``: the adversarial image's argmax scanpath over T_eval steps
  differs from the clean one's).
  """
  x, y = batch["image"], batch["label"]
  mask = batch["mask"] > 0
  targets = batch["target"] if spec.targeted else None
  k_attack, k_eot = jax.random.split(rng)
  victim = registry.Victim(model, variables, spec.horizon, setup, k_eot, resources)
  x_adv, info = run_attack(spec, victim, x, targets if spec.targeted else y, eps=eps, rng=k_attack,
                           norm=setup.norm)
  adv_out = predict(model, variables, x_adv, num_steps=setup.eval_steps, fixations=setup.fixations, rng=eval_rng)
  adv_logits = adv_out["logits"]
  info = dict(info)
  if setup.track_fixations and "fixations" in adv_out:
    clean_fix = predict(model, variables, x, num_steps=setup.eval_steps, fixations=setup.fixations,
                        rng=eval_rng)["fixations"]
    moved = jnp.max(jnp.abs(adv_out["fixations"] - clean_fix), axis=(0, 2))  # [B]
    info["scanpath_changed"] = moved > 1e-3
  stats = core.attack_success(clean_logits, adv_logits, y, targets=targets, mask=mask)
  adv_pred = jnp.argmax(adv_logits, -1)
  clean_correct = (jnp.argmax(clean_logits, -1) == y) & mask
  hit = adv_pred == targets if spec.targeted else adv_pred != y
  out = {k: stats[k] for k in COUNT_KEYS}
  out["adv_correct"] = (adv_pred == y) & mask
  out["success"] = clean_correct & hit
  out["adv_images"] = x_adv
  out["info"] = info
  return out


def make_attack_fn(model, spec: AttackSpec, setup: Setup):
  """``jit(attack_and_evaluate)`` for ``spec``: (variables, batch, clean_logits, eps, rng, eval_rng[, resources])
  → dict.

  ε is a traced argument: one compilation per batch shape serves every ε.
  """
  return jax.jit(functools.partial(attack_and_evaluate, model=model, spec=spec, setup=setup))


class CompiledOnce:
  """A jitted function compiled ahead of time (``lower(...).compile()``) on its first call per argument
  signature (tree structure, shapes, dtypes, shardings), so that compilation is timed apart from running:
  ``on_compile(seconds)`` is called after each compilation. Later calls with the same signature run the kept
  executable (every batch of a sweep has the same shape; padding is masked)."""

  def __init__(self, jitted, on_compile=None):
    self.jitted, self.on_compile, self.executables = jitted, on_compile, {}

  @staticmethod
  def signature(args, kwargs):
    leaves, tree = jax.tree_util.tree_flatten((args, kwargs))
    return tree, tuple((np.shape(x), getattr(x, "dtype", type(x)), getattr(x, "sharding", None)) for x in leaves)

  def __call__(self, *args, **kwargs):
    sig = self.signature(args, kwargs)
    if sig not in self.executables:
      tic = time.perf_counter()
      self.executables[sig] = self.jitted.lower(*args, **kwargs).compile()
      if self.on_compile is not None:
        self.on_compile(time.perf_counter() - tic)
    return self.executables[sig](*args, **kwargs)


def clean_logits_fn(model, setup: Setup):
  """jit: (variables, images, eval_rng) → clean logits [T_eval, B, K]."""
  def fn(variables, images, eval_rng):
    return step_logits(model, variables, images, num_steps=setup.eval_steps, fixations=setup.fixations,
                       rng=eval_rng)
  return jax.jit(fn)


# ----------------------------------------------------------------------------------------------------------
# Aggregation over batches
# ----------------------------------------------------------------------------------------------------------

def finalize_counts(counts: dict) -> dict:
  """Summed per-step counts → accuracies and ASR (None where no example was clean-correct)."""
  n = np.maximum(np.asarray(counts["num_examples"], np.float64), 1.0)
  ccc = np.asarray(counts["num_clean_correct"], np.float64)
  out = {k: [int(v) for v in counts[k]] for k in COUNT_KEYS}
  out["clean_acc"] = [float(v) for v in ccc / n]
  out["adv_acc"] = [float(v) for v in np.asarray(counts["num_adv_correct"]) / n]
  out["asr"] = [float(s / c) if c > 0 else None for s, c in zip(counts["num_success"], ccc)]
  return out


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


class Sweep:
  """Runs one jitted attack over every batch for each ε and aggregates (counts summed over batches)."""

  def __init__(self, variables, batches, clean_logits, eval_keys, *, progress=None):
    self.variables, self.batches, self.clean_logits, self.eval_keys = variables, batches, clean_logits, eval_keys
    self.progress = progress

  def run(self, attack_fn, eps_values, rng, *, num_batches: int | None = None, weight: float = 0.0,
          label: str = "", keep_images: bool = False):
    """Returns a list (one per ε) of dicts: ``eps``, finalized counts, ``adv_correct``/``success`` [N,T],
    ``info`` (each per-example array of the attack, [N]) and, with ``keep_images``, ``adv_images`` [N, ...]
    (host copies; the real examples only)."""
    batches = self.batches[:num_batches] if num_batches else self.batches
    return [self._one_eps(attack_fn, batches, float(eps), jax.random.fold_in(rng, i), weight, label, keep_images)
            for i, eps in enumerate(eps_values)]

  def _one_eps(self, attack_fn, batches, eps, rng, weight, label, keep_images):
    total, per_adv, per_succ, images, info = None, [], [], [], {}
    for j, batch in enumerate(batches):
      if self.progress is not None:
        self.progress.set_postfix_str(f"{label} eps={eps:g}", refresh=False)
      out = attack_fn(self.variables, batch, self.clean_logits[j], jnp.asarray(eps, jnp.float32),
                      jax.random.fold_in(rng, j), self.eval_keys[j])
      keys = (*COUNT_KEYS, "adv_correct", "success") + (("adv_images",) if keep_images else ())
      host = _to_host({k: out[k] for k in keys} | {"info": out.get("info", {})})
      counts = {k: np.asarray(host[k], np.int64) for k in COUNT_KEYS}
      total = counts if total is None else {k: total[k] + counts[k] for k in COUNT_KEYS}
      mask = np.asarray(_to_host(batch["mask"])) > 0
      per_adv.append(np.asarray(host["adv_correct"])[:, mask].T)
      per_succ.append(np.asarray(host["success"])[:, mask].T)
      if keep_images:
        images.append(np.asarray(host["adv_images"])[mask])
      for k, v in host["info"].items():
        info.setdefault(k, []).append(np.asarray(v)[mask])
      if self.progress is not None:
        self.progress.update(weight * len(mask))
    entry = {"eps": eps, **finalize_counts(total),
             "adv_correct": np.concatenate(per_adv), "success": np.concatenate(per_succ),
             "info": {k: np.concatenate(v) for k, v in info.items()}}
    if keep_images:
      entry["adv_images"] = np.concatenate(images)
    return entry
