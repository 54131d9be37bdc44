"""Orbax checkpoints: ``WORKDIR/checkpoints/<step>/{state,meta}``.

``meta`` records the model config, the number of classes and the input shape, so evaluation and attacks can
refuse a checkpoint that does not belong to the config they were given (instead of failing deep in a restore,
or silently using the wrong model). Saves are atomic (Orbax writes a temporary directory and renames it), so a
killed run leaves the previous checkpoints intact.

Integrity (:mod:`rsrnn_jax.train.integrity`): a state with NaN/Inf is never saved; ``meta`` carries a digest of
the saved values and ``<step>/files.json`` the SHA-256 of every file. :func:`restore` verifies both, and
:func:`restore_newest_good` falls back to the previous checkpoint (one warning line) when the newest is damaged.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys

import jax
import orbax.checkpoint as ocp
from etils import epath

from rsrnn_jax import data
from rsrnn_jax import workdir as workdir_lib
from rsrnn_jax.train import integrity
from rsrnn_jax.train.integrity import DamagedCheckpoint

log = logging.getLogger(__name__)
INTEGRITY_KEY = "integrity"  # meta field: {"digest": ...} of the saved state (rsrnn_jax.train.integrity)

# Fields of config.model that change how a model runs but not its parameters.
RUNTIME_ONLY_FIELDS = ("unroll", "remat", "dtype")
# Model fields added after checkpoints were first written, with the behaviour of the code before them: a
# checkpoint whose meta lacks one was trained that way, so it is compared as such (and the error tells the
# user which value to pass to use it).
FIELDS_ADDED_LATER = {("dorsal", "ior_floor"): 0.0, ("dorsal", "combine"): "product"}


def manager(workdir: str, config, *, create: bool = True, directory: str | None = None):
  """The workdir's CheckpointManager. Saves are synchronous (a failed save stops the run at that step, and a
  save is complete on disk before training goes on); ``create=True`` (training, under the workdir lock) also
  clears temporary directories left by a killed save."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=int(config.train.keep_checkpoints),
      save_interval_steps=int(config.train.checkpoint_every), create=create,
      enable_async_checkpointing=False, cleanup_tmp_directories=create)
  path = epath.Path(directory) if directory else epath.Path(workdir) / "checkpoints"
  return ocp.CheckpointManager(path.absolute(), options=options, item_names=("state", "meta"))


def _normalise(obj):
  return json.loads(json.dumps(obj))


def metadata(config, info=None) -> dict:
  """What a checkpoint's ``meta`` records of ``config``; ``info`` None: the data's classes and image shape from
  the data registry (the config alone, nothing prepared)."""
  model = {k: v for k, v in config.model.to_dict().items() if k not in RUNTIME_ONLY_FIELDS}
  classes, shape = (info.num_classes, info.image_shape) if info is not None else (
      data.num_classes(config.data), data.image_shape(config.data))
  return _normalise({"model": model, "num_classes": int(classes), "image_shape": list(shape),
                     "data": config.data.name})


def check_before_data(config, directory: str, step: int | None = None) -> None:
  """Refuses a config whose model or data (name, classes, image shape) differ from the checkpoints in
  ``directory``, from their meta and the config alone: before a data set is built for nothing. Single-process
  runs only: a CheckpointManager synchronises the processes when it is made, and whether the directory exists
  yet can differ between them (several processes are checked by the training's own manager, after the data)."""
  if jax.process_count() == 1 and os.path.isdir(directory):
    mgr = manager("", config, create=False, directory=directory)
    if mgr.all_steps():
      check_compatible(mgr, metadata(config), step)


def step_dir(mgr, step: int) -> str:
  return os.path.join(os.fspath(mgr.directory), str(step))


def read_metadata(mgr, step: int) -> dict:
  """The ``meta`` item of checkpoint ``step``; DamagedCheckpoint if it cannot be read."""
  try:
    restored = mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    meta = restored["meta"]
  except Exception as e:  # noqa: BLE001 - any failure to read it means the checkpoint is damaged
    raise DamagedCheckpoint(f"checkpoint {step_dir(mgr, step)} is damaged: its meta is unreadable "
                            f"({workdir_lib.one_line(e, 200)})") from e
  if not isinstance(meta, dict):
    raise DamagedCheckpoint(f"checkpoint {step_dir(mgr, step)} is damaged: its meta is not a JSON object")
  return meta


def check_compatible(mgr, meta: dict, step: int | None = None) -> None:
  """Raises ValueError naming the first differing field if the checkpoint was made by another model.

  Without ``step``: the newest checkpoint whose meta is readable (a damaged one is left to :func:`restore`).
  """
  steps = [step] if step is not None else sorted(mgr.all_steps(), reverse=True)
  for s in steps:
    try:
      saved = read_metadata(mgr, s)
    except DamagedCheckpoint:
      if step is not None:
        raise
      continue
    _check_meta(mgr, s, saved, meta)
    return


def _check_meta(mgr, step: int, saved: dict, meta: dict) -> None:
  differences = incompatibilities(saved, meta)
  if differences:
    raise ValueError(f"checkpoint {mgr.directory}/{step} was made by a different model/data config "
                     f"({differences[0]}); use another --workdir or the matching --config")


def incompatibilities(saved: dict, meta: dict) -> list[str]:
  """The fields in which a checkpoint's meta and a config's meta differ ("field: checkpoint X vs config Y")."""
  saved = json.loads(json.dumps(saved))
  saved.pop(INTEGRITY_KEY, None)  # what was saved, not which model
  model = saved.get("model")
  for path, old in FIELDS_ADDED_LATER.items():
    node = model
    for key in path[:-1]:
      node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict):
      node.setdefault(path[-1], old)
  return _diff(saved, meta)


def _diff(a, b, prefix=""):
  if isinstance(a, dict) and isinstance(b, dict):
    out = []
    for k in sorted(set(a) | set(b)):
      out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
    return out
  return [] if a == b else [f"{prefix.rstrip('.')}: checkpoint {a!r} vs config {b!r}"]


def save(mgr, step: int, state, meta: dict) -> None:
  """Saves ``state`` as checkpoint ``step`` (synchronously), with its digest in ``meta`` and a file manifest.

  Refuses a state holding NaN/Inf (never saved: retention then never removes a good checkpoint for a bad
  one). A full disk is one line (UserError) and the partial save is removed; older checkpoints are untouched.
  """
  digest, finite = integrity.state_digest(state)
  if not finite:
    raise workdir_lib.UserError(f"refusing to save checkpoint {step}: the state holds NaN/Inf values; "
                                f"the checkpoints already in {mgr.directory} are kept")
  meta = {**meta, INTEGRITY_KEY: {"digest": digest}}
  _check_free_space(mgr, step, state)
  try:
    with workdir_lib.deferred_interrupts():  # Ctrl-C waits for the save and its manifest
      with _quiet_orbax():
        mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                               meta=ocp.args.JsonSave(meta)), force=True)
        mgr.wait_until_finished()
      if jax.process_index() == 0:
        integrity.write_manifest(step_dir(mgr, step))
  except Exception as e:
    _remove_partial(mgr, step)
    if workdir_lib.is_disk_full(e):
      kept = mgr.all_steps()  # a step Orbax committed before the manifest failed is complete and kept
      raise workdir_lib.UserError(
          f"disk full: saving checkpoint {step} in {mgr.directory} failed; free space on that disk (or use a "
          f"--workdir on another one) and run the same command again to resume from "
          f"{f'step {max(kept)}' if kept else 'the start'}") from e
    raise


def _check_free_space(mgr, step: int, state) -> None:
  """Refuses a save that cannot fit (the state's bytes + 10% + 1 MiB) before anything is written: a save that
  runs out of space midway leaves Orbax's writer threads failing one by one."""
  if jax.process_index() != 0:
    return
  need = int(1.1 * sum(x.nbytes for x in jax.tree_util.tree_leaves(state) if hasattr(x, "nbytes"))) + 2**20
  free = shutil.disk_usage(os.fspath(mgr.directory)).free
  if free < need:
    kept = mgr.all_steps()
    raise workdir_lib.UserError(
        f"disk full: checkpoint {step} needs about {need / 2**20:.1f} MiB but {mgr.directory} has "
        f"{free / 2**20:.1f} MiB free; free space on that disk (or use a --workdir on another one) and run the same "
        f"command again to resume from {f'step {max(kept)}' if kept else 'the start'}")


@contextlib.contextmanager
def _quiet_orbax():
  """Orbax logs every failure of its writer threads with a traceback; the caller reports the error once.

  When one write fails (a full disk), Orbax's event loop closes while TensorStore still completes the other
  writes; each completion then tries to wake the closed loop from a TensorStore thread, and Python reports
  every one as an unraisable ``RuntimeError: Event loop is closed`` traceback, possibly after the save has
  returned. :func:`_drop_closed_loop_noise` (installed here, for the rest of the process) drops those.
  """
  logger = logging.getLogger("absl")
  level = logger.level
  if not workdir_lib.debug_enabled():
    logger.setLevel(logging.CRITICAL)
    if sys.unraisablehook is not _drop_closed_loop_noise:
      _PREVIOUS_HOOK[0] = sys.unraisablehook
      sys.unraisablehook = _drop_closed_loop_noise
  try:
    yield
  finally:
    logger.setLevel(level)


_PREVIOUS_HOOK = [sys.unraisablehook]


def _drop_closed_loop_noise(unraisable) -> None:
  """``sys.unraisablehook`` that drops asyncio's "Event loop is closed" (see :func:`_quiet_orbax`)."""
  e = unraisable.exc_value
  if isinstance(e, RuntimeError) and str(e) == "Event loop is closed" and not workdir_lib.debug_enabled():
    return
  _PREVIOUS_HOOK[0](unraisable)


def _remove_partial(mgr, step: int) -> None:
  """Removes the temporary directory of a failed save (frees the space; Orbax renames only complete saves)."""
  if jax.process_index() != 0:
    return
  folder = os.fspath(mgr.directory)
  for name in os.listdir(folder) if os.path.isdir(folder) else []:
    if name.startswith(f"{step}.orbax-checkpoint-tmp"):
      shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
  with contextlib.suppress(Exception):
    mgr.reload()


def restore(mgr, step: int, state_like, meta: dict | None = None):
  """Restores the state at ``step`` into the structure and shardings of ``state_like``, verified.

  Raises DamagedCheckpoint if a file differs from its manifest, the checkpoint cannot be read, its values
  differ from the saved digest, or it holds NaN/Inf; ValueError if ``meta`` (the config's) names another model.
  """
  where = step_dir(mgr, step)
  integrity.verify_manifest(where)
  saved = read_metadata(mgr, step)
  if meta is not None:
    _check_meta(mgr, step, saved, meta)
  abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state_like)
  try:
    with _quiet_orbax():
      restored = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]
  except Exception as e:  # noqa: BLE001 - TensorStore/Orbax errors of a damaged checkpoint have many types
    if "tree structures do not match" in str(e):  # intact, but another optimiser or model layout
      raise ValueError(f"checkpoint {where} holds another parameter/optimiser structure than this config builds "
                       f"({workdir_lib.one_line(e, 160)}); use the config it was trained with (e.g. the same "
                       f"train.optimizer and whether train.grad_clip is 0) or another --workdir") from e
    raise DamagedCheckpoint(f"checkpoint {where} is damaged or unreadable ({workdir_lib.one_line(e, 200)})") from e
  digest, finite = integrity.state_digest(restored)
  expected = (saved.get(INTEGRITY_KEY) or {}).get("digest")
  if expected and digest != expected:
    raise DamagedCheckpoint(f"checkpoint {where} is damaged: its values differ from those saved (checksum "
                            f"mismatch)")
  if not finite:
    raise DamagedCheckpoint(f"checkpoint {where} holds NaN/Inf values (saved by a diverged run)")
  return restored


def restore_newest_good(mgr, state_like, meta: dict | None = None, *, set_aside: bool = False):
  """(state, step) of the newest checkpoint that :func:`restore` accepts, or None if there is none at all.

  Each damaged checkpoint newer than it is reported in one warning line; with ``set_aside`` (training, which
  will save those steps again) it is moved to ``<checkpoints>.damaged/<step>``, never deleted. Raises
  DamagedCheckpoint if checkpoints exist but none can be restored (nothing is moved then).
  """
  damaged = []
  for step in sorted(mgr.all_steps(), reverse=True):
    try:
      state = restore(mgr, step, state_like, meta)
    except DamagedCheckpoint as e:
      damaged.append((step, e))
      continue
    for bad, error in damaged:
      moved = f" (moved to {_set_aside(mgr, bad)})" if set_aside else ""
      log.warning("%s; using checkpoint %d instead%s", error, step, moved)
    if damaged and set_aside:
      if jax.process_count() > 1:  # process 0 moved them: every process sees the same steps after this
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("rsrnn_jax: damaged checkpoints set aside")
      mgr.reload()
    return state, step
  if damaged:
    raise DamagedCheckpoint(f"no checkpoint in {mgr.directory} can be restored (newest: {damaged[0][1]}); move "
                            f"that folder away to start from scratch, or restore it from a backup")
  return None


def _set_aside(mgr, step: int) -> str:
  target = os.path.join(os.fspath(mgr.directory).rstrip("/") + ".damaged", str(step))
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    dest, n = target, 1
    while os.path.exists(dest):
      dest, n = f"{target}.{n}", n + 1
    os.rename(step_dir(mgr, step), dest)
    return dest
  return target


def restore_latest(mgr, state_like):
  """The state of the newest good checkpoint (:func:`restore_newest_good`), or None if there is none."""
  found = restore_newest_good(mgr, state_like)
  return None if found is None else found[0]


def locate(workdir: str, checkpoint_path: str = "") -> tuple[str, int | None]:
  """Resolves where to read a checkpoint from: (checkpoints directory, step or None for the latest).

  ``checkpoint_path`` may name a checkpoints directory or one step directory inside it (``.../checkpoints/400``).
  """
  if not checkpoint_path:
    return os.path.join(workdir, "checkpoints"), None
  path = os.path.abspath(checkpoint_path)
  if os.path.isfile(path):
    raise workdir_lib.UserError(f"config.eval.checkpoint_path={checkpoint_path} is a file; pass a checkpoints "
                                "directory (WORKDIR/checkpoints) or one step directory in it (e.g. "
                                "WORKDIR/checkpoints/400)")
  if not os.path.isdir(path):
    raise FileNotFoundError(f"checkpoint path {checkpoint_path!r} does not exist")
  base = os.path.basename(path.rstrip("/"))
  if base.isdigit() and os.path.isdir(os.path.join(path, "state")):
    return os.path.dirname(path), int(base)
  return path, None
