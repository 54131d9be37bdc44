"""Compute per glimpse step and per image, read from XLA's cost analysis of the compiled forward pass.

Definitions (the paper's Fig. 3 x-axis is GMACs; paper.md §8):

* ``flops(T)``: ``jax.jit(forward).lower(...).compile().cost_analysis()["flops"]`` of the evaluation-mode
  forward pass of ONE image unrolled for T steps (argmax fixations, every output kept so that nothing is
  dead-code eliminated). The scan is forced fully unrolled (``model.unroll=0``): XLA counts the body of a
  rolled loop once, whatever its trip count. Computed in float32 whatever ``model.dtype`` says.
* ``MACs = flops / 2``. XLA also counts elementwise work (ReLU, norms, softmax, bilinear sampling, the
  dorsal maps), so this is slightly above the multiply-accumulates of the convolutions and dense layers
  alone (about 1% for these nets; exact for a bias-free conv or dense layer, see tests/test_compute.py).
* ``per_step = MACs(T=2) − MACs(T=1)``: the cost of one more step (glimpse, or attention step for S3TA).
* ``once = MACs(T=1) − per_step``: what is paid once per image whatever T (the S3TA / FF-CNN backbone;
  about 0 for the glimpse models, whose every step samples and encodes a new glimpse).
* ``total(T) = once + T · per_step``: the cost of a T-step forward pass (forward passes are linear in T;
  tested against ``MACs(T=3)``). FF-CNN computes its logits once: per_step = 0, total = once.

CLI (one JSON line per model, then a Markdown table; config files as launch.py takes them, each run for every
model of ``--models`` through its ``model=NAME`` argument):

  python -m rsrnn_jax.evaluation.compute --config=configs/demo.py --config=configs/imagenet.py --models=all \
      [--out=compute.json]
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys

import jax
import jax.numpy as jnp

from rsrnn_jax import configlib, workdir
from rsrnn_jax.data import registry as datasets
from rsrnn_jax.models import build_model, registry


def flops(fn, *args) -> float:
  """XLA's flop count of ``jax.jit(fn)`` compiled for ``args`` (arrays or ``jax.ShapeDtypeStruct``)."""
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax returned one dict per computation
    cost = cost[0]
  return float(cost["flops"])


def forward_macs(config, num_steps: int) -> float:
  """MACs (flops / 2) of the evaluation forward pass of one image of ``config``'s model for ``num_steps``."""
  model_cfg = copy.deepcopy(config.model)
  model_cfg.unlock()
  model_cfg.unroll = 0       # fully unrolled: XLA counts a rolled loop body once
  model_cfg.dtype = "float32"
  model = build_model(model_cfg, num_classes=datasets.num_classes(config.data), mean=config.data.mean,
                      std=config.data.std)
  images = jax.ShapeDtypeStruct((1, *datasets.image_shape(config.data)), jnp.float32)
  rngs = {"params": jax.random.key(0), "fixation": jax.random.key(1)}
  variables = jax.eval_shape(lambda x: model.init(rngs, x, num_steps=1, train=False), images)
  return flops(lambda v, x: model.apply(v, x, num_steps=num_steps, train=False), variables, images) / 2


def model_compute(config) -> dict:
  """GMACs of ``config``'s model: per step, once per image, and total at the train and eval step counts."""
  one, two = forward_macs(config, 1), forward_macs(config, 2)
  per_step = two - one
  once = one - per_step
  train_t, eval_t = int(config.train.num_glimpses), int(config.eval.num_glimpses)
  g = lambda macs: macs / 1e9
  shape = datasets.image_shape(config.data)
  return {"model": config.model.name, "data": config.data.name, "image_shape": list(shape),
          "gmacs_per_step": g(per_step), "gmacs_once": g(once),
          "train_steps": train_t, "gmacs_total_train": g(once + train_t * per_step),
          "eval_steps": eval_t, "gmacs_total_eval": g(once + eval_t * per_step)}


def table(rows) -> str:
  """Markdown table of :func:`model_compute` rows."""
  out = ["| config | model | input | GMACs/step | GMACs once | GMACs at T_train | GMACs at T_eval |",
         "|---|---|---|---|---|---|---|"]
  for r in rows:
    out.append(f"| {r['config']} | {r['model']} | {'×'.join(map(str, r['image_shape']))} | "
               f"{r['gmacs_per_step']:.4g} | {r['gmacs_once']:.4g} | {r['gmacs_total_train']:.4g} "
               f"(T={r['train_steps']}) | {r['gmacs_total_eval']:.4g} (T={r['eval_steps']}) |")
  return "\n".join(out)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", action="append", required=True,
                 help="a config file FILE[:ARGS] as launch.py takes it (repeatable), e.g. configs/demo.py")
  p.add_argument("--models", default="all", help=f"comma-separated subset of {','.join(registry.names())}, or all")
  p.add_argument("--out", default="", help="also write the rows as JSON here")
  args = p.parse_args(argv)
  models = registry.names() if args.models == "all" else tuple(args.models.split(","))
  rows = []
  try:
    for spec in args.config:
      name = os.path.splitext(os.path.basename(spec.partition(":")[0]))[0]
      for model in models:
        config = configlib.load_file(spec, f"model={model}")
        row = {"config": f"{name}:model={model}", **model_compute(config)}
        print(json.dumps(row), flush=True)
        rows.append(row)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(table(rows))
  if args.out:
    workdir.write_json(args.out, rows)
  return 0


if __name__ == "__main__":
  sys.exit(main())
