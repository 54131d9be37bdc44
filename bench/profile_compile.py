"""Compile time of the attack suite's programs: one jitted attack-and-evaluate per attack shape of the profile.

  python bench/profile_compile.py                          # configs/demo.py, paper profile, 2 host devices
  python bench/profile_compile.py --config configs/demo.py:attack=strong --devices 1
  python bench/profile_compile.py --reference_layers       # the layers before rsrnn_jax.models.fastops

For every program the suite compiles for the profile (``rsrnn_jax.robustness.plan.attack_specs``: each untargeted
attack × objective, the targeted attack, the check-3 attack, the Square attack, plus the clean logits), it
times ``lower()`` and ``compile()`` separately at the suite's batch shape, with JAX's persistent compilation cache
off, and reports the sum: the compile time a suite run of the profile pays before it attacks anything. Compile
time does depend on the machine's load: compare runs made under the same load (or interleave them).

``--reference_layers`` builds the model with ``nn.Conv`` / ``nn.max_pool`` and a fully unrolled glimpse scan
(``model.unroll = 0``, the CPU default before evaluation programs rolled the scan): the programs as they were
before this work, for a before → after comparison in one command each.
"""
from __future__ import annotations

import argparse
import sys
import time

import benchlib


def _use_reference_layers(config):
  import flax.linen as nn

  from rsrnn_jax.models import fastops, layers
  layers.conv = lambda features, kernel, **kw: nn.Conv(features, kernel, **kw)
  fastops.max_pool_2x2 = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))
  config.model.unroll = 0


def _programs(config, model):
  """(name, jitted fn) of every program the suite compiles for ``config.attack``'s profile; the first is the
  clean-logits program, whose output the others take."""
  from rsrnn_jax.robustness import plan, profiles, registry, sweep
  from rsrnn_jax.models import has_fixations, is_recurrent
  a = config.attack
  setup = sweep.Setup(attack_step=int(a.attack_step), eval_steps=profiles.eval_steps_of(config), norm=a.norm,
                      fixations=a.fixations, eot_samples=int(a.eot_samples))
  specs, targeted, conv, square = plan.attack_specs(config, is_recurrent(config.model), has_fixations(config.model))
  unique = {}
  for spec in [*specs.values(), targeted, conv, square]:
    if registry.get(spec.attack).prepare is None:
      unique.setdefault(spec, spec.name + (" (targeted)" if spec.targeted else ""))  # names don't count
  return [("clean_logits", sweep.clean_logits_fn(model, setup))] + [
      (name, sweep.make_attack_fn(model, spec, setup)) for spec, name in unique.items()]


def _timed_compile(fn, fn_args) -> tuple:
  tic = time.perf_counter()
  lowered = fn.lower(*fn_args)
  lower_s = time.perf_counter() - tic
  tic = time.perf_counter()
  compiled = lowered.compile()
  return compiled, {"lower_s": round(lower_s, 2), "compile_s": round(time.perf_counter() - tic, 2),
                    "hlo_instructions": sum(1 for line in compiled.as_text().splitlines() if " = " in line)}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", default="configs/demo.py")
  p.add_argument("--devices", type=int, default=2)
  p.add_argument("--batch", type=int, default=0, help="default: config.attack.batch_size")
  p.add_argument("--reference_layers", action="store_true", help="nn.Conv, nn.max_pool, full scan unroll")
  p.add_argument("--out", default="", help="also write the JSON here")
  args = p.parse_args(argv)
  benchlib.set_host_devices(args.devices)
  machine = benchlib.machine()
  import jax
  import jax.numpy as jnp
  import numpy as np
  jax.config.update("jax_enable_compilation_cache", False)

  from rsrnn_jax.train import parallel
  from rsrnn_jax.train import state as train_state
  config = benchlib.load_config(args.config)
  if args.reference_layers:
    _use_reference_layers(config)
  batch_size = args.batch or int(config.attack.batch_size)
  mesh = parallel.make_mesh(config.num_devices)
  model, state, batch = benchlib.random_setup(config, batch_size, mesh)
  extra = {"mask": np.ones(batch_size, np.float32), "target": np.zeros(batch_size, np.int32),
           "index": np.arange(batch_size, dtype=np.int32)}
  rows, key = [], jax.random.key(0)
  eps = jnp.float32(config.attack.epsilons[0])
  with jax.set_mesh(mesh):
    batch = {**batch, **parallel.shard_batch(extra, mesh)}
    variables = train_state.variables_of(state)
    clean = None
    for name, fn in _programs(config, model):
      fn_args = (variables, batch["image"], key) if clean is None else (variables, batch, clean, eps, key, key)
      compiled, row = _timed_compile(fn, fn_args)
      if clean is None:
        clean = compiled(*fn_args)
      rows.append({"program": name, **row})
      print(f"{name:24s} lower {row['lower_s']:6.1f} s  compile {row['compile_s']:6.1f} s  "
            f"{row['hlo_instructions']} instructions", file=sys.stderr, flush=True)
  total = {k: round(sum(r[k] for r in rows), 2) for k in ("lower_s", "compile_s")}
  print(f"total: lower {total['lower_s']} s, compile {total['compile_s']} s", file=sys.stderr)
  result = {"benchmark": "profile_compile", "config": args.config, "profile": config.attack.profile,
            "reference_layers": args.reference_layers, "devices": jax.device_count(), "batch": batch_size,
            "unroll": int(config.model.unroll), "programs": rows, "total": total,
            "machine": {**benchlib.machine(), **machine}}
  return benchlib.write(result, args.out) if args.out else result


if __name__ == "__main__":
  main()
