"""Attack profiles: the ``config.attack`` section of each named profile, its validation and description.

A profile fixes the attack (the fields in :data:`PROFILE_FIELDS`); everything else in ``config.attack`` (ε
grids, subset, sizes, checks) is data- and budget-dependent and may be overridden without changing the
profile's meaning. A report lists any profile field that differs from the named profile
(:func:`profile_overrides`). ``configs/common.attack_profile`` returns :func:`attack_profile`.
"""
from __future__ import annotations

import ml_collections

from rsrnn_jax import data
from rsrnn_jax.attacks import arguments
from rsrnn_jax.robustness import registry
from rsrnn_jax.attacks.objectives import EACH, FIXATION_MODES, HORIZONS, is_horizon, step_horizon

PROFILES = ("paper", "strong", "adaptive")
# The fields that define a profile.
PROFILE_FIELDS = ("attacks", "reference", "flags", "norm", "step_size", "num_iterations", "num_restarts",
                  "random_start", "losses", "horizons", "attack_horizons", "horizon_iterations", "eot_samples",
                  "apgd_targets", "fab", "policy")
# The result each profile's headline robust accuracy is read from.
HEADLINES = {"paper": "pgd_step", "strong": registry.WORST, "adaptive": registry.WORST}
# The attack options a profile's reference attack must take (check 3 raises them).
_REFERENCE_OPTIONS = {"num_iterations", "num_restarts"}


def attack_profile(name: str = "paper") -> ml_collections.ConfigDict:
  """The ``config.attack`` section for profile ``name`` (:mod:`rsrnn_jax.robustness.suite` runs it).

  paper:    as the authors ran it (paper.md §7): L∞ PGD, 5 iterations, step ε/3, uniform random start, CE on
            the logits of attack step k, argmax fixations, one run. The full-horizon attack (sanity check 7) is
            run next to it with the same parameters.
  strong:   100 iterations, step ε/10, 2 random restarts for each of the CE and margin losses (worst per
            example), step-k, mean-over-1..k and full-horizon objectives, EOT over 8 draws when
            ``fixations="sample"``. Headline number: the per-example, per-step worst case over every attack.
  adaptive: the honest headline (docs/attacks.md): APGD-CE (on step k, the mean of steps 1..k, the mean of
            steps 1..T_eval, step T_eval and each other step on its own), APGD-DLR (mean of steps
            1..T_eval), APGD-T (DLR, top-9 targets, step k), FAB-T (top-9 targets, step k), BPDA through the
            fixation choice (several τ), the scanpath search (frozen scanpaths, then steering the policy), Square
            (5000 queries) and a transfer attack from ``transfer_workdir`` (skipped when empty), 100 iterations
            each, with AutoAttack's robust flags: each attack runs only on the examples every earlier attack left
            robust at one of the steps its objective aims at (rsrnn_jax/robustness/flags.py). Headline: the worst
            case per example and step.
  Select with ``configs/demo.py:attack=NAME`` (or ``c.attack = attack_profile(NAME)`` in a config).
  Fields in PROFILE_FIELDS define the profile; a report lists any that differ from the named profile.
  """
  if name not in PROFILES:
    raise ValueError(f"unknown attack profile {name!r}; choose one of {', '.join(PROFILES)}")
  a = ml_collections.ConfigDict()
  a.profile = name
  # --- threat model and the profile's attacks (PROFILE_FIELDS) ---
  a.attacks = ("pgd", "fgsm")  # untargeted attacks run at every ε (names in rsrnn_jax/robustness/registry.py), in
                               # this order (the order of the robust flags)
  a.reference = "pgd"          # the attack checks 1-3 and 7 build on (pgd | apgd_ce); must be in ``attacks``
  a.flags = False              # robust flags: each attack runs only on the examples still robust (AutoAttack)
  a.norm = "linf"              # linf | l2 (the Square attack of check 5 is L∞ only)
  a.step_size = 1.0 / 3.0      # PGD step as a fraction of ε
  a.num_iterations = 5         # PGD iterations
  a.num_restarts = 1           # random restarts per loss; the worst per example is kept
  a.random_start = True        # uniform random start in the ε-ball
  a.losses = ("ce",)           # ce | margin; several: run each, keep the worst per example
  a.horizons = ("step", "full")  # objectives: step = logits of step k; avg = mean logits of steps 1..k;
                               # full = mean logits of steps 1..T_eval; last = logits of step T_eval (check 7
                               # needs step and full)
  a.attack_horizons = ()       # per-attack objectives instead of ``horizons``: "NAME:h1+h2", e.g. "apgd_t:step"
  a.horizon_iterations = ()    # iterations on one objective instead of ``num_iterations``: "HORIZON:N", e.g.
                               # "full:100" (the attacks that take num_iterations: pgd, apgd_*, bpda, transfer)
  a.eot_samples = 1            # EOT draws (averaged logits) per forward pass when fixations="sample"
  a.apgd_targets = 9           # APGD-T: target classes (the highest-ranked after the label)
  a.fab = ml_collections.ConfigDict(dict(  # FAB / FAB-T (rsrnn_jax/attacks/fab.py; AutoAttack's parameters)
      num_iterations=0,        # iterations per run (AutoAttack: 100; 0 = num_iterations)
      num_restarts=1,          # FAB: runs (the first from the image, the others from random starts); FAB-T: per target
      targets=9,               # FAB-T: target classes (the highest-ranked after the label)
  ))
  a.policy = ml_collections.ConfigDict(dict(  # the attacks on the fixation policy (bpda, scanpath)
      taus=(0.5, 1.0, 2.0),    # BPDA: straight-through temperatures τ (one APGD-CE each; worst per example)
      candidates=8,            # scanpath search: the model's own clean scanpath + (candidates − 1) random ones
      steer_weight=1.0,        # weight of the steering term (mean log P of the worst scanpath's cells)
      num_iterations=0,        # APGD iterations per τ / per frozen scanpath / of the steering attack (0 = num_iterations)
  ))
  a.transfer_workdir = ""      # transfer attack: the source model's workdir (its config.json and latest checkpoint);
                               # "" = the transfer attack is skipped with a note
  # --- what is attacked and evaluated ---
  a.fixations = "argmax"       # argmax (deterministic, the eval policy) | sample (stochastic policy + EOT)
  a.attack_step = 4            # k: the unrolled step whose logits the attack uses (AAAI 4; v1 12)
  a.eval_steps = 0             # T_eval: steps the attacked images are run for; 0 = config.eval.num_glimpses
  a.epsilons = (2e-3, 3e-3, 5e-3, 7e-3)              # untargeted ε grid, pixel scale [0, 1] (paper v1)
  a.targeted = True            # also run the targeted attack (targets: uniform over the other classes)
  a.targeted_epsilons = (3e-3, 5e-3, 7e-3, 1e-2)     # targeted ε grid (paper v1)
  a.target_seed = 0            # targets depend only on (target_seed, example index, label): shared by models
  a.seed = 0                   # random starts, restarts, EOT and Square draws
  a.num_examples = 1000        # first N examples of the eval split (paper: val1000); 0 = all
  a.batch_size = 128           # global attack batch (divisible by the device count)
  a.prob_map = ml_collections.ConfigDict(dict(
      grid=32,                 # G: fixations forced to every cell of a G×G grid (x, y = linspace(-1, 1, G))
      num_images=8,            # targeted adversarial images (first clean-correct ones of the first batch)
      eps=0.0,                 # ε of their targeted attack; 0 = the largest targeted ε
      chunk=256,               # grid cells per forward pass (memory)
  ))
  a.checks = ml_collections.ConfigDict(dict(
      large_eps=0.1,           # check 2: ε at which accuracy must fall to chance (1/K + chance_tol) or below
      large_eps_examples=0,    #          on the first N attacked examples (0 = all; whole batches)
      chance_tol=0.02,
      monotone_tol=0.01,       # check 1: accuracy may rise by at most this between consecutive ε
      iteration_factor=2,      # check 3: the attack again with iterations × this ...
      extra_restarts=2,        #          ... and this many more restarts (worst per example)
      convergence_eps=(),      #          at these ε (empty = the middle ε of ``epsilons``)
      convergence_examples=0,  #          on the first N attacked examples (0 = all; whole batches)
      convergence_tol=0.01,    #          robust accuracy must change by less than this (1 point)
      fgsm_tol=0.01,           # check 4: FGSM accuracy >= PGD accuracy − fgsm_tol
      square_queries=1000,     # check 5: Square Attack queries (gradient-free) ...
      square_examples=200,     #          ... on the first N attacked examples (whole batches)
      square_eps=0.0,          #          ... at this ε (0 = the middle ε of ``epsilons``)
      square_tol=0.01,         #          fail if it breaks more than floor(square_tol × N) examples PGD did not
      grad_examples=64,        # check 6: input-gradient norms on the first N examples
      grad_zero_frac=0.1,      #          fail if more than this fraction has a zero gradient at some step
      grad_ratio=1e4,          #          fail if the per-step median margin-gradient norms span more than this
      policy_examples=50,      # check 9 (robust flags): each policy attack alone on up to N examples that the
      policy_eps=0.0,          #          reference attack broke at this ε (0 = the middle ε) ...
      policy_tol=0.1,          #          must break all but floor(policy_tol × N) of them
      transfer_tol=0.01,       # check 10: the transfer attack may break floor(transfer_tol × N) examples the
                               #          white-box attacks left robust
  ))
  if name == "strong":
    a.num_iterations = 100
    a.step_size = 0.1
    a.num_restarts = 2
    a.losses = ("ce", "margin")
    a.horizons = ("step", "avg", "full")
    a.eot_samples = 8
    a.checks.square_queries = 5000
  if name == "adaptive":
    a.attacks = ("apgd_ce", "apgd_dlr", "apgd_t", "fab_t", "bpda", "scanpath", "square", "transfer")
    a.reference = "apgd_ce"
    a.flags = True
    a.num_iterations = 100     # AutoAttack's budget for every APGD (also the targeted PGD's iterations)
    a.step_size = 0.25         # the targeted PGD's step (APGD sets its own)
    a.horizons = ("step", "avg", "full", "last", "each")  # APGD-CE on each: step k, the means, step T (the
                               # report's second headline step) and every other step t on its own (t1..tT): the
                               # means leave intermediate steps robust that an attack on step t breaks
    a.attack_horizons = ("apgd_dlr:full", "apgd_t:step")  # the margin loss on the full horizon (the later steps'
                               # counterpart of APGD-T, which runs 9 targets on step k only)
    a.checks.square_queries = 5000
  return a


def eval_steps_of(config) -> int:
  """T_eval: ``config.attack.eval_steps``, or the evaluation's number of glimpses when 0."""
  return int(config.attack.eval_steps) or int(config.eval.num_glimpses)


def headline(profile: str) -> str:
  """The result (``pgd_step``, ``worst``, ...) the profile's headline robust accuracy is read from."""
  return HEADLINES.get(profile, registry.WORST)


def _require(cond, message):
  if not cond:
    raise ValueError(message)


_HORIZON_CHOICES = f"{', '.join(HORIZONS)}, tN (step N) or {EACH} (every step)"


def _profile_horizon(h) -> bool:
  return is_horizon(h) or h == EACH


def attack_horizons(a) -> dict:
  """``config.attack.attack_horizons`` ("NAME:h1+h2" entries) → {attack: (horizons)}; one-line errors."""
  out = {}
  for item in a.get("attack_horizons", ()):
    name, sep, hs = str(item).partition(":")
    horizons = tuple(h for h in hs.split("+") if h)
    _require(sep and name in a.attacks and horizons and all(_profile_horizon(h) for h in horizons),
             f"config.attack.attack_horizons: {item!r} must be 'NAME:h1+h2' with NAME in config.attack.attacks and "
             f"objectives from {_HORIZON_CHOICES}")
    _require(registry.get(name).horizons == "profile" or horizons == ("step",),
             f"config.attack.attack_horizons: {name} runs on step k only, got {item!r}")
    out[name] = horizons
  return out


def horizon_iterations(a) -> dict:
  """``config.attack.horizon_iterations`` ("HORIZON:N" entries) → {horizon: iterations}; one-line errors."""
  out = {}
  for item in a.get("horizon_iterations", ()):
    h, sep, n = str(item).partition(":")
    _require(sep and _profile_horizon(h) and n.isdigit() and int(n) >= 1 and h not in out,
             f"config.attack.horizon_iterations: {item!r} must be 'HORIZON:N' with HORIZON one of "
             f"{_HORIZON_CHOICES} (each once; {EACH}: every tN objective) and N >= 1 iterations")
    out[h] = int(n)
  return out


def keep_attacks(a, names) -> None:
  """Cuts ``config.attack`` to the attacks ``names`` (in that order), dropping the ``attack_horizons`` entries of
  the others."""
  a.attacks = tuple(names)
  a.attack_horizons = tuple(h for h in a.get("attack_horizons", ()) if str(h).partition(":")[0] in a.attacks)


def _validate_attacks(a) -> None:
  names = tuple(a.attacks)
  _require(len(names) > 0 and all(n in registry.ATTACKS for n in names) and len(set(names)) == len(names),
           f"config.attack.attacks must be distinct names of {', '.join(registry.ATTACKS)}, got {a.attacks!r}")
  ref = a.get("reference", "pgd")
  _require(ref in names, f"config.attack.attacks must include the reference attack {ref!r} "
           f"(config.attack.reference: checks 1-3 and 7 build on it), got {a.attacks!r}")
  _require(_REFERENCE_OPTIONS <= registry.get(ref).option_names,
           f"config.attack.reference={ref!r} cannot be the reference attack (check 3 raises its iterations and "
           f"restarts); use pgd or apgd_ce")
  for n in names:
    entry = registry.get(n)
    _require(a.norm in entry.norms, f"config.attack.attacks: {n} supports norm {'/'.join(entry.norms)} only, "
             f"not config.attack.norm={a.norm!r}")
    _require(not entry.policy or a.fixations == "argmax", f"config.attack.attacks: {n} attacks the argmax "
             f"fixation policy; set config.attack.fixations='argmax' or remove {n}")
    if entry.validate is not None:
      entry.validate(a)
  registry.get("pgd").validate(a)  # the targeted attack is PGD in every profile
  _require(not a.get("flags", False) or a.fixations == "argmax",
           "config.attack.flags=True needs config.attack.fixations='argmax' (the robust flags and the saved "
           "adversarial sets need a deterministic evaluation)")


def validate_attack_config(config) -> None:
  """One-line ValueErrors for impossible ``config.attack`` values."""
  _require("attack" in config, "config has no 'attack' section; build it with configs.common.attack_profile")
  _require(not data.is_multi_label(config.data), f"--mode=attack needs single-label data (one true class per "
           f"image for the attacks and the ASR); {config.data.name} is multi-label: evaluate it with --mode=eval")
  a = config.attack
  _require(a.profile in PROFILES, f"config.attack.profile={a.profile!r} is unknown; choose one of "
           f"{', '.join(PROFILES)}")
  _require(a.norm in arguments.NORMS, f"config.attack.norm must be one of {', '.join(arguments.NORMS)}, got {a.norm!r}")
  _require(a.fixations in FIXATION_MODES, f"config.attack.fixations must be argmax or sample, got {a.fixations!r}")
  _validate_attacks(a)
  _require("step" in a.horizons and all(_profile_horizon(h) for h in a.horizons),
           f"config.attack.horizons must contain 'step' and only {_HORIZON_CHOICES}, got {a.horizons!r}")
  own = attack_horizons(a)
  horizon_iterations(a)  # raises on a malformed entry
  for key in ("eot_samples", "attack_step", "batch_size"):
    _require(int(a[key]) >= 1, f"config.attack.{key} must be >= 1, got {a[key]!r}")
  _require(int(a.num_examples) >= 0, f"config.attack.num_examples must be >= 0, got {a.num_examples!r}")
  _require(len(a.epsilons) > 0 and all(float(e) > 0 for e in a.epsilons),
           f"config.attack.epsilons must be a non-empty list of positive ε, got {a.epsilons!r}")
  _require(all(float(e) > 0 for e in a.targeted_epsilons),
           f"config.attack.targeted_epsilons must be positive, got {a.targeted_epsilons!r}")
  t_eval = eval_steps_of(config)
  _require(t_eval >= int(a.attack_step), f"config.attack.eval_steps (T_eval={t_eval}) must be >= "
           f"config.attack.attack_step={a.attack_step}")
  too_late = [h for hs in (a.horizons, *own.values()) for h in hs if (step_horizon(h) or 0) > t_eval]
  _require(not too_late, f"config.attack: objective(s) {', '.join(too_late)} aim past step T_eval={t_eval}")
  _require(int(a.prob_map.grid) >= 2, f"config.attack.prob_map.grid must be >= 2, got {a.prob_map.grid!r}")
  _require(0 <= int(a.prob_map.num_images) <= int(a.batch_size),
           f"config.attack.prob_map.num_images must be in [0, attack.batch_size], got {a.prob_map.num_images!r}")
  _require(int(a.prob_map.chunk) >= 1, f"config.attack.prob_map.chunk must be >= 1, got {a.prob_map.chunk!r}")
  _validate_policy(a)
  c = a.checks
  _require(int(c.iteration_factor) >= 1, "config.attack.checks.iteration_factor must be >= 1")
  _require(int(c.extra_restarts) >= 0, "config.attack.checks.extra_restarts must be >= 0")
  _require(int(c.square_queries) >= 0, "config.attack.checks.square_queries must be >= 0 (0 = skip check 5)")
  _require(float(c.large_eps) >= 0, "config.attack.checks.large_eps must be >= 0 (0 = skip check 2)")
  if a.norm == "linf":  # pixels are in [0, 1]: an L∞ ball of radius >= 1 holds every image
    _require(all(float(e) < 1 for e in (*a.epsilons, *a.targeted_epsilons, c.large_eps)),
             f"config.attack ε must be < 1 for norm=linf (pixels are in [0, 1]; ε >= 1 allows any image), got "
             f"epsilons={tuple(a.epsilons)!r}, targeted_epsilons={tuple(a.targeted_epsilons)!r}, "
             f"checks.large_eps={c.large_eps!r}")
  _require(float(c.large_eps) == 0 or float(c.large_eps) > max(float(e) for e in a.epsilons),
           f"config.attack.checks.large_eps={c.large_eps} must exceed the largest ε of config.attack.epsilons "
           f"({max(float(e) for e in a.epsilons)}): check 2 tests that accuracy falls to chance beyond the grid; "
           f"raise it, or set it to 0 to skip check 2")


def _validate_policy(a) -> None:
  if "policy" not in a or "apgd_targets" not in a:
    _require(not any(registry.get(n).policy or n.startswith("apgd") for n in a.attacks),
             "config.attack has no policy / apgd_targets fields (a config made before the adaptive profile): "
             "build it with configs.common.attack_profile")
    return
  p = a.policy
  _require(int(a.apgd_targets) >= 1, f"config.attack.apgd_targets must be >= 1, got {a.apgd_targets!r}")
  _require(len(p.taus) > 0 and all(float(t) > 0 for t in p.taus),
           f"config.attack.policy.taus must be a non-empty tuple of positive temperatures, got {p.taus!r}")
  _require(int(p.candidates) >= 1, f"config.attack.policy.candidates must be >= 1, got {p.candidates!r}")
  _require(float(p.steer_weight) >= 0, f"config.attack.policy.steer_weight must be >= 0, got {p.steer_weight!r}")
  _require(int(p.num_iterations) >= 0, f"config.attack.policy.num_iterations must be >= 0 (0 = "
           f"config.attack.num_iterations), got {p.num_iterations!r}")
  c = a.checks
  for key in ("large_eps_examples", "policy_examples"):
    _require(int(c[key]) >= 0, f"config.attack.checks.{key} must be >= 0, got {c[key]!r}")


def _flat(value, prefix: str) -> dict:
  if isinstance(value, (dict, ml_collections.ConfigDict)):
    out = {}
    for key in sorted(value.keys()):
      out.update(_flat(value[key], f"{prefix}.{key}"))
    return out
  return {prefix: list(value) if isinstance(value, (list, tuple)) else value}


def profile_overrides(attack_cfg) -> dict:
  """Fields of ``attack_cfg`` that define a profile and differ from the named profile's definition (a nested
  field as ``policy.taus``)."""
  ref = attack_profile(attack_cfg.profile)
  out = {}
  for key in PROFILE_FIELDS:
    mine, theirs = _flat(attack_cfg.get(key, None), key), _flat(ref[key], key)
    for name in sorted(set(mine) | set(theirs)):
      if mine.get(name) != theirs.get(name):
        out[name] = {"config": mine.get(name), "profile": theirs.get(name)}
  return out


def describe_profile(a) -> str:
  """A one-line description of the attack the config runs (PGD; then any attack besides PGD and FGSM)."""
  step = f"ε/{1 / a.step_size:.3g}" if a.step_size > 0 else "0"
  fix = "argmax fixations" if a.fixations == "argmax" else f"sampled fixations, EOT over {a.eot_samples} draws"
  if a.get("reference", "pgd") == "pgd":
    text = (f"{a.norm.upper().replace('LINF', 'L∞')} PGD, {a.num_iterations} iterations, step {step}, "
            f"{'random start' if a.random_start else 'no random start'}, {a.num_restarts} restart(s) × loss "
            f"{'+'.join(a.losses)} (worst per example), objectives {'/'.join(a.horizons)}, {fix}")
  else:
    text = (f"{a.norm.upper().replace('LINF', 'L∞')} APGD, {a.num_iterations} iterations, {a.num_restarts} "
            f"restart(s), objectives {'/'.join(a.horizons)}, {fix}")
  more = [n for n in a.attacks if n not in ("pgd", "fgsm")]  # FGSM is check 4's one-step baseline
  if more:
    text += "; also " + ", ".join(f"{registry.get(n).title} ({n})" for n in more)
  if a.get("flags", False):
    text += "; robust flags (each attack only on the examples still robust)"
  return text
