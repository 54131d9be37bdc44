"""``--jobs N`` (rsrnn_jax/reproduction/jobs.py): the runs as separate processes, N at once, in two phases. The
real child processes of a whole reproduction run in the slow tier (tests/test_reproduce.py's end-to-end test)."""
import os
import stat
import threading
import time

import pytest

from rsrnn_jax.reproduction import jobs as J
from rsrnn_jax.reproduction import run as R
from rsrnn_jax.reproduction import settings as S

SETTINGS = [S.get(name) for name in S.SETTINGS]


def _stages(budget, only=None):
  return {s.name: [x for x in s.budget(budget).stages if only is None or x in only] for s in SETTINGS}


def test_runs_go_seed_by_seed_with_the_transfer_source_first_and_adaptive_stages_last():
  b = R.QUICK_BUDGET
  runs = J.job_runs(SETTINGS, b, ("rsrnn", "ff_cnn_at", "ff_cnn"))
  demo, pg = (s.name for s in SETTINGS)
  assert runs == [(demo, "ff_cnn", 0), (demo, "rsrnn", 0), (demo, "ff_cnn_at", 0),
                  (pg, "ff_cnn", 0), (pg, "rsrnn", 0), (pg, "ff_cnn_at", 0),
                  (demo, "ff_cnn", 1), (demo, "rsrnn", 1), (pg, "ff_cnn", 1), (pg, "rsrnn", 1)]  # AT: one seed
  first, second = J.plan_jobs(runs, _stages(b))
  assert [(j.setting, j.model, j.seed) for j in first] == runs == [(j.setting, j.model, j.seed) for j in second]
  assert {j.stages for j in first} == {("train", "eval", "attack_paper")} and {j.stages for j in second} == {
      ("attack_adaptive",)}
  assert [len(p) for p in J.plan_jobs(runs, _stages(b, ("attack_adaptive",)))] == [len(runs)]
  assert J.plan_jobs(runs, _stages(b, ("eval",)))[0][0].stages == ("eval",)
  job = first[1]
  argv = job.argv(["--out", "OUT", "--budget", "quick"])
  assert argv[1:] == ["-m", "rsrnn_jax.reproduction.run", "--out", "OUT", "--budget", "quick", "--no_report",
                      "--setting", demo, "--models", "rsrnn", "--seeds", "0", "--stages", "train,eval,attack_paper"]
  assert job.log_path("OUT") == os.path.join("OUT", demo, "jobs", "rsrnn_seed0_0.log")


def test_at_most_n_jobs_at_once_a_phase_waits_for_the_one_before_and_a_failure_blocks_what_needs_it():
  b = R.QUICK_BUDGET
  runs = J.job_runs(SETTINGS, b, ("rsrnn", "ff_cnn"))
  phases = J.plan_jobs(runs, _stages(b))
  demo, pg = (s.name for s in SETTINGS)
  fails = {(demo, "ff_cnn", 0, 0), (pg, "rsrnn", 1, 0)}
  lock, running, peak, events = threading.Lock(), [0], [0], []

  def launch(job):
    with lock:
      running[0] += 1
      peak[0] = max(peak[0], running[0])
      events.append(("start", job))
    time.sleep(0.1)
    with lock:
      running[0] -= 1
      events.append(("end", job))
    return 1 if (job.setting, job.model, job.seed, job.phase) in fails else 0

  failed = J.run_jobs(phases, launch, 3, b.transfer_source)
  assert peak[0] == 3
  first_second = min(i for i, (e, j) in enumerate(events) if e == "start" and j.phase == 1)
  assert all(e == "end" or j.phase == 1 for e, j in events[first_second:])  # every first-phase job had ended
  why = {(j.setting, j.model, j.seed, j.phase): w for j, w in failed}
  assert why[(demo, "ff_cnn", 0, 0)] == why[(pg, "rsrnn", 1, 0)] == "exit code 1"
  blocked = {k for k, w in why.items() if w.startswith("not started")}
  # demo seed 0 lost its transfer source: both of its adaptive jobs wait; pg seed 1 only RS-RNN's own
  assert blocked == {(demo, "ff_cnn", 0, 1), (demo, "rsrnn", 0, 1), (pg, "rsrnn", 1, 1)}
  started = {(j.setting, j.model, j.seed, j.phase) for e, j in events if e == "start"}
  assert not blocked & started and len(started) == sum(map(len, phases)) - len(blocked)


def _fake_python(tmp_path, body):
  path = tmp_path / "python"
  path.write_text("#!/bin/sh\n" + body)
  path.chmod(path.stat().st_mode | stat.S_IEXEC)
  return str(path)


def test_a_job_runs_its_command_with_its_log_and_its_gpu(tmp_path):
  python = _fake_python(tmp_path, 'echo "args: $*"\necho "prealloc=$XLA_PYTHON_CLIENT_PREALLOCATE '
                                  'gpu=$CUDA_VISIBLE_DEVICES"\nexit 3\n')
  out = str(tmp_path / "out")
  launch = J.Launcher(out, ["--out", out], gpus=("0", "1"), jobs=2, python=python)
  jobs = [J.Job("demo", "rsrnn", seed, ("train",), 0) for seed in (0, 1)]
  assert [launch(j) for j in jobs] == [3, 3]
  first, second = (open(j.log_path(out)).read() for j in jobs)
  assert first.startswith("# ") and f"args: -m rsrnn_jax.reproduction.run --out {out} --no_report" in first
  assert "prealloc=false gpu=0" in first and "prealloc=false gpu=1" in second and "--seeds 1" in second
  alone = J.Launcher(out, [], jobs=1)  # one job at a time: the environment as it is
  assert alone.env(0) == dict(os.environ)


def test_stop_ends_the_running_jobs(tmp_path):
  launch = J.Launcher(str(tmp_path), [], jobs=2, python=_fake_python(tmp_path, "exec sleep 60\n"))
  codes = []
  worker = threading.Thread(target=lambda: codes.append(launch(J.Job("demo", "rsrnn", 0, ("train",), 0))))
  worker.start()
  deadline = time.time() + 30
  while not launch._running and time.time() < deadline:
    time.sleep(0.01)
  launch.stop()
  worker.join(30)
  assert codes == [-15]  # SIGTERM: the child records its interrupted stage's time


def test_an_interrupted_parent_stops_its_jobs_and_starts_no_more():
  class Launch:  # like Launcher: a job that started before stop() runs until stop() ends it
    def __init__(self):
      self.calls, self.stopped = [], threading.Event()

    def __call__(self, job):
      self.calls.append(job.seed)
      if job.seed == 0:
        raise KeyboardInterrupt  # as SIGTERM (SystemExit) or Ctrl-C reaches the waiting parent
      assert self.stopped.wait(10)
      return -15

    def stop(self):
      self.stopped.set()

  launch = Launch()
  phases = [[J.Job("demo", "rsrnn", seed, ("train",), 0) for seed in range(4)]]
  with pytest.raises(KeyboardInterrupt):
    J.run_jobs(phases, launch, 1, "ff_cnn")
  # the one worker may have taken job 1 before the parent reacted; jobs 2 and 3 never start
  assert launch.stopped.is_set() and launch.calls in ([0], [0, 1])


@pytest.mark.parametrize("argv, message", [
    (["--jobs", "0"], "--jobs expects a number of processes >= 1"),
    (["--jobs", "2", "--report_only"], "--jobs expects a number of processes >= 1 (and no --report_only)"),
    (["--jobs", "2", "--job_gpus", ","], "--job_gpus expects comma-separated GPU ordinals"),
    (["--jobs", "2", "--stages", "tran"], "--stages expects a comma-separated subset of"),
    (["--jobs", "2", "--rerun", "train"], "--rerun expects a comma-separated subset of"),
])
def test_bad_job_options_exit_2_before_any_job_starts(tmp_path, capsys, argv, message):
  assert R.main(["--out", str(tmp_path / "out"), "--quick", *argv]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
  assert not os.path.exists(tmp_path / "out" / "demo" / "jobs")
