"""Checkpoint integrity: a digest of the state's values and a manifest of a checkpoint's files.

* :func:`state_digest` → (digest, finite): two position-weighted sums (mod 2³²) of every leaf's bit pattern,
  computed on the devices and hashed with each leaf's dtype and shape. A flipped bit changes it; so does a
  changed structure. ``finite`` is False if any floating-point leaf holds NaN or ±Inf. The digest is saved in
  the checkpoint's ``meta`` (written in the same atomic save as the state) and compared after a restore.
* :func:`write_manifest` / :func:`verify_manifest`: ``<step>/files.json`` lists the size and SHA-256 of every
  file of a committed checkpoint, so a truncated or altered file is found before Orbax reads it. A checkpoint
  without the manifest (older code, or killed between commit and manifest) is checked by its digest only.
"""
from __future__ import annotations

import hashlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from rsrnn_jax import workdir as workdir_lib

MANIFEST = "files.json"
_CHUNK = 1 << 20


class DamagedCheckpoint(workdir_lib.UserError):
  """A checkpoint that cannot be trusted: unreadable, altered since it was saved, or holding NaN/Inf."""


def _words(x):
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    x = x.astype(jnp.uint8)
  unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
  return lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32).reshape(-1)


def _sums_and_finite(leaves):
  sums = []
  for x in leaves:
    w = _words(x)
    index = jnp.arange(1, w.size + 1, dtype=jnp.uint32)
    sums.append(jnp.stack([jnp.sum(w, dtype=jnp.uint32), jnp.sum(w * index, dtype=jnp.uint32)]))
  finite = [jnp.all(jnp.isfinite(x)) for x in leaves if jnp.issubdtype(x.dtype, jnp.inexact)]
  return (jnp.stack(sums) if sums else jnp.zeros((0, 2), jnp.uint32),
          jnp.all(jnp.stack(finite)) if finite else jnp.bool_(True))


_digest_fn = jax.jit(_sums_and_finite)


def _host(x) -> np.ndarray:
  return np.asarray(x if x.is_fully_addressable else x.addressable_data(0))


def state_digest(state) -> tuple[str, bool]:
  """(hex digest of every leaf's dtype, shape and bits; True if no floating-point leaf holds NaN/Inf)."""
  leaves = [jnp.asarray(x) for x in jax.tree_util.tree_leaves(state)]
  sums, finite = _digest_fn(leaves)
  sums = _host(sums)
  h = hashlib.sha256()
  for leaf, s in zip(leaves, sums):
    h.update(f"{leaf.dtype}{tuple(leaf.shape)}".encode())
    h.update(np.asarray(s, "<u4").tobytes())
  return h.hexdigest()[:32], bool(_host(finite))


def file_sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(_CHUNK), b""):
      h.update(block)
  return h.hexdigest()


def _files(step_dir: str) -> list[str]:
  out = []
  for root, _, names in os.walk(step_dir):
    out += [os.path.relpath(os.path.join(root, n), step_dir) for n in names]
  return sorted(f for f in out if f != MANIFEST)


def write_manifest(step_dir: str) -> None:
  """Records the size and SHA-256 of every file of the committed checkpoint ``step_dir``."""
  files = {f: [os.path.getsize(os.path.join(step_dir, f)), file_sha256(os.path.join(step_dir, f))]
           for f in _files(step_dir)}
  workdir_lib.write_json(os.path.join(step_dir, MANIFEST), {"format": 1, "files": files}, indent=None)


def verify_manifest(step_dir: str) -> bool:
  """Checks ``step_dir`` against its manifest; raises DamagedCheckpoint naming the first bad file.

  Returns False if there is no manifest (nothing to check), True if every file matched.
  """
  path = os.path.join(step_dir, MANIFEST)
  if not os.path.exists(path):
    return False
  try:
    with open(path) as f:
      files = json.load(f)["files"]
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise DamagedCheckpoint(f"checkpoint {step_dir} is damaged: its file list {MANIFEST} is unreadable ({e})")
  for name, (size, sha) in sorted(files.items()):
    full = os.path.join(step_dir, name)
    if not os.path.isfile(full):
      raise DamagedCheckpoint(f"checkpoint {step_dir} is damaged: {name} is missing")
    actual = os.path.getsize(full)
    if actual != size:
      raise DamagedCheckpoint(f"checkpoint {step_dir} is damaged: {name} has {actual} bytes, {size} were saved")
    if file_sha256(full) != sha:
      raise DamagedCheckpoint(f"checkpoint {step_dir} is damaged: {name} differs from what was saved "
                              f"(SHA-256 mismatch)")
  return True
