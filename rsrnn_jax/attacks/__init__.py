"""Adversarial attacks: pure, jittable functions of a ``logits_fn(images) -> [B, K]`` (this package's top
level), the model-level objectives they ascend, and the suite that runs them on a checkpoint
(:mod:`rsrnn_jax.robustness.suite`). Importing the package imports only the pure attacks."""
from rsrnn_jax.attacks.apgd import APGD_LOSSES, apgd, apgd_checkpoints, apgd_targeted
from rsrnn_jax.attacks.arguments import LOSSES, NORMS
from rsrnn_jax.attacks.autoattack import AutoAttackResult, autoattack
from rsrnn_jax.attacks.core import (ATTACK_LOSSES, LogitsFn, attack_loss, attack_success, fgsm, pgd, pgd_restarts,
                                    project, random_targets)
from rsrnn_jax.attacks.fab import fab, project_hyperplane
from rsrnn_jax.attacks.square import square_attack

__all__ = ["APGD_LOSSES", "ATTACK_LOSSES", "AutoAttackResult", "LOSSES", "NORMS", "LogitsFn", "apgd",
           "apgd_checkpoints", "apgd_targeted", "attack_loss", "attack_success", "autoattack", "fab", "fgsm", "pgd",
           "pgd_restarts", "project", "project_hyperplane", "random_targets", "square_attack"]
