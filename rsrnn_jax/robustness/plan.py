"""The plan of a suite run: every attack spec and ε that ``config.attack`` asks for, decided before anything
runs (which attacks on which objectives, the ε of each section, how many batches the checks attack)."""
from __future__ import annotations

import dataclasses

from rsrnn_jax.robustness import profiles, registry
from rsrnn_jax.attacks.objectives import EACH, expand_horizons, step_horizon
from rsrnn_jax.robustness.sweep import spec_from_profile


@dataclasses.dataclass(frozen=True)
class Plan:
  """What the suite runs: the specs and the ε of each section (``*_batches``: how many batches it attacks)."""
  untargeted: dict
  targeted: object
  convergence: object
  square: object
  eps: list
  targeted_eps: list
  large_eps: float
  convergence_eps: list
  convergence_batches: int
  square_eps: float
  square_batches: int
  run_square: bool
  run_maps: bool
  maps_eps: float
  reference: str = "pgd"           # checks 1-3 and 7 build on ``{reference}_step`` (and ``_full``)
  flags: bool = False              # robust flags: the untargeted attacks run as a cascade (flags.py)
  large_eps_batches: int = 0
  policy_checks: dict = dataclasses.field(default_factory=dict)  # check 9: name → spec of each policy attack
  policy_eps: float = 0.0
  notes: tuple = ()                # attacks of the profile that were skipped, and why


def skipped_attacks(config, has_fixations: bool = True) -> dict:
  """The attacks of ``config.attack.attacks`` that cannot run here → why (the report lists them)."""
  out = {}
  for attack in config.attack.attacks:
    entry = registry.get(attack)
    if entry.policy and not has_fixations:
      out[attack] = f"{config.model.name} has no fixation policy to attack"
    elif entry.unavailable is not None and entry.unavailable(config):
      out[attack] = entry.unavailable(config)
  return out


def attack_specs(config, has_steps: bool, has_fixations: bool = True):
  """(untargeted specs by result name, targeted spec, check-3 spec, check-5 spec) of ``config.attack``."""
  a = config.attack
  own, iterations = profiles.attack_horizons(a), profiles.horizon_iterations(a)
  skipped = skipped_attacks(config, has_fixations)
  t_eval = profiles.eval_steps_of(config)
  specs, each_step = {}, {}  # the per-step objectives (``tN``) run on what the other white-box attacks left
  for attack in a.attacks:
    if attack in skipped:
      continue
    hs = own.get(attack) or (a.horizons if registry.get(attack).horizons == "profile" else ("step",))
    for h in [h for h in expand_horizons(hs, int(a.attack_step), t_eval) if has_steps or h == "step"]:
      spec = spec_from_profile(attack, a, horizon=h)
      n = iterations.get(h) or (iterations.get(EACH) if step_horizon(h) else None)
      if n and "num_iterations" in spec.opts:
        spec = spec.replace(spec.name, num_iterations=n)
      (each_step if step_horizon(h) else specs)[spec.name] = spec
  specs = _before_black_box(specs, each_step)
  targeted = spec_from_profile("pgd", a, targeted=True)
  c = a.checks
  ref = f"{a.get('reference', 'pgd')}_step"
  conv = specs[ref].replace(f"{ref}_converged", num_iterations=int(a.num_iterations) * int(c.iteration_factor),
                            num_restarts=int(a.num_restarts) + int(c.extra_restarts))
  square = spec_from_profile("square", a)
  return specs, targeted, conv, square


def _before_black_box(specs: dict, extra: dict) -> dict:
  """``specs`` with ``extra`` inserted before the first gradient-free or transfer attack (checks 5 and 10 ask
  what those find beyond every white-box attack)."""
  names = list(specs)
  black = [i for i, n in enumerate(names) if registry.get(specs[n].attack).gradient_free
           or registry.get(specs[n].attack).transfer]
  cut = black[0] if black else len(names)
  return {n: specs[n] for n in names[:cut]} | extra | {n: specs[n] for n in names[cut:]}


def policy_check_specs(specs: dict) -> dict:
  """Check 9: each policy attack of ``specs`` alone (the same specs: they share the cascade's compilation)."""
  return {name: spec for name, spec in specs.items() if registry.get(spec.attack).policy}


def make_plan(config, num_batches: int, *, has_steps: bool, has_fixations: bool) -> Plan:
  """The plan of ``config.attack`` on ``num_batches`` batches (``has_steps``/``has_fixations``: see run_suite)."""
  a, c, pm = config.attack, config.attack.checks, config.attack.prob_map
  specs, targeted, conv, square = attack_specs(config, has_steps, has_fixations)
  bs = int(a.batch_size)
  eps = [float(e) for e in a.epsilons]
  teps = [float(e) for e in a.targeted_epsilons] if a.targeted else []
  flags = bool(a.get("flags", False))
  square_in_cascade = flags and "square_step" in specs
  notes = tuple(f"{n}: skipped ({why})" for n, why in skipped_attacks(config, has_fixations).items())
  return Plan(
      untargeted=specs, targeted=targeted, convergence=conv, square=square, eps=eps, targeted_eps=teps,
      large_eps=float(c.large_eps),
      convergence_eps=[float(e) for e in c.convergence_eps] or [_middle(eps)],
      convergence_batches=_batches_for(int(c.convergence_examples), bs, num_batches),
      square_eps=float(c.square_eps) or _middle(eps),
      square_batches=_batches_for(int(c.square_examples), bs, num_batches),
      run_square=(int(c.square_queries) > 0 and a.norm in registry.get("square").norms
                  and not square_in_cascade),
      run_maps=has_fixations and int(pm.num_images) > 0 and bool(teps or float(pm.eps)),
      maps_eps=float(pm.eps) or (max(teps) if teps else 0.0),
      reference=a.get("reference", "pgd"), flags=flags,
      large_eps_batches=_batches_for(int(c.get("large_eps_examples", 0)), bs, num_batches),
      policy_checks=policy_check_specs(specs) if flags and int(c.get("policy_examples", 0)) > 0 else {},
      policy_eps=float(c.get("policy_eps", 0.0)) or _middle(eps), notes=notes)


def _middle(values):
  values = sorted(float(v) for v in values)
  return values[len(values) // 2]


def _batches_for(n_examples: int, batch_size: int, total_batches: int) -> int:
  return total_batches if n_examples <= 0 else min(total_batches, max(1, -(-n_examples // batch_size)))
