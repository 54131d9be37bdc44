"""The robust-flags cascade's journal: each attack's result at each ε on disk as soon as it is done, so that an
interrupted ``--mode=attack`` resumes where it stopped instead of from the start.

An adaptive stage of the reproduction runs for an hour or more on 2 CPU cores; a session that ends mid-stage used
to lose all of it. The cascade is deterministic given each attack's result (the examples an attack gets follow
from the results before it, and every attack draws its randomness from its own key), so replaying the journaled
results and running the rest gives the same results as an uninterrupted run (tests/test_attack_adaptive.py).

The journal lives beside the output, in ``WORKDIR/.attack_<profile>.journal/``, and is keyed by the whole config
and the checkpoint's fingerprint: any change discards it. A run that completes deletes it. Only single-process
runs keep one (every process would have to see the same files, or they would disagree on which attacks to run).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil

import jax
import numpy as np

from rsrnn_jax import workdir as workdir_lib

_META = "meta.json"


class Journal:
  """Per (ε index, attack name): the examples attacked and the attack's result (``cascade.attack_rows``)."""

  def __init__(self, folder: str, key: str):
    self.folder, self.key, self.replayed = folder, key, 0
    meta = os.path.join(folder, _META)
    if os.path.isdir(folder):
      try:
        with open(meta) as f:
          same = json.load(f).get("key") == key
      except (OSError, ValueError):
        same = False
      if not same:
        shutil.rmtree(folder)
    if not os.path.isdir(folder):
      os.makedirs(folder)
      workdir_lib.write_json(meta, {"key": key})

  def _path(self, eps_index: int, name: str) -> str:
    return os.path.join(self.folder, f"eps{eps_index}_{name}.npz")

  def load(self, eps_index: int, name: str, rows) -> dict | None:
    """The journaled result of ``name`` at ε number ``eps_index`` on exactly ``rows``, or None."""
    path = self._path(eps_index, name)
    if not os.path.exists(path):
      return None
    with np.load(path) as z:
      if not np.array_equal(z["rows"], np.asarray(rows, np.int64)):
        return None
      info = {k[len("info_"):]: z[k] for k in z.files if k.startswith("info_")}
      res = {"adv_correct": z["adv_correct"], "adv_images": z["adv_images"] if "adv_images" in z.files else None,
             "info": info}
    self.replayed += 1
    return res

  def save(self, eps_index: int, name: str, rows, res: dict) -> None:
    arrays = {"rows": np.asarray(rows, np.int64), "adv_correct": np.asarray(res["adv_correct"], bool),
              **{f"info_{k}": np.asarray(v) for k, v in (res.get("info") or {}).items()}}
    if res.get("adv_images") is not None:
      arrays["adv_images"] = np.asarray(res["adv_images"])
    with workdir_lib.atomic_path(self._path(eps_index, name)) as tmp:
      np.savez(tmp, **arrays)

  def discard(self) -> None:
    shutil.rmtree(self.folder, ignore_errors=True)


def for_run(config, workdir: str, checkpoint_fingerprint: str) -> Journal | None:
  """The journal of ``--mode=attack`` with ``config`` on the checkpoint ``checkpoint_fingerprint`` of
  ``workdir`` (None in a multi-process run)."""
  if jax.process_count() > 1:
    return None
  blob = json.dumps({"config": config.to_dict(), "checkpoint": checkpoint_fingerprint}, sort_keys=True, default=str)
  return Journal(folder(workdir, config.attack.profile), hashlib.sha256(blob.encode()).hexdigest())


def folder(workdir: str, profile: str) -> str:
  """Where the journal of profile ``profile``'s attack on ``workdir`` lives."""
  return os.path.join(workdir, f".attack_{profile}.journal")
