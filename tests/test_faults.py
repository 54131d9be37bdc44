"""Fault injection (issue 14): every fault ends in one line, and no good checkpoint or result is lost.

The cases: NaN at step k (stop, or skip), a truncated / bit-flipped / altered / NaN checkpoint (fallback to the
previous one in train and eval), two processes on one workdir (lock) and a stale lock, a read-only workdir, a
full disk (a small tmpfs when running as root, else a simulated ENOSPC), corrupt data (truncated .gz, truncated
array_record, another source_dir). Most run in-process; the launch.py subprocess tests are marked slow.
"""
import contextlib
import errno
import json
import os
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

from rsrnn_jax import data, run
from rsrnn_jax import workdir as workdir_lib
from rsrnn_jax.data import fashion_mnist
from rsrnn_jax.evaluation import clean as evaluate
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
