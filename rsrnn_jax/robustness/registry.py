"""The attacks the suite knows, one entry each: adding an attack is one function plus one :func:`register` call.

An entry (:class:`AttackEntry`) says how to run the attack (``run``), which options it takes and how a profile
(``config.attack``) sets them (``options``), whether it needs gradients, on which objectives (horizons) the
suite runs it, which norms it supports, its relative cost, and its title in the report. The suite
(:mod:`rsrnn_jax.robustness.suite`), the config validation (:mod:`rsrnn_jax.robustness.profiles`) and the report
(:mod:`rsrnn_jax.robustness.results`) read this table. Only the suite's own roles name attacks: ``pgd`` is the
reference attack (targeted attack, checks 2–5), ``fgsm`` check 4's one-step baseline, ``square`` check 5's
gradient-free attack; the profile's reference attack (``config.attack.reference``: pgd, or apgd_ce in the
adaptive profile) is what checks 1-3 and 7 build on; every other attack runs where a profile lists it in
``config.attack.attacks``.

``run(victim, images, labels, *, eps, rng, norm, targeted, **options) -> adversarial images`` (or ``(images,
info)``, ``info`` a dict of per-example [B] arrays the suite keeps, e.g. APGD's ``zero_grad`` flag) runs inside
the jitted :func:`rsrnn_jax.robustness.sweep.attack_and_evaluate`: ``victim`` (:class:`Victim`) is the attacked
model; ``victim.logits_fn()`` is the objective of the spec's horizon (the ``logits_fn(images) -> [B, K]`` of
the pure attacks in :mod:`rsrnn_jax.attacks.core`); an attack that needs more (the model itself, its
variables, another objective) takes it from ``victim``. ``labels`` are the targets when ``targeted``.
Results are named ``f"{attack}_{horizon}"`` (``pgd_step``, ``fgsm_step``, ...); the per-example worst case
over every untargeted attack is ``worst``.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable

import jax
import jax.numpy as jnp

from rsrnn_jax.attacks import arguments, core, policy, square
from rsrnn_jax.attacks.apgd import apgd
from rsrnn_jax.attacks.fab import fab
from rsrnn_jax.attacks.objectives import keyed_logits_fn, model_logits_fn, step_horizon

WORST = "worst"
# How the report names the objective an attack ran on (results ``{attack}_{horizon}``).
HORIZON_TITLES = {"step": "on step k", "avg": "on mean of steps 1..k", "full": "full horizon (steps 1..T)",
                  "last": "on step T"}
WORST_TITLE = "worst case over attacks"
_COMMON_ARGS = frozenset({"eps", "rng", "norm", "targeted"})  # every attack's run() takes these


@dataclasses.dataclass(frozen=True)
class Victim:
  """The attacked model as an attack sees it: the model, its variables, the objective and the shared setup
  (:class:`rsrnn_jax.robustness.sweep.Setup`: attack step k, T_eval, norm, fixations, EOT draws); ``rng`` seeds
  the EOT draws of sampled fixations; ``resources``: what the attack's ``prepare`` returned (traced)."""
  model: Any
  variables: Any
  horizon: str
  setup: Any
  rng: Any = None
  resources: Any = None

  def logits_fn(self, horizon: str | None = None) -> core.LogitsFn:
    """``logits_fn(images) -> [B, K]`` on ``horizon`` (default: the spec's), argmax or EOT-sampled fixations."""
    s = self.setup
    return model_logits_fn(self.model, self.variables, horizon=horizon or self.horizon,
                           attack_step=s.attack_step, eval_steps=s.eval_steps, fixations=s.fixations,
                           eot_samples=s.eot_samples, rng=self.rng)


@dataclasses.dataclass(frozen=True)
class AttackEntry:
  """One attack of the registry (see the module docstring).

  name:          the attack's name (``config.attack.attacks``; results ``{name}_{horizon}``)
  run:           ``run(victim, images, labels, *, eps, rng, norm, targeted, **options)`` → adversarial images;
                 its other keyword-only parameters are the options it takes (:attr:`option_names`)
  options:       ``options(config.attack) -> dict``: the attack's options as a profile sets them
  title:         the report's title ("PGD"; the objective is appended: "PGD on step k")
  gradient_free: the attack only queries the logits (a check on gradient masking, e.g. Square)
  horizons:      "profile": run on every objective in ``config.attack.horizons``; "step": on step k only
  norms:         the threat models it supports
  cost:          ``cost(options)``: forward passes per image and unrolled step (a backward pass counts 2), for
                 the progress bar's estimate
  validate:      ``validate(config.attack)``: raises a one-line ValueError on impossible options (optional)
  plot:          the report draws its accuracy-per-step panel
  prepare:       ``prepare(config, workdir) -> pytree`` (optional), called once per suite run outside ``jit``
                 for what the attack needs besides the victim (e.g. a transfer attack's source model: a
                 ``jax.tree_util.Partial`` of its apply function and variables); ``run`` gets it as
                 ``victim.resources``
  policy:        the attack moves the fixations of a glimpse model (argmax policy only; skipped for a model
                 without fixations)
  unavailable:   ``unavailable(config) -> str | None`` (optional): why the attack cannot run with this config
                 (the suite skips it and the report says why), e.g. a transfer attack without a source
  transfer:      the attack's gradients come from another model (check 10 compares it to the white-box attacks)
  """
  name: str
  run: Callable
  options: Callable[[Any], dict]
  title: str
  gradient_free: bool = False
  horizons: str = "profile"
  norms: tuple = arguments.NORMS
  cost: Callable[[dict], float] = lambda options: 1.0
  validate: Callable[[Any], None] | None = None
  plot: bool = True
  prepare: Callable[[Any, str], Any] | None = None
  policy: bool = False
  unavailable: Callable[[Any], str | None] | None = None
  transfer: bool = False

  @property
  def option_names(self) -> frozenset:
    """The options ``run`` takes: its keyword-only parameters besides eps, rng, norm and targeted."""
    params = inspect.signature(self.run).parameters.values()
    return frozenset(p.name for p in params if p.kind == p.KEYWORD_ONLY) - _COMMON_ARGS


ATTACKS: dict[str, AttackEntry] = {}


def register(entry: AttackEntry) -> AttackEntry:
  """Adds ``entry`` to the registry (names are unique); returns it."""
  if entry.name in ATTACKS:
    raise ValueError(f"attack {entry.name!r} is already registered")
  if entry.horizons not in ("profile", "step"):
    raise ValueError(f"attack {entry.name!r}: horizons must be 'profile' or 'step', got {entry.horizons!r}")
  if not entry.name.isidentifier() or entry.name == WORST:
    raise ValueError(f"attack name {entry.name!r} must be a Python identifier other than {WORST!r}")
  missing = _COMMON_ARGS - {p.name for p in inspect.signature(entry.run).parameters.values()}
  if missing:
    raise ValueError(f"attack {entry.name!r}: run() must take the keyword arguments {', '.join(sorted(missing))}")
  ATTACKS[entry.name] = entry
  return entry


def unregister(name: str) -> None:
  """Removes an attack (tests register toy attacks and remove them again)."""
  ATTACKS.pop(name, None)


def get(name: str) -> AttackEntry:
  if name not in ATTACKS:
    raise ValueError(f"unknown attack {name!r}; choose one of {', '.join(ATTACKS)}")
  return ATTACKS[name]


def result_name(attack: str, horizon: str) -> str:
  return f"{attack}_{horizon}"


def title(result: str) -> str:
  """The report's title of a result name (``pgd_step`` → "PGD on step k"); unknown names are returned as is."""
  if result == WORST:
    return WORST_TITLE
  attack, _, horizon = result.rpartition("_")
  if attack in ATTACKS and (horizon in HORIZON_TITLES or step_horizon(horizon)):
    return f"{ATTACKS[attack].title} {HORIZON_TITLES.get(horizon) or f'on step {step_horizon(horizon)}'}"
  return result


def plotted(result: str) -> bool:
  """Does the report draw an accuracy-per-step panel for this result (the worst case: yes)?"""
  attack = result.rpartition("_")[0]
  return result == WORST or (attack in ATTACKS and ATTACKS[attack].plot)


# ----------------------------------------------------------------------------------------------------------
# The attacks of the paper and strong profiles (the pure attacks are in rsrnn_jax/attacks/)
# ----------------------------------------------------------------------------------------------------------

def worst_of(logits_fn, candidates, labels, targeted: bool):
  """Per example, the strongest of several adversarial candidates (:func:`core.keep_stronger`), ranked by the
  margin loss, which every attack loss can be compared on."""
  if len(candidates) == 1:
    return candidates[0]
  score = lambda x: core.attack_score(logits_fn(x), labels, loss="margin", targeted=targeted)
  best = (candidates[0], *score(candidates[0]))
  for x in candidates[1:]:
    best = core.keep_stronger(best, (x, *score(x)))
  return best[0]


def pgd_attack(victim, images, labels, *, eps, rng, norm, targeted, losses, num_iterations, num_restarts,
               step_size, random_start):
  """PGD with each loss of ``losses`` (``num_restarts`` restarts each), the worst per example."""
  logits_fn = victim.logits_fn()
  step = step_size * jnp.asarray(eps, jnp.float32)
  candidates = []
  for i, loss in enumerate(losses):
    key = jax.random.fold_in(rng, i)
    kwargs = dict(eps=eps, step_size=step, num_steps=num_iterations, norm=norm, targeted=targeted,
                  random_start=random_start, loss=loss)
    if num_restarts > 1:
      candidates.append(core.pgd_restarts(logits_fn, images, labels, num_restarts=num_restarts, rng=key,
                                          **kwargs))
    else:
      candidates.append(core.pgd(logits_fn, images, labels, rng=key, **kwargs))
  return worst_of(logits_fn, candidates, labels, targeted)


def _pgd_options(a) -> dict:
  return dict(losses=tuple(a.losses), num_iterations=int(a.num_iterations), num_restarts=int(a.num_restarts),
              step_size=float(a.step_size), random_start=bool(a.random_start))


def _pgd_cost(o) -> float:
  runs = len(o["losses"]) * o["num_restarts"]
  return runs * (3 * o["num_iterations"] + 1) + (len(o["losses"]) > 1) * runs


def _require(cond, message):
  if not cond:
    raise ValueError(message)


def _pgd_validate(a) -> None:
  _require(len(a.losses) > 0 and all(l in arguments.LOSSES for l in a.losses),
           f"config.attack.losses must be a non-empty tuple of {', '.join(arguments.LOSSES)}, got {a.losses!r}")
  for key in ("num_iterations", "num_restarts"):
    _require(int(a[key]) >= 1, f"config.attack.{key} must be >= 1, got {a[key]!r}")
  _require(float(a.step_size) > 0, f"config.attack.step_size must be > 0 (a fraction of ε), got {a.step_size!r}")


def fgsm_attack(victim, images, labels, *, eps, rng, norm, targeted, loss):
  """FGSM (L∞) / FGM (L2): one step of size ε from the clean image."""
  del rng
  return core.fgsm(victim.logits_fn(), images, labels, eps=eps, norm=norm, targeted=targeted, loss=loss)


def square_attack(victim, images, labels, *, eps, rng, norm, targeted, num_queries):
  """The gradient-free L∞ Square Attack (margin loss) with ``num_queries`` queries."""
  if norm != "linf":
    raise ValueError("the Square attack is L∞ only")
  return square.square_attack(victim.logits_fn(), images, labels, eps=eps, num_queries=num_queries, rng=rng,
                            targeted=targeted)


register(AttackEntry(name="pgd", run=pgd_attack, options=_pgd_options, title="PGD", cost=_pgd_cost,
                     validate=_pgd_validate))
register(AttackEntry(name="fgsm", run=fgsm_attack, options=lambda a: dict(loss=a.losses[0]), title="FGSM",
                     horizons="step", cost=lambda o: 3.0, plot=False))
register(AttackEntry(name="square", run=square_attack, title="Square",
                     options=lambda a: dict(num_queries=int(a.checks.square_queries)), gradient_free=True,
                     horizons="step", norms=("linf",), cost=lambda o: float(o["num_queries"])))


# ----------------------------------------------------------------------------------------------------------
# The attacks of the adaptive profile (APGD: rsrnn_jax/attacks/apgd.py; the policy attacks:
# rsrnn_jax/attacks/policy.py)
# ----------------------------------------------------------------------------------------------------------

def apgd_attack(victim, images, labels, *, eps, rng, norm, targeted, loss, num_iterations, num_restarts,
                num_targets):
  """APGD (``num_targets`` = 0) or APGD-T over the top ``num_targets`` classes; EOT with sampled fixations.

  Returns the images and ``info["zero_grad"]``: some run started where the gradient is exactly zero
  (AutoAttack's flag of an unreliable evaluation)."""
  if targeted:
    raise ValueError("the APGD entries are untargeted (APGD-T picks its own targets); the suite's targeted "
                     "attack is PGD")
  s = victim.setup
  if s.fixations == "sample":
    logits_fn = keyed_logits_fn(victim.model, victim.variables, horizon=victim.horizon, attack_step=s.attack_step,
                                eval_steps=s.eval_steps)
    eot = int(s.eot_samples)
  else:
    logits_fn, eot = victim.logits_fn(), None
  x_adv, info = apgd(logits_fn, images, labels, eps=eps, num_steps=num_iterations, norm=norm, loss=loss,
                     targeted=num_targets > 0, num_targets=max(num_targets, 1), rng=rng,
                     num_restarts=num_restarts, eot_samples=eot, return_info=True)
  return x_adv, {"zero_grad": info["zero_grad"]}


def _apgd_options(loss, targets: bool):
  return lambda a: dict(loss=loss, num_iterations=int(a.num_iterations), num_restarts=int(a.num_restarts),
                        num_targets=int(a.apgd_targets) if targets else 0)


def _policy_iterations(a) -> int:
  return int(a.policy.num_iterations) or int(a.num_iterations)


def _apgd_cost(o) -> float:
  return max(o["num_targets"], 1) * o["num_restarts"] * (3 * o["num_iterations"] + 1) + 1


def _apgd_validate(a) -> None:
  for key in ("num_iterations", "num_restarts"):
    _require(int(a[key]) >= 1, f"config.attack.{key} must be >= 1, got {a[key]!r}")


def fab_attack(victim, images, labels, *, eps, rng, norm, targeted, num_iterations, num_restarts, num_targets):
  """FAB (``num_targets`` = 0) or FAB-T over the top ``num_targets`` classes: AutoAttack's minimum-norm attack,
  whose closest adversarial point counts if it lies inside the ε-ball."""
  if targeted:
    raise ValueError("the FAB entries are untargeted (FAB-T picks its own targets); the suite's targeted attack "
                     "is PGD")
  return fab(victim.logits_fn(), images, labels, eps=eps, norm=norm, targeted=num_targets > 0,
             num_targets=max(num_targets, 1), num_restarts=num_restarts, num_steps=num_iterations, rng=rng)


def _fab_options(targets: bool):
  return lambda a: dict(num_iterations=int(a.fab.num_iterations) or int(a.num_iterations),
                        num_restarts=int(a.fab.num_restarts), num_targets=int(a.fab.targets) if targets else 0)


def _fab_cost(o) -> float:
  # an iteration: the boundaries' forward and backward passes (FAB: one backward per class, 10 assumed), then
  # the forward pass that tells whether the new point fools the model
  backward = 2 if o["num_targets"] else 2 * 10
  return max(o["num_targets"], 1) * o["num_restarts"] * ((2 + backward) * o["num_iterations"]) + 1


def _fab_validate(a) -> None:
  _require("fab" in a, "config.attack has no fab section (a config made before FAB joined the adaptive "
           "profile): build it with configs.common.attack_profile")
  _require(int(a.fab.num_iterations) >= 0, f"config.attack.fab.num_iterations must be >= 0 (0 = "
           f"config.attack.num_iterations), got {a.fab.num_iterations!r}")
  for key in ("num_restarts", "targets"):
    _require(int(a.fab[key]) >= 1, f"config.attack.fab.{key} must be >= 1, got {a.fab[key]!r}")


def transfer_attack(victim, images, labels, *, eps, rng, norm, targeted, num_iterations):
  """APGD-CE on the source model that ``prepare`` loaded (``victim.resources``: its step-k logits function);
  the images are then judged on the attacked model (a black-box check of the white-box attacks)."""
  if targeted:
    raise ValueError("the transfer attack is untargeted")
  return apgd(victim.resources, images, labels, eps=eps, num_steps=num_iterations, norm=norm, rng=rng)


def _transfer_unavailable(config) -> str | None:
  if not config.attack.get("transfer_workdir", ""):
    return "no source model: set config.attack.transfer_workdir to another trained workdir (e.g. an FF-CNN)"
  return None


def load_transfer_source(config, workdir):
  """The transfer attack's source: ``config.attack.transfer_workdir``'s config.json and newest checkpoint, as a
  ``jax.tree_util.Partial`` of its step-k logits (k = the attack step) over its variables."""
  del workdir
  from rsrnn_jax import configlib, data
  from rsrnn_jax.evaluation import clean
  from rsrnn_jax.models import predict
  from rsrnn_jax.train import state as train_state

  source_dir = config.attack.transfer_workdir
  source_cfg = configlib.read_config(source_dir)
  source_cfg.num_devices = config.num_devices
  model, state, info, _ = clean.load_model(source_cfg, source_dir)
  mine = data.dataset_info(config.data)
  if (tuple(info.image_shape), info.num_classes) != (tuple(mine.image_shape), mine.num_classes):
    raise ValueError(f"config.attack.transfer_workdir={source_dir} was trained on images {info.image_shape} "
                     f"with {info.num_classes} classes, unlike the attacked model; use a model of the same data")
  k = int(config.attack.attack_step)

  def step_k(variables, images):
    return predict(model, variables, images, num_steps=k)["logits"][k - 1]
  return jax.tree_util.Partial(step_k, train_state.variables_of(state))


register(AttackEntry(name="apgd_ce", run=apgd_attack, options=_apgd_options("ce", False), title="APGD-CE",
                     cost=_apgd_cost, validate=_apgd_validate))
register(AttackEntry(name="apgd_dlr", run=apgd_attack, options=_apgd_options("dlr", False), title="APGD-DLR",
                     cost=_apgd_cost, validate=_apgd_validate))
register(AttackEntry(name="apgd_t", run=apgd_attack, options=_apgd_options("dlr", True), title="APGD-T",
                     cost=_apgd_cost, validate=_apgd_validate))
register(AttackEntry(name="fab", run=fab_attack, options=_fab_options(False), title="FAB", horizons="step",
                     cost=_fab_cost, validate=_fab_validate))
register(AttackEntry(name="fab_t", run=fab_attack, options=_fab_options(True), title="FAB-T", horizons="step",
                     cost=_fab_cost, validate=_fab_validate))
register(AttackEntry(
    name="bpda", run=policy.bpda_attack, title="BPDA (straight-through fixations)", horizons="step", policy=True,
    options=lambda a: dict(taus=tuple(float(t) for t in a.policy.taus), num_iterations=_policy_iterations(a),
                           num_restarts=int(a.num_restarts)),
    # the straight-through backward also runs through the dorsal stream: about 4 units an iteration (3 for a
    # plain one; measured on the demo model)
    cost=lambda o: len(o["taus"]) * o["num_restarts"] * (4 * o["num_iterations"] + 1) + len(o["taus"])))
register(AttackEntry(
    name="scanpath", run=policy.scanpath_attack, title="scanpath search", horizons="step", policy=True,
    options=lambda a: dict(candidates=int(a.policy.candidates), num_iterations=_policy_iterations(a),
                           steer_weight=float(a.policy.steer_weight)),
    # K frozen-scanpath APGDs + their re-scoring, then APGD on the free model + the forced (steering) pass
    cost=lambda o: o["candidates"] * (3 * o["num_iterations"] + 3) + 6 * o["num_iterations"] + 3))
register(AttackEntry(name="transfer", run=transfer_attack, title="transfer (APGD-CE on another model)",
                     horizons="step", options=lambda a: dict(num_iterations=int(a.num_iterations)),
                     cost=lambda o: 3 * o["num_iterations"] + 1, prepare=load_transfer_source,
                     unavailable=_transfer_unavailable, transfer=True))
