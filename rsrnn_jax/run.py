"""What ``launch.py`` calls: one entry point per mode, each taking a config and a workdir."""
from __future__ import annotations

import json
import logging
import os

import jax
from jax.experimental.compilation_cache import compilation_cache

from rsrnn_jax import configlib

MODES = ("train", "eval", "attack")


def main(config, workdir: str, mode: str = "train"):
  if mode not in MODES:
    raise ValueError(f"--mode={mode!r} is unknown; choose one of {', '.join(MODES)}")
  if not workdir:
    raise ValueError("--workdir is required: a directory for checkpoints, metrics and results")
  configlib.validate(config)  # before anything is written
  configure_compilation_cache(config)
  if mode == "train":
    from rsrnn_jax.train import loop as train_loop
    if jax.process_index() == 0:
      os.makedirs(workdir, exist_ok=True)
      with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(config.to_dict(), f, indent=1, default=str)
    return train_loop.train_and_evaluate(config, workdir)
  if mode == "attack":
    from rsrnn_jax.attacks import suite as robustness
    return robustness.run(config, workdir)
  from rsrnn_jax.evaluation import clean as evaluate
  return evaluate.evaluate(config, workdir)


def configure_compilation_cache(config) -> str | None:
  """Points JAX's persistent compilation cache at ``config.compilation_cache_dir`` (``~`` expanded).

  Must run before the first compilation of the run; a directory different from the current one replaces it
  (``reset_cache``). Returns the directory, or None when the field is empty (JAX's own settings apply).
  """
  path = config.get("compilation_cache_dir", "")
  if not path:
    return None
  path = os.path.abspath(os.path.expanduser(path))
  if jax.config.jax_compilation_cache_dir != path:
    os.makedirs(path, exist_ok=True)
    compilation_cache.set_cache_dir(path)
    compilation_cache.reset_cache()
    logging.getLogger(__name__).info("persistent compilation cache: %s", path)
  return path


def setup_logging():
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                      datefmt="%H:%M:%S")
  for noisy in ("absl", "orbax", "jax._src", "tensorflow_datasets"):
    logging.getLogger(noisy).setLevel(logging.WARNING)
