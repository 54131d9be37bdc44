"""End to end through launch.py in a subprocess: train, kill -9 mid-run, run the same command, finish, eval."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from rsrnn_jax.train import writers
from tests.helpers import TINY_FLAGS as TINY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_kill_dash_nine_then_same_command_finishes(tiny_data, tmp_path):
  workdir = tmp_path / "run"
  cmd = [sys.executable, "launch.py", "--config=configs/demo.py", f"--workdir={workdir}", *TINY,
         f"--config.data.source_dir={tiny_data['source_dir']}", f"--config.data.data_dir={tiny_data['data_dir']}",
         "--config.train.num_train_steps=300", "--config.train.checkpoint_every=10"]
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  ckpt = workdir / "checkpoints"
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    steps = [int(p) for p in os.listdir(ckpt) if p.isdigit()] if ckpt.exists() else []
    if steps and max(steps) >= 20:
      break
    time.sleep(0.2)
  assert proc.poll() is None, "training finished before it could be killed: " + proc.stderr.read().decode()[-2000:]
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  killed_at = max(r["step"] for r in writers.read_metrics(str(workdir)))
  assert killed_at < 300

  r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "resumed from step" in r.stderr
  steps = [rec["step"] for rec in writers.read_metrics(str(workdir))]
  assert steps == list(range(1, 301)), "each step is logged exactly once after the resume"
  with open(workdir / "eval" / "results.json") as f:
    res = json.load(f)
  assert res["step"] == 300 and len(res["accuracy_per_step"]) == 8
  # The tiny task (class = brightness band) is learnable: at least twice chance (0.1) after 300 steps.
  assert res["accuracy_per_step"][-1] >= 0.2
