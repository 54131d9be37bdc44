"""What ``launch.py`` calls: one entry point per mode, each taking a config and a workdir."""
from __future__ import annotations

import contextlib
import logging
import os

import jax
from jax.experimental.compilation_cache import compilation_cache

from rsrnn_jax import configlib
from rsrnn_jax import workdir as workdir_lib

MODES = ("train", "eval", "attack", "verify")


def main(config, workdir: str, mode: str = "train", stop_at: float | None = None):
  """Runs ``mode`` on ``workdir`` under its exclusive lock, after every check that can run before writing.
  ``stop_at`` (epoch seconds; train only): a time limit, the training stops at its last checkpoint before then.

  User-caused failures raise ValueError/UserError or OSError with one line (``launch.py`` prints it and exits
  with status 2); nothing in the workdir is written before the config, the workdir and the batch sizes passed.
  """
  if mode not in MODES:
    raise ValueError(f"--mode={mode!r} is unknown; choose one of {', '.join(MODES)}")
  if not workdir:
    raise ValueError("--workdir is required: a directory for checkpoints, metrics and results")
  configlib.validate(config)  # before anything is written
  if mode == "verify":  # reads the checkpoint and an attack folder's saved sets; writes nothing, takes no lock
    configure_compilation_cache(config)
    from rsrnn_jax.robustness import verify
    with _interruption_line(mode, workdir):
      return verify.run(config, workdir)
  if mode == "attack":
    from rsrnn_jax.robustness import profiles
    profiles.validate_attack_config(config)
  workdir_lib.check_usable(workdir)
  _check_batch_sizes(config, mode)
  configure_compilation_cache(config)
  with workdir_lib.locked(workdir, enabled=jax.process_index() == 0), _interruption_line(mode, workdir):
    if mode == "train":
      from rsrnn_jax.evaluation import clean as evaluate
      return evaluate.train_and_evaluate(config, workdir, stop_at=stop_at)  # writes config.json once its checks passed
    if mode == "attack":
      from rsrnn_jax.robustness import suite as robustness
      return robustness.run(config, workdir)
    from rsrnn_jax.evaluation import clean as evaluate
    return evaluate.evaluate(config, workdir)


@contextlib.contextmanager
def _interruption_line(mode: str, workdir: str):
  """SIGINT/SIGTERM (workdir.Interrupted) that the mode did not describe itself: one line naming the mode."""
  try:
    yield
  except workdir_lib.Interrupted as e:
    if e.said:
      raise
    kept = {"train": "every checkpoint saved so far is kept", "eval": f"files in {workdir}/eval/ are complete "
            "(each written whole)"}.get(mode, "nothing was written")
    raise e.because(f"{mode} interrupted ({e.name}); {kept}; run the same command again") from None


def _check_batch_sizes(config, mode: str) -> None:
  """The global batch sizes this mode uses must split over the devices: one line naming the field."""
  from rsrnn_jax.train import loop as train_loop, parallel
  mesh = parallel.make_mesh(config.num_devices)
  fields = {"train": ["train.batch_size"] + (["eval.batch_size"] if config.train.eval_at_end else []),
            "eval": ["eval.batch_size"], "attack": ["attack.batch_size"] if "attack" in config else []}[mode]
  for field in fields:
    train_loop.check_batch_size(config, field, mesh)


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


def setup_logging(debug: bool = False):
  """INFO logs of this package; third-party libraries at WARNING (everything with ``debug``)."""
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                      datefmt="%H:%M:%S")
  for noisy in ("absl", "orbax", "jax._src", "tensorflow_datasets"):
    logging.getLogger(noisy).setLevel(logging.INFO if debug else logging.WARNING)
