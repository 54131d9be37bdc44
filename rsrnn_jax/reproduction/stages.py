"""The stage records of one saved run of :mod:`rsrnn_jax.reproduction.run` (no JAX): what each stage's outputs
depend on (its fingerprint), which stages are up to date, and running the ones that are not.

A run is one (model, seed): ``OUT/runs/<model>/seed<s>/`` (:func:`rsrnn_jax.reproduction.runs.run_dir`), a
normal workdir. Its stages are ``train``, ``eval`` and ``attack_<profile>``; ``reproduce_stages.json`` records per
stage its fingerprint, whether it finished, its seconds, the code version and the device.
:func:`run_model` runs the stages that are not up to date (the stage functions come from
:mod:`rsrnn_jax.reproduction.run`; this module never imports JAX); :mod:`rsrnn_jax.reproduction.runs` reads the
finished runs back for the report.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import time

from rsrnn_jax import workdir
from rsrnn_jax.robustness import journal

log = logging.getLogger("rsrnn_jax.reproduction.run")

STAGES_FILE = "reproduce_stages.json"
PLATEAU_FILE = "plateau.json"  # written by the eval stage (rsrnn_jax/reproduction/run.py)


def stage_profile(stage: str) -> str | None:
  """``attack_paper`` → ``paper``; None for a stage that is not an attack."""
  return stage[len("attack_"):] if stage.startswith("attack_") else None


def _digest(obj) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# Train-config fields that do not change the trained model.
_TRAIN_BOOKKEEPING = ("log_every", "checkpoint_every", "keep_checkpoints", "eval_at_end")
# Data-config fields that do not change the batches of the reproduction's data: how JPEGs are decoded and how
# the JPEG training crops are shrunk (``downscale``; the cluttered images are PNGs, which no decoder option
# touches), the dtype batches are handed over in (uint8 and float32 give the same normalised batches:
# tests/test_decoders.py) and the threads that prepare them (``worker_threads``: throughput only). Left out so
# that runs trained before these fields existed keep their fingerprints (tests/test_reproduce.py).
_DATA_PIPELINE = ("decoder", "image_dtype", "downscale", "worker_threads")


def fingerprints(configs: dict, plateau_examples: int = 0) -> dict:
  """Per stage of ``configs`` ({stage: config}), a digest of what the stage's outputs depend on: train the
  seed, data, model and train fields; eval + ``config.eval``, the plateau subset and checkpoints; attack_<profile> + that
  config's ``attack`` and T_eval (every later stage includes train's digest)."""
  d = configs["train"].to_dict()
  train = {k: v for k, v in d["train"].items() if k not in _TRAIN_BOOKKEEPING}
  data = {k: v for k, v in d["data"].items() if k not in _DATA_PIPELINE}
  fp = {"train": _digest({"seed": d["seed"], "data": data, "model": d["model"], "train": train})}
  for stage, config in configs.items():
    c = config.to_dict()
    if stage == "eval":
      fp[stage] = _digest({"train": fp["train"], "eval": c["eval"], "plateau_examples": int(plateau_examples),
                           "checkpoint_every": c["train"]["checkpoint_every"]})  # the plateau's checkpoints
    elif stage_profile(stage):
      attack = dict(c["attack"])
      if attack.get("transfer_workdir"):  # MODEL/seedS, not where the output folder is
        attack["transfer_workdir"] = "/".join(os.path.normpath(attack["transfer_workdir"]).split(os.sep)[-2:])
      fp[stage] = _digest({"train": fp["train"], "attack": attack, "eval_steps": c["eval"]["num_glimpses"]})
  return fp


def latest_checkpoint_step(path: str) -> int:
  ckpt = os.path.join(path, "checkpoints")
  steps = [int(p) for p in os.listdir(ckpt) if p.isdigit()] if os.path.isdir(ckpt) else []
  return max(steps, default=0)


def stage_outputs(stage: str, config, path: str) -> bool:
  """Do the outputs of ``stage`` exist in run directory ``path``?"""
  if stage == "train":
    return latest_checkpoint_step(path) >= int(config.train.num_train_steps)
  if stage == "eval":
    files = ("eval/results.json", "compute.json", "figures.npz", PLATEAU_FILE)
  else:
    files = (f"{stage}/results.json", f"{stage}/per_example.npz")
  return all(os.path.exists(os.path.join(path, f)) for f in files)


def read_json(path):
  """The JSON file at ``path``, None if there is none."""
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def read_stages(path: str) -> dict:
  return read_json(os.path.join(path, STAGES_FILE)) or {}


def write_stages(path: str, stages: dict) -> None:
  os.makedirs(path, exist_ok=True)
  workdir.write_json(os.path.join(path, STAGES_FILE), stages)


def depends_on(stage: str) -> tuple:
  """The stages whose re-run makes ``stage`` run again: eval and every attack depend on train only."""
  return () if stage == "train" else ("train",)


def retrain_reason(path: str, stages: dict, fp_train: str) -> str:
  """Why the run at ``path`` is discarded and trained again ("" if it is not): its training config changed, or
  it has checkpoints with no stage record."""
  recorded = stages.get("train", {}).get("fingerprint")
  if recorded and recorded != fp_train:
    return "its training config changed"
  return "it has checkpoints with no stage record" if not recorded and latest_checkpoint_step(path) else ""


def _discard_if_retrained(name: str, path: str, stages: dict, fp_train: str) -> dict:
  why = retrain_reason(path, stages, fp_train)
  if why:
    log.warning("%s: discarding %s: %s; training again", name, path, why)
    shutil.rmtree(path)
    return {}
  return stages


CODE_VERSION_ENV = "RSRNN_JAX_CODE_VERSION"


NOT_CODE = ("reproduction", "docs")  # tracked folders of results and prose: a change there leaves the code clean


def code_version(here: str | None = None) -> str:
  """The code running now: ``$RSRNN_JAX_CODE_VERSION`` when set (a copy of the tree sent to another machine,
  whose ``.git``, if any, need not match it), else the git commit (``-dirty`` with uncommitted changes to
  tracked files outside :data:`NOT_CODE`: a running reproduction appends to the committed ``reproduce.log``),
  else ``unknown``. Recorded with every finished stage."""
  if os.environ.get(CODE_VERSION_ENV):
    return os.environ[CODE_VERSION_ENV]
  here = here or os.path.dirname(os.path.abspath(__file__))
  try:
    git = lambda *a: subprocess.run(["git", "-C", here, *a], capture_output=True, text=True, timeout=20)
    head = git("rev-parse", "--short=12", "HEAD")
    if head.returncode:
      return "unknown"
    top = git("rev-parse", "--show-toplevel").stdout.strip()
    changed = git("diff", "--quiet", "HEAD", "--", top, *(f":(exclude){top}/{d}" for d in NOT_CODE)).returncode
    return head.stdout.strip() + ("-dirty" if changed else "")
  except (OSError, subprocess.SubprocessError):
    return "unknown"


def resumes_from(stage: str, path: str) -> str:
  """What an interrupted ``stage`` of the run at ``path`` goes on from ("" if it starts over): training from its
  last checkpoint, an attack from its journal (robustness/journal.py); its recorded time is then kept."""
  if stage == "train":
    step = latest_checkpoint_step(path)
    return f"step {step}" if step > 0 else ""
  profile = stage_profile(stage)
  return "its journal" if profile and os.path.isdir(journal.folder(path, profile)) else ""


def _why_run(stage: str, rec: dict, fp: str, ran: set, rerun) -> str:
  if stage in rerun:
    return "--rerun"
  if ran & set(depends_on(stage)):
    return f"after {', '.join(sorted(ran & set(depends_on(stage))))}"
  if not rec:
    return "never ran"
  if rec.get("fingerprint") != fp:
    return "its config changed"
  return "interrupted" if not rec.get("done") else "its outputs are missing"


def decide_stages(configs: dict, path: str, stages: dict, fps: dict, only=None, rerun=()) -> list[tuple]:
  """What :func:`run_model` does with each stage of a run whose records are ``stages``, as ``(stage, action,
  why)``: action ``skip`` (up to date: finished, same fingerprint, outputs there), ``run`` (why: never ran, was
  interrupted, its config changed, its outputs are missing, a stage it depends on runs, ``--rerun``) or
  ``wait`` (not in ``only``, or a stage it depends on neither up to date nor run). Assumes every stage that
  runs succeeds (a failure ends the run's process)."""
  ran, current, out = set(), set(), []
  for stage, config in configs.items():
    rec = stages.get(stage, {})
    if (stage not in rerun and not ran & set(depends_on(stage)) and rec.get("done")
        and rec.get("fingerprint") == fps[stage] and stage_outputs(stage, config, path)):
      out.append((stage, "skip", "up to date"))
      current.add(stage)
      continue
    missing = [d for d in depends_on(stage) if d not in current]
    if (only is not None and stage not in only) or missing:
      out.append((stage, "wait", f"waits for {', '.join(missing)}" if missing else "not in --stages"))
      continue
    out.append((stage, "run", _why_run(stage, rec, fps[stage], ran, rerun)))
    ran.add(stage)
    current.add(stage)
  return out


def run_model(name: str, configs: dict, path: str, stage_fns: dict, plateau_examples: int = 0,
              only=None, device: str = "", rerun=(), may_start=None) -> dict:
  """Runs the stages of one run (``configs``: {stage: config}, in order) that are not up to date
  (:func:`decide_stages`), each with ``stage_fns[stage]`` (attack_<profile>: ``stage_fns["attack"]``; eval also gets
  ``plateau_examples``); returns its stage records. ``name`` labels the log lines (e.g. ``rsrnn/seed1``). ``only``:
  the stages that may run (None = all); ``rerun``: stages that run although up to date (a fix the fingerprints do not
  see, e.g. to a sanity check). ``device`` (e.g. ``2× cpu``) is recorded with each finished stage, as is the code
  version. ``may_start(stage, ran)`` (``--deadline``): why a stage may not start ("" if it may; ``ran``: seconds it
  already ran, if it resumes); a refused stage ends the run's work, nothing written for it. A stage function that
  returns without the stage's outputs (a training stopped at its time limit) leaves its record unfinished, with its
  time, and ends the run's work. The run directory is locked meanwhile (:func:`rsrnn_jax.workdir.locked`): a second
  process on the same run raises ``UserError``."""
  fps = fingerprints(configs, plateau_examples)
  with workdir.locked(path):  # one process per run: a second one is refused with the holder's name
    stages = _discard_if_retrained(name, path, read_stages(path), fps["train"])
    for stage, action, why in decide_stages(configs, path, stages, fps, only, rerun):
      if action != "run":
        log.info("%s: %s %s", name, stage, "up to date, skipped" if action == "skip" else f"not run ({why})")
        continue
      config, rec = configs[stage], stages.get(stage, {})
      resumed = resumes_from(stage, path) if why in ("interrupted", "its outputs are missing") else ""
      refused = may_start(stage, rec.get("seconds", 0.0) if resumed else 0.0) if may_start else ""
      if refused:
        log.info("%s: %s not started: %s", name, stage, refused)
        break
      log.info("%s: %s%s", name, stage, f" (resuming from {resumed})" if resumed else "")
      stages[stage] = {"fingerprint": fps[stage], "done": False, "seconds": rec.get("seconds", 0.0) if resumed else 0.0}
      write_stages(path, stages)
      tic = time.perf_counter()
      try:
        if stage == "eval":
          stage_fns["eval"](config, path, plateau_examples=plateau_examples)
        else:
          stage_fns["attack" if stage_profile(stage) else stage](config, path)
        if stage_outputs(stage, config, path):
          stages[stage].update(done=True, finished=time.strftime("%Y-%m-%d %H:%M:%S"), code=code_version(),
                               **({"device": device} if device else {}))
      finally:  # an interrupted stage keeps its time: a resumed training adds to it
        stages[stage]["seconds"] += time.perf_counter() - tic
        write_stages(path, stages)
      if not stages[stage]["done"]:  # a training stopped at its time limit (--deadline)
        log.info("%s: %s stopped after %.0f s, short of its end; the same command resumes from %s", name, stage,
                 stages[stage]["seconds"], resumes_from(stage, path) or "the start")
        break
      log.info("%s: %s done in %.0f s", name, stage, stages[stage]["seconds"])
    return stages
