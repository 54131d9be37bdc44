"""Result folders that appear whole or not at all (``WORKDIR/attack_<profile>/``), with a manifest to prove it.

:func:`staged_folder` yields a fresh sibling ``<folder>.tmp-<run id>`` to write every file into. When the block
completes it writes ``manifest.json`` there (the run id and the size and SHA-256 of every file) and swaps the
sibling in: the old folder is renamed to ``<folder>.old-<run id>``, the new one to ``<folder>``, the old one
deleted (signals wait until the two renames are done: :func:`rsrnn_jax.workdir.deferred_interrupts`). If the
block fails or is interrupted, the sibling is removed and ``<folder>`` is untouched. What a killed (``kill -9``)
run leaves beside the folder is cleaned by the next :func:`staged_folder` on it (:func:`recover`, one log line
each); readers skip it (:func:`is_staging`).

:func:`check_manifest` is what ``--mode=verify`` runs first: every record file (``.json``, ``.npz``) must be
listed with its digest, and the run id of the sets must be the manifest's; a folder from before manifests is
refused with one line. The report and the plots are views of ``results.json`` that
``python -m rsrnn_jax.robustness.results`` may redraw, so their digests are listed but not checked.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import re
import secrets
import shutil

from rsrnn_jax import workdir as workdir_lib
from rsrnn_jax.train.integrity import file_sha256

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
RECORDS = (".json", ".npz")  # the files verify checks against the manifest (the rest are redrawn views)
_STAGING = re.compile(r"\.(tmp|old)-[0-9A-Za-z-]+$")


def new_run_id() -> str:
  """A run id: the start time and 6 random hex digits (``20261206T112233-a1b2c3``)."""
  return f"{datetime.datetime.now():%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


def is_staging(path: str) -> bool:
  """True for a sibling that :func:`staged_folder` writes or sets aside (``.tmp-<id>``, ``.old-<id>``)."""
  return bool(_STAGING.search(os.path.basename(os.path.normpath(path))))


def _siblings(folder: str, kind: str) -> list[str]:
  parent, name = os.path.split(os.path.normpath(folder))
  prefix = f"{name}.{kind}-"
  return sorted(os.path.join(parent, n) for n in (os.listdir(parent) if os.path.isdir(parent) else [])
                if n.startswith(prefix) and is_staging(n))


def recover(folder: str) -> None:
  """Cleans what a killed run left beside ``folder``: an unfinished ``.tmp-*`` is removed; an ``.old-*`` is put
  back if ``folder`` is missing (killed between the two renames), else removed. One log line each."""
  for tmp in _siblings(folder, "tmp"):
    log.warning("removing %s: the unfinished output of an interrupted run (%s is as that run found it)", tmp,
                folder)
    shutil.rmtree(tmp, ignore_errors=True)
  for old in _siblings(folder, "old"):
    if not os.path.exists(folder):
      log.warning("restoring %s from %s (a run was stopped while it swapped the folder in)", folder, old)
      os.rename(old, folder)
    else:
      shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged_folder(folder: str, run_id: str):
  """Yields an empty sibling of ``folder`` to write into; on success it becomes ``folder`` (module docstring)."""
  folder = os.path.normpath(folder)
  recover(folder)
  tmp, old = f"{folder}.tmp-{run_id}", f"{folder}.old-{run_id}"
  os.makedirs(tmp)
  try:
    yield tmp
    write_manifest(tmp, run_id)
    with workdir_lib.deferred_interrupts():
      if os.path.exists(folder):
        os.rename(folder, old)
      os.rename(tmp, folder)
  except BaseException:
    if os.path.exists(old) and not os.path.exists(folder):
      os.rename(old, folder)
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  shutil.rmtree(old, ignore_errors=True)


def _files(folder: str) -> list[str]:
  out = []
  for root, _, names in os.walk(folder):
    out += [os.path.relpath(os.path.join(root, n), folder) for n in names]
  return sorted(f for f in out if f != MANIFEST)


def write_manifest(folder: str, run_id: str) -> None:
  """``folder/manifest.json``: the run id and [bytes, SHA-256] of every file of ``folder``."""
  files = {f: [os.path.getsize(os.path.join(folder, f)), file_sha256(os.path.join(folder, f))]
           for f in _files(folder)}
  workdir_lib.write_json(os.path.join(folder, MANIFEST), {"format": 1, "run_id": run_id, "files": files})


def read_manifest(folder: str) -> dict:
  """The manifest of ``folder``; a one-line UserError if there is none or it cannot be read."""
  path = os.path.join(folder, MANIFEST)
  if not os.path.exists(path):
    raise workdir_lib.UserError(
        f"{folder} has no {MANIFEST}: it was written before attack folders were written whole (or by hand), so "
        f"nothing shows that its files come from one run; run --mode=attack again to make a verifiable one")
  try:
    with open(path) as f:
      manifest = json.load(f)
    if not isinstance(manifest.get("run_id"), str) or not isinstance(manifest.get("files"), dict):
      raise ValueError("no run_id or files")
  except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
    raise workdir_lib.UserError(f"{path} is damaged ({workdir_lib.one_line(e, 120)}); run --mode=attack "
                                f"again") from None
  return manifest


def check_manifest(folder: str, names=None) -> str:
  """Checks the record files of ``folder`` (or only ``names``) against its manifest; returns the run id.

  Raises a one-line UserError naming the first file that is missing, not listed, or differs from its digest.
  """
  manifest = read_manifest(folder)
  listed = manifest["files"]
  present = [f for f in _files(folder) if f.endswith(RECORDS)]
  for name in sorted(names if names is not None else set(present) | {f for f in listed if f.endswith(RECORDS)}):
    full, fix = os.path.join(folder, name), "its files come from different runs; run --mode=attack again"
    if name not in listed:
      raise workdir_lib.UserError(f"{full} is not in {MANIFEST} (run {manifest['run_id']}): {fix}")
    if not os.path.isfile(full):
      raise workdir_lib.UserError(f"{full} is missing (listed in {MANIFEST} of run {manifest['run_id']}): {fix}")
    size, sha = listed[name]
    if os.path.getsize(full) != size or file_sha256(full) != sha:
      raise workdir_lib.UserError(f"{full} differs from {MANIFEST} (run {manifest['run_id']}): {fix}")
  return str(manifest["run_id"])
