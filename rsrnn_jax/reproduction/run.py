"""``make reproduce``: the paper's comparison on the demo data set, end to end, in one resumable command.

  python -m rsrnn_jax.reproduction.run [--budget full|default|quick] [--seeds 0,1,2] [--models rsrnn,ff_cnn]
                                       [--out reproduction] [--set data.x=v ...]
  python -m rsrnn_jax.reproduction.run --report_only [--out reproduction]     # re-draw the report from saved runs
  python -m rsrnn_jax.reproduction.run --report_only --report_to DIR   # ... into DIR, OUT's reports untouched
  python -m rsrnn_jax.reproduction.run --jobs 12 [--job_gpus 0,1]   # one process per run, 12 at once (jobs.py)
  python -m rsrnn_jax.reproduction.run --dry_run     # what would run, why, and about how long (todo.py)
  python -m rsrnn_jax.reproduction.run --deadline 17:30   # start only the stages that should end by then (deadline.py)

Trains the six models of the zoo plus FF-CNN-AT (``configs/demo.py:model=NAME``, docs/zoo.md) on cluttered
Fashion-MNIST with one shared budget (:data:`BUDGETS`; ``full`` by default), once per seed, evaluates each run on
the test split (accuracy at every step, GMACs per step, fixations / attention on the same test images, and the
plateau check on the checkpoints at 80% and 90% of training), runs the attack suite of
:mod:`rsrnn_jax.robustness.suite` on each run (profile ``paper`` on the ε grid, profile ``adaptive`` at the
budget's adaptive ε) and writes ``OUT/report.md``, its figures and ``OUT/verdicts.json``
(:mod:`rsrnn_jax.reproduction.report`): the paper's tables and figures with ours beside them, and a verdict
(holds / fails / undecided, with its bootstrap interval) for each of the paper's claims.

A run is one (model, seed) in ``OUT/runs/<model>/seed<s>/`` (a normal workdir, config ``seed`` = s;
:mod:`rsrnn_jax.reproduction.stages`). Its stages — train, eval, attack_paper, attack_adaptive — are recorded in
its ``reproduce_stages.json`` with a fingerprint of the config fields each depends on. A stage is skipped when
its record says done, its fingerprint matches the current config and its outputs exist; a stage runs again
when it is not, or when a stage it depends on ran (eval and each attack depend on train only). An interrupted
training resumes from its last checkpoint; a changed training config discards that run and trains it again
(logged). So ``make reproduce`` after an interruption redoes only what is missing, run by run, seed 0 of every
model first.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time

from rsrnn_jax import workdir
from rsrnn_jax.models import registry
from rsrnn_jax.reproduction import deadline as deadline_lib
from rsrnn_jax.reproduction import jobs as jobs_lib
from rsrnn_jax.reproduction import runs as saved
from rsrnn_jax.reproduction import settings as data_settings
from rsrnn_jax.reproduction import side_by_side, todo
from rsrnn_jax.reproduction.run_configs import DEMO_CONFIG, MODELS, parse_overrides, stage_configs
from rsrnn_jax.reproduction.budgets import BUDGETS, DEFAULT_BUDGET, FULL_BUDGET, QUICK_BUDGET, Budget  # noqa: F401
from rsrnn_jax.reproduction.settings import DEMO, Setting
from rsrnn_jax.reproduction.stages import PLATEAU_FILE, read_stages, run_model

log = logging.getLogger("rsrnn_jax.reproduction.run")

PLATEAU_FRACTIONS = (0.8, 0.9, 1.0)  # the checkpoints of the plateau check, as fractions of training


def plateau_steps(train_steps: int, every: int) -> list[int]:
  """The checkpoints the plateau check evaluates, one per :data:`PLATEAU_FRACTIONS`: the last checkpoint (every
  ``every`` steps, and the final step) at or before that fraction of ``train_steps`` (at least the first)."""
  out = []
  for f in PLATEAU_FRACTIONS:
    step = train_steps if f >= 1 else int(f * train_steps) // every * every
    out.append(step if step > 0 else min(every, train_steps))
  return out


# ----------------------------------------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------------------------------------

def run_train(config, run_dir: str, stop_at: float | None = None) -> None:
  """Trains (resuming); ``stop_at`` (epoch seconds, ``--deadline``): stop at the last checkpoint before then."""
  from rsrnn_jax import run
  run.main(config, run_dir, "train", stop_at=stop_at)

def run_eval(config, run_dir: str, plateau_examples: int = 0) -> None:
  """Clean accuracy per step (eval/), GMACs (compute.json), the figure arrays (figures.npz) and the plateau
  check (plateau.json)."""
  from rsrnn_jax.evaluation import clean as evaluate
  from rsrnn_jax.evaluation import compute
  loaded = evaluate.load_model(config, run_dir)
  evaluate.evaluate(config, run_dir, loaded=loaded)
  workdir.write_json(os.path.join(run_dir, "compute.json"), compute.model_compute(config))
  save_figure_arrays(config, run_dir, loaded)
  plateau = plateau_check(config, run_dir, loaded, plateau_examples)
  workdir.write_json(os.path.join(run_dir, PLATEAU_FILE), plateau)


def plateau_check(config, run_dir: str, loaded, num_examples: int = 0) -> dict:
  """Clean accuracy at T_train of the checkpoints at 80%, 90% and 100% of training (:func:`plateau_steps`) on
  the first ``num_examples`` test images (0 = all); plateau reached iff acc(100%) − acc(80%) ≤
  ``runs.PLATEAU_POINTS`` points (:func:`runs.plateau_reached`). One jitted evaluation for the three checkpoints."""
  import jax
  import numpy as np

  from rsrnn_jax import data
  from rsrnn_jax.models import predict
  from rsrnn_jax.train import checkpoints, parallel
  from rsrnn_jax.train import state as train_state
  model, state, info, mesh = loaded
  t_train = int(config.train.num_glimpses)
  steps = plateau_steps(int(config.train.num_train_steps), int(config.train.checkpoint_every))
  mgr = checkpoints.manager(run_dir, config, create=False)
  meta, latest = checkpoints.metadata(config, info), int(jax.device_get(state.step))
  predict_fn = jax.jit(lambda v, x: predict(model, v, x, num_steps=t_train)["logits"][-1].argmax(-1))
  batches = list(data.eval_batches(config.data, global_batch_size=int(config.eval.batch_size),
                                   max_examples=int(num_examples) or None))
  accuracy = []
  with jax.set_mesh(mesh):
    for step in steps:
      if step != latest and step not in mgr.all_steps():
        accuracy.append(None)  # not kept (a run trained with fewer kept checkpoints)
        continue
      variables = train_state.variables_of(state if step == latest else checkpoints.restore(mgr, step, state, meta))
      correct = total = 0
      for b in batches:
        pred = np.asarray(parallel.to_host(predict_fn(variables, parallel.shard_batch(b, mesh)["image"])))
        keep = np.asarray(b["mask"]) > 0
        correct, total = correct + int((pred == np.asarray(b["label"]))[keep].sum()), total + int(keep.sum())
      accuracy.append(correct / max(total, 1))
  rise = None if None in (accuracy[0], accuracy[-1]) else 100 * (accuracy[-1] - accuracy[0])
  return {"fractions": list(PLATEAU_FRACTIONS), "steps": steps, "accuracy": accuracy, "train_glimpses": t_train,
          "num_examples": total if batches else 0, "rise_points": rise, "max_rise_points": saved.PLATEAU_POINTS,
          "reached": saved.plateau_reached(rise)}


def save_figure_arrays(config, run_dir: str, loaded) -> str:
  """The figure data of :func:`rsrnn_jax.evaluation.clean.figure_arrays` at T_eval steps → ``figures.npz``:
  images, labels, per-step probabilities, class names, and fixations + glimpses (overt attention) or
  attention maps with the heads summed (S3TA)."""
  import jax
  import numpy as np

  from rsrnn_jax.evaluation import clean as evaluate
  from rsrnn_jax.train import state as train_state
  model, state, info, _ = loaded
  arrays = evaluate.figure_arrays(model, train_state.variables_of(state), config, int(config.eval.num_glimpses))
  arrays["probs"] = np.asarray(jax.nn.softmax(arrays.pop("logits"), -1))
  arrays["class_names"] = np.asarray(info.class_names)
  if "attention" in arrays:
    arrays["attention"] = arrays["attention"].sum(2)  # [T,n,h,w], heads summed
  path = os.path.join(run_dir, "figures.npz")
  np.savez_compressed(path, **arrays)
  return path


def run_attack(config, run_dir: str) -> None:
  """The attack suite of ``config.attack.profile`` → ``attack_<profile>/`` (results.json, per_example.npz)."""
  from rsrnn_jax.robustness import suite
  suite.run(config, run_dir)


STAGE_FNS = {"train": run_train, "eval": run_eval, "attack": run_attack}


def device_description() -> str:
  """What JAX computes on in this process, e.g. ``2× cpu`` or ``1× NVIDIA H200``: each finished stage records it
  (the same attack on another device kind can differ by float rounding)."""
  import jax
  devices = jax.devices()
  return f"{len(devices)}× {devices[0].device_kind}"


def plan(budget: Budget, models=MODELS, seeds=None, overrides: dict | None = None,
         config_file: str = DEMO_CONFIG, out_dir: str = "reproduction", setting: Setting = DEMO) -> dict:
  """{model: {seed: {stage: config}}}: every run of ``budget`` in ``setting`` (``seeds`` replaces the budget's
  list; a model's seed limit still applies), each adaptive stage's transfer attack pointed at
  :func:`transfer_source_dir`."""
  configs = {m: {s: stage_configs(m, budget, overrides, config_file, seed=s, setting=setting)
                 for s in budget.seeds_for(m, seeds)} for m in models}
  for m, per_seed in configs.items():
    for s, stages in per_seed.items():
      a = stages["attack_adaptive"].attack if "attack_adaptive" in stages else None
      if a is not None and "transfer" in a.attacks:
        a.transfer_workdir = transfer_source_dir(budget, m, s, configs, out_dir)
  return configs


def transfer_source_dir(budget: Budget, model: str, seed: int, configs: dict, out_dir: str) -> str:
  """The run of ``budget.transfer_source`` with ``seed`` if it is part of this plan (it then runs first in its
  seed) or already trained; "" otherwise (the transfer attack is skipped, and the report says why)."""
  src = budget.transfer_source
  path = saved.run_dir(out_dir, src, seed) if src else ""
  if not src or model == src:
    return ""
  planned = seed in configs.get(src, {})
  return path if planned or read_stages(path).get("train", {}).get("done") else ""


def reproduce(out_dir: str = "reproduction", budget: Budget = FULL_BUDGET, models=MODELS, seeds=None,
              overrides: dict | None = None, report_only: bool = False, config_file: str = DEMO_CONFIG,
              stages=None, report: bool = True, setting: Setting = DEMO, rerun=(), report_dir: str = "",
              deadline: deadline_lib.Deadline | None = None) -> str:
  """Every stage of every run of ``setting`` that is not up to date (seed by seed: every model's first seed first;
  ``stages``: only these, e.g. ``("train", "eval")``; ``rerun``: these although up to date, never ``train``),
  then ``out_dir/report.md`` and ``out_dir/verdicts.json``
  (unless not ``report``: several processes running parts of one ``out_dir`` at once), or in ``report_dir``
  (the runs read from ``out_dir``). ``out_dir`` holds one setting (the command line's ``OUT/<setting>``). Returns
  the report's path ("" without it)."""
  from rsrnn_jax.reproduction import report as reproduce_report
  budget = setting.budget(budget)
  budget.check_stages(stages, rerun)
  os.makedirs(out_dir, exist_ok=True)
  configs = plan(budget, models, seeds, overrides, config_file, out_dir, setting)
  if not report_only:
    device = device_description()
    for m, s in run_order(configs, budget, models):
      if deadline is not None and deadline.stopped:
        break
      gate = None if deadline is None else (lambda stage, ran, m=m, s=s: deadline.refuses(out_dir, m, s, stage, ran))
      fns = STAGE_FNS if deadline is None else {**STAGE_FNS,
                                                "train": deadline.bounded(STAGE_FNS["train"], f"{m}/seed{s}")}
      run_model(f"{m}/seed{s}", configs[m][s], saved.run_dir(out_dir, m, s), fns, budget.plateau_examples,
                only=stages, device=device, rerun=tuple(rerun), may_start=gate)
    if deadline is not None and deadline.stopped:
      log.info("--deadline: stopped %s; the same command goes on from there", deadline.stopped)
  if not report:
    return ""
  path = reproduce_report.write(out_dir, configs, budget, setting, dest=report_dir or out_dir)
  log.info("report: %s", path)
  return path


def run_order(configs: dict, budget: Budget, models) -> list:
  """The (model, seed) runs of ``configs`` in the order they go: seed by seed, the transfer source first."""
  return [(m, s) for s in dict.fromkeys(s for per_seed in configs.values() for s in per_seed)
          for m in budget.run_order(models) if s in configs[m]]


def dry_run(out_dir: str, budget: Budget, models, seeds, overrides: dict, config_file: str, stages, rerun,
            setting: Setting, left: float | None = None, until: str = "") -> tuple[str, float | None]:
  """``--dry_run``: the stages :func:`reproduce` would run in ``setting``, why, and their estimated time, and
  with ``left`` (seconds to ``--deadline`` ``until``) how many would start; returns that text and the seconds
  left after them (below 0 when the deadline stops the command in this setting)."""
  budget = setting.budget(budget)
  budget.check_stages(stages, rerun)
  configs = plan(budget, models, seeds, overrides, config_file, out_dir, setting)
  rows = todo.pending(out_dir, configs, run_order(configs, budget, models), budget.plateau_examples, stages, rerun)
  text = todo.describe(setting.name, out_dir, rows, left, until)
  if left is not None:
    est = todo.estimates(out_dir, rows)
    fits = todo.fitting([r["stage"] for r in rows], est, left) == (len(est), False)
    left = left - sum(e or 0.0 for e in est) if fits else -1.0
  return text, left


def _log_to_file(out_dir: str) -> logging.Handler:
  os.makedirs(out_dir, exist_ok=True)
  handler = logging.FileHandler(os.path.join(out_dir, "reproduce.log"))
  handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
  logging.getLogger().addHandler(handler)
  return handler


def _parse_seeds(text: str | None):
  if not text:
    return None
  try:
    seeds = tuple(int(s) for s in text.split(",") if s.strip())
  except ValueError:
    raise ValueError(f"--seeds expects comma-separated non-negative integers, e.g. 0,1,2; got {text!r}") from None
  if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
    raise ValueError(f"--seeds expects distinct non-negative integers, e.g. 0,1,2; got {text!r}")
  return seeds


def stop_cleanly_on_sigterm() -> None:
  """SIGTERM (``kill``, a scheduler's stop) raises SystemExit instead of ending the process at once, so the
  interrupted stage still records the time it ran (a SIGKILL cannot be caught: that time is lost)."""
  signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  p.add_argument("--out", default="reproduction",
                 help="report + figures here, each setting's runs in OUT/<setting>/runs/<model>/seed<s>/")
  p.add_argument("--setting", default=",".join(data_settings.SETTINGS),
                 help=f"comma-separated data settings (default: all), of {','.join(data_settings.SETTINGS)}")
  p.add_argument("--budget", default="full", choices=list(BUDGETS), help="the shared budget (docs/reproduction.md)")
  p.add_argument("--quick", action="store_true", help="= --budget quick (smoke test; numbers meaningless)")
  p.add_argument("--seeds", default="", help="comma-separated seeds (default: the budget's), e.g. 0,1,2")
  p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
  p.add_argument("--config", default=DEMO_CONFIG, help="the config file every model's run starts from")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="config override for every model, e.g. --set data.data_dir=/tmp/tfds (repeatable)")
  p.add_argument("--stages", default="", help="comma-separated subset of the stages to run (default: all), "
                 "e.g. train,eval,attack_paper; the others are left as they are")
  p.add_argument("--rerun", default="", help="comma-separated stages to run again although up to date, e.g. "
                 "attack_adaptive after a fix to the attack code that the fingerprints do not cover (not train)")
  p.add_argument("--jobs", type=int, default=1, help="runs as separate processes, this many at once (a GPU, many "
                 "cores): train/eval/paper stages first, then the adaptive ones; then the report")
  p.add_argument("--job_gpus", default="", help="with --jobs: job i sees GPU i mod their number, e.g. 0,1,2,3")
  p.add_argument("--dry_run", action="store_true", help="print what would run, why, and about how long it would "
                 "take (from the times finished stages recorded); run nothing")
  p.add_argument("--deadline", default="", metavar="WHEN", help="start only the stages that should end by WHEN "
                 "(HH:MM, +2h30m, or 2026-12-07T15:00), by the times finished stages recorded; the first that would "
                 "not stops the command (deadline.py): for a session or a job with a time limit")
  p.add_argument("--report_only", action="store_true", help="only re-draw the report from the saved runs")
  p.add_argument("--report_to", default="", metavar="DIR", help="with --report_only: write the reports (each "
                 "setting's in DIR/<setting>, side by side in DIR/report.md) there, and leave OUT's as they are "
                 "(a look at a reproduction still running)")
  p.add_argument("--no_report", action="store_true", help="run the stages and leave the report as it is (processes "
                 "running parts of one OUT at once, e.g. one per model; then one --report_only)")
  args = p.parse_args(argv)
  models = tuple(m for m in args.models.split(",") if m)
  unknown = [m for m in models if m not in registry.variant_names()]
  try:
    if unknown:
      raise ValueError(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(registry.variant_names())}")
    seeds = _parse_seeds(args.seeds)
    settings = [data_settings.get(s) for s in args.setting.split(",") if s]
    if not settings:
      raise ValueError(f"--setting expects a comma-separated subset of {','.join(data_settings.SETTINGS)}")
    if args.report_only and args.no_report:
      raise ValueError("--report_only and --no_report exclude each other: drop one")
    if args.report_to and not args.report_only:
      raise ValueError("--report_to goes with --report_only (the stages write their runs to --out): add it")
    if args.report_to and os.path.abspath(args.report_to) == os.path.abspath(args.out):
      raise ValueError("--report_to names --out itself: give another folder, or drop --report_to")
    if args.dry_run and args.report_only:
      raise ValueError("--dry_run and --report_only exclude each other: drop one")
    if args.jobs < 1 or (args.jobs > 1 and args.report_only):
      raise ValueError(f"--jobs expects a number of processes >= 1 (and no --report_only); got {args.jobs}")
    jobs_lib.parse_gpus(args.job_gpus)
    if args.deadline and args.report_only:
      raise ValueError("--deadline and --report_only exclude each other (the report starts no stage): drop one")
    at = deadline_lib.parse(args.deadline) if args.deadline else None
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  budget = QUICK_BUDGET if args.quick else BUDGETS[args.budget]
  stages = tuple(s for s in args.stages.split(",") if s) or None
  rerun = tuple(s for s in args.rerun.split(",") if s)
  if args.dry_run:  # before JAX or any log file: nothing is touched
    try:
      texts, left = [], None if at is None else at - time.time()
      for s in settings:
        text, left = dry_run(os.path.join(args.out, s.name), budget, models, seeds, parse_overrides(args.set),
                             args.config, stages, rerun, s, left, deadline_lib.iso(at) if at else "")
        texts.append(text)
      print("\n\n".join(texts))
    except (ValueError, FileNotFoundError) as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
    return 0
  stop_cleanly_on_sigterm()
  # Two host devices keep both CPU cores busy (what `make demo` uses), with the all-reduce timeouts raised so that
  # a busy machine does not abort a run (the Makefile's DEMO_XLA_FLAGS); must be set before jax starts.
  os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2 "
                        "--xla_cpu_collective_call_terminate_timeout_seconds=900 --xla_cpu_collective_timeout_seconds=900")
  from rsrnn_jax import run
  run.setup_logging()
  logging.getLogger("rsrnn_jax").setLevel(logging.INFO)  # an import may have configured the root at WARNING
  status, deadline = 0, None if at is None else deadline_lib.Deadline(at)
  try:
    overrides = parse_overrides(args.set)
    if args.jobs > 1:  # the stages in child processes; this one draws the report after them
      status = jobs_lib.run_as_jobs(args, settings, budget, models, seeds, stages, rerun,
                                      deadline_lib.iso(at) if at else "")
    for setting in settings if args.jobs == 1 or not args.no_report else ():
      out = os.path.join(args.out, setting.name)
      dest = os.path.join(args.report_to, setting.name) if args.report_to else ""
      handler = _log_to_file(dest or out)  # each setting's log beside its runs (or its reports elsewhere)
      try:
        reproduce(out, budget, models, seeds, overrides, report_only=args.report_only or args.jobs > 1,
                  config_file=args.config, stages=stages, report=not args.no_report, setting=setting, rerun=rerun,
                  report_dir=dest, deadline=deadline)
      finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    if not args.no_report:  # the settings side by side, from every setting's verdicts.json there is
      log.info("report: %s", side_by_side.write(args.report_to or args.out, data_settings.SETTINGS))
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return status


if __name__ == "__main__":
  sys.exit(main())
