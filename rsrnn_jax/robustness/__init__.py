"""Adversarial evaluation of the project's checkpoints (``--mode=attack`` / ``--mode=verify``): the attack suite,
its profiles, plans, robust flags, checks, verified sets and reports. It runs the pure attacks of
:mod:`rsrnn_jax.attacks` and sits above training and the clean evaluation (docs/attacks.md)."""
