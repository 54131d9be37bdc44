"""PGD throughput through the unrolled glimpse steps: images × iterations per second.

  python bench/attack_throughput.py [--config=configs/demo.py] [--steps=4,16,24] [--batch_size=100]
      [--iterations=5] [--repeats=5] [--devices=2] [--workdir=WORKDIR] [--remat] [--quick] [--out=FILE]

For each number of steps T, the attacked model is unrolled T steps and PGD (the config's profile: loss, restarts,
fixations/EOT; ``--iterations`` iterations) runs on the logits of step T, data-parallel over ``--devices`` host
devices (the batch is sharded over the mesh's ``data`` axis, as in ``--mode=attack``). The compile time is
measured separately (``lower().compile()``), then one warm-up call, then ``--repeats`` timed calls, each ended
by ``block_until_ready``; the median is reported. PGD runs its iterations in a rolled loop and the model its
glimpse steps in a rolled scan (the defaults: as fast as unrolled with the layers of rsrnn_jax.models.fastops,
and the compile time does not grow with T; docs/performance.md). Parameters: random init of the config's
model, or the latest checkpoint of ``--workdir`` (speed does not depend on the weights, except through the
fixations chosen). JSON goes to stdout and to ``--out`` (default bench/results/attack_throughput.json); it
records the load average before and after, since other processes on the machine slow every number down.
"""
import argparse
import sys

import benchlib


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", default="configs/demo.py",
                 help="config file[:arg] relative to the repository, e.g. configs/demo.py:attack=strong")
  p.add_argument("--steps", default="4,16,24", help="comma-separated unroll lengths T (attack on step T)")
  p.add_argument("--batch_size", type=int, default=100)
  p.add_argument("--iterations", type=int, default=5, help="PGD iterations per call")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--devices", type=int, default=2, help="host devices (sets XLA_FLAGS before jax starts)")
  p.add_argument("--workdir", default="", help="use the latest checkpoint of this workdir instead of random init")
  p.add_argument("--unroll", type=int, default=None,
                 help="override config.model.unroll (-1 auto = a rolled glimpse scan for attacks, 0 full, n per trip)")
  p.add_argument("--remat", action="store_true", help="config.model.remat = True")
  p.add_argument("--quick", action="store_true", help="smoke test: batch 8, 2 iterations, 2 repeats, T = 4, 16")
  p.add_argument("--out", default=None, help="default bench/results/attack_throughput[_quick].json")
  return p.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  if args.quick:
    args.batch_size, args.iterations, args.repeats, args.steps = 8, 2, 2, "4,16"
  machine = benchlib.machine()  # load average before JAX starts
  benchlib.set_host_devices(args.devices)
  import jax
  import jax.numpy as jnp

  from rsrnn_jax.train import parallel
  from rsrnn_jax.train import state as train_state

  config = benchlib.load_config(args.config)
  if args.unroll is not None:
    config.model.unroll = args.unroll
  config.model.remat = bool(args.remat or config.model.remat)
  a = config.attack
  mesh = parallel.make_mesh(config.num_devices)
  parallel.local_batch_size(args.batch_size, mesh)
  model, state, batch = benchlib.random_setup(config, args.batch_size, mesh)
  image_shape = benchlib.image_shape_and_classes(config)[0]
  if args.workdir:
    from rsrnn_jax.evaluation import clean as evaluate
    model, state, _, mesh = evaluate.load_model(config, args.workdir)
  variables = train_state.variables_of(state)
  eps = jnp.asarray(float(a.epsilons[0]), jnp.float32)
  results = []
  with jax.set_mesh(mesh):
    for steps in [int(s) for s in args.steps.split(",") if s]:
      attack, runs = benchlib.pgd_fn(config, model, steps, args.iterations)
      t = benchlib.time_compiled(jax.jit(attack), (variables, batch["image"], batch["label"], eps,
                                                   jax.random.key(1)), warmup=1, repeats=args.repeats)
      t.pop("compiled")
      row = {"steps": steps, **t,
             "images_x_iterations_per_s": round(args.batch_size * args.iterations * runs / t["median_s"], 2),
             "images_per_s": round(args.batch_size / t["median_s"], 2)}
      results.append(row)
      print(f"T={steps}: {row['images_x_iterations_per_s']} image-iterations/s (compile {t['compile_s']:.1f} s)",
            file=sys.stderr)

  out = {"benchmark": "attack_throughput", "quick": args.quick, "config": args.config, "model": config.model.name,
         "image_shape": list(image_shape), "devices": jax.device_count(), "batch_size": args.batch_size,
         "iterations": args.iterations, "restarts": int(a.num_restarts), "losses": list(a.losses),
         "fixations": a.fixations, "eot_samples": int(a.eot_samples) if a.fixations == "sample" else 1,
         "unroll": int(config.model.unroll), "remat": bool(config.model.remat),
         "params": "checkpoint " + args.workdir if args.workdir else "random init", "repeats": args.repeats,
         "machine": {**benchlib.machine(), **machine}, "results": results}
  return benchlib.write(out, args.out if args.out is not None else benchlib.default_out("attack_throughput",
                                                                                         args.quick))


if __name__ == "__main__":
  main()
