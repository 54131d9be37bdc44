"""A small API for notebooks: ``rsrnn_jax.load(workdir)`` → a trained model to predict with, look at and attack.

  import rsrnn_jax
  m = rsrnn_jax.load("workdirs/demo")             # the workdir's config.json + its latest checkpoint
  out = m.predict(images, steps=8)                 # images [B, H, W, C] in [0, 1]; out["logits"] [8, B, K]
  fix = m.fixations(images, steps=8)               # [8, B, 2] fixations in [-1, 1] (x, y), glimpse models only
  adv = m.attack(images, labels, eps=0.03)         # the profile's PGD on step k (profile "paper" by default)

Everything runs the evaluation policy (argmax fixations from the image centre), the model that ``--mode=eval``
and ``--mode=attack`` measure. Arrays come back as NumPy arrays. Inputs are checked as the CLI checks its flags:
images float in [0, 1], finite, of the model's shape and not empty; labels integer class ids in [0, K); ``steps``
and ``attack_step`` >= 1; ``eps`` in [0, 1). Anything else is a one-line ValueError naming the argument.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rsrnn_jax.robustness import profiles, registry, sweep
from rsrnn_jax.configlib import read_config
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
    return int(self.config.eval.num_glimpses) if steps is None else _positive_int("steps", steps)

  def _images(self, images):
    """``images`` as float32 [B, H, W, C] after the checks of the module docstring."""
    shape = f"[B, {', '.join(map(str, self.info.image_shape))}]"
    x = np.asarray(images)
    if x.dtype.kind != "f":
      hint = ": divide 0-255 pixels by 255" if x.dtype.kind in "iu" else ""
      raise ValueError(f"images must be floats in [0, 1] of shape {shape}, got dtype {x.dtype}{hint}")
    if x.ndim == 3 and self.info.image_shape[-1] == 1:
      x = x[..., None]
    if x.shape[1:] != tuple(self.info.image_shape) or len(x) == 0:
      raise ValueError(f"images must be {shape} with B >= 1, got shape {tuple(np.shape(images))}")
    if not np.isfinite(x).all():
      raise ValueError(f"images hold {int((~np.isfinite(x)).sum())} NaN/Inf values; they must be finite, in [0, 1]")
    if x.min() < 0 or x.max() > 1:
      hint = " (0-255 pixels? divide by 255)" if x.max() > 1 else ""
      raise ValueError(f"images must be in [0, 1], got values in [{x.min():g}, {x.max():g}]{hint}")
    return jnp.asarray(x, jnp.float32)

  def _labels(self, labels, n: int):
    y = np.asarray(labels)
    if y.dtype.kind not in "iu" or y.shape != (n,):
      raise ValueError(f"labels must be {n} integer class ids (one per image), got dtype {y.dtype}, shape {y.shape}")
    if n and (y.min() < 0 or y.max() >= self.num_classes):
      raise ValueError(f"labels must be in [0, {self.num_classes}), got values in [{y.min()}, {y.max()}]")
    return jnp.asarray(y, jnp.int32)

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
    k = int(a.attack_step) if attack_step is None else _positive_int("attack_step", attack_step)
    if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, (int, float, np.integer, np.floating)) \
        or not 0 <= eps < 1:
      raise ValueError(f"eps must be a number in [0, 1) (pixels are in [0, 1]), got {eps!r}")
    x = self._images(images)
    y = self._labels(labels, len(x))
    options = tuple(sorted(registry.get("pgd").options(a).items()))
    fn = self._jitted(("attack", k, a.norm, options), lambda: _attack_fn(self.model, k, a.norm, options))
    adv = fn(self.variables, x, y, jnp.float32(eps), jax.random.key(_positive_int("seed", seed, minimum=0)))
    return np.asarray(adv)


def _positive_int(name: str, value, minimum: int = 1) -> int:
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
  return int(value)


def _attack_fn(model, attack_step: int, norm: str, options: tuple):
  entry = registry.get("pgd")
  setup = sweep.Setup(attack_step=attack_step, eval_steps=attack_step, norm=norm)

  @jax.jit
  def fn(variables, images, labels, eps, rng):
    victim = registry.Victim(model, variables, horizon="step", setup=setup)
    return entry.run(victim, images, labels, eps=eps, rng=rng, norm=norm, targeted=False, **dict(options))
  return fn
