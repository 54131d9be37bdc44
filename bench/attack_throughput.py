"""PGD throughput through the unrolled glimpse steps: images × iterations per second.

  python bench/attack_throughput.py [--config=configs/demo.py] [--steps=4,16,24] [--batch_size=100]
      [--iterations=5] [--repeats=5] [--devices=2] [--workdir=WORKDIR] [--out=bench/attack_throughput.json]

For each number of steps T, the attacked model is unrolled T steps and PGD (the config's profile: loss, restarts,
fixations/EOT; ``--iterations`` iterations) runs on the logits of step T, data-parallel over ``--devices`` host
devices (the batch is sharded over the mesh's ``data`` axis, as in ``--mode=attack``). The compile time is
measured separately (``lower().compile()``), then one warm-up call, then ``--repeats`` timed calls, each ended
by ``block_until_ready``; the median is reported. Parameters: random init of the config's model, or the latest
checkpoint of ``--workdir`` (speed does not depend on the weights, except through the fixations chosen).
JSON goes to stdout and to ``--out``; it records the 1-minute load average before and after, since other
processes on the machine slow every number down.
"""
import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", default=os.path.join(REPO, "configs", "demo.py"),
                 help="config file[:arg], e.g. configs/demo.py:attack=strong")
  p.add_argument("--steps", default="4,16,24", help="comma-separated unroll lengths T (attack on step T)")
  p.add_argument("--batch_size", type=int, default=100)
  p.add_argument("--iterations", type=int, default=5, help="PGD iterations per call")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--devices", type=int, default=2, help="host devices (sets XLA_FLAGS before jax starts)")
  p.add_argument("--workdir", default="", help="use the latest checkpoint of this workdir instead of random init")
  p.add_argument("--unroll", type=int, default=None, help="override config.model.unroll (-1 full, 1 rolled)")
  p.add_argument("--out", default=os.path.join(REPO, "bench", "attack_throughput.json"))
  return p.parse_args(argv)


def load_config(spec: str):
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("bench_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def main(argv=None):
  args = parse_args(argv)
  load_before = os.getloadavg()[0]
  if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={args.devices}").strip()
  sys.path.insert(0, REPO)
  import jax
  import jax.numpy as jnp
  import numpy as np

  from rsrnn_jax import parallel, robustness as R, train

  config = load_config(args.config)
  if args.unroll is not None:
    config.model.unroll = args.unroll
  a = config.attack
  mesh = parallel.make_mesh(config.num_devices)
  parallel.local_batch_size(args.batch_size, mesh)
  if args.workdir:
    from rsrnn_jax import evaluate
    model, state, info, mesh = evaluate.load_model(config, args.workdir)
    image_shape, num_classes = info.image_shape, info.num_classes
  else:
    from rsrnn_jax import data
    size = int(config.data.canvas_size if config.data.name == "cluttered_fashion_mnist" else config.data.image_size)
    channels = 1 if config.data.name == "cluttered_fashion_mnist" else 3
    image_shape, num_classes = (size, size, channels), 10 if channels == 1 else 100
    info = data.DatasetInfo(config.data.name, num_classes, image_shape, 0, 0, ())
    model, _ = train.model_from_config(config, info)
    with jax.set_mesh(mesh):
      state = train.replicated_state(model, config, image_shape, jax.random.key(0), mesh)
  variables = train.variables_of(state)

  rng = np.random.default_rng(0)
  batch = parallel.shard_batch({"image": rng.uniform(0, 1, (args.batch_size, *image_shape)).astype(np.float32),
                                "label": rng.integers(0, num_classes, args.batch_size).astype(np.int32)}, mesh)
  spec = R.AttackSpec("pgd_step", losses=tuple(a.losses), num_iterations=args.iterations,
                      num_restarts=int(a.num_restarts), step_size=float(a.step_size),
                      random_start=bool(a.random_start))
  eps = jnp.asarray(float(a.epsilons[0]), jnp.float32)
  results = []
  with jax.set_mesh(mesh):
    for steps in [int(s) for s in args.steps.split(",") if s]:
      def attack(v, x, y, e, key, steps=steps):
        k_attack, k_eot = jax.random.split(key)
        fn = R.model_logits_fn(model, v, horizon="step", attack_step=steps, fixations=a.fixations,
                               eot_samples=int(a.eot_samples), rng=k_eot)
        return R.run_attack(spec, fn, x, y, eps=e, rng=k_attack, norm=a.norm)

      jitted = jax.jit(attack)
      call_args = (variables, batch["image"], batch["label"], eps, jax.random.key(1))
      tic = time.perf_counter()
      compiled = jitted.lower(*call_args).compile()
      compile_s = time.perf_counter() - tic
      jax.block_until_ready(compiled(*call_args))  # warm-up
      times = []
      for r in range(args.repeats):
        tic = time.perf_counter()
        jax.block_until_ready(compiled(variables, batch["image"], batch["label"], eps, jax.random.key(2 + r)))
        times.append(time.perf_counter() - tic)
      med = statistics.median(times)
      runs = len(spec.losses) * spec.num_restarts
      row = {"steps": steps, "compile_s": round(compile_s, 3), "median_s": round(med, 4),
             "times_s": [round(t, 4) for t in times],
             "images_x_iterations_per_s": round(args.batch_size * args.iterations * runs / med, 2),
             "images_per_s": round(args.batch_size / med, 2)}
      results.append(row)
      print(f"T={steps}: {row['images_x_iterations_per_s']} image-iterations/s (compile {compile_s:.1f} s)",
            file=sys.stderr)

  out = {"benchmark": "attack_throughput", "config": args.config, "model": config.model.name,
         "image_shape": list(image_shape), "devices": jax.device_count(), "batch_size": args.batch_size,
         "iterations": args.iterations, "restarts": int(a.num_restarts), "losses": list(a.losses),
         "fixations": a.fixations, "eot_samples": int(a.eot_samples) if a.fixations == "sample" else 1,
         "unroll": int(config.model.unroll), "params": "checkpoint " + args.workdir if args.workdir else "random init",
         "backend": jax.default_backend(), "cpu_count": os.cpu_count(), "machine": platform.machine(),
         "jax": jax.__version__, "repeats": args.repeats,
         "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
         "results": results}
  text = json.dumps(out, indent=1)
  print(text)
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      f.write(text + "\n")
  return out


if __name__ == "__main__":
  main()
