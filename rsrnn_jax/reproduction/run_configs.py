"""A run's configs, one per stage: ``configs/demo.py:model=NAME,attack=PROFILE`` in a data setting, with the run's
seed, cut to a reproduction budget (:mod:`rsrnn_jax.reproduction.budgets`), then the user's ``--set`` overrides.
:mod:`rsrnn_jax.reproduction.run` runs them; :mod:`rsrnn_jax.reproduction.stages` fingerprints them.
"""
from __future__ import annotations

import ast

from rsrnn_jax import configlib
from rsrnn_jax.models import registry
from rsrnn_jax.reproduction.budgets import DEFAULT_BUDGET, Budget
from rsrnn_jax.reproduction.settings import DEMO, Setting

# Every registered variant: the paper's six models (docs/zoo.md) and the adversarially trained FF-CNN of v1 Fig. 4a.
MODELS = registry.variant_names()
DEMO_CONFIG = "configs/demo.py"  # the config file every model's run starts from (relative to the working dir)


def parse_overrides(items) -> dict:
  """``["data.canvas_size=32", ...]`` → ``{"data.canvas_size": 32}`` (values as Python literals, else str)."""
  out = {}
  for item in items or ():
    key, sep, value = item.partition("=")
    if not sep or not key:
      raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
    try:
      out[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      out[key] = value
  return out


def _cut_training(c, budget: Budget) -> None:
  t = c.train
  t.batch_size = budget.batch_size
  t.num_train_steps = budget.train_steps
  t.warmup_steps = min(int(t.warmup_steps), max(1, budget.train_steps // 10))
  t.checkpoint_every = budget.checkpoint_steps
  t.keep_checkpoints = -(-budget.train_steps // budget.checkpoint_steps) + 1  # all: the plateau check reads them
  t.log_every = min(int(t.log_every), budget.train_steps)
  t.eval_at_end = False                        # the eval stage evaluates
  if budget.glimpses:
    t.num_glimpses = budget.glimpses
  if t.adversarial.enabled:                    # ff_cnn_at
    t.adversarial.num_iterations = budget.at_iterations
    t.adversarial.step_size = budget.at_step_size
  c.eval.num_glimpses = budget.eval_steps
  c.eval.max_examples = budget.eval_examples
  c.eval.batch_size = budget.eval_batch
  c.eval.num_figure_images = budget.figure_images


def _cut_paper_attack(a, budget: Budget) -> None:
  a.num_examples = budget.attack_examples
  a.batch_size = budget.attack_batch
  a.epsilons = tuple(budget.epsilons)
  a.targeted_epsilons = tuple(budget.targeted_epsilons)
  a.prob_map.num_images = budget.prob_map_images
  a.prob_map.grid = budget.prob_map_grid
  a.prob_map.eps = 0.0                          # the largest targeted ε
  ch = a.checks
  ch.convergence_examples = budget.convergence_examples
  ch.convergence_eps = tuple(budget.epsilons) if budget.convergence_all_eps else ()
  ch.square_queries = budget.square_queries
  ch.square_examples = budget.square_examples
  ch.grad_examples = budget.grad_examples


def _cut_adaptive_attack(a, budget: Budget) -> None:
  """configs/demo.py's adaptive profile at the budget's ε, examples and iterations (its attacks, unless the
  budget names a subset)."""
  a.num_examples = budget.adaptive_examples or budget.attack_examples
  a.batch_size = budget.adaptive_batch
  a.epsilons = tuple(budget.adaptive_epsilons)
  a.num_iterations = budget.adaptive_iterations
  a.fab.num_iterations = budget.adaptive_fab_iterations
  a.policy.num_iterations = budget.adaptive_policy_iterations
  if budget.adaptive_attacks:
    from rsrnn_jax.robustness import profiles as attack_profiles
    attack_profiles.keep_attacks(a, budget.adaptive_attacks)
  if budget.adaptive_horizons:
    a.horizons = tuple(budget.adaptive_horizons)
  a.targeted = False                            # the paper stage runs the targeted attack
  a.prob_map.num_images = 0
  ch = a.checks
  ch.large_eps_examples = budget.adaptive_large_eps_examples
  ch.convergence_examples = 0                   # every example the cascade left robust
  ch.convergence_eps = ()                       # the middle ε of the grid
  ch.square_queries = budget.adaptive_square_queries
  ch.grad_examples = 0                          # the paper stage measures the gradient norms


def model_config(name: str, budget: Budget = DEFAULT_BUDGET, overrides: dict | None = None,
                 config_file: str = DEMO_CONFIG, *, seed: int = 0, profile: str = "paper",
                 setting: Setting = DEMO):
  """``configs/demo.py:model=NAME,attack=PROFILE`` (``config_file``, plus ``setting``'s variant) with ``seed``,
  cut to ``budget`` (its ε grids already the setting's: :meth:`Setting.budget`), then ``overrides``."""
  c = configlib.load_file(config_file, setting.config_arg(f"model={name},attack={profile}"))
  c.seed = int(seed)
  _cut_training(c, budget)
  a = c.attack
  a.attack_step = min(int(a.attack_step), int(c.train.num_glimpses), budget.eval_steps)  # k = T_train
  a.eval_steps = budget.eval_steps
  a.checks.large_eps = budget.large_eps
  a.checks.iteration_factor = budget.iteration_factor
  a.checks.extra_restarts = budget.extra_restarts
  (_cut_paper_attack if profile == "paper" else _cut_adaptive_attack)(a, budget)
  return configlib.set_dotted(c, overrides or {})


def stage_configs(name: str, budget: Budget = DEFAULT_BUDGET, overrides: dict | None = None,
                  config_file: str = DEMO_CONFIG, *, seed: int = 0, setting: Setting = DEMO) -> dict:
  """{stage: config} of one run, in stage order: train and eval (and attack_paper) share the paper-profile
  config; attack_<profile> takes that profile's."""
  paper = model_config(name, budget, overrides, config_file, seed=seed, setting=setting)
  out = {"train": paper, "eval": paper}
  for p in budget.profiles:
    out[f"attack_{p}"] = paper if p == "paper" else model_config(name, budget, overrides, config_file, seed=seed,
                                                                 profile=p, setting=setting)
  return out
