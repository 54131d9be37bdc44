"""``make reproduce``: the paper's comparison on the demo data set, end to end, in one resumable command.

  python -m rsrnn_jax.reproduction.run [--quick] [--out reproduction] [--models rsrnn,ff_cnn] [--set data.x=v ...]
  python -m rsrnn_jax.reproduction.run --report_only [--out reproduction]     # re-draw the report from saved runs

Trains the six models of the zoo plus FF-CNN-AT (``configs/demo.py:model=NAME``, docs/zoo.md) on cluttered
Fashion-MNIST with one shared budget (:data:`DEFAULT_BUDGET`), evaluates each on the test split (accuracy at every
step, GMACs per step from XLA's cost analysis, fixations / attention on the same test images), runs the attack
suite of :mod:`rsrnn_jax.attacks.suite` on each (profile ``paper``, cut to the budget), and writes
``OUT/report.md`` with its figures (:mod:`rsrnn_jax.reproduction.report`): the paper's Table 1, Fig. 3, Fig. 4,
Fig. 5, v1 Table 2 and Fig. 3a analogues, the paper's own numbers beside ours (:mod:`rsrnn_jax.reproduction.paper_numbers`)
and a verdict for each of the paper's claims.

Runs go to ``OUT/runs/<model>/`` (a normal workdir: ``checkpoints/``, ``metrics.jsonl``, ``eval/``,
``attack_paper/``, plus ``compute.json`` and ``figures.npz``). Each model has three stages — train, eval,
attack — recorded in ``OUT/runs/<model>/reproduce_stages.json`` with a fingerprint of the config fields that
stage depends on. A stage is skipped when its record says done, its fingerprint matches the current config and
its outputs exist; when a stage runs, the later stages of that model run again. An interrupted training resumes
from its last checkpoint (``train.checkpoint_every``); a changed training config discards the model's run
directory and trains again (logged). So ``make reproduce`` after an interruption redoes only what is missing.

Budget (docs/reproduction.md has the measurements behind it): every model takes the same number of optimiser
steps of the same batch (the same training images, in the same order), the demo's optimiser and schedule; the
attack suite runs on the first ``attack_examples`` test images. FF-CNN-AT trains on the same images, with
``at_iterations`` PGD iterations per step. ``--quick`` is a smoke-test budget (a few steps, a few examples) whose
numbers mean nothing; the tests run it on a tiny synthetic data set (``--set data.source_dir=...``).
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sys
import time

from rsrnn_jax import configlib
from rsrnn_jax.models import registry

log = logging.getLogger("rsrnn_jax.reproduction.run")

# Every registered variant: the paper's six models (docs/zoo.md) and the adversarially trained FF-CNN of v1 Fig. 4a.
MODELS = registry.variant_names()
DEMO_CONFIG = "configs/demo.py"  # the config file every model's run starts from (relative to the working dir)
STAGES = ("train", "eval", "attack")
ATTACK_PROFILE = "paper"
STAGES_FILE = "reproduce_stages.json"


@dataclasses.dataclass(frozen=True)
class Budget:
  """What every model gets. ``None`` fields keep the value of ``configs/demo.py``."""
  name: str
  train_steps: int                 # optimiser steps, the same for every model
  batch_size: int = 64             # global batch (the demo's)
  at_iterations: int = 5           # PGD iterations per FF-CNN-AT step (step ε·at_step_size, reaches the boundary)
  at_step_size: float = 0.25       # fraction of ε per AT iteration
  checkpoint_every: int = 250      # an interrupted training loses at most this many steps
  glimpses: int = 0                # T in training (and the attack step k); 0 = the demo's 4
  eval_steps: int = 8              # T_eval (the demo's): accuracy at every step 1..T_eval
  eval_examples: int = 0           # clean evaluation on the first N test images (0 = the whole split)
  eval_batch: int = 500
  figure_images: int = 6           # test images in the fixation figure and the GIF
  attack_examples: int = 200       # first N test images attacked
  attack_batch: int = 100
  epsilons: tuple = (0.01, 0.02, 0.03, 0.05)       # untargeted (the demo grid; Fashion-MNIST scale)
  targeted_epsilons: tuple = (0.02, 0.05)
  large_eps: float = 0.3           # check 2
  convergence_examples: int = 0    # check 3 on the first N attacked examples (0 = all) ...
  convergence_all_eps: bool = True # ... at every ε (so the worst case covers every example and ε)
  iteration_factor: int = 2        # check 3: iterations × this ...
  extra_restarts: int = 2          # ... and this many more restarts
  square_queries: int = 300        # check 5 (0 = skip)
  square_examples: int = 100
  grad_examples: int = 40          # check 6 (0 = skip)
  prob_map_images: int = 4         # per-model probability maps (0 = skip)
  prob_map_grid: int = 32

  def describe(self) -> str:
    return (f"{self.train_steps} steps × batch {self.batch_size} for every model (FF-CNN-AT: PGD-{self.at_iterations} "
            f"per step), T_eval = {self.eval_steps}, clean eval on "
            f"{'the whole test split' if not self.eval_examples else f'{self.eval_examples} test images'}, "
            f"attacks on {self.attack_examples} test images")


# The default budget: ≤ 90 minutes for the 7 models on 2 idle cores (estimate and measurements:
# docs/reproduction.md). FF-CNN-AT: 3 PGD iterations of ε·0.4 per step (reaches the boundary; ~4× a clean step).
# Strongest attack: check 3 (PGD with 2× the iterations, a new random start) on every example and ε joins the
# worst case next to PGD on step k, full-horizon PGD and FGSM.
DEFAULT_BUDGET = Budget(
    name="default", train_steps=700, at_iterations=3, at_step_size=0.4, epsilons=(0.01, 0.02, 0.03),
    targeted_epsilons=(0.02, 0.05), attack_examples=200, attack_batch=100, iteration_factor=2, extra_restarts=0,
    square_queries=100, square_examples=100, grad_examples=40, prob_map_images=4, prob_map_grid=16)

# Smoke test: every stage and every figure, numbers meaningless.
QUICK_BUDGET = Budget(
    name="quick", train_steps=4, batch_size=8, at_iterations=1, at_step_size=1.0, checkpoint_every=2,
    glimpses=2, eval_steps=3, eval_examples=16, eval_batch=16, figure_images=2, attack_examples=8,
    attack_batch=8, epsilons=(0.1,), targeted_epsilons=(0.1,), large_eps=0.0, iteration_factor=1, extra_restarts=0,
    square_queries=0, square_examples=8, grad_examples=0, prob_map_images=0, prob_map_grid=4)


# ----------------------------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------------------------

def parse_overrides(items) -> dict:
  """``["data.canvas_size=32", ...]`` → ``{"data.canvas_size": 32}`` (values as Python literals, else str)."""
  out = {}
  for item in items or ():
    key, sep, value = item.partition("=")
    if not sep or not key:
      raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
    try:
      out[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      out[key] = value
  return out


def model_config(name: str, budget: Budget = DEFAULT_BUDGET, overrides: dict | None = None,
                 config_file: str = DEMO_CONFIG):
  """``configs/demo.py:model=NAME,attack=paper`` (``config_file``) cut to ``budget``, then ``overrides`` (dotted
  keys)."""
  c = configlib.load_file(config_file, f"model={name},attack={ATTACK_PROFILE}")
  t = c.train
  t.batch_size = budget.batch_size
  t.num_train_steps = budget.train_steps
  t.warmup_steps = min(int(t.warmup_steps), max(1, budget.train_steps // 10))
  t.checkpoint_every = budget.checkpoint_every
  t.log_every = min(int(t.log_every), budget.train_steps)
  t.eval_at_end = False                        # the eval stage evaluates
  if budget.glimpses:
    t.num_glimpses = budget.glimpses
  if t.adversarial.enabled:                    # ff_cnn_at
    t.adversarial.num_iterations = budget.at_iterations
    t.adversarial.step_size = budget.at_step_size
  c.eval.num_glimpses = budget.eval_steps
  c.eval.max_examples = budget.eval_examples
  c.eval.batch_size = budget.eval_batch
  c.eval.num_figure_images = budget.figure_images
  a = c.attack
  a.attack_step = min(int(a.attack_step), int(t.num_glimpses), budget.eval_steps)
  a.eval_steps = budget.eval_steps
  a.num_examples = budget.attack_examples
  a.batch_size = budget.attack_batch
  a.epsilons = tuple(budget.epsilons)
  a.targeted_epsilons = tuple(budget.targeted_epsilons)
  a.prob_map.num_images = budget.prob_map_images
  a.prob_map.grid = budget.prob_map_grid
  a.prob_map.eps = 0.0                          # the largest targeted ε
  ch = a.checks
  ch.large_eps = budget.large_eps
  ch.convergence_examples = budget.convergence_examples
  ch.convergence_eps = tuple(budget.epsilons) if budget.convergence_all_eps else ()
  ch.iteration_factor = budget.iteration_factor
  ch.extra_restarts = budget.extra_restarts
  ch.square_queries = budget.square_queries
  ch.square_examples = budget.square_examples
  ch.grad_examples = budget.grad_examples
  return configlib.set_dotted(c, overrides or {})


def _digest(obj) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# Train-config fields that do not change the trained model.
_TRAIN_BOOKKEEPING = ("log_every", "checkpoint_every", "keep_checkpoints", "eval_at_end")


def fingerprints(config) -> dict:
  """Per stage, a digest of the config fields the stage's outputs depend on (a later stage includes the
  earlier ones)."""
  d = config.to_dict()
  train = {k: v for k, v in d["train"].items() if k not in _TRAIN_BOOKKEEPING}
  fp_train = _digest({"seed": d["seed"], "data": d["data"], "model": d["model"], "train": train})
  fp_eval = _digest({"train": fp_train, "eval": d["eval"]})
  fp_attack = _digest({"train": fp_train, "attack": d["attack"], "eval_steps": d["eval"]["num_glimpses"]})
  return {"train": fp_train, "eval": fp_eval, "attack": fp_attack}


# ----------------------------------------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------------------------------------

def latest_checkpoint_step(run_dir: str) -> int:
  ckpt = os.path.join(run_dir, "checkpoints")
  steps = [int(p) for p in os.listdir(ckpt) if p.isdigit()] if os.path.isdir(ckpt) else []
  return max(steps, default=0)


def stage_outputs(stage: str, config, run_dir: str) -> bool:
  """Do the outputs of ``stage`` exist?"""
  if stage == "train":
    return latest_checkpoint_step(run_dir) >= int(config.train.num_train_steps)
  if stage == "eval":
    return all(os.path.exists(os.path.join(run_dir, f)) for f in ("eval/results.json", "compute.json",
                                                                  "figures.npz"))
  return os.path.exists(os.path.join(run_dir, f"attack_{config.attack.profile}", "results.json"))


def read_stages(run_dir: str) -> dict:
  path = os.path.join(run_dir, STAGES_FILE)
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def _write_stages(run_dir: str, stages: dict) -> None:
  os.makedirs(run_dir, exist_ok=True)
  tmp = os.path.join(run_dir, STAGES_FILE + ".tmp")
  with open(tmp, "w") as f:
    json.dump(stages, f, indent=1)
  os.replace(tmp, os.path.join(run_dir, STAGES_FILE))


def run_train(config, run_dir: str) -> None:
  from rsrnn_jax import run
  run.main(config, run_dir, "train")


def run_eval(config, run_dir: str) -> None:
  """Clean accuracy per step (eval/), GMACs (compute.json) and the figure arrays (figures.npz)."""
  from rsrnn_jax.models import compute
  from rsrnn_jax.evaluation import clean as evaluate
  loaded = evaluate.load_model(config, run_dir)
  evaluate.evaluate(config, run_dir, loaded=loaded)
  with open(os.path.join(run_dir, "compute.json"), "w") as f:
    json.dump(compute.model_compute(config), f, indent=1)
  save_figure_arrays(config, run_dir, loaded)


def run_attack(config, run_dir: str) -> None:
  from rsrnn_jax.attacks import suite as robustness
  robustness.run(config, run_dir)


STAGE_FNS = {"train": run_train, "eval": run_eval, "attack": run_attack}


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


def run_model(name: str, config, run_dir: str) -> dict:
  """Runs the stages of one model that are not up to date; returns its stage records."""
  stages = read_stages(run_dir)
  fps = fingerprints(config)
  recorded = stages.get("train", {}).get("fingerprint")
  if (recorded and recorded != fps["train"]) or (not recorded and latest_checkpoint_step(run_dir)):
    why = "its training config changed" if recorded else "it has checkpoints with no stage record"
    log.warning("%s: discarding %s: %s; training again", name, run_dir, why)
    shutil.rmtree(run_dir)
    stages = {}
  rerun = False
  for stage in STAGES:
    rec = stages.get(stage, {})
    if (not rerun and rec.get("done") and rec.get("fingerprint") == fps[stage]
        and stage_outputs(stage, config, run_dir)):
      log.info("%s: %s up to date, skipped", name, stage)
      continue
    resumed = stage == "train" and latest_checkpoint_step(run_dir) > 0
    log.info("%s: %s%s", name, stage, f" (resuming at step {latest_checkpoint_step(run_dir)})" if resumed else "")
    for later in STAGES[STAGES.index(stage):]:
      stages.pop(later, None)
    stages[stage] = {"fingerprint": fps[stage], "done": False,
                     "seconds": rec.get("seconds", 0.0) if resumed else 0.0}
    _write_stages(run_dir, stages)
    tic = time.perf_counter()
    try:
      STAGE_FNS[stage](config, run_dir)
      stages[stage].update(done=True, finished=time.strftime("%Y-%m-%d %H:%M:%S"))
    finally:  # an interrupted stage keeps its time: a resumed training adds to it
      stages[stage]["seconds"] += time.perf_counter() - tic
      _write_stages(run_dir, stages)
    log.info("%s: %s done in %.0f s", name, stage, stages[stage]["seconds"])
    rerun = True
  return stages


def reproduce(out_dir: str = "reproduction", budget: Budget = DEFAULT_BUDGET, models=MODELS,
              overrides: dict | None = None, report_only: bool = False, config_file: str = DEMO_CONFIG) -> str:
  """Every stage of every model that is not up to date, then ``out_dir/report.md``. Returns its path."""
  from rsrnn_jax.reproduction import report as reproduce_report
  os.makedirs(out_dir, exist_ok=True)
  configs = {name: model_config(name, budget, overrides, config_file) for name in models}
  if not report_only:
    for name in models:
      run_model(name, configs[name], os.path.join(out_dir, "runs", name))
  path = reproduce_report.write(out_dir, configs, budget)
  log.info("report: %s", path)
  return path


def _log_to_file(out_dir: str) -> logging.Handler:
  os.makedirs(out_dir, exist_ok=True)
  handler = logging.FileHandler(os.path.join(out_dir, "reproduce.log"))
  handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
  logging.getLogger().addHandler(handler)
  return handler


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  p.add_argument("--out", default="reproduction", help="report + figures here, runs in OUT/runs/<model>/")
  p.add_argument("--quick", action="store_true", help="smoke-test budget (minutes; numbers meaningless)")
  p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
  p.add_argument("--config", default=DEMO_CONFIG, help="the config file every model's run starts from")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="config override for every model, e.g. --set data.data_dir=/tmp/tfds (repeatable)")
  p.add_argument("--report_only", action="store_true", help="only re-draw the report from the saved runs")
  args = p.parse_args(argv)
  models = tuple(m for m in args.models.split(",") if m)
  unknown = [m for m in models if m not in registry.variant_names()]
  if unknown:
    print(f"error: unknown model(s) {', '.join(unknown)}; choose from {', '.join(registry.variant_names())}",
          file=sys.stderr)
    return 2
  # Two host devices keep both CPU cores busy (what `make demo` uses); must be set before jax starts.
  os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
  from rsrnn_jax import run
  run.setup_logging()
  logging.getLogger("rsrnn_jax").setLevel(logging.INFO)  # an import may have configured the root at WARNING
  handler = _log_to_file(args.out)
  try:
    reproduce(args.out, QUICK_BUDGET if args.quick else DEFAULT_BUDGET, models, parse_overrides(args.set),
              report_only=args.report_only, config_file=args.config)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  finally:
    logging.getLogger().removeHandler(handler)
    handler.close()
  return 0


if __name__ == "__main__":
  sys.exit(main())
