"""Fault injection (issue 14): every fault ends in one line, and no good checkpoint or result is lost.

The cases: NaN at step k (stop, or skip), a truncated / bit-flipped / altered / NaN checkpoint (fallback to the
previous one in train and eval), two processes on one workdir (lock) and a stale lock, a read-only workdir, a
full disk (a small tmpfs when running as root, else a simulated ENOSPC), corrupt data (truncated .gz, truncated
array_record, another source_dir). Most run in-process; the launch.py subprocess tests are marked slow.
"""
import contextlib
import errno
import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import matplotlib.figure
import numpy as np
import pytest

from rsrnn_jax import configlib, data, run
from rsrnn_jax import workdir as workdir_lib
from rsrnn_jax.data import fashion_mnist
from rsrnn_jax.evaluation import clean as evaluate
from rsrnn_jax.train import loop as train_loop
from rsrnn_jax.train import checkpoints, integrity
from rsrnn_jax.train import state as train_state
from configs import demo
from tests.helpers import TINY_FLAGS, flag_overrides, override, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(tiny_data, **overrides):
  return tiny_config(**{"data.source_dir": tiny_data["source_dir"], "data.data_dir": tiny_data["data_dir"],
                        "train.keep_checkpoints": 3, **overrides})


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
  """A workdir trained for 4 steps with checkpoints 2 and 4 (tests copy it before damaging anything)."""
  workdir = str(tmp_path_factory.mktemp("trained") / "work")
  run.main(_config(tiny_data), workdir, "train")
  return workdir


def _copy(trained, tmp_path) -> str:
  return shutil.copytree(trained, str(tmp_path / "work"), ignore=shutil.ignore_patterns(".lock"))


def _steps(workdir, c):
  return checkpoints.manager(workdir, c, create=False).all_steps()


def _reject(token):
  raise AssertionError(f"non-standard JSON token {token}")


def _strict_lines(path):
  with open(path) as f:
    return [json.loads(line, parse_constant=_reject) for line in f if line.strip()]


def _largest_state_file(step_dir):
  files = [os.path.join(r, n) for r, _, ns in os.walk(os.path.join(step_dir, "state")) for n in ns]
  return max(files, key=os.path.getsize)


# ------------------------------------------------------------------------------------------ 1. NaN at step k

def _nan_from(k_after_resume):
  real = data.train_batches

  def batches(*args, **kwargs):
    for i, batch in enumerate(real(*args, **kwargs)):
      yield {**batch, "image": batch["image"] * np.nan} if i == k_after_resume else batch
  return batches


def test_nan_at_step_k_stops_before_saving_and_keeps_every_good_checkpoint(tiny_data, trained, tmp_path,
                                                                          monkeypatch):
  workdir = _copy(trained, tmp_path)
  c = _config(tiny_data, **{"train.num_train_steps": 8})
  monkeypatch.setattr(data, "train_batches", _nan_from(1))  # resumed at 4: the batch of step 6 is NaN
  with pytest.raises(workdir_lib.UserError, match=r"NaN/Inf at step 6; stopped without saving \(checkpoint 4 "
                                                  r"is kept\).*learning_rate.*grad_clip.*nonfinite=skip"):
    evaluate.train_and_evaluate(c, workdir)
  assert _steps(workdir, c) == [2, 4]
  rows = _strict_lines(os.path.join(workdir, "metrics.jsonl"))  # null, not NaN
  assert rows[-1]["step"] == 6 and rows[-1]["loss"] is None


def test_skip_policy_keeps_training_past_a_nan_step(tiny_data, trained, tmp_path, monkeypatch):
  workdir = _copy(trained, tmp_path)
  c = _config(tiny_data, **{"train.num_train_steps": 6, "train.nonfinite": "skip"})
  monkeypatch.setattr(data, "train_batches", _nan_from(0))  # step 5
  evaluate.train_and_evaluate(c, workdir)
  assert _steps(workdir, c) == [2, 4, 6]
  rows = _strict_lines(os.path.join(workdir, "metrics.jsonl"))
  assert rows[-1]["step"] == 6 and rows[-1]["skipped_steps"] == 1 and rows[-1]["loss"] is not None


def test_a_non_finite_state_is_never_saved(tiny_data, trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  c = _config(tiny_data)
  mgr = checkpoints.manager(workdir, c)
  model, info = train_state.model_from_config(c)
  state = train_state.init_state(model, c, info.image_shape, jax.random.key(0))
  bad = state.replace(params=jax.tree_util.tree_map(lambda p: p * jnp.nan, state.params))
  with pytest.raises(workdir_lib.UserError, match="refusing to save checkpoint 6"):
    checkpoints.save(mgr, 6, bad, checkpoints.metadata(c, info))
  assert mgr.all_steps() == [2, 4]


# ---------------------------------------------------------------------------- 2. damaged newest checkpoint

def _truncate(path):
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


def _flip(path):
  with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 2)
    chunk = f.read(8)
    f.seek(-len(chunk), 1)
    f.write(bytes(b ^ 0xFF for b in chunk))


@pytest.mark.parametrize("damage", [_truncate, _flip])
def test_damaged_newest_checkpoint_falls_back_in_eval_and_train(tiny_data, trained, tmp_path, caplog, damage):
  workdir = _copy(trained, tmp_path)
  c = _config(tiny_data)
  damage(_largest_state_file(os.path.join(workdir, "checkpoints", "4")))
  _, state, _, _ = evaluate.load_model(c, workdir)
  assert int(state.step) == 2
  assert any("checkpoints/4 is damaged" in r.getMessage() for r in caplog.records)
  evaluate.train_and_evaluate(c, workdir)  # resumes from 2, sets 4 aside, trains 3-4 again
  assert _steps(workdir, c) == [2, 4]
  assert os.path.isdir(os.path.join(workdir, "checkpoints.damaged", "4"))  # moved, never deleted
  _, state, _, _ = evaluate.load_model(c, workdir)
  assert int(state.step) == 4


def test_altered_values_and_nan_checkpoints_fail_verification(tiny_data, trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  c = _config(tiny_data)
  mgr = checkpoints.manager(workdir, c, create=False)
  model, info = train_state.model_from_config(c)
  like = train_state.init_state(model, c, info.image_shape, jax.random.key(0))
  step4 = os.path.join(workdir, "checkpoints", "4")
  os.remove(os.path.join(step4, integrity.MANIFEST))  # an older checkpoint: the digest is all there is
  meta_file = os.path.join(step4, "meta", "metadata")
  with open(meta_file) as f:
    meta = json.load(f)
  meta["integrity"]["digest"] = "0" * 32
  with open(meta_file, "w") as f:
    json.dump(meta, f)
  with pytest.raises(checkpoints.DamagedCheckpoint, match="checksum mismatch"):
    checkpoints.restore(mgr, 4, like)
  # A checkpoint with NaN values (written by code without the guard) is refused too.
  nan = like.replace(params=jax.tree_util.tree_map(lambda p: p * jnp.nan, like.params))
  del meta["integrity"]
  mgr.save(8, args=checkpoints.ocp.args.Composite(state=checkpoints.ocp.args.StandardSave(nan),
                                                  meta=checkpoints.ocp.args.JsonSave(meta)), force=True)
  with pytest.raises(checkpoints.DamagedCheckpoint, match="NaN"):
    checkpoints.restore(mgr, 8, like)
  state, step = checkpoints.restore_newest_good(mgr, like)
  assert step == 2 and int(state.step) == 2


def test_no_restorable_checkpoint_is_one_error_and_nothing_moves(tiny_data, trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  c = _config(tiny_data)
  for step in (2, 4):
    _truncate(_largest_state_file(os.path.join(workdir, "checkpoints", str(step))))
  with pytest.raises(checkpoints.DamagedCheckpoint, match="no checkpoint in .* can be restored"):
    evaluate.train_and_evaluate(c, workdir)
  assert _steps(workdir, c) == [2, 4] and not os.path.exists(os.path.join(workdir, "checkpoints.damaged"))


def test_digest_sees_one_flipped_bit_and_a_changed_structure():
  tree = {"a": jnp.arange(6, dtype=jnp.float32), "b": jnp.ones((2, 2), jnp.int32)}
  base, finite = integrity.state_digest(tree)
  flipped = {**tree, "a": jax.lax.bitcast_convert_type(
      jax.lax.bitcast_convert_type(tree["a"], jnp.uint32) ^ jnp.uint32(1 << 20) * (jnp.arange(6) == 3),
      jnp.float32)}
  assert finite and integrity.state_digest(flipped)[0] != base
  assert integrity.state_digest({**tree, "b": tree["b"].reshape(4)})[0] != base
  assert integrity.state_digest(tree)[0] == base
  assert not integrity.state_digest({"a": jnp.array([1.0, jnp.inf])})[1]


# ----------------------------------------------------------------------------------------- 3. workdir lock

_HOLDER = ("import sys, time; sys.path.insert(0, sys.argv[2]); from rsrnn_jax import workdir; "
           "held = workdir.locked(sys.argv[1]); held.__enter__(); print('locked', flush=True); time.sleep(600)")


def test_lock_names_the_holder_then_takes_over_when_it_dies(tmp_path, caplog):
  holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path), ROOT], stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(workdir_lib.UserError, match=f"in use by PID {holder.pid} .*kill {holder.pid}.*"
                                                    f"RSRNN_IGNORE_LOCK=1"):
      with workdir_lib.locked(str(tmp_path)):
        pass
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  with workdir_lib.locked(str(tmp_path)):  # the kernel released the dead holder's lock: taken over
    with workdir_lib.locked(str(tmp_path)):  # re-entrant within one process
      pass
  assert any(f"stale lock of PID {holder.pid}" in r.getMessage() for r in caplog.records)


def test_a_refused_run_leaves_no_new_workdir_and_no_config_json(tiny_data, trained, tmp_path):
  fresh = tmp_path / "fresh"
  with pytest.raises(ValueError):
    with workdir_lib.locked(str(fresh)):
      raise ValueError("refused")
  assert not fresh.exists()
  workdir = _copy(trained, tmp_path)
  before = open(os.path.join(workdir, "config.json")).read()
  with pytest.raises(ValueError, match="different model"):  # issue case 5: :model=dram on an RS-RNN workdir
    run.main(_config(tiny_data, model="dram"), workdir, "train")
  with pytest.raises(ValueError, match=r"num_train_steps=2 is below the newest checkpoint \(step 4\)"):
    run.main(_config(tiny_data, **{"train.num_train_steps": 2}), workdir, "train")
  assert open(os.path.join(workdir, "config.json")).read() == before


# --------------------------------------------------------------------------- 4. operating-system errors

@contextlib.contextmanager
def _tmpfs(path, size):
  """A tmpfs of ``size`` at ``path`` when running as root and mount works; else None (simulate)."""
  os.makedirs(path)
  if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                                         capture_output=True).returncode:
    yield None
    return
  try:
    yield path
  finally:
    subprocess.run(["umount", "-l", path], check=False)


def test_read_only_workdir_is_refused_before_computing(tiny_data, trained, tmp_path):
  c = _config(tiny_data)
  with _tmpfs(str(tmp_path / "ro"), "4m") as mount:
    workdir = shutil.copytree(trained, str(tmp_path / "ro" / "work"), ignore=shutil.ignore_patterns(".lock"))
    if mount:
      subprocess.run(["mount", "-o", "remount,ro", mount], check=True)
    else:
      os.chmod(workdir, 0o555)
    try:
      for mode in ("eval", "train", "attack"):
        with pytest.raises(ValueError, match="is not writable"):
          run.main(c if mode != "attack" else _attack_config(tiny_data), workdir, mode)
    finally:
      if not mount:
        os.chmod(workdir, 0o755)
  assert not os.path.exists(os.path.join(workdir, "eval"))


def _attack_config(tiny_data):
  from rsrnn_jax.robustness import profiles
  c = _config(tiny_data)
  c.attack = profiles.attack_profile("paper")
  c.attack.epsilons, c.attack.targeted_epsilons = (0.01,), (0.02,)
  return c


@pytest.mark.slow
def test_disk_full_save_is_one_line_and_keeps_older_checkpoints(tiny_data, trained, tmp_path, monkeypatch):
  """Refused before writing when the free space is too small; if the disk fills during the save (the free-space
  check switched off), the partial save is removed. Either way checkpoint 4 stays and is restorable."""
  c = _config(tiny_data, **{"train.num_train_steps": 6})
  with _tmpfs(str(tmp_path / "small"), "2m") as mount:
    workdir = shutil.copytree(trained, str(tmp_path / "small" / "work"), ignore=shutil.ignore_patterns(".lock"))
    if mount:  # fill the disk, then free room for the logs but not for a checkpoint
      with open(os.path.join(mount, "filler"), "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
          f.write(b"\0" * 4096)
      os.truncate(os.path.join(mount, "filler"), os.path.getsize(os.path.join(mount, "filler")) - 48 * 1024)
    else:
      def full(*args, **kwargs):
        raise ValueError("RESOURCE_EXHAUSTED: Error writing ...: No space left on device [os_error_code='28']")
      monkeypatch.setattr(checkpoints.ocp.CheckpointManager, "save", full)
    for midway in (False, True):
      if midway:
        monkeypatch.setattr(checkpoints, "_check_free_space", lambda *args: None)
      with pytest.raises(ValueError) as info:
        run.main(c, workdir, "train")
      message = workdir_lib.describe_error(info.value)
      assert message.startswith("disk full: ") and "checkpoint 6" in message and "resume from step 4" in message
      assert _steps(workdir, c) == [2, 4]
    _, state, _, _ = evaluate.load_model(c, workdir)
    assert int(state.step) == 4


@pytest.mark.parametrize("exc,expected", [
    (OSError(errno.ENOSPC, "No space left on device", "/w/x"), "disk full writing /w/x"),
    (OSError(errno.EROFS, "Read-only file system", "/w"), "read-only file system: /w"),
    (PermissionError(errno.EACCES, "Permission denied", "/w"), "permission denied: /w"),
    (ValueError("RESOURCE_EXHAUSTED: ... [os_error_code='28']"), "disk full"),
    (ValueError("line one\nline two"), "line one line two"),
    (RuntimeError("a bug"), None),
])
def test_describe_error_gives_one_line_for_user_errors_only(exc, expected):
  message = workdir_lib.describe_error(exc)
  assert message == expected if expected is None else (expected in message and "\n" not in message)


def test_workdir_that_is_a_file_and_eval_batch_not_divisible(tiny_data, tmp_path):
  (tmp_path / "file").write_text("x")
  with pytest.raises(ValueError, match="is a file, not a directory"):
    run.main(_config(tiny_data), str(tmp_path / "file"), "eval")
  with pytest.raises(ValueError, match=r"config.eval.batch_size=6: .*not divisible by the 4 devices"):
    run.main(_config(tiny_data, **{"eval.batch_size": 6}), str(tmp_path / "new"), "eval")
  assert not (tmp_path / "new").exists()


def test_results_are_written_atomically_and_strictly(tmp_path, monkeypatch):
  path = str(tmp_path / "results.json")
  workdir_lib.write_json(path, {"acc": [0.5, float("nan")], "x": np.float32(np.inf)})
  with open(path) as f:
    assert json.load(f, parse_constant=_reject) == {"acc": [0.5, None], "x": None}

  def broken(*args):
    raise OSError(errno.ENOSPC, "No space left on device")
  monkeypatch.setattr(os, "replace", broken)
  with pytest.raises(OSError):
    workdir_lib.write_json(path, {"acc": [1.0]})
  assert json.load(open(path))["acc"] == [0.5, None] and os.listdir(tmp_path) == ["results.json"]


def test_a_figure_or_gif_that_fails_to_save_leaves_the_previous_file(tmp_path, monkeypatch):
  from rsrnn_jax.report import figures
  png, gif = str(tmp_path / "acc.png"), str(tmp_path / "g.gif")
  figures.plot_accuracy_per_step({"clean": [0.5, 0.6]}, png)
  figures.save_gif([np.zeros((8, 8, 3), np.uint8)] * 2, gif)
  before = {p: open(p, "rb").read() for p in (png, gif)}

  def broken(self, fname, *args, **kwargs):  # a disk that fills half-way through the file
    open(fname, "wb").write(b"\x89PNG partial")
    raise OSError(errno.ENOSPC, "No space left on device")
  monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken)
  with pytest.raises(OSError):
    figures.plot_accuracy_per_step({"clean": [0.1, 0.2]}, png)
  monkeypatch.setattr(figures, "atomic_path", _failing_atomic_path(figures.atomic_path))
  with pytest.raises(OSError):
    figures.save_gif([np.full((8, 8, 3), 255, np.uint8)] * 3, gif)
  assert {p: open(p, "rb").read() for p in (png, gif)} == before
  assert sorted(os.listdir(tmp_path)) == ["acc.png", "g.gif"]


def _failing_atomic_path(atomic_path):
  """atomic_path whose block fails after the writer has written its temporary file."""
  @contextlib.contextmanager
  def wrapped(path):
    with atomic_path(path) as tmp:
      yield tmp
      assert os.path.getsize(tmp) > 0
      raise OSError(errno.ENOSPC, "No space left on device")
  return wrapped


# ------------------------------------------------------------------------------------------- corrupt data

def test_truncated_gz_idx_file_is_one_line_naming_it(tmp_path):
  folder = tmp_path / "src"
  images = np.zeros((4, 28, 28), np.uint8)
  for split in ("train", "test"):
    fashion_mnist.write_idx(folder, split, images, np.arange(4) % 10)
  gz = folder / "train-images-idx3-ubyte.gz"
  gz.write_bytes(gz.read_bytes()[:40])
  with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz is damaged .*source_dir"):
    fashion_mnist.load_fashion_mnist(folder, "train")


def test_corrupt_array_record_and_another_source_dir_are_one_line(tiny_data, tmp_path):
  c = _config(tiny_data)
  data.dataset_info(c.data)  # prepared
  copy = shutil.copytree(tiny_data["data_dir"], str(tmp_path / "tfds"))
  prepared = [os.path.join(r, n) for r, _, ns in os.walk(copy) for n in ns if "train.array_record" in n][0]
  _truncate(prepared)
  bad = _config(tiny_data, **{"data.data_dir": copy})
  data.clear_cache()
  with pytest.raises(ValueError, match="prepared dataset in .* is damaged .*delete that folder"):
    next(data.train_batches(bad.data, global_batch_size=8, seed=0))
  other = tmp_path / "other_src"
  for split, n in (("train", 96), ("test", 32)):
    fashion_mnist.write_idx(other, split, np.full((n, 28, 28), 7, np.uint8), np.arange(n) % 10)
  with pytest.raises(ValueError, match="holds other Fashion-MNIST files than those the dataset prepared"):
    data.dataset_info(_config(tiny_data, **{"data.source_dir": str(other)}).data)


# --------------------------------------------------------------------------------- through launch.py (slow)

def _data_flags(tiny_data):
  return [f"--config.data.source_dir={tiny_data['source_dir']}", f"--config.data.data_dir={tiny_data['data_dir']}",
          "--config.train.checkpoint_every=2", "--config.train.eval_at_end=False"]


def _launch(tiny_data, workdir, *flags):
  cmd = [sys.executable, "launch.py", "--config=configs/demo.py", f"--workdir={workdir}", *TINY_FLAGS,
         *_data_flags(tiny_data), *flags]
  return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "XLA_FLAGS": ""})


def _one_error_line(stderr):
  assert "Traceback" not in stderr, stderr[-3000:]
  errors = [line for line in stderr.replace("\r", "\n").splitlines() if line.startswith("error:")]
  assert len(errors) == 1, stderr[-3000:]
  return errors[0]


@pytest.mark.slow
def test_launch_diverged_run_exits_2_with_one_line_and_a_second_trainer_is_refused(tiny_data, tmp_path):
  workdir = tmp_path / "run"
  flags = [*TINY_FLAGS, *_data_flags(tiny_data), "--config.train.num_train_steps=4"]
  run.main(override(demo.get_config(), flag_overrides(flags)), str(workdir), "train")  # in-process: faster
  diverged = _launch(tiny_data, workdir, "--config.train.num_train_steps=8", "--config.train.learning_rate=1e30")
  _, err = diverged.communicate(timeout=300)
  assert diverged.returncode == 2 and "training diverged" in _one_error_line(err)
  assert _steps(str(workdir), tiny_config()) == [2, 4]
  _strict_lines(workdir / "metrics.jsonl")

  holder = _launch(tiny_data, workdir, "--config.train.num_train_steps=100000", "--config.seed=1")
  try:
    deadline = time.time() + 240
    while time.time() < deadline and json.load(open(workdir / "config.json"))["seed"] != 1:
      time.sleep(0.2)  # the holder has passed its checks and holds the lock
    second = _launch(tiny_data, workdir, "--config.train.num_train_steps=8")
    _, err = second.communicate(timeout=300)
    assert second.returncode == 2 and f"in use by PID {holder.pid}" in _one_error_line(err)
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  assert json.load(open(workdir / "config.json"))["seed"] == 1  # the holder's record, not the refused run's


# ------------------------------------------------------------------- issue 26: signals, noise, config record

def _signal_at_batch(signum, k):
  """train_batches that sends ``signum`` to this process as it hands out its k-th batch."""
  real = data.train_batches

  def batches(*args, **kwargs):
    for i, batch in enumerate(real(*args, **kwargs)):
      if i == k:
        os.kill(os.getpid(), signum)
      yield batch
  return batches


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_training_is_one_line_naming_the_step_and_the_checkpoint(tiny_data, trained, tmp_path,
                                                                                  monkeypatch, signum):
  workdir = _copy(trained, tmp_path)
  c = _config(tiny_data, **{"train.num_train_steps": 10})
  monkeypatch.setattr(data, "train_batches", _signal_at_batch(signum, 3))  # resumed at 4: the 8th batch
  before = signal.getsignal(signal.SIGINT)  # default_int_handler; SIG_IGN in a pytest-xdist worker
  with pytest.raises(workdir_lib.Interrupted) as info, workdir_lib.interruptible():
    run.main(c, workdir, "train")
  assert info.value.exit_code == 128 + signum
  assert str(info.value) == ("interrupted at step 7; checkpoint 6 is the latest; run the same command to resume")
  assert _steps(workdir, c) == [2, 4, 6] and open(os.path.join(workdir, ".lock")).read() == ""  # released
  _, state, _, _ = evaluate.load_model(c, workdir)
  assert int(state.step) == 6
  assert signal.getsignal(signal.SIGINT) is before  # the handlers are put back


def test_a_signal_during_a_checkpoint_save_waits_for_the_save(tiny_data, trained, tmp_path, monkeypatch):
  workdir = _copy(trained, tmp_path)
  c = _config(tiny_data, **{"train.num_train_steps": 10})
  real_save = checkpoints.ocp.CheckpointManager.save

  def save_hit_by_sigterm(self, *args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    return real_save(self, *args, **kwargs)
  monkeypatch.setattr(checkpoints.ocp.CheckpointManager, "save", save_hit_by_sigterm)
  with pytest.raises(workdir_lib.Interrupted, match="interrupted at step 6; checkpoint 6 is the latest"), \
      workdir_lib.interruptible():
    evaluate.train_and_evaluate(c, workdir)
  assert _steps(workdir, c) == [2, 4, 6]
  assert os.path.exists(os.path.join(workdir, "checkpoints", "6", integrity.MANIFEST))  # complete, verified
  assert not [n for n in os.listdir(os.path.join(workdir, "checkpoints")) if "tmp" in n]


class _Unraisable:
  def __del__(self):
    raise RuntimeError("Event loop is closed")


def test_disk_full_during_a_save_prints_no_event_loop_tracebacks(tiny_data, trained, tmp_path, monkeypatch):
  """Orbax's TensorStore writes finishing after its event loop closed (a full disk) are unraisable
  "Event loop is closed" errors, one traceback each: dropped, and any other unraisable still reported."""
  seen = []
  monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(str(u.exc_value)))
  monkeypatch.setattr(checkpoints, "_check_free_space", lambda *args: None)  # the disk fills during the save
  c = _config(tiny_data)
  with _tmpfs(str(tmp_path / "small"), "2m") as mount:
    if mount:
      workdir = shutil.copytree(trained, os.path.join(mount, "work"), ignore=shutil.ignore_patterns(".lock"))
      mgr = checkpoints.manager(workdir, c)
      model, info = train_state.model_from_config(c)
      state = checkpoints.restore_latest(mgr, train_state.init_state(model, c, info.image_shape, jax.random.key(0)))
      with open(os.path.join(mount, "filler"), "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
          f.write(b"\0" * 4096)
      os.truncate(os.path.join(mount, "filler"), os.path.getsize(os.path.join(mount, "filler")) - 48 * 1024)
      with pytest.raises(workdir_lib.UserError, match="disk full: saving checkpoint 6"):
        checkpoints.save(mgr, 6, state, checkpoints.metadata(c, info))
      time.sleep(1.0)  # the late writes' callbacks
      assert mgr.all_steps() == [2, 4]
    else:  # no tmpfs (not root): the hook alone, installed by any save
      with checkpoints._quiet_orbax():
        pass
  _Unraisable()
  assert "Event loop is closed" not in " ".join(seen)
  obj = type("Other", (), {"__del__": lambda self: 1 / 0})()
  del obj
  assert any("division by zero" in s for s in seen)


@pytest.mark.parametrize("field,value", [("train.learning_rate", float("inf")), ("train.weight_decay", float("nan")),
                                         ("attack.epsilons", (0.01, float("inf"))), ("train.rl_weight", -1.0)])
def test_non_finite_or_negative_values_are_refused_before_anything_is_written(tiny_data, trained, tmp_path,
                                                                              field, value):
  workdir = _copy(trained, tmp_path)
  before = {n: open(os.path.join(workdir, n), "rb").read() for n in ("config.json", "metrics.jsonl")}
  with pytest.raises(ValueError, match=rf"config.{field}.* must be (a finite number|>= 0)"):
    run.main(_config(tiny_data, **{field: value}), workdir, "train")
  assert {n: open(os.path.join(workdir, n), "rb").read() for n in before} == before


def test_a_diverged_run_leaves_the_last_good_config_and_records_itself_in_the_history(tiny_data, trained, tmp_path,
                                                                                     monkeypatch):
  workdir = _copy(trained, tmp_path)
  before = open(os.path.join(workdir, "config.json")).read()
  c = _config(tiny_data, **{"train.num_train_steps": 8, "train.learning_rate": 0.5})
  monkeypatch.setattr(data, "train_batches", _nan_from(1))
  with pytest.raises(train_loop.Diverged, match="NaN/Inf at step 6"):
    evaluate.train_and_evaluate(c, workdir)
  assert open(os.path.join(workdir, "config.json")).read() == before
  history = _strict_lines(os.path.join(workdir, configlib.CONFIG_HISTORY))
  assert [h["event"] for h in history][-2:] == ["started", "diverged"]
  assert history[-2]["config"]["train"]["learning_rate"] == 0.5 and history[-1]["step"] == 6


def test_config_json_is_rewritten_only_once_training_has_started(tiny_data, trained, tmp_path, monkeypatch):
  workdir = _copy(trained, tmp_path)
  before = open(os.path.join(workdir, "config.json")).read()

  def broken(*args, **kwargs):
    raise workdir_lib.UserError("the data cannot be read")
    yield
  monkeypatch.setattr(data, "train_batches", broken)
  with pytest.raises(ValueError, match="cannot be read"):
    run.main(_config(tiny_data, **{"train.num_train_steps": 6, "seed": 3}), workdir, "train")
  assert open(os.path.join(workdir, "config.json")).read() == before
  monkeypatch.undo()
  run.main(_config(tiny_data, **{"train.num_train_steps": 6, "seed": 3}), workdir, "train")
  assert json.load(open(os.path.join(workdir, "config.json")))["seed"] == 3


# ---------------------------------------------------------------- issue 26: the small ones (items 6 and 7)

def test_another_canvas_size_is_refused_from_the_checkpoint_before_any_data_is_built(tiny_data, trained, tmp_path,
                                                                                     monkeypatch):
  workdir = _copy(trained, tmp_path)

  def no_data(*args, **kwargs):
    raise AssertionError("a data set was built before the refusal")
  monkeypatch.setattr(data, "dataset_info", no_data)
  for mode in ("eval", "train"):
    with pytest.raises(ValueError, match=r"different model/data config \(image_shape"):
      run.main(_config(tiny_data, **{"data.canvas_size": 40}), workdir, mode)


def test_checkpoint_path_to_a_file_and_a_config_argument_without_equals_say_what_to_pass(tiny_data, trained,
                                                                                         tmp_path):
  workdir = _copy(trained, tmp_path)
  c = _config(tiny_data, **{"eval.checkpoint_path": os.path.join(workdir, "config.json")})
  with pytest.raises(ValueError, match=r"checkpoint_path=.*config.json is a file; pass a checkpoints directory"):
    run.main(c, str(tmp_path / "out"), "eval")
  with pytest.raises(ValueError, match=r"KEY=VALUE pairs .*got 'model'"):
    configlib.load_file(os.path.join(ROOT, "configs", "demo.py:model"))
  with pytest.raises(ValueError, match=r"KEY one of model, attack, setting .*got 'modle=dram'"):
    configlib.load_file(os.path.join(ROOT, "configs", "demo.py:modle=dram"))


@pytest.mark.parametrize("damage", ["label", "magic"])
def test_a_corrupt_idx_label_file_says_how_to_repair_it(tmp_path, damage):
  folder = tmp_path / "src"
  for split in ("train", "test"):
    fashion_mnist.write_idx(folder, split, np.zeros((4, 28, 28), np.uint8), np.arange(4) % 10)
  raw = folder / "train-labels-idx1-ubyte.gz"
  body = bytearray(gzip.decompress(raw.read_bytes()))
  body[8 + 2 if damage == "label" else 3] = 200
  raw.write_bytes(gzip.compress(bytes(body)))
  with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte.gz.*reinstall the files .*source_dir"):
    fashion_mnist.load_fashion_mnist(folder, "train")


def _small_attack_config(tiny_data, **overrides):
  c = _attack_config(tiny_data)
  a = c.attack
  a.attack_step, a.eval_steps, a.num_examples, a.batch_size, a.num_iterations = 2, 3, 8, 8, 2
  a.prob_map.grid, a.prob_map.num_images, a.prob_map.chunk = 4, 2, 8
  a.checks.large_eps, a.checks.square_queries, a.checks.square_examples = 0.5, 4, 8
  a.checks.grad_examples, a.checks.convergence_examples = 8, 8
  a.checks.iteration_factor, a.checks.extra_restarts = 1, 0
  return override(c, overrides)


@pytest.mark.slow
def test_an_attack_stopped_while_it_writes_leaves_the_previous_results_and_verify_refuses_mixed_ones(
    tiny_data, trained, tmp_path, monkeypatch):
  """The issue's case: a second attack run (another seed) stopped while it writes its folder."""
  from rsrnn_jax import outputs
  from rsrnn_jax.robustness import results as report
  workdir = _copy(trained, tmp_path)
  run.main(_small_attack_config(tiny_data), workdir, "attack")
  out = os.path.join(workdir, "attack_paper")
  before = {n: open(os.path.join(out, n), "rb").read() for n in os.listdir(out)}
  real_write_all = report.write_all

  def write_then_sigterm(results, out_dir):
    real_write_all(results, out_dir)  # every file of the new run is written, then the signal comes
    os.kill(os.getpid(), signal.SIGTERM)
  monkeypatch.setattr(report, "write_all", write_then_sigterm)
  with pytest.raises(workdir_lib.Interrupted, match=f"attack interrupted; {out}/ is unchanged"), \
      workdir_lib.interruptible():
    run.main(_small_attack_config(tiny_data, **{"attack.seed": 1}), workdir, "attack")
  assert {n: open(os.path.join(out, n), "rb").read() for n in os.listdir(out)} == before
  assert not [n for n in os.listdir(workdir) if n.startswith("attack_paper.")]
  assert run.main(_small_attack_config(tiny_data), workdir, "verify")  # the previous run verifies
  # Mixed by hand (what an in-place rewrite used to leave): one set from a run with another seed.
  other = _copy(trained, tmp_path / "other")
  monkeypatch.undo()
  run.main(_small_attack_config(tiny_data, **{"attack.seed": 1}), other, "attack")
  name = "adversarial_eps0.01.npz"
  os.replace(os.path.join(other, "attack_paper", name), os.path.join(out, name))
  with pytest.raises(ValueError, match="adversarial_eps0.01.npz differs from manifest.json .*different runs"):
    run.main(_small_attack_config(tiny_data), workdir, "verify")
  assert outputs.read_manifest(out)["run_id"] == json.load(open(os.path.join(out, "results.json")))["run_id"]


def _wait_for(proc, err_path, text, timeout=300):
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None:
    if text in open(err_path, errors="replace").read():
      return True
    time.sleep(0.2)
  return False


@pytest.mark.slow
@pytest.mark.parametrize("mode,signum", [("train", signal.SIGINT), ("attack", signal.SIGTERM)])
def test_launch_interrupted_is_one_line_and_exit_130_or_143(tiny_data, tmp_path, mode, signum):
  workdir, err_path = str(tmp_path / "run"), str(tmp_path / "stderr")
  flags = [*TINY_FLAGS, *_data_flags(tiny_data), "--config.train.num_glimpses=3", "--config.eval.num_glimpses=4"]
  run.main(override(demo.get_config(), flag_overrides(flags + ["--config.train.num_train_steps=2"])), workdir,
           "train")  # in-process: faster
  extra = (["--config.train.num_train_steps=100000"] if mode == "train" else
           ["--mode=attack", "--config.attack.num_examples=32", "--config.attack.batch_size=16",
            "--config.attack.epsilons=(0.01,0.02,0.03)", "--config.attack.attack_step=2",
            "--config.attack.eval_steps=3"])
  with open(err_path, "w") as err:
    proc = subprocess.Popen([sys.executable, "launch.py", "--config=configs/demo.py", f"--workdir={workdir}",
                             *flags, *extra], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, text=True,
                            env={**os.environ, "XLA_FLAGS": ""})
    try:
      assert _wait_for(proc, err_path, "loss=" if mode == "train" else "attack[paper]"), open(err_path).read()[-3000:]
      time.sleep(1.0)
      proc.send_signal(signum)
      assert proc.wait(timeout=120) == 128 + signum
    finally:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  stderr = open(err_path).read()
  assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
  last = stderr.replace("\r", "\n").strip().splitlines()[-1]
  if mode == "train":
    assert re.fullmatch(r"interrupted at step \d+; checkpoint \d+ is the latest; run the same command to resume",
                        last), stderr[-3000:]
  else:
    assert last == f"attack interrupted; {workdir}/attack_paper/ is unchanged", stderr[-3000:]
    assert not [n for n in os.listdir(workdir) if n.startswith("attack_paper")]
