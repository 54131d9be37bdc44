"""A small API for notebooks: ``rsrnn_jax.load(workdir)`` → a trained model to predict with, look at and attack.

  import rsrnn_jax
  m = rsrnn_jax.load("workdirs/demo")             # the workdir's config.json + its latest checkpoint
  out = m.predict(images, steps=8)                 # images [B, H, W, C] in [0, 1]; out["logits"] [8, B, K]
  fix = m.fixations(images, steps=8)               # [8, B, 2] fixations in [-1, 1] (x, y), glimpse models only
  adv = m.attack(images, labels, eps=0.03)         # the profile's PGD on step k (profile "paper" by default)

Everything runs the evaluation policy (argmax fixations from the image centre), the model that ``--mode=eval``
and ``--mode=attack`` measure. Arrays come back as NumPy arrays.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rsrnn_jax.robustness import profiles, registry, sweep
from rsrnn_jax.workdir import read_config
from rsrnn_jax.evaluation import clean
from rsrnn_jax.models import predict
from rsrnn_jax.train import state as train_state


def load(workdir: str, *, config=None, checkpoint_path: str = "") -> "LoadedModel":
  """Restores the latest checkpoint of ``workdir`` (or ``checkpoint_path``) with the workdir's saved config
  (or ``config``); a checkpoint of another model is refused with a one-line ValueError."""
  config = ml_collections.ConfigDict(config.to_dict()) if config is not None else read_config(workdir)
  if checkpoint_path:
    config.eval.checkpoint_path = checkpoint_path
  model, state, info, mesh = clean.load_model(config, workdir)
  return LoadedModel(config, model, train_state.variables_of(state), info, int(jax.device_get(state.step)))


class LoadedModel:
  """A restored model: ``predict``, ``fixations``, ``attack`` (see the module docstring)."""

  def __init__(self, config, model, variables, info, step: int):
    self.config, self.model, self.variables, self.info, self.step = config, model, variables, info, step
    self._compiled = {}  # jitted functions by (what, static arguments): Flax modules with dict fields don't hash

  def _jitted(self, key, build):
    if key not in self._compiled:
      self._compiled[key] = build()
    return self._compiled[key]

  @property
  def num_classes(self) -> int:
    return int(self.info.num_classes)

  def _steps(self, steps) -> int:
    return int(steps or self.config.eval.num_glimpses)

  def _images(self, images):
    x = jnp.asarray(images, jnp.float32)
    if x.ndim == 3:
      x = x[..., None]
    if x.shape[1:] != tuple(self.info.image_shape):
      raise ValueError(f"images must be [B, {', '.join(map(str, self.info.image_shape))}] in [0, 1], "
                       f"got shape {tuple(np.shape(images))}")
    return x

  def predict(self, images, steps: int | None = None) -> dict:
    """The model's outputs for ``steps`` glimpses (default ``eval.num_glimpses``): ``logits`` [T, B, K] and,
    for glimpse models, ``fixations`` [T, B, 2] and the dorsal maps."""
    n = self._steps(steps)
    fn = self._jitted(("predict", n), lambda: jax.jit(functools.partial(predict, self.model, num_steps=n)))
    out = fn(self.variables, self._images(images))
    return jax.tree.map(np.asarray, out)

  def fixations(self, images, steps: int | None = None) -> np.ndarray:
    """Fixations [T, B, 2] in [-1, 1] image coordinates; ValueError for models without fixations."""
    out = self.predict(images, steps)
    if "fixations" not in out:
      raise ValueError(f"model {self.config.model.name!r} has no fixations (whole-image model)")
    return out["fixations"]

  def attack(self, images, labels, *, eps: float, profile: str = "paper", attack_step: int | None = None,
             seed: int = 0) -> np.ndarray:
    """Adversarial images for ``labels`` at L-norm radius ``eps``: the profile's PGD (its iterations, step size,
    restarts and losses; worst per example) on the logits of ``attack_step`` (default: the profile's k)."""
    a = profiles.attack_profile(profile)
    k = int(attack_step or a.attack_step)
    if k < 1:
      raise ValueError(f"attack_step must be >= 1, got {k}")
    if not eps >= 0:
      raise ValueError(f"eps must be >= 0, got {eps!r}")
    options = tuple(sorted(registry.get("pgd").options(a).items()))
    fn = self._jitted(("attack", k, a.norm, options), lambda: _attack_fn(self.model, k, a.norm, options))
    adv = fn(self.variables, self._images(images), jnp.asarray(labels, jnp.int32), jnp.float32(eps),
             jax.random.key(seed))
    return np.asarray(adv)


def _attack_fn(model, attack_step: int, norm: str, options: tuple):
  entry = registry.get("pgd")
  setup = sweep.Setup(attack_step=attack_step, eval_steps=attack_step, norm=norm)

  @jax.jit
  def fn(variables, images, labels, eps, rng):
    victim = registry.Victim(model, variables, horizon="step", setup=setup)
    return entry.run(victim, images, labels, eps=eps, rng=rng, norm=norm, targeted=False, **dict(options))
  return fn
