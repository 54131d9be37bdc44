"""``--jobs N``: the runs of a reproduction as N processes at once (one per model, seed and setting), for a GPU
(several small processes keep one busy: the attack stages are latency-bound at batch 50) or a machine of many
cores. No JAX here: each job is ``python -m rsrnn_jax.reproduction.run --no_report`` on one run, so every
guarantee of a single run holds (stage records, fingerprints, the run's lock, the journal of an interrupted
adaptive stage), and the parent draws the report once every job is done.

Two phases, each a pool of N workers: first every stage but ``attack_adaptive`` (train, eval, attack_paper: no
run needs another's), then ``attack_adaptive``, whose transfer attack reads the checkpoint of the transfer
source (FF-CNN) of the same seed and setting. A job whose own first phase failed, or whose transfer source's
did, does not start its second phase. Jobs start seed by seed (every model's seed 0 first, the transfer source
first within a seed), as a single process runs them.

Each job's output goes to ``OUT/<setting>/jobs/<model>_seed<s>_<phase>.log``. With more than one job,
``XLA_PYTHON_CLIENT_PREALLOCATE=false`` lets the processes share a GPU's memory (JAX otherwise takes 75% of it
per process); ``--job_gpus 0,1,...`` gives job i the GPU ``CUDA_VISIBLE_DEVICES`` = entry i mod their number.
SIGTERM or Ctrl-C stops the running jobs with SIGTERM (each records the time of its interrupted stage).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent import futures

log = logging.getLogger("rsrnn_jax.reproduction.run")

ADAPTIVE = "attack_adaptive"  # the stage of the second phase


@dataclasses.dataclass(frozen=True)
class Job:
  """One run's stages of one phase (``phase``: 0 = train, eval, attack_paper; 1 = attack_adaptive)."""
  setting: str
  model: str
  seed: int
  stages: tuple
  phase: int

  @property
  def name(self) -> str:
    return f"{self.setting} {self.model}/seed{self.seed} ({','.join(self.stages)})"

  def log_path(self, out: str) -> str:
    return os.path.join(out, self.setting, "jobs", f"{self.model}_seed{self.seed}_{self.phase}.log")

  def argv(self, common) -> list:
    """The job's command line: ``common`` (the options every job shares) and its own run and stages."""
    return [sys.executable, "-m", "rsrnn_jax.reproduction.run", *common, "--no_report", "--setting", self.setting,
            "--models", self.model, "--seeds", str(self.seed), "--stages", ",".join(self.stages)]


def plan_jobs(runs, stages) -> list:
  """The two phases ``[[Job], [Job]]`` of ``runs`` (``(setting, model, seed)``, in the order they start) for the
  stages wanted (``stages``: setting → its budget's stages, in order, or the ``--stages`` subset); an empty
  phase is left out."""
  phases = [[], []]
  for setting, model, seed in runs:
    wanted = stages[setting]
    for phase, mine in enumerate(([s for s in wanted if s != ADAPTIVE], [s for s in wanted if s == ADAPTIVE])):
      if mine:
        phases[phase].append(Job(setting, model, seed, tuple(mine), phase))
  return [p for p in phases if p]


def blocked(job: Job, failed, transfer_source: str) -> bool:
  """A second-phase job waits on its own first phase and on its transfer source's (same setting and seed)."""
  return job.phase > 0 and any(f.setting == job.setting and f.seed == job.seed and f.phase < job.phase
                               and f.model in (job.model, transfer_source) for f in failed)


class Launcher:
  """Starts each job as a subprocess with its log file and environment; ``stop`` ends the running ones."""

  def __init__(self, out: str, common, gpus=(), jobs: int = 1, python: str | None = None):
    self.out, self.common, self.gpus, self.jobs, self.python = out, list(common), list(gpus), jobs, python
    self._running, self._lock, self._count, self._stopped = set(), threading.Lock(), 0, False

  def env(self, index: int) -> dict:
    env = dict(os.environ)
    if self.jobs > 1:
      env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    if self.gpus:
      env["CUDA_VISIBLE_DEVICES"] = str(self.gpus[index % len(self.gpus)])
    return env

  def __call__(self, job: Job) -> int:
    with self._lock:
      index, self._count = self._count, self._count + 1
    argv = job.argv(self.common)
    if self.python:
      argv[0] = self.python
    path = job.log_path(self.out)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as f:
      f.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(argv)}\n")
      f.flush()
      with self._lock:  # no job starts once stop() began
        if self._stopped:
          return -signal.SIGTERM
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=self.env(index))
        self._running.add(proc)
      try:
        return proc.wait()
      finally:
        with self._lock:
          self._running.discard(proc)

  def stop(self) -> None:
    with self._lock:
      self._stopped, running = True, list(self._running)
    for proc in running:
      proc.terminate()
    for proc in running:
      proc.wait()


def run_jobs(phases, launch, jobs: int, transfer_source: str, out: str = "") -> list:
  """Runs the phases one after the other, each on ``jobs`` workers (``launch(job)`` → exit code); returns the
  jobs that failed or did not start, as ``(job, why)``."""
  failed = []
  for phase in phases:
    todo = [j for j in phase if not blocked(j, [f for f, _ in failed], transfer_source)]
    failed += [(j, "not started: its first phase or its transfer source's failed") for j in phase if j not in todo]
    with futures.ThreadPoolExecutor(max_workers=jobs) as pool:
      started = {pool.submit(_timed, launch, j): j for j in todo}
      try:
        for done in futures.as_completed(started):
          job, (code, seconds) = started[done], done.result()
          where = f": see {job.log_path(out)}" if out else ""
          log.info("job %s: %s in %.0f s", job.name, "done" if code == 0 else f"exit code {code}", seconds)
          if code != 0:
            failed.append((job, f"exit code {code}{where}"))
      except BaseException:  # SIGTERM, Ctrl-C: no new job, the running ones stopped before the pool waits on them
        pool.shutdown(wait=False, cancel_futures=True)
        getattr(launch, "stop", lambda: None)()
        raise
  return failed


def _timed(launch, job):
  log.info("job %s: started", job.name)
  tic = time.perf_counter()
  return launch(job), time.perf_counter() - tic


def job_runs(settings, budget, models, seeds=None) -> list:
  """``(setting, model, seed)`` of every run, in the order a single process runs them: seed by seed, each
  setting's, the transfer source first."""
  per = {s.name: s.budget(budget) for s in settings}
  all_seeds = dict.fromkeys(x for s in settings for m in models for x in per[s.name].seeds_for(m, seeds))
  return [(s.name, m, x) for x in all_seeds for s in settings for m in per[s.name].run_order(models)
          if x in per[s.name].seeds_for(m, seeds)]


def run_as_jobs(args, settings, budget, models, seeds, stages, rerun, deadline: str = "") -> int:
  """``--jobs N`` (``args``: the command line's): every run's stages as its own process, N at once; 1 if a job
  failed (each named on stderr, with its log), else 0. ``deadline`` (``--deadline``'s date and time): passed to
  every job, which starts only the stages that should end by then. The caller draws the report."""
  wanted = {}
  for s in settings:
    b = s.budget(budget)
    b.check_stages(stages, rerun)
    wanted[s.name] = [x for x in b.stages if stages is None or x in stages]
  common = ["--out", args.out, "--budget", budget.name, "--config", args.config,
            *(x for kv in args.set for x in ("--set", kv)), *(("--rerun", ",".join(rerun)) if rerun else ()),
            *(("--deadline", deadline) if deadline else ())]
  phases = plan_jobs(job_runs(settings, budget, models, seeds), wanted)
  launcher = Launcher(args.out, common, parse_gpus(args.job_gpus), args.jobs)
  log.info("%d jobs in %d phase(s), %d at once", sum(map(len, phases)), len(phases), args.jobs)
  try:
    failed = run_jobs(phases, launcher, args.jobs, budget.transfer_source, args.out)
  finally:
    launcher.stop()  # a SIGTERM or Ctrl-C of this process ends the running jobs too
  for job, why in failed:
    print(f"error: job {job.name}: {why}", file=sys.stderr)
  return 1 if failed else 0


def parse_gpus(text: str) -> tuple:
  """``--job_gpus 0,1,2`` → ``("0", "1", "2")`` (CUDA ordinals or UUIDs; empty: every job sees every GPU)."""
  gpus = tuple(g.strip() for g in (text or "").split(",") if g.strip())
  if text and not gpus:
    raise ValueError(f"--job_gpus expects comma-separated GPU ordinals, e.g. 0,1; got {text!r}")
  return gpus
