"""Orbax checkpoints: ``WORKDIR/checkpoints/<step>/{state,meta}``.

``meta`` records the model config, the number of classes and the input shape, so evaluation and attacks can
refuse a checkpoint that does not belong to the config they were given (instead of failing deep in a restore,
or silently using the wrong model). Saves are atomic (Orbax writes a temporary directory and renames it), so a
killed run leaves the previous checkpoints intact.
"""
from __future__ import annotations

import json
import os

import jax
import orbax.checkpoint as ocp
from etils import epath

# Fields of config.model that change how a model runs but not its parameters.
RUNTIME_ONLY_FIELDS = ("unroll", "remat", "dtype")
# Model fields added after checkpoints were first written, with the behaviour of the code before them: a
# checkpoint whose meta lacks one was trained that way, so it is compared as such (and the error tells the
# user which value to pass to use it).
FIELDS_ADDED_LATER = {("dorsal", "ior_floor"): 0.0, ("dorsal", "combine"): "product"}


def manager(workdir: str, config, *, create: bool = True, directory: str | None = None):
  options = ocp.CheckpointManagerOptions(
      max_to_keep=int(config.train.keep_checkpoints),
      save_interval_steps=int(config.train.checkpoint_every), create=create)
  path = epath.Path(directory) if directory else epath.Path(workdir) / "checkpoints"
  return ocp.CheckpointManager(path.absolute(), options=options, item_names=("state", "meta"))


def _normalise(obj):
  return json.loads(json.dumps(obj))


def metadata(config, info) -> dict:
  model = {k: v for k, v in config.model.to_dict().items() if k not in RUNTIME_ONLY_FIELDS}
  return _normalise({"model": model, "num_classes": int(info.num_classes),
                     "image_shape": list(info.image_shape), "data": config.data.name})


def read_metadata(mgr, step: int) -> dict:
  restored = mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
  return restored["meta"]


def check_compatible(mgr, meta: dict, step: int | None = None) -> None:
  """Raises ValueError naming the first differing field if the checkpoint was made by another model."""
  step = mgr.latest_step() if step is None else step
  if step is None:
    return
  differences = incompatibilities(read_metadata(mgr, step), meta)
  if differences:
    raise ValueError(f"checkpoint {mgr.directory}/{step} was made by a different model/data config "
                     f"({differences[0]}); use another --workdir or the matching --config")


def incompatibilities(saved: dict, meta: dict) -> list[str]:
  """The fields in which a checkpoint's meta and a config's meta differ ("field: checkpoint X vs config Y")."""
  saved = json.loads(json.dumps(saved))
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
  mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                         meta=ocp.args.JsonSave(meta)), force=True)


def restore(mgr, step: int, state_like):
  """Restores the state at ``step`` into the structure and shardings of ``state_like``."""
  abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state_like)
  restored = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
  return restored["state"]


def restore_latest(mgr, state_like):
  step = mgr.latest_step()
  return None if step is None else restore(mgr, step, state_like)


def locate(workdir: str, checkpoint_path: str = "") -> tuple[str, int | None]:
  """Resolves where to read a checkpoint from: (checkpoints directory, step or None for the latest).

  ``checkpoint_path`` may name a checkpoints directory or one step directory inside it (``.../checkpoints/400``).
  """
  if not checkpoint_path:
    return os.path.join(workdir, "checkpoints"), None
  path = os.path.abspath(checkpoint_path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"checkpoint path {checkpoint_path!r} does not exist")
  base = os.path.basename(path.rstrip("/"))
  if base.isdigit() and os.path.isdir(os.path.join(path, "state")):
    return os.path.dirname(path), int(base)
  return path, None
