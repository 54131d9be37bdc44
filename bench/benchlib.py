"""Shared by the bench scripts: host devices, timing as JAX measures it, model setup, machine record, JSON out.

Timing protocol (:func:`time_compiled`): ``lower().compile()`` timed on its own, ``warmup`` calls, then
``repeats`` calls each ended by ``block_until_ready``; the median is the number reported, every time is kept.
Nothing here imports JAX at module import: :func:`set_host_devices` must run before JAX starts.
"""
from __future__ import annotations

import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "bench", "results")
if REPO not in sys.path:
  sys.path.insert(0, REPO)


def set_host_devices(n: int) -> None:
  """Splits the CPU into ``n`` XLA host devices (must run before JAX is imported); keeps other XLA flags."""
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
  os.environ["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={n}"])
  os.environ.setdefault("JAX_PLATFORMS", "cpu")


def load_config(spec: str):
  """``configs/demo.py[:arg]`` → the config its ``get_config`` returns."""
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("bench_config", os.path.join(REPO, path))
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def image_shape_and_classes(config):
  """Input shape and class count of ``config.data`` without reading the data set (the dataset registry)."""
  from rsrnn_jax.data import registry
  return registry.image_shape(config.data), registry.num_classes(config.data)


def random_setup(config, batch_size: int, mesh, seed: int = 0):
  """(model, replicated TrainState, sharded random batch) for ``config`` at ``batch_size``."""
  import jax
  import numpy as np

  from rsrnn_jax import data
  from rsrnn_jax.train import parallel
  from rsrnn_jax.train import state as train_state
  shape, classes = image_shape_and_classes(config)
  info = data.DatasetInfo(config.data.name, classes, shape, 0, 0, ())
  model, _ = train_state.model_from_config(config, info)
  rng = np.random.default_rng(seed)
  batch = {"image": rng.uniform(0, 1, (batch_size, *shape)).astype(np.float32),
           "label": rng.integers(0, classes, batch_size).astype(np.int32)}
  with jax.set_mesh(mesh):
    state = train_state.replicated_state(model, config, shape, jax.random.key(seed), mesh)
    return model, state, parallel.shard_batch(batch, mesh)


def pgd_fn(config, model, steps: int, iterations: int):
  """``attack(variables, images, labels, eps, key)``: the config's PGD on the logits of step ``steps``."""
  import jax

  from rsrnn_jax.robustness import registry, sweep
  a = config.attack
  spec = sweep.spec_from_profile("pgd", a).replace("pgd_step", num_iterations=iterations)
  setup = sweep.Setup(attack_step=steps, eval_steps=steps, norm=a.norm, fixations=a.fixations,
                      eot_samples=int(a.eot_samples))

  def attack(variables, images, labels, eps, key):
    k_attack, k_eot = jax.random.split(key)
    victim = registry.Victim(model, variables, "step", setup, k_eot)
    return sweep.run_attack(spec, victim, images, labels, eps=eps, rng=k_attack, norm=a.norm)

  return attack, len(spec.opts["losses"]) * spec.opts["num_restarts"]


def time_compiled(jitted, args, *, warmup: int = 1, repeats: int = 5, next_args=None) -> dict:
  """Compile time, then the median of ``repeats`` timed calls after ``warmup`` calls.

  ``next_args(out, args)`` gives the next call's arguments (e.g. the new train state); default: the same.
  """
  import jax
  tic = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  compile_s = time.perf_counter() - tic
  advance = next_args or (lambda out, a: a)
  for _ in range(warmup):
    out = jax.block_until_ready(compiled(*args))
    args = advance(out, args)
  times = []
  for _ in range(repeats):
    tic = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - tic)
    args = advance(out, args)
  return {"compile_s": round(compile_s, 3), "median_s": round(statistics.median(times), 5),
          "times_s": [round(t, 5) for t in times], "compiled": compiled}


def machine() -> dict:
  """Where the numbers come from, including the load average (other processes slow every number down)."""
  info = {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(),
          "python": platform.python_version(), "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()]}
  if "jax" in sys.modules:
    jax = sys.modules["jax"]
    info.update(jax=jax.__version__, backend=jax.default_backend(), devices=jax.device_count())
  return info


def run_child(script: str, args: list[str], devices: int) -> list[dict]:
  """Runs ``script --_child args`` with ``devices`` host devices; returns the JSON list on its last stdout line."""
  env = {**os.environ}
  flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
  env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
  env.setdefault("JAX_PLATFORMS", "cpu")
  out = subprocess.run([sys.executable, script, "--_child", *args], env=env, check=True,
                       stdout=subprocess.PIPE, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def write(result: dict, out: str) -> dict:
  """Adds the end-of-run machine record, prints the JSON and writes it to ``out`` (if given)."""
  result.setdefault("machine", {})
  result["machine"]["load_average_1_5_15_at_end"] = [round(x, 2) for x in os.getloadavg()]
  text = json.dumps(result, indent=1)
  print(text)
  if out:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
      f.write(text + "\n")
  return result


def default_out(name: str, quick: bool) -> str:
  return os.path.join(RESULTS, f"{name}{'_quick' if quick else ''}.json")
