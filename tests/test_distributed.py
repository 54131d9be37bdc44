"""Multi-process training on CPU: two launch.py processes (gloo collectives, a local coordinator) against one.

The same command trains with 2 processes × 1 device; with the same global batch and mesh size it ends with the
same parameters as 1 process × 2 devices, an Orbax checkpoint written by either restores in the other, and
evaluation splits the eval set over the processes.
"""
import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import demo
from rsrnn_jax.train import checkpoints
from rsrnn_jax.train import parallel
from rsrnn_jax.evaluation import clean
from rsrnn_jax.train import state as train_state
from rsrnn_jax.train import writers
from tests.helpers import TINY_FLAGS, flag_overrides, override

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 4


def _flags(tiny_data, eval_at_end=False):
  return [*TINY_FLAGS, f"--config.data.source_dir={tiny_data['source_dir']}",
          f"--config.data.data_dir={tiny_data['data_dir']}", f"--config.train.num_train_steps={STEPS}",
          "--config.train.checkpoint_every=2", f"--config.train.eval_at_end={eval_at_end}"]


def _config(tiny_data):
  """The config launch.py builds from configs/demo.py and :func:`_flags`."""
  return override(demo.get_config(), flag_overrides(_flags(tiny_data)))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch_two_processes(workdir, tiny_data, eval_at_end=False, timeout=300, extra=()):
  """Runs launch.py as 2 processes of 1 CPU device each; returns their logs (asserts both succeeded)."""
  address = f"127.0.0.1:{_free_port()}"
  cmd = [sys.executable, "launch.py", "--config=configs/demo.py", f"--workdir={workdir}", *_flags(tiny_data, eval_at_end),
         f"--coordinator_address={address}", "--num_processes=2", *extra]
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1", "JAX_PLATFORMS": "cpu",
         "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}  # as conftest.py sets for this process
  logs = [open(f"{workdir}.{i}.log", "w+") for i in range(2)]
  # Logs go to files, not pipes: a process blocked on a full, unread pipe would stall the other's collectives.
  procs = [subprocess.Popen(cmd + [f"--process_id={i}"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=log, text=True) for i, log in enumerate(logs)]
  try:
    for p in procs:
      p.wait(timeout=timeout)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  texts = []
  for p, log in zip(procs, logs):
    log.seek(0)
    texts.append(log.read())
    log.close()
    assert p.returncode == 0, texts[-1][-3000:]
  return texts


def _final_state(workdir, config):
  model, info = train_state.model_from_config(config)
  mgr = checkpoints.manager(str(workdir), config, create=False)
  like = train_state.replicated_state(model, config, info.image_shape, jax.random.key(1), parallel.make_mesh(1))
  return checkpoints.restore(mgr, mgr.latest_step(), like)


def _assert_same_params(a, b):
  assert int(a.step) == int(b.step) == STEPS
  for x, y in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_two_processes_train_like_one_and_checkpoints_cross_over(tiny_data, tmp_path):
  one, two, mixed = tmp_path / "one", tmp_path / "two", tmp_path / "mixed"
  c = _config(tiny_data)
  c.num_devices = 2  # this process, 2 of its 4 devices: the same mesh size as 2 processes × 1 device
  clean.train_and_evaluate(c, str(one))
  logs = _launch_two_processes(two, tiny_data)
  assert "process 0 of 2 processes" in logs[0] and "process 1 of 2 processes" in logs[1]

  # Same global batch and mesh size: the same losses at every step and the same final parameters; the
  # checkpoint written by 2 processes restores in this single process.
  ref, got = writers.read_metrics(str(one)), writers.read_metrics(str(two))
  assert len(ref) == len(got) == STEPS
  for a, b in zip(ref, got):
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-4, atol=1e-5)
  _assert_same_params(_final_state(one, c), _final_state(two, c))

  # A checkpoint written by 1 process (step 2) restores in 2 processes, which finish the run identically,
  # then evaluate, each process on its half of every eval batch.
  shutil.copytree(one / "checkpoints" / "2", mixed / "checkpoints" / "2")
  logs = _launch_two_processes(mixed, tiny_data, eval_at_end=True)
  assert "resumed from step 2" in logs[0]
  _assert_same_params(_final_state(one, c), _final_state(mixed, c))
  with open(mixed / "eval" / "results.json") as f:
    res = json.load(f)
  assert res["num_examples"] == c.eval.max_examples and len(res["accuracy_per_step"]) == c.eval.num_glimpses


def test_cluster_detection_needs_a_multi_task_step():
  slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "2", "SLURM_PROCID": "1",
           "SLURM_LOCALID": "0"}
  assert parallel.detect_cluster(slurm) == "slurm"
  assert parallel.detect_cluster({**slurm, "SLURM_NTASKS": "1"}) is None      # srun -n 1
  assert parallel.detect_cluster({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}) is None  # batch script, no srun
  assert parallel.detect_cluster({"OMPI_COMM_WORLD_SIZE": "4"}) == "ompi"
  assert parallel.detect_cluster({}) is None
  with pytest.raises(ValueError, match="coordinator_address"):
    parallel.maybe_initialize_distributed(None, 2, 1)
  with pytest.raises(ValueError, match="num_processes"):
    parallel.maybe_initialize_distributed("127.0.0.1:1234", None, None)


@pytest.mark.slow
def test_two_processes_stop_at_the_same_checkpoint_at_a_time_limit(tiny_data, tmp_path):
  limited = tmp_path / "limited"
  logs = _launch_two_processes(limited, tiny_data, eval_at_end=True, extra=["--stop_at=2020-01-01T00:00"])
  assert all(f"stopped at step 2 of {STEPS}" in log for log in logs)  # both, through the broadcast of process 0
  assert [d for d in os.listdir(limited / "checkpoints") if d.isdigit()] == ["2"] and not (limited / "eval").exists()
