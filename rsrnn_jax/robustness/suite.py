"""Adversarial evaluation of a trained model (``--mode=attack``): the orchestrator. It loads the attacked
subset, runs each section and hands the results to :mod:`rsrnn_jax.robustness.results`.

The paper's claim (paper.md §7–§8): RS-RNN resists PGD, and its accuracy *recovers* as it takes more glimpses
after the attack (attack the logits of step k, then run the attacked image for T_eval > k steps). The suite
measures it on any checkpoint of the project and tells a real robustness gain from gradient masking.

Where things live (``rsrnn_jax/attacks/``): ``core`` the pure attacks; ``objectives`` the model as a
``logits_fn`` (horizons step / avg / full, argmax or EOT-sampled fixations); ``registry`` one entry per attack;
``profiles`` the ``config.attack`` of each profile, its validation and description; ``sweep`` one jitted
attack over the batches and ε values and the per-step counts; ``flags`` / ``cascade`` the robust flags;
``policy`` the attacks on the fixation policy; ``verify`` the verified adversarial sets; ``probmaps``,
``gradients`` and ``checks`` the probability maps, the input-gradient norms and the sanity checks.

The suite (:func:`run`) attacks the first ``attack.num_examples`` test images, data-parallel (batches sharded
over the mesh's ``data`` axis, parameters replicated). Targets (targeted attacks) are drawn uniformly from the
other classes with the key ``fold_in(key(attack.target_seed), example index)``: the same image gets the same
target whatever the batch, the model or the profile. Sections, each one function of
:mod:`rsrnn_jax.robustness.sections` (or, under robust flags, of :mod:`rsrnn_jax.robustness.cascade`):

* untargeted: every attack in ``attack.attacks`` (registry names) at every ε in ``attack.epsilons``, on every
  objective in ``attack.horizons`` (or step k only, as its registry entry says): ``pgd_step``, ``pgd_avg``,
  ``pgd_full``, ``fgsm_step`` (check 4), ...;
* large ε (check 2), convergence (check 3: more iterations and restarts), targeted (``pgd_step`` towards the
  target, at ``attack.targeted_epsilons``), Square (check 5, gradient-free), input-gradient norms (check 6);
* ``worst``: per example and per step, the worst case over every untargeted attack run on the example
  (including the check-3 attack); the honest robust accuracy, the headline of ``strong`` and ``adaptive``;
* probability maps of targeted adversarial images (models with fixations);
* the verified sets: per ε the strongest image per example, re-scored by the model alone (verify.py).

With ``attack.flags`` (the ``adaptive`` profile) the untargeted attacks run as a cascade, each only on the
examples still robust (:mod:`rsrnn_jax.robustness.flags`): their entries are the worst case after each attack,
``flags`` says what each took away, and checks 3, 5, 8-11 read the cascade (:mod:`rsrnn_jax.robustness.cascade`).

At every step 1..T_eval it records the accuracy, the clean accuracy and the ASR over the examples that were
clean-correct at that step (untargeted: adv wrong; targeted: adv predicts the target), from counts summed over
batches with the padding masked out. Models without fixations (FF-CNN) repeat one answer over steps: the
suite runs only the step horizon and skips the probability maps and check 7.

Outputs in ``WORKDIR/attack_<profile>/`` (one directory per profile, so runs of several profiles coexist; written
whole or not at all, with ``manifest.json``: :mod:`rsrnn_jax.outputs`):
``results.json`` (every number, the config and the profile), ``report.md`` (tables and the check table),
the plots and ``prob_maps.npz`` (:mod:`rsrnn_jax.robustness.results`), ``adversarial_eps<ε>.npz`` (verify.py),
``per_example.npz`` (:func:`per_example_arrays`: each example's adv-correct flags per attack, ε and step).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import time
import zlib

import jax
import numpy as np
from tqdm import tqdm

from rsrnn_jax import outputs
from rsrnn_jax import workdir as workdir_lib
from rsrnn_jax.robustness import cascade, checks, profiles, registry, sections, subset, verify
from rsrnn_jax.robustness import flags as flags_lib
from rsrnn_jax.robustness import journal as journal_lib
from rsrnn_jax.robustness.plan import Plan, make_plan
from rsrnn_jax.robustness.sweep import CompiledOnce, Setup, Sweep, clean_logits_fn, make_attack_fn
from rsrnn_jax.train import parallel

log = logging.getLogger(__name__)
_to_host = parallel.to_host


# ----------------------------------------------------------------------------------------------------------
# One run's shared state
# ----------------------------------------------------------------------------------------------------------

class SuiteRun:
  """The data, clean logits, keys, compiled attacks and timings that the sections of one run share."""

  def __init__(self, model, variables, config, info, mesh, *, progress: bool, workdir: str | None = None,
               track_fixations: bool = False):
    a = config.attack
    self.model, self.variables, self.config, self.info, self.mesh = model, variables, config, info, mesh
    self.workdir, self._resources = workdir, {}
    self.k, self.t_eval = int(a.attack_step), profiles.eval_steps_of(config)
    self.setup = Setup(attack_step=self.k, eval_steps=self.t_eval, norm=a.norm, fixations=a.fixations,
                       eot_samples=int(a.eot_samples), track_fixations=track_fixations)
    self.timing, self._fns, self.progress = {}, {}, progress
    with self.timed("data_s"):
      self.batches_np = subset.load_subset(config, info, mesh)
      self.batches = [parallel.shard_batch(b, mesh) for b in self.batches_np]
      # Host copies of the global batches (every process sees the same arrays in a multi-process run).
      self.labels = [np.asarray(_to_host(b["label"])) for b in self.batches]
      self.masks = [np.asarray(_to_host(b["mask"])) > 0 for b in self.batches]
    self.seed_key = jax.random.key(int(a.seed))
    eval_base = self.key_for("eval")
    self.eval_keys = [jax.random.fold_in(eval_base, j) for j in range(len(self.batches))]
    with self.timed("clean_s"):  # clean logits once per batch (the same eval keys as the adversarial ones)
      self.clean_fn = clean_fn = clean_logits_fn(model, self.setup)
      self.clean_logits = [clean_fn(variables, b["image"], self.eval_keys[j]) for j, b in enumerate(self.batches)]
      self.clean_host = [np.asarray(_to_host(z)) for z in self.clean_logits]
      self.clean_correct = np.concatenate([(np.argmax(z, -1) == y[None])[:, m].T for z, y, m in
                                           zip(self.clean_host, self.labels, self.masks)])  # [N, T]
    self.bar = None
    self.sweep = Sweep(variables, self.batches, self.clean_logits, self.eval_keys)
    self._host = None
    self.keepers = []  # per untargeted ε: the strongest adversarial image per example (the verified sets)
    self.journal = None  # the cascade's results on disk, for resuming (rsrnn_jax/robustness/journal.py)

  @property
  def num_examples(self) -> int:
    return int(sum(m.sum() for m in self.masks))

  @property
  def host(self) -> dict:
    """Global host copies of the attacked examples (real rows only, in order): image, label, target, index."""
    if self._host is None:
      parts = [_to_host({k: b[k] for k in ("image", "label", "target", "index")}) for b in self.batches]
      self._host = {k: np.concatenate([np.asarray(p[k])[m] for p, m in zip(parts, self.masks)]) for k in parts[0]}
    return self._host

  @property
  def repacker(self) -> flags_lib.Repacker:
    return flags_lib.Repacker(self.host, int(self.config.attack.batch_size), self.mesh)

  def key_for(self, name: str):
    return jax.random.fold_in(self.seed_key, zlib.crc32(name.encode()) & 0x7FFFFFFF)

  def fn_for(self, spec):
    """The jitted attack of ``spec``, with the resources its registry entry prepares (once per run)."""
    if spec not in self._fns:
      fn = CompiledOnce(make_attack_fn(self.model, spec, self.setup),
                        on_compile=functools.partial(self._add_compile_time, spec.name))
      entry = registry.get(spec.attack)
      if entry.prepare is not None:
        if spec.attack not in self._resources:
          self._resources[spec.attack] = entry.prepare(self.config, self.workdir)
        fn = functools.partial(fn, resources=self._resources[spec.attack])
      self._fns[spec] = fn
    return self._fns[spec]

  def attack(self, spec, eps_values, key_name: str, *, num_batches=None, label: str = "",
             keep_images: bool = False):
    """The sweep of ``spec`` over ``eps_values`` with the key of ``key_name`` (one result per ε)."""
    return self.sweep.run(self.fn_for(spec), eps_values, self.key_for(key_name), num_batches=num_batches,
                          weight=spec.cost(self.setup), label=label or spec.name, keep_images=keep_images)

  def rows(self, num_batches: int) -> int:
    return sum(len(m) for m in self.masks[:num_batches])

  def start_progress(self, total: float):
    self.bar = tqdm(total=total, desc=f"attack[{self.config.attack.profile}]", unit="work", dynamic_ncols=True,
                    file=sys.stderr, disable=not self.progress or jax.process_index() != 0, mininterval=1.0,
                    bar_format="{l_bar}{bar}| {percentage:.0f}% [{elapsed}<{remaining}] {postfix}")
    self.sweep.progress = self.bar

  def _add_compile_time(self, name: str, seconds: float) -> None:
    """Compilation is timed apart (sweep.CompiledOnce): per attack and in total; the section timings include it."""
    for key in (f"compile_{name}_s", "compile_s"):
      self.timing[key] = self.timing.get(key, 0.0) + seconds

  @contextlib.contextmanager
  def timed(self, key: str):
    """Records the wall time of the block as ``timing[key]``."""
    tic = time.perf_counter()
    yield
    self.timing[key] = time.perf_counter() - tic


def _strip(entries):
  return [{k: v for k, v in e.items() if k not in ("adv_correct", "success", "adv_images", "info")}
          for e in entries]


def _results(r: SuiteRun, plan: Plan, s: dict) -> dict:
  a = r.config.attack
  clean_acc = r.clean_correct.mean(0) if len(r.clean_correct) else np.zeros(r.t_eval)
  headline = profiles.headline(a.profile)
  results = {
      "profile": a.profile,
      "profile_description": profiles.describe_profile(a),
      "profile_overrides": profiles.profile_overrides(a),
      "headline": headline,
      "headline_accuracy": [{"eps": e["eps"], "accuracy_per_step": e["adv_acc"]}
                            for e in _strip(s["untargeted"].get(headline, []))],
      "reference": plan.reference,
      "notes": list(plan.notes),
      "model": r.config.model.name,
      "num_classes": int(r.info.num_classes),
      "num_examples": r.num_examples,
      "attack_step": r.k,
      "eval_steps": r.t_eval,
      "train_steps": int(r.config.train.num_glimpses),
      "norm": a.norm,
      "fixations": a.fixations,
      "losses": list(a.losses),
      "clean": {"accuracy_per_step": [float(v) for v in clean_acc],
                "num_correct_per_step": [int(v) for v in r.clean_correct.sum(0)]},
      "untargeted": {"epsilons": plan.eps, "attacks": {n: _strip(v) for n, v in s["untargeted"].items()}},
      "flags": s.get("flags"),
      "verified": s["verified"],
      "targeted": {"epsilons": plan.targeted_eps,
                   "attacks": {n: _strip(v) for n, v in s["targeted"].items()}},
      "large_eps": {n: _strip([v])[0] for n, v in s["large_eps"].items()},
      "convergence": s["convergence"],
      "square": s["square"],
      "gradients": s["gradients"],
      "policy_check": s.get("policy_check"),
      "randomness": s.get("randomness"),
      "prob_maps": s["prob_maps"],
      "timing": r.timing,
      "config": r.config.to_dict(),
  }
  if results["profile_overrides"]:
    log.warning("config.attack differs from the %r profile in %s; the report lists the differences "
                "(select a profile with configs/demo.py:attack=NAME)", a.profile,
                ", ".join(results["profile_overrides"]))
  for note in plan.notes:
    log.warning("attack %s", note)
  results["checks"] = checks.sanity_checks(results, a.checks)
  return results


def _flagged_sections(r: SuiteRun, plan: Plan) -> dict:
  """The untargeted attacks as a cascade with robust flags, check 3 and check 9 on what it left (cascade.py)."""
  s = {}
  s["untargeted"], s["flags"], finals, own = cascade.cascade_section(r, plan)
  s["large_eps"] = sections.large_eps_section(r, plan)
  s["convergence"] = cascade.convergence_section(r, plan, finals)
  s["targeted"] = sections.targeted_section(r, plan)
  s["square"] = sections.square_section(r, plan, s["untargeted"]) if plan.run_square else cascade.square_numbers(
      r, plan, s["flags"])
  s["policy_check"] = cascade.policy_check_section(r, plan, own)
  s["untargeted"]["worst"] = [sections.worst_entry(r, e, c) for e, c in zip(plan.eps, finals)]
  return s


def _plain_sections(r: SuiteRun, plan: Plan) -> dict:
  """Every untargeted attack on every example (the paper and strong profiles)."""
  s = {"untargeted": sections.untargeted_section(r, plan)}
  s["large_eps"] = sections.large_eps_section(r, plan)
  s["convergence"], convergence_entries = sections.convergence_section(r, plan, s["untargeted"])
  s["targeted"] = sections.targeted_section(r, plan)
  s["square"] = sections.square_section(r, plan, s["untargeted"])
  s["untargeted"]["worst"] = sections.worst_section(r, plan, s["untargeted"], convergence_entries)
  return s


def run_sections(model, variables, config, info, mesh, *, has_steps: bool = True, has_fixations: bool = True,
                 progress: bool = True, workdir: str | None = None, journal=None):
  """Every section and the sanity checks → (the results dict, the :class:`SuiteRun`, whose ``keepers`` hold
  the adversarial images of the verified sets); no files written but ``journal``'s. See :func:`run_suite`."""
  flagged = bool(config.attack.get("flags", False))
  r = SuiteRun(model, variables, config, info, mesh, progress=progress, workdir=workdir,
               track_fixations=flagged and has_fixations)
  r.journal = journal
  plan = make_plan(config, len(r.batches), has_steps=has_steps, has_fixations=has_fixations)
  r.keepers = [flags_lib.Keeper(r.host["image"], r.clean_correct, r.k, r.t_eval) for _ in plan.eps]
  r.start_progress(sections.total_work(r, plan))
  try:
    s = _flagged_sections(r, plan) if plan.flags else _plain_sections(r, plan)
  finally:
    r.bar.close()
  s["gradients"] = sections.gradients_section(r)
  s["randomness"] = cascade.randomness_section(r) if plan.flags else None
  with r.timed("verified_s"):
    s["verified"] = verify.rescore_kept(r, s["untargeted"]["worst"])
  s["prob_maps"] = sections.prob_maps_section(r, plan)
  r.per_example = per_example_arrays(r, plan, s["untargeted"])
  return _results(r, plan, s), r


def per_example_arrays(r: SuiteRun, plan: Plan, untargeted: dict) -> dict:
  """What ``per_example.npz`` holds: per untargeted result (``pgd_step``, ``worst``, ...) the adv-correct flags
  [ε, N, T_eval] (bool; the attacked examples in test-set order), the clean ones [N, T_eval], the ε grid and
  the examples' test-set indices (for paired statistics across models: rsrnn_jax/reproduction/stats.py)."""
  out = {name: np.stack([e["adv_correct"] for e in entries]).astype(bool) for name, entries in untargeted.items()}
  return {**out, "clean_correct": np.asarray(r.clean_correct, bool), "epsilons": np.asarray(plan.eps, np.float64),
          "index": np.asarray(r.host["index"], np.int64)}


def run_suite(model, variables, config, info, mesh, *, has_steps: bool = True, has_fixations: bool = True,
              progress: bool = True, workdir: str | None = None) -> dict:
  """Every section and the sanity checks → the results dict (no files written).

  ``has_steps``: the logits change with the step (else only the step-k horizon is run);
  ``has_fixations``: the model takes fixations (else no probability maps and no policy attacks);
  ``workdir``: the attacked run's (for the attacks that prepare resources).
  """
  return run_sections(model, variables, config, info, mesh, has_steps=has_steps, has_fixations=has_fixations,
                      progress=progress, workdir=workdir)[0]


def run(config, workdir: str) -> dict:
  """``--mode=attack``: the whole suite on the latest checkpoint of ``workdir`` (or eval.checkpoint_path), written
  to ``WORKDIR/attack_<profile>/`` whole or not at all (:func:`rsrnn_jax.outputs.staged_folder`)."""
  from rsrnn_jax.evaluation import clean as evaluate
  from rsrnn_jax.models import has_fixations, is_recurrent
  from rsrnn_jax.robustness import results as report
  from rsrnn_jax.train import state as train_state

  profiles.validate_attack_config(config)
  t_start, out_dir = time.perf_counter(), os.path.join(workdir, f"attack_{config.attack.profile}")
  try:
    model, state, info, mesh = evaluate.load_model(config, workdir)
    variables, step = train_state.variables_of(state), int(jax.device_get(state.step))
    fingerprint = verify.fingerprint(variables, step)
    journal = journal_lib.for_run(config, workdir, fingerprint) if config.attack.get("flags", False) else None
    with jax.set_mesh(mesh):
      results, r = run_sections(model, variables, config, info, mesh, has_steps=is_recurrent(config.model),
                                has_fixations=has_fixations(config.model), workdir=workdir, journal=journal)
    if journal is not None and journal.replayed:
      results["notes"] = [*results.get("notes", []), f"resumed: {journal.replayed} cascade attacks replayed from "
                          "an interrupted run's journal (their time is not in the run time)"]
    results.update(checkpoint_step=step, fingerprint=fingerprint, run_id=outputs.new_run_id())
    results["timing"]["total_s"] = time.perf_counter() - t_start
    if jax.process_index() == 0:
      with outputs.staged_folder(out_dir, results["run_id"]) as staging:  # swapped in when complete
        verify.save_kept(r, results["verified"], staging, fingerprint=results["fingerprint"], step=step,
                         run_id=results["run_id"])
        with workdir_lib.atomic_path(os.path.join(staging, "per_example.npz")) as tmp:
          np.savez_compressed(tmp, **r.per_example)
        report.write_all(results, staging)
    if journal is not None:
      journal.discard()  # the results are in place: nothing to resume
  except workdir_lib.Interrupted as e:
    raise e.because(f"attack interrupted; {out_dir}/ is unchanged") from None
  log.info("attack results in %s (run %s)", out_dir, results["run_id"])
  for c in results["checks"]:
    log.info("check %d %-45s %s: %s", c["id"], c["name"], c["status"].upper(), c["detail"])
  return results
