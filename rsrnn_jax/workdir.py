"""The workdir's safety rails: one-line user errors, an exclusive lock, atomic and strict-JSON result files.

* :class:`UserError` (a ``ValueError``): a failure the user caused and can fix; ``launch.py`` prints its one line
  and exits with status 2. :func:`describe_error` gives that line for any exception a user can cause (bad
  values, missing or unreadable files, a read-only or full disk), or None for a bug (the traceback is shown).
* :func:`locked`: an exclusive ``fcntl.flock`` on ``WORKDIR/.lock`` holding the PID, host and command of the
  holder. A second process gets one line naming the holder; a lock left by a dead process is released by the
  kernel and taken over (with a log line). ``RSRNN_IGNORE_LOCK=1`` skips the lock.
* :func:`write_json` / :func:`write_text` / :func:`atomic_path`: write a temporary file in the same folder, then
  rename it over the target, so a reader (or a crash) never sees half a file. JSON is strict: NaN and ±Inf
  become ``null``.
* :func:`interruptible` / :class:`Interrupted`: SIGINT and SIGTERM raise ``Interrupted`` in the main thread, so
  the running mode closes what it holds and ``launch.py`` prints one line and exits 130 / 143;
  :func:`deferred_interrupts` holds a signal back until a block that must not stop half-way (a checkpoint
  save, the swap of a results folder) is done.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import logging
import math
import os
import signal
import socket
import sys
import tempfile

import numpy as np

LOCK_NAME = ".lock"
IGNORE_LOCK_ENV = "RSRNN_IGNORE_LOCK"
DEBUG_ENV = "RSRNN_DEBUG"

log = logging.getLogger(__name__)

_UMASK = os.umask(0)
os.umask(_UMASK)
_HELD: dict[str, list] = {}  # realpath -> [fd, depth]: the lock is re-entrant within this process


class UserError(ValueError):
  """A failure caused by the user's input or environment; its message is one line that says what to do."""


# ---------------------------------------------------------------------------------------------- error lines

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def one_line(text: str, limit: int = 600) -> str:
  """``text`` with its whitespace (newlines too) collapsed, cut to ``limit`` characters."""
  text = " ".join(str(text).split())
  return text if len(text) <= limit else text[:limit - 3] + "..."


def _chain(exc: BaseException):
  seen = set()
  while exc is not None and id(exc) not in seen:
    seen.add(id(exc))
    yield exc
    exc = exc.__cause__ or exc.__context__


def is_disk_full(exc: BaseException) -> bool:
  """True if ``exc`` (or one it was raised from) reports a full disk or quota (also TensorStore's messages)."""
  for e in _chain(exc):
    if isinstance(e, OSError) and e.errno in _DISK_FULL:
      return True
    if "No space left on device" in str(e) or "os_error_code='28'" in str(e):
      return True
  return False


def describe_os_error(e: OSError) -> str:
  """One line for an OSError: what failed, on which path, and what to do."""
  where = f" {e.filename}" if e.filename else ""
  if e.errno in _DISK_FULL:
    return f"disk full writing{where}: free space on that disk or use a --workdir on another one"
  if e.errno == errno.EROFS:
    return f"read-only file system:{where}: use a --workdir on a writable disk"
  if e.errno in (errno.EACCES, errno.EPERM):
    return f"permission denied:{where}: fix its permissions or use another --workdir"
  return one_line(f"{e.strerror or e}:{where}" if e.strerror else str(e))


def describe_error(exc: BaseException) -> str | None:
  """The one-line message for a user-caused failure, or None for an unexpected one (a bug: show the traceback)."""
  if isinstance(exc, UserError):
    return one_line(exc)
  if is_disk_full(exc):
    os_error = next((e for e in _chain(exc) if isinstance(e, OSError) and e.errno in _DISK_FULL), None)
    return describe_os_error(os_error or OSError(errno.ENOSPC, "No space left on device"))
  if isinstance(exc, OSError):
    return describe_os_error(exc)
  if isinstance(exc, ValueError):
    return one_line(exc)
  return None


def debug_enabled() -> bool:
  return os.environ.get(DEBUG_ENV, "") not in ("", "0")


# --------------------------------------------------------------------------------------------- the workdir


def check_usable(workdir: str) -> None:
  """Raises UserError unless ``workdir`` is (or can become) a writable directory. Writes nothing."""
  path = os.path.abspath(os.path.expanduser(workdir))
  if os.path.exists(path) and not os.path.isdir(path):
    raise UserError(f"--workdir {workdir} is a file, not a directory; pass a directory path")
  parent = path
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise UserError(f"--workdir {workdir} cannot be created: {parent} is a file")
  if not os.access(parent, os.W_OK | os.X_OK):
    hint = ("to evaluate its checkpoints, pass --config.eval.checkpoint_path and a writable --workdir"
            if parent == path else "choose a writable location")
    raise UserError(f"--workdir {workdir} is not writable ({parent} is read-only or not yours); {hint}")


def _holder(fd: int) -> dict:
  try:
    text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
    return json.loads(text) if text else {}
  except (OSError, ValueError):
    return {"pid": "?"}


def live_holder(workdir: str) -> dict | None:
  """The process of this host that holds ``workdir``'s lock now, as its lock file names it (pid, since,
  command), or None. Reads the file only: it never takes the lock, so it cannot get in a run's way."""
  try:
    with open(os.path.join(workdir, LOCK_NAME)) as f:
      h = json.loads(f.read() or "{}")
  except (OSError, ValueError):
    return None
  if h.get("host") != socket.gethostname() or not isinstance(h.get("pid"), int):
    return None
  try:
    os.kill(h["pid"], 0)
  except ProcessLookupError:
    return None  # a stale lock: that process is gone
  except PermissionError:
    pass  # alive, another user's
  return h


def _describe_holder(h: dict) -> str:
  return f"PID {h.get('pid', '?')} on {h.get('host', '?')} (since {h.get('since', '?')})"


def _acquire(path: str, workdir: str) -> int:
  lock_path = os.path.join(path, LOCK_NAME)
  try:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    if e.errno in _NOT_WRITABLE:
      raise UserError(f"--workdir {workdir} is not writable ({e.strerror}); choose a writable directory "
                      f"(to evaluate its checkpoints, pass --config.eval.checkpoint_path and another --workdir)"
                      ) from e
    raise
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    holder = _holder(fd)
    os.close(fd)
    raise UserError(f"--workdir {workdir} is in use by {_describe_holder(holder)}: wait for it to finish, stop "
                    f"it (kill {holder.get('pid', '<pid>')}) or use another --workdir; if no other run uses it "
                    f"(e.g. a file system without working locks), {IGNORE_LOCK_ENV}=1 skips this check") from None
  except OSError as e:  # ENOLCK / EOPNOTSUPP: a file system without flock
    log.warning("cannot lock %s (%s); continuing without a workdir lock", lock_path, e.strerror)
    return fd
  stale = _holder(fd)
  if stale.get("pid") not in (None, os.getpid()):
    log.warning("took over the stale lock of %s in %s (that process is gone)", _describe_holder(stale), workdir)
  me = {"pid": os.getpid(), "host": socket.gethostname(),
        "since": datetime.datetime.now().isoformat(timespec="seconds"), "command": " ".join(sys.argv)[:500]}
  os.ftruncate(fd, 0)
  os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
  return fd


def _release(fd: int) -> None:
  with contextlib.suppress(OSError):
    os.ftruncate(fd, 0)  # an empty lock file = released cleanly (not stale)
  with contextlib.suppress(OSError):
    fcntl.flock(fd, fcntl.LOCK_UN)
  os.close(fd)


@contextlib.contextmanager
def locked(workdir: str, *, enabled: bool = True):
  """Holds the exclusive lock of ``workdir`` (created if missing) for the duration of the ``with`` block.

  Re-entrant within one process. A directory this call created is removed again if the block fails while it
  holds nothing but the lock file (a refused run leaves no trace). ``enabled=False`` (processes other than 0
  of a multi-process job) and ``RSRNN_IGNORE_LOCK=1`` skip the lock.
  """
  path = os.path.realpath(os.path.expanduser(workdir))
  if path in _HELD:  # this process holds it already
    _HELD[path][1] += 1
    try:
      yield
    finally:
      _HELD[path][1] -= 1
    return
  if not enabled or os.environ.get(IGNORE_LOCK_ENV, "") not in ("", "0"):
    yield
    return
  created = not os.path.exists(path)
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise UserError(f"--workdir {workdir} cannot be created ({e.strerror}); choose a writable location") from e
  fd = _acquire(path, workdir)
  _HELD[path] = [fd, 1]
  ok = False
  try:
    yield
    ok = True
  finally:
    del _HELD[path]
    _release(fd)
    if created and not ok and os.listdir(path) == [LOCK_NAME]:
      with contextlib.suppress(OSError):
        os.remove(os.path.join(path, LOCK_NAME))
        os.rmdir(path)


@contextlib.contextmanager
def damaged_dataset(where: str):
  """A corrupt or truncated record file read in the block (array_record raises RuntimeError) → one UserError
  naming the prepared dataset's folder and the fix."""
  try:
    yield
  except (RuntimeError, OSError) as e:
    raise UserError(f"the prepared dataset in {where} is damaged ({one_line(e, 200)}): delete that folder and "
                    f"run again to prepare it anew") from e


# ------------------------------------------------------------------------------------------ interruptions

class Interrupted(BaseException):
  """SIGINT or SIGTERM inside :func:`interruptible`. ``str()`` is the one line to print (a mode replaces it with
  what was kept: :meth:`because`); ``exit_code`` is 128 + the signal number (130, 143). A BaseException, as
  KeyboardInterrupt is, so that ``except Exception`` blocks let it through."""

  def __init__(self, signum: int, message: str = ""):
    self.signum, self.said = int(signum), bool(message)  # said: a mode has put what it kept into the message
    super().__init__(message or f"interrupted ({self.name})")

  @property
  def name(self) -> str:
    return signal.Signals(self.signum).name

  @property
  def exit_code(self) -> int:
    return 128 + self.signum

  def because(self, message: str) -> "Interrupted":
    return Interrupted(self.signum, message)


_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_STATE = {"installed": 0, "deferred": 0, "pending": None, "raised": False}


def _on_signal(signum, frame):
  del frame
  if _STATE["raised"]:  # a second Ctrl-C while the first one's cleanup runs: that cleanup finishes
    return
  if _STATE["deferred"]:
    _STATE["pending"] = signum
    return
  _STATE["raised"] = True
  raise Interrupted(signum)


@contextlib.contextmanager
def interruptible():
  """Within the block (main thread only) SIGINT and SIGTERM raise :class:`Interrupted`; the handlers before it
  are restored after."""
  previous = {s: signal.signal(s, _on_signal) for s in _SIGNALS}
  _STATE.update(installed=_STATE["installed"] + 1, pending=None, raised=False)
  try:
    yield
  finally:
    _STATE["installed"] -= 1
    for s, handler in previous.items():
      signal.signal(s, handler)


@contextlib.contextmanager
def deferred_interrupts():
  """A signal that arrives in the block is raised when the block has completed (under :func:`interruptible`;
  elsewhere the process's own handlers apply unchanged)."""
  _STATE["deferred"] += 1
  try:
    yield
  finally:
    _STATE["deferred"] -= 1
  signum = _STATE["pending"]
  if signum is not None and not _STATE["deferred"] and _STATE["installed"]:
    _STATE.update(pending=None, raised=True)
    raise Interrupted(signum)


# ------------------------------------------------------------------------------------------ atomic writes


def strict(obj):
  """``obj`` with every non-finite float replaced by None and numpy values by Python ones (strict JSON)."""
  if isinstance(obj, dict):
    return {k: strict(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [strict(v) for v in obj]
  if isinstance(obj, np.ndarray):
    return strict(obj.tolist())
  if isinstance(obj, (float, np.floating)):
    return float(obj) if math.isfinite(obj) else None
  if isinstance(obj, np.integer):
    return int(obj)
  if isinstance(obj, np.bool_):
    return bool(obj)
  return obj


def dumps(obj, **kwargs) -> str:
  """Strict JSON (``null`` for NaN/±Inf; unknown objects as ``str``)."""
  return json.dumps(strict(obj), allow_nan=False, default=str, **kwargs)


@contextlib.contextmanager
def atomic_path(path: str):
  """Yields a temporary path next to ``path`` (same extension) and renames it onto ``path`` if the block
  succeeds; removes it otherwise. For writers that take a file name (``savefig``, ``np.savez``)."""
  folder = os.path.dirname(os.path.abspath(path))
  stem, ext = os.path.splitext(os.path.basename(path))
  fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{ext}", dir=folder)
  os.close(fd)
  try:
    yield tmp
    os.chmod(tmp, 0o666 & ~_UMASK)
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def write_text(path: str, text: str) -> None:
  """Writes ``text`` to ``path`` atomically (temporary file, fsync, rename)."""
  with atomic_path(path) as tmp:
    with open(tmp, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())


def write_json(path: str, obj, *, indent: int | None = 1) -> None:
  """Strict JSON (:func:`dumps`) written atomically."""
  write_text(path, dumps(obj, indent=indent) + "\n")
