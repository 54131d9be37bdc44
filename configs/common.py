"""Shared defaults the experiment configs build on (optimiser, checkpointing, evaluation, model presets).

Every field is documented here once (the model's in rsrnn_jax/models/registry.py ``preset``); ``configs/demo.py``
and ``configs/imagenet.py`` override what differs.
"""
import os

import ml_collections

from rsrnn_jax import data
from rsrnn_jax.robustness import profiles as attack_profiles
from rsrnn_jax.models import registry

vgg8 = registry.vgg8  # the shared backbone, re-exported for the configs


def parse_args(arg: str, config_file: str, keys=("model", "attack")) -> dict:
  """``"model=ff_cnn,attack=adaptive"`` (what follows ``FILE:`` in --config) → a dict; ValueError with one line
  for a pair without ``=`` or an unknown key."""
  args = {}
  for pair in (p.strip() for p in arg.split(",") if p.strip()):
    key, sep, value = pair.partition("=")
    if not sep or key not in keys or not value:
      raise ValueError(f"the arguments after '{config_file}:' must be KEY=VALUE pairs separated by commas, KEY one "
                       f"of {', '.join(keys)} (e.g. {config_file}:model=ff_cnn,attack=adaptive); got {pair!r}")
    args[key] = value
  return args


def model_preset(name: str, *, width: int = 64, stages=None, out_size: int = 64, density_ratio: float = 10.0):
  """``config.model`` for model ``name``: :func:`rsrnn_jax.models.registry.preset` (every field documented
  there; docs/zoo.md)."""
  return registry.preset(name, width=width, stages=stages, out_size=out_size, density_ratio=density_ratio)


def set_model(c, name: str, **preset_kwargs):
  """Sets ``c.model`` to ``model_preset(name, ...)`` and the model's training fields in ``c.train``
  (``registry.train_fields``: a field the model does not set gets its default, so switching models never keeps
  the previous model's value; a config may still override them afterwards)."""
  c.model = model_preset(name, **preset_kwargs)
  c.train.update(registry.train_fields(name))
  return c


# Attack profiles live in the library (rsrnn_jax/robustness/profiles.py); these names are kept for the configs.
ATTACK_PROFILES = attack_profiles.PROFILES
ATTACK_PROFILE_FIELDS = attack_profiles.PROFILE_FIELDS  # the fields that define a profile


def attack_profile(name: str = "paper"):
  """The ``config.attack`` section for profile ``name``: ``paper`` (the authors' PGD), ``strong`` or
  ``adaptive`` (docs/attacks.md); every field is documented in :func:`rsrnn_jax.robustness.profiles.attack_profile`.
  Select with ``configs/demo.py:attack=adaptive`` (or ``c.attack = attack_profile("adaptive")`` in a config)."""
  return attack_profiles.attack_profile(name)


def adversarial_training(enabled: bool = False, eps: float = 0.0):
  """``config.train.adversarial``: PGD adversarial training (Madry et al. 2018), for every model.

  Each train step replaces the first ``adv_fraction`` of the batch by L∞ PGD examples against the current
  parameters (eval-mode forward: BatchNorm running statistics read, never updated by the attack; argmax
  fixations from the centre), then takes the usual step on that batch (rsrnn_jax/train/loop.py
  ``adversarial_images``). Enable for any config with ``--config.train.adversarial.enabled=True
  --config.train.adversarial.eps=0.03``. The architecture is unchanged: an adversarially trained checkpoint
  is evaluated and attacked like a clean one.
  """
  return ml_collections.ConfigDict(dict(
      enabled=enabled,
      eps=eps,                 # L∞ radius, pixel scale [0, 1] (> 0 when enabled)
      num_iterations=5,        # PGD iterations per train step (cost: about (1 + iterations)× a clean step)
      step_size=0.25,          # PGD step as a fraction of eps (5 × eps/4 reaches the boundary from any start)
      random_start=True,       # uniform random start in the eps-ball
      attack_step=0,           # k: the step whose logits are attacked (0 = train.num_glimpses)
      horizon="step",          # step: logits of step k | avg: mean logits of steps 1..k
      adv_fraction=1.0,        # fraction of each batch replaced by its PGD examples (rest stays clean)
  ))


def get_base_config(data_name: str = "cluttered_fashion_mnist"):
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.num_devices = 0            # 0 = every device of every process; n = the first n (single process)
  # JAX persistent compilation cache (run.py applies it before anything compiles): a directory reused across
  # runs and restarts (an attack profile's ~7 programs, the train step); default: JAX_COMPILATION_CACHE_DIR if
  # set, else ~/.cache/rsrnn_jax/jax_cache; "" = off (JAX's own settings apply). Only compilations over 1 s
  # are stored (jax_persistent_cache_min_compile_time_secs). docs/scaling.md.
  c.compilation_cache_dir = os.environ.get("JAX_COMPILATION_CACHE_DIR") or "~/.cache/rsrnn_jax/jax_cache"

  # Data fields are documented in rsrnn_jax/data/pipeline.py; mean/std normalise inside the model.
  c.data = data.default_data_config(data_name)
  c.data.mean = (0.5,)
  c.data.std = (0.25,)

  c.train = ml_collections.ConfigDict(dict(
      batch_size=128,          # global batch over all devices and processes
      num_train_steps=1000,    # optimiser steps
      num_glimpses=4,          # T during training
      optimizer="adamw",       # adamw | sgd (momentum)
      learning_rate=1e-3,      # peak lr for batch_size (not rescaled)
      warmup_steps=100,
      schedule="cosine",       # cosine | step (×0.1 at lr_boundaries, fractions of num_train_steps)
      lr_boundaries=(0.667, 0.917),
      momentum=0.9,
      weight_decay=1e-4,
      grad_clip=1.0,           # global-norm clipping (0 = off)
      nonfinite="stop",        # NaN/Inf loss or gradient: stop (keep the last good checkpoint) | skip the step
      init_fixation="random",  # random: uniform in [-0.9, 0.9]² (the authors' code) | center
      loss_steps="all",        # all: CE averaged over steps | last: CE on the last step only
      rl_weight=1.0,           # REINFORCE weight for the fixation policy
      baseline_weight=1.0,     # MSE weight of the learned reward baseline
      rl_center_advantage=True,  # subtract the batch mean of the advantage per step (rsrnn_jax/train/loop.py)
      rl_reward="correct",     # REINFORCE reward per step: correct (1[argmax = y], F1) | prob (p(y), dense)
      log_every=50,
      checkpoint_every=500,
      keep_checkpoints=3,
      eval_at_end=True,
  ))
  c.train.adversarial = adversarial_training()

  c.eval = ml_collections.ConfigDict(dict(
      num_glimpses=16,         # T_eval: may exceed train.num_glimpses
      batch_size=256,
      max_examples=0,          # 0 = the whole eval split
      checkpoint_path="",      # a checkpoint step dir or checkpoints dir to evaluate instead of WORKDIR's
      num_figure_images=8,     # test images in the fixation figure
  ))

  # Adversarial evaluation (--mode=attack, rsrnn_jax/robustness/suite.py); fields documented in attack_profile.
  c.attack = attack_profile("paper")
  # --mode=verify (rsrnn_jax/robustness/verify.py): the saved adversarial sets to re-score; "" = the newest
  # WORKDIR/attack_<profile>/ folder; else such a folder or one adversarial_eps<ε>.npz.
  c.verify = ml_collections.ConfigDict(dict(path=""))
  return set_model(c, registry.DEFAULT_MODEL)
