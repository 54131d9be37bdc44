"""The reproduction's budgets: what every run gets (steps, seeds, attacked images, ε, the adaptive stage).

``full`` is ``make reproduce``'s default, ``default`` the first reproduction's cheaper budget, ``quick`` the smoke
test (docs/reproduction.md § The budgets). :mod:`rsrnn_jax.reproduction.run` turns a budget into configs.
"""
from __future__ import annotations

import dataclasses

from rsrnn_jax.models import registry


@dataclasses.dataclass(frozen=True)
class Budget:
  """What every run gets. Every model takes the same number of optimiser steps (docs/reproduction.md: why)."""
  name: str
  train_steps: int                 # optimiser steps, the same for every model
  batch_size: int = 64             # global batch (the demo's)
  seeds: tuple = (0,)              # one run per seed (config ``seed``: initialisation and data order)
  adversarial_seeds: int = 0       # adversarially trained variants (registry: ``adversarial``, the costly
                                   # FF-CNN-AT) take only the first this many seeds (0 = every seed)
  at_iterations: int = 5           # PGD iterations per FF-CNN-AT step (step ε·at_step_size, reaches the boundary)
  at_step_size: float = 0.25       # fraction of ε per AT iteration
  checkpoint_every: int = 0        # 0 = train_steps // 10 (the plateau check reads the checkpoints at 80%, 90%)
  glimpses: int = 0                # T in training (and the attack step k); 0 = the demo's 4
  eval_steps: int = 8              # T_eval (the demo's): accuracy at every step 1..T_eval
  eval_examples: int = 0           # clean evaluation on the first N test images (0 = the whole split)
  eval_batch: int = 500
  plateau_examples: int = 2000     # the plateau check's clean accuracy on the first N test images (0 = all)
  figure_images: int = 6           # test images in the fixation figure and the GIF
  # Profile paper: PGD-5 on step k and the suite's other untargeted attacks, at every ε.
  attack_examples: int = 200       # first N test images attacked
  attack_batch: int = 100
  epsilons: tuple = (0.01, 0.02, 0.03)             # untargeted (Fashion-MNIST scale)
  targeted_epsilons: tuple = (0.02, 0.05)
  large_eps: float = 0.3           # check 2 (0 = skip)
  convergence_examples: int = 0    # check 3 on the first N attacked examples (0 = all) ...
  convergence_all_eps: bool = True # ... at every ε (so the worst case covers every example and ε)
  iteration_factor: int = 2        # check 3: iterations × this ...
  extra_restarts: int = 0          # ... and this many more restarts (both profiles)
  square_queries: int = 100        # check 5 (0 = skip)
  square_examples: int = 100
  grad_examples: int = 40          # check 6 (0 = skip)
  prob_map_images: int = 4         # per-model probability maps (0 = skip)
  prob_map_grid: int = 16
  # Profile adaptive (configs/demo.py:attack=adaptive): robust flags over APGD-CE/-T, BPDA, scanpath, Square.
  adaptive_epsilons: tuple = (0.02,)  # () = no attack_adaptive stage
  adaptive_examples: int = 0       # 0 = attack_examples (the same images)
  adaptive_batch: int = 50
  adaptive_iterations: int = 20    # APGD iterations (AutoAttack: 100)
  adaptive_fab_iterations: int = 0 # FAB-T iterations per target (AutoAttack: 100; 0 = adaptive_iterations)
  adaptive_policy_iterations: int = 0  # BPDA and scanpath-search iterations (0 = adaptive_iterations)
  adaptive_attacks: tuple = ()     # () = the profile's
  adaptive_horizons: tuple = ()    # () = the profile's objectives
  adaptive_square_queries: int = 1000
  adaptive_large_eps_examples: int = 100
  setting_epsilons: bool = True    # the data setting's ε grids replace the ones above (reproduction/settings.py)
  transfer_source: str = registry.TRANSFER_SOURCE  # the adaptive transfer attack's source: this model's run of
                                   # the same seed ("" = none; the source itself has none)

  @property
  def checkpoint_steps(self) -> int:
    return self.checkpoint_every or max(1, self.train_steps // 10)

  @property
  def profiles(self) -> tuple:
    return ("paper",) + (("adaptive",) if self.adaptive_epsilons else ())

  @property
  def stages(self) -> tuple:
    return ("train", "eval") + tuple(f"attack_{p}" for p in self.profiles)

  def seeds_for(self, model: str, seeds=None) -> tuple:
    """``model``'s seeds: ``seeds`` (or the budget's), cut to ``adversarial_seeds`` for adversarial training."""
    seeds = tuple(seeds or self.seeds)
    limit = self.adversarial_seeds if registry.variant(model).adversarial else 0
    return seeds[:limit] if limit else seeds

  def run_order(self, models) -> list:
    """``models`` with the transfer source first (the other runs of a seed attack with it)."""
    return sorted(models, key=lambda m: m != self.transfer_source)

  def check_stages(self, stages=None, rerun=()) -> None:
    """Raises ValueError unless ``stages`` (``--stages``; None = all) are this budget's and ``rerun``
    (``--rerun``) are stages after training among them (a finished training would only resume at its end)."""
    if stages is not None and not set(stages) <= set(self.stages):
      raise ValueError(f"--stages expects a comma-separated subset of {','.join(self.stages)}; "
                       f"got {','.join(stages)}")
    allowed = [s for s in self.stages if s != "train" and (stages is None or s in stages)]
    if not set(rerun) <= set(allowed):
      raise ValueError(f"--rerun expects a comma-separated subset of {','.join(allowed)}; got {','.join(rerun)} "
                       "(to train again, delete the run's folder or change its training config)")

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  def describe(self) -> str:
    limits = f", adversarially trained only the first {self.adversarial_seeds}" if self.adversarial_seeds else ""
    adaptive = (f", adaptive at ε = {'/'.join(f'{e:g}' for e in self.adaptive_epsilons)}"
                if self.adaptive_epsilons else "")
    return (f"{self.train_steps} steps × batch {self.batch_size} for every model (FF-CNN-AT: PGD-{self.at_iterations} "
            f"per step), seeds {'/'.join(map(str, self.seeds))}{limits}, T_eval = {self.eval_steps}, clean eval on "
            f"{'the whole test split' if not self.eval_examples else f'{self.eval_examples} test images'}, "
            f"attacks on {self.attack_examples} test images (paper at ε = "
            f"{'/'.join(f'{e:g}' for e in self.epsilons)}{adaptive})")


# `make reproduce`: every model the demo RS-RNN's 2,600 steps (three seeds; FF-CNN-AT one), 1,000 attacked images,
# each setting's ε grids (settings.py). The policy attacks at 3× the APGD iterations: at 20 they failed check 9
# on the demo RS-RNN (BPDA 42, scanpath search 44 of 50 examples APGD-CE broke, 45 needed), at 60 they pass
# (45 and 47; docs/reproduction.md § The budgets).
FULL_BUDGET = Budget(
    name="full", train_steps=2600, seeds=(0, 1, 2), adversarial_seeds=1, at_iterations=3,
    at_step_size=0.4, attack_examples=1000, epsilons=(0.01, 0.02), targeted_epsilons=(0.05,),
    adaptive_epsilons=(0.02,), adaptive_policy_iterations=60)
# The cheaper budget of the first reproduction (700 steps, one seed, 200 images), with the adaptive stage.
DEFAULT_BUDGET = Budget(
    name="default", train_steps=700, checkpoint_every=250, at_iterations=3, at_step_size=0.4, attack_examples=200)
# Smoke test: every stage and every figure, two seeds (one for FF-CNN-AT), numbers meaningless.
QUICK_BUDGET = Budget(
    name="quick", train_steps=4, batch_size=8, seeds=(0, 1), adversarial_seeds=1,
    at_iterations=1, at_step_size=1.0, setting_epsilons=False, checkpoint_every=2, glimpses=2, eval_steps=3, eval_examples=16,
    eval_batch=16, plateau_examples=16, figure_images=2, attack_examples=8, attack_batch=8, epsilons=(0.1,),
    targeted_epsilons=(0.1,), large_eps=0.0, iteration_factor=1, extra_restarts=0, square_queries=0,
    square_examples=8, grad_examples=0, prob_map_images=0, prob_map_grid=4, adaptive_epsilons=(0.1,),
    adaptive_batch=8, adaptive_iterations=1, adaptive_attacks=("apgd_ce",), adaptive_horizons=("step",),
    adaptive_square_queries=0,
    adaptive_large_eps_examples=8)
BUDGETS = {b.name: b for b in (FULL_BUDGET, DEFAULT_BUDGET, QUICK_BUDGET)}
