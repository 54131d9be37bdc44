"""Glimpse sampler cost: retina and crop, forward and forward+backward, vs image size and glimpse size.

  python bench/sampler.py            # images 96/224/336, glimpses 16/32/64, batch 64; share of the demo train step
  python bench/sampler.py --quick    # smoke run: images 96/224, glimpses 16/32, batch 8

Each row times ``sampler.glimpses(images, fixations)`` (``fwd``) and the gradient of its sum w.r.t. the images
and fixations (``fwd+bwd``: what training and the attacks pay), one host device, jitted, compile timed apart,
median of ``--repeats`` after a warm-up. ``share_of_train_step``: the train step of configs/demo.py (the model's
own sampler at its shapes) is timed, then the sampler's fwd+bwd at those shapes × the number of glimpses, divided
by the step time: an estimate (separately jitted pieces; XLA fuses differently inside the step).
JSON → bench/results/sampler.json.
"""
from __future__ import annotations

import argparse

import benchlib

benchlib.set_host_devices(1)


def _time_sampler(sampler, image_size: int, batch: int, channels: int, repeats: int) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.uniform(0, 1, (batch, image_size, image_size, channels)), jnp.float32)
  fix = jnp.asarray(rng.uniform(-0.9, 0.9, (batch, 2)), jnp.float32)

  def fwd(x, f):
    return sampler.glimpses(x, f)

  def loss(x, f):
    return sum(jnp.sum(g) for g in sampler.glimpses(x, f))

  out = {}
  for name, fn in (("fwd", fwd), ("fwd+bwd", jax.grad(loss, argnums=(0, 1)))):
    t = benchlib.time_compiled(jax.jit(fn), (images, fix), warmup=1, repeats=repeats)
    t.pop("compiled")
    out[name] = {k: t[k] for k in ("compile_s", "median_s")}
  return out


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--image_sizes", default="96,224,336")
  p.add_argument("--out_sizes", default="16,32,64")
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--channels", type=int, default=3)
  p.add_argument("--repeats", type=int, default=7)
  p.add_argument("--quick", action="store_true", help="smoke test: images 96,224, glimpses 16,32, batch 8")
  p.add_argument("--out", default=None, help="default bench/results/sampler[_quick].json")
  args = p.parse_args(argv)
  if args.quick:
    args.image_sizes, args.out_sizes, args.batch, args.repeats = "96,224", "16,32", 8, 3
  machine = benchlib.machine()  # the load average before the run
  import jax

  from rsrnn_jax.train import parallel
  from rsrnn_jax.train import step as train_step
  from rsrnn_jax.models.samplers import CropSampler, RetinaSampler

  rows = []
  for image_size in [int(s) for s in args.image_sizes.split(",")]:
    for out_size in [int(s) for s in args.out_sizes.split(",")]:
      for sampler in (RetinaSampler(out_size, 10.0), CropSampler(out_size, (0.25,))):
        row = {"sampler": type(sampler).__name__, "image": image_size, "glimpse": out_size, "batch": args.batch,
               "channels": args.channels, **_time_sampler(sampler, image_size, args.batch, args.channels,
                                                          args.repeats)}
        row["glimpses_per_s_fwd+bwd"] = round(args.batch / row["fwd+bwd"]["median_s"], 1)
        rows.append(row)
        print(row, flush=True)

  # Share of the demo train step.
  c = benchlib.load_config("configs/demo.py")
  c.train.batch_size = args.batch
  mesh = parallel.make_mesh(1)
  _, state, batch = benchlib.random_setup(c, args.batch, mesh)
  with jax.set_mesh(mesh):
    step = benchlib.time_compiled(train_step.make_train_step(c, mesh), (state, batch, jax.random.key(1)),
                                  warmup=1, repeats=args.repeats, next_args=lambda out, a: (out[0], *a[1:]))
  step.pop("compiled")
  s = c.model.sampler
  demo_sampler = RetinaSampler(int(s.out_size), float(s.density_ratio))
  shape, _ = benchlib.image_shape_and_classes(c)
  samp = _time_sampler(demo_sampler, shape[0], args.batch, shape[2], args.repeats)
  glimpses = int(c.train.num_glimpses)
  share = {"train_step_s": step["median_s"], "train_step_compile_s": step["compile_s"],
           "sampler_fwd+bwd_s": samp["fwd+bwd"]["median_s"], "glimpses": glimpses,
           "image": shape[0], "glimpse": int(s.out_size), "batch": args.batch,
           "share_of_train_step": round(glimpses * samp["fwd+bwd"]["median_s"] / step["median_s"], 4)}
  result = {"benchmark": "sampler", "quick": args.quick, "machine": {**benchlib.machine(), **machine}, "rows": rows,
            "demo_train_step": share}
  return benchlib.write(result, args.out if args.out is not None else benchlib.default_out("sampler", args.quick))


if __name__ == "__main__":
  main()
