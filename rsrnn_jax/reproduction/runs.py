"""The saved runs of :mod:`rsrnn_jax.reproduction.run` (no JAX): where a run lives, its stage records and their
fingerprints, and its outputs read back for the report.

:func:`run_model` runs the stages of one run that are not up to date (the stage functions come from
:mod:`rsrnn_jax.reproduction.run`; this module never imports JAX).

A run is one (model, seed): ``OUT/runs/<model>/seed<s>/``, a normal workdir with ``checkpoints/``,
``metrics.jsonl``, ``eval/results.json``, ``compute.json``, ``figures.npz``, ``plateau.json``,
``attack_<profile>/{results.json, per_example.npz}`` and ``reproduce_stages.json`` (the stage records).
"""
from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import shutil
import subprocess
import time

import numpy as np

from rsrnn_jax import workdir
from rsrnn_jax.models import registry
from rsrnn_jax.reproduction import stats
from rsrnn_jax.robustness import journal

log = logging.getLogger("rsrnn_jax.reproduction.run")

STAGES_FILE = "reproduce_stages.json"
PLATEAU_FILE = "plateau.json"
PLATEAU_POINTS = 1.0  # plateau reached iff clean acc(100%) − acc(80%) ≤ this many points (at T_train)
# Our attacks: (the attack profile's stage, its entry in the suite's results; rsrnn_jax/robustness/suite.py).
ATTACKS = {"paper": ("paper", "pgd_step"), "strongest": ("paper", "worst"), "adaptive": ("adaptive", "worst")}
ATTACK_TITLES = {"paper": "paper attack (PGD-5 on step k)",
                 "strongest": "strongest of profile paper (worst case, incl. full-horizon PGD)",
                 "adaptive": "adaptive (worst case: APGD, BPDA, scanpath, Square)"}


def display(name: str) -> str:
  """The report's name of run ``name`` (a registered model or variant)."""
  return registry.variant(name).display


def paper_key(name: str) -> str | None:
  """Run ``name``'s key in ``paper_numbers.PAPER`` (None: not in the paper)."""
  return registry.variant(name).paper_key


def plateau_reached(rise_points) -> bool | None:
  """The plateau rule on a rise acc(100%) − acc(80%) in points: reached iff ≤ :data:`PLATEAU_POINTS`, after
  rounding away float error (a rise of exactly 1 point, 20 of 2,000 images, is within it); None if unknown."""
  return None if rise_points is None else bool(round(float(rise_points), 9) <= PLATEAU_POINTS)


def run_dir(out_dir: str, model: str, seed: int) -> str:
  return os.path.join(out_dir, "runs", model, f"seed{seed}")


def stage_profile(stage: str) -> str | None:
  """``attack_paper`` → ``paper``; None for a stage that is not an attack."""
  return stage[len("attack_"):] if stage.startswith("attack_") else None


# ----------------------------------------------------------------------------------------------------------
# Stage records and fingerprints
# ----------------------------------------------------------------------------------------------------------

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


def read_stages(path: str) -> dict:
  return _json(os.path.join(path, STAGES_FILE)) or {}


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


def _finished_stages(runs: dict):
  """The record of every finished stage of ``runs`` ({model: {seed: run}})."""
  return (st for seeds in runs.values() for r in seeds.values() for st in r["stages"].values() if st.get("done"))


def code_versions(runs: dict) -> list[str]:
  """Every code version recorded by a finished stage of ``runs`` ({model: {seed: run}}), sorted."""
  return sorted({st["code"] for st in _finished_stages(runs) if st.get("code")})


def short_of_plateau(runs: dict) -> list[tuple]:
  """[(model, seed, rise in points)] of every run of ``runs`` whose plateau check failed (still learning)."""
  return [(m, s, r["plateau"]["rise_points"]) for m, seeds in runs.items() for s, r in seeds.items()
          if r.get("plateau") and plateau_reached(r["plateau"]["rise_points"]) is False]


def stage_devices(runs: dict) -> dict[str, int]:
  """{device: number of finished stages of ``runs`` recorded on it} (``not recorded`` for records older than
  the field), most stages first."""
  counts = collections.Counter(st.get("device", "not recorded") for st in _finished_stages(runs))
  return dict(counts.most_common())


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
              only=None, device: str = "", rerun=()) -> dict:
  """Runs the stages of one run (``configs``: {stage: config}, in order) that are not up to date
  (:func:`decide_stages`), each with ``stage_fns[stage]`` (attack_<profile>: ``stage_fns["attack"]``; eval also
  gets ``plateau_examples``); returns its stage records. ``name`` labels the log lines (e.g. ``rsrnn/seed1``).
  ``only``: the stages that may run (None = all); ``rerun``: stages that run although up to date (a fix the
  fingerprints do not see, e.g. to a sanity check). ``device`` (e.g. ``2× cpu``) is recorded with each finished
  stage, as is the code version. The run directory is locked meanwhile (:func:`rsrnn_jax.workdir.locked`): a
  second process on the same run raises ``UserError``."""
  fps = fingerprints(configs, plateau_examples)
  with workdir.locked(path):  # one process per run: a second one is refused with the holder's name
    stages = _discard_if_retrained(name, path, read_stages(path), fps["train"])
    for stage, action, why in decide_stages(configs, path, stages, fps, only, rerun):
      if action != "run":
        log.info("%s: %s %s", name, stage, "up to date, skipped" if action == "skip" else f"not run ({why})")
        continue
      config, rec = configs[stage], stages.get(stage, {})
      resumed = resumes_from(stage, path) if why in ("interrupted", "its outputs are missing") else ""
      log.info("%s: %s%s", name, stage, f" (resuming from {resumed})" if resumed else "")
      stages[stage] = {"fingerprint": fps[stage], "done": False, "seconds": rec.get("seconds", 0.0) if resumed else 0.0}
      write_stages(path, stages)
      tic = time.perf_counter()
      try:
        if stage == "eval":
          stage_fns["eval"](config, path, plateau_examples=plateau_examples)
        else:
          stage_fns["attack" if stage_profile(stage) else stage](config, path)
        stages[stage].update(done=True, finished=time.strftime("%Y-%m-%d %H:%M:%S"), code=code_version(),
                             **({"device": device} if device else {}))
      finally:  # an interrupted stage keeps its time: a resumed training adds to it
        stages[stage]["seconds"] += time.perf_counter() - tic
        write_stages(path, stages)
      log.info("%s: %s done in %.0f s", name, stage, stages[stage]["seconds"])
    return stages


# ----------------------------------------------------------------------------------------------------------
# Reading the runs back
# ----------------------------------------------------------------------------------------------------------

def _json(path):
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def load_runs(out_dir: str, seeds: dict, profiles) -> dict:
  """{model: {seed: run}} for ``seeds`` ({model: [seeds]}); a run: {"eval", "compute", "plateau", "attack":
  {profile: results}, "per_example": {profile: path}, "figures": path, "stages"} (None for what is missing)."""
  runs = {}
  for m, model_seeds in seeds.items():
    runs[m] = {}
    for s in model_seeds:
      d = run_dir(out_dir, m, s)
      exists = lambda f, d=d: os.path.join(d, f) if os.path.exists(os.path.join(d, f)) else None
      runs[m][s] = {"eval": _json(os.path.join(d, "eval", "results.json")),
                    "compute": _json(os.path.join(d, "compute.json")),
                    "plateau": _json(os.path.join(d, PLATEAU_FILE)),
                    "attack": {p: _json(os.path.join(d, f"attack_{p}", "results.json")) for p in profiles},
                    "per_example": {p: exists(f"attack_{p}/per_example.npz") for p in profiles},
                    "figures": exists("figures.npz"), "stages": read_stages(d)}
  return runs


def first_figures(runs: dict, model: str) -> dict | None:
  """The figure arrays of ``model``'s first seed that has them."""
  for r in runs.get(model, {}).values():
    if r["figures"]:
      with np.load(r["figures"]) as z:
        return dict(z)
  return None


def _entries(result, entry):
  return ((result or {}).get("untargeted", {}).get("attacks", {}).get(entry)) or None


def attack_accuracies(runs: dict, attack: str) -> dict:
  """{model: {"eps", "seeds", "k", "k_sd", "T", "T_sd" (per ε, mean and sd over seeds), "per_step",
  "per_step_sd" ({ε: [T_eval]}), "asr_k", "clean" (mean per step)}} under ``attack`` (an ATTACKS key), over the
  seeds whose results have it (on the ε grid of the first)."""
  profile, entry = ATTACKS[attack]
  out = {}
  for m, seeds in runs.items():
    done = [(r["attack"][profile], _entries(r["attack"].get(profile), entry)) for r in seeds.values()]
    done = [(res, e) for res, e in done if e]
    if not done:
      continue
    eps = [e["eps"] for e in done[0][1]]
    done = [(res, e) for res, e in done if [x["eps"] for x in e] == eps]
    per_step = np.asarray([[x["adv_acc"] for x in e] for _, e in done], np.float64)  # [S, E, T]
    k, t = done[0][0]["attack_step"], done[0][0]["eval_steps"]
    sd = per_step.std(0, ddof=1) if len(done) > 1 else np.zeros_like(per_step[0])
    out[m] = {"eps": eps, "seeds": len(done), "k": list(per_step.mean(0)[:, k - 1]), "k_sd": list(sd[:, k - 1]),
              "T": list(per_step.mean(0)[:, t - 1]), "T_sd": list(sd[:, t - 1]),
              "per_step": dict(zip(eps, per_step.mean(0).tolist())), "per_step_sd": dict(zip(eps, sd.tolist())),
              "asr_k": [stats.mean_sd([e[i]["asr"][k - 1] for _, e in done])["mean"] for i in range(len(eps))],
              "clean": list(np.mean([res["clean"]["accuracy_per_step"] for res, _ in done], 0))}
  return out


def per_example_data(runs: dict, attack: str) -> tuple[dict, dict]:
  """The per-example correctness under ``attack`` for the bootstrap: ({model: [S, E, n, 2]} bool, read-outs
  step k and T_eval, the first n examples common to every run), {"num_examples", "epsilons", "seeds": {model:
  [seeds]}, "clean": {model: [S, n, 2]} (clean correctness at the same read-outs)}. Runs without per-example
  results, or on another ε grid than the first, are left out."""
  profile, entry = ATTACKS[attack]
  arrays, clean, seeds_used, eps = {}, {}, {}, None
  for m, seeds in runs.items():
    for s, r in seeds.items():
      path, res = r["per_example"].get(profile), r["attack"].get(profile)
      if not path or not res:
        continue
      with np.load(path) as z:
        if entry not in z:
          continue
        e = [float(v) for v in z["epsilons"]]
        read = [res["attack_step"] - 1, res["eval_steps"] - 1]
        x, c = z[entry][:, :, read], z["clean_correct"][:, read]  # [E, N, 2], [N, 2]
      if eps is None:
        eps = e
      if len(e) != len(eps) or not np.allclose(e, eps):
        continue
      arrays.setdefault(m, []).append(x)
      clean.setdefault(m, []).append(c)
      seeds_used.setdefault(m, []).append(s)
  n = min((x.shape[1] for xs in arrays.values() for x in xs), default=0)
  data = {m: np.stack([x[:, :n] for x in xs]) for m, xs in arrays.items()}
  clean = {m: np.stack([c[:n] for c in cs]) for m, cs in clean.items()}
  return data, {"num_examples": int(n), "epsilons": eps or [], "seeds": seeds_used, "clean": clean}


def clean_summary(runs: dict) -> dict:
  """{model: {"seeds", "steps" (training steps per seed), "per_step" / "per_step_sd" (mean, sd over seeds),
  "at_train" / "at_eval" (mean ± sd dicts), "train_glimpses", "num_examples"}} from the clean evaluations."""
  out = {}
  for m, seeds in runs.items():
    evs = [r["eval"] for r in seeds.values() if r["eval"]]
    if not evs:
      continue
    t = int(evs[0]["train_glimpses"])
    acc = np.asarray([e["accuracy_per_step"] for e in evs], np.float64)
    out[m] = {"seeds": [s for s, r in seeds.items() if r["eval"]], "steps": [int(e["step"]) for e in evs],
              "per_step": list(acc.mean(0)), "per_step_sd": list(acc.std(0, ddof=1) if len(evs) > 1 else 0 * acc[0]),
              "at_train": stats.mean_sd(acc[:, min(t, acc.shape[1]) - 1]), "at_eval": stats.mean_sd(acc[:, -1]),
              "train_glimpses": t, "num_examples": int(evs[0]["num_examples"])}
  return out


def compute_seconds(runs: dict, stages) -> dict:
  """{model: {stage: seconds summed over its seeds}} as recorded in the stage records."""
  return {m: {st: sum(r["stages"].get(st, {}).get("seconds", 0.0) for r in seeds.values()) for st in stages}
          for m, seeds in runs.items()}


def still_missing(runs: dict, expected: dict) -> list[tuple]:
  """[(model, seed, stage)] of every stage not finished with the fingerprint ``expected`` ({model: {seed:
  {stage: fingerprint}}}) of the current config."""
  return [(m, s, st) for m, seeds in runs.items() for s, r in seeds.items()
          for st, fp in expected.get(m, {}).get(s, {}).items()
          if not (r["stages"].get(st, {}).get("done") and r["stages"][st].get("fingerprint") == fp)]
