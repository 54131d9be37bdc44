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

CLI (what ``make reproduce`` can call; one JSON line per model, then a Markdown table):

  python -m rsrnn_jax.models.compute --configs=demo,imagenet --models=all [--out=compute.json]
"""
from __future__ import annotations

import argparse
import copy
import importlib
import json
import sys

import jax
import jax.numpy as jnp

from rsrnn_jax.models import MODELS, build_model

# Classes and input shape per data set, from the data config alone (no data set needs to be prepared).
_NUM_CLASSES = {"cluttered_fashion_mnist": 10, "imagenet100": 100}


def flops(fn, *args) -> float:
  """XLA's flop count of ``jax.jit(fn)`` compiled for ``args`` (arrays or ``jax.ShapeDtypeStruct``)."""
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax returned one dict per computation
    cost = cost[0]
  return float(cost["flops"])


def input_shape(data_cfg) -> tuple[int, int, int]:
  """(H, W, C) of the images the model is fed, from ``config.data``."""
  if data_cfg.name == "cluttered_fashion_mnist":
    return (int(data_cfg.canvas_size), int(data_cfg.canvas_size), 1)
  return (int(data_cfg.image_size), int(data_cfg.image_size), 3)


def forward_macs(config, num_steps: int) -> float:
  """MACs (flops / 2) of the evaluation forward pass of one image of ``config``'s model for ``num_steps``."""
  model_cfg = copy.deepcopy(config.model)
  model_cfg.unlock()
  model_cfg.unroll = 0       # fully unrolled: XLA counts a rolled loop body once
  model_cfg.dtype = "float32"
  model = build_model(model_cfg, num_classes=_NUM_CLASSES.get(config.data.name, 10), mean=config.data.mean,
                      std=config.data.std)
  images = jax.ShapeDtypeStruct((1, *input_shape(config.data)), jnp.float32)
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
  return {"model": config.model.name, "data": config.data.name, "image_shape": list(input_shape(config.data)),
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
  p.add_argument("--configs", default="demo,imagenet", help="config modules in configs/ (comma-separated)")
  p.add_argument("--models", default="all", help=f"comma-separated subset of {','.join(MODELS)}, or all")
  p.add_argument("--out", default="", help="also write the rows as JSON here")
  args = p.parse_args(argv)
  models = MODELS if args.models == "all" else tuple(args.models.split(","))
  rows = []
  for name in args.configs.split(","):
    module = importlib.import_module(f"configs.{name}")
    for model in models:
      row = {"config": f"{name}:model={model}", **model_compute(module.get_config(f"model={model}"))}
      print(json.dumps(row), flush=True)
      rows.append(row)
  print(table(rows))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(rows, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
