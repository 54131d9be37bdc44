"""Check 9 of a reproduction run at other policy-attack iterations, without touching the run (docs/reproduction.md).

  python tools/policy_probe.py --setting demo --model gfnet_m --seed 0 --iterations 60,150 [--examples 400]
                               [--epsilons 0.02,0.03] [--out reproduction] [--json FILE.jsonl]

Takes the run's adaptive-stage config (the full budget), cut to APGD-CE on step k, BPDA and the scanpath search,
at ``--epsilons`` (robust flags carried across them, as in the stage) on the first ``--examples`` test images, and
runs it on a scratch copy of the run's last checkpoint once per policy iteration count. Check 9 (each policy
attack alone on the first examples APGD-CE broke at the middle ε) and its counts are printed, one JSON line each
(appended to ``--json``). The stage's own results stay as they are.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2 "
                      "--xla_cpu_collective_call_terminate_timeout_seconds=900 --xla_cpu_collective_timeout_seconds=900")

from rsrnn_jax.reproduction import run as R  # noqa: E402
from rsrnn_jax.reproduction import run_configs as RC  # noqa: E402
from rsrnn_jax.reproduction import runs as RUNS  # noqa: E402
from rsrnn_jax.reproduction import settings as S  # noqa: E402
from rsrnn_jax.reproduction import stages as STAGES  # noqa: E402


def probe_config(setting: str, model: str, seed: int, iterations: int, examples: int, epsilons):
  """The run's adaptive-stage config cut to what check 9 compares."""
  s = S.get(setting)
  cfg = RC.stage_configs(model, s.budget(R.FULL_BUDGET), {}, seed=seed, setting=s)["attack_adaptive"]
  a = cfg.attack
  a.attacks, a.horizons, a.attack_horizons, a.horizon_iterations = ("apgd_ce", "bpda", "scanpath"), ("step",), (), ()
  a.epsilons, a.num_examples, a.policy.num_iterations, a.transfer_workdir = tuple(epsilons), examples, iterations, ""
  a.checks.large_eps, a.checks.square_queries, a.checks.convergence_eps = 0.0, 0, ()
  return cfg


def scratch_copy(run: str) -> str:
  """A workdir holding only the run's config and last checkpoint (the attack writes there, not into the run)."""
  step = STAGES.latest_checkpoint_step(run)
  if not step:
    raise FileNotFoundError(f"no checkpoint in {run}: train the run first")
  work = tempfile.mkdtemp(prefix="policy_probe_")
  shutil.copytree(os.path.join(run, "checkpoints", str(step)), os.path.join(work, "checkpoints", str(step)))
  shutil.copy(os.path.join(run, "config.json"), work)
  return work


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--setting", default="demo")
  p.add_argument("--model", required=True)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--iterations", required=True, help="comma-separated policy-attack iterations, e.g. 60,150")
  p.add_argument("--examples", type=int, default=400)
  p.add_argument("--epsilons", default="0.02,0.03")
  p.add_argument("--out", default="reproduction", help="the reproduction's folder (OUT of make reproduce)")
  p.add_argument("--json", default="")
  args = p.parse_args(argv)
  from rsrnn_jax.robustness import suite
  run = RUNS.run_dir(os.path.join(args.out, args.setting), args.model, args.seed)
  for iterations in (int(x) for x in args.iterations.split(",")):
    work = scratch_copy(run)
    try:
      cfg = probe_config(args.setting, args.model, args.seed, iterations, args.examples,
                         [float(e) for e in args.epsilons.split(",")])
      res = suite.run(cfg, work)
    finally:
      shutil.rmtree(work, ignore_errors=True)
    c9 = next(c for c in res["checks"] if c["id"] == 9)
    line = json.dumps({"setting": args.setting, "model": args.model, "seed": args.seed, "iterations": iterations,
                       "examples": args.examples, "epsilons": args.epsilons, "check9": c9["status"],
                       "detail": c9["detail"], "policy_check": res.get("policy_check"),
                       "seconds": round(res["timing"]["total_s"]), "code": STAGES.code_version()})
    print(line)
    if args.json:
      with open(args.json, "a") as f:
        f.write(line + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
