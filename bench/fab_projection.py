"""FAB's projection onto a hyperplane ∩ box (rsrnn_jax/attacks/fab.py, ``project_hyperplane``) against a sort
of the same rows, at the image sizes the reproduction attacks.

  python bench/fab_projection.py [--sizes 96x96x1,168x168x1,224x224x3] [--rows 100] [--repeats 5] [--quick]

Each FAB iteration projects 2 × batch rows (from the current point and from the image); the reproduction's
cascade runs batches of 50, so 100 rows. Until the bisection (docs/attacks.md § FAB's projection) the projection
sorted every row's breakpoints; ``argsort`` here is that sort alone, a lower bound of the old projection's
time. One device: the arrays are not sharded (the cascade shards its rows over the mesh). JSON to stdout and
``--out`` (default bench/results/fab_projection.json), with the load average before and after.
"""
import argparse
import importlib

import benchlib


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--sizes", default="96x96x1,168x168x1,224x224x3", help="image shapes HxWxC, comma-separated")
  p.add_argument("--rows", type=int, default=100, help="rows projected at once (2 × the attack batch)")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--quick", action="store_true", help="smoke test: 16 rows of 32x32x1, 2 repeats")
  p.add_argument("--out", default=None, help="default bench/results/fab_projection[_quick].json")
  return p.parse_args(argv)


def measure(shape, rows: int, repeats: int, norm: str) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np
  fab = importlib.import_module("rsrnn_jax.attacks.fab")  # the module (the package exports the function fab)
  d = int(np.prod(shape))
  rng = np.random.default_rng(0)
  t = jnp.asarray(rng.integers(0, 256, (rows, d)) / 255.0, jnp.float32)  # 8-bit pixels: many tied rooms
  w = jnp.asarray(rng.normal(size=(rows, d)), jnp.float32)
  b = jnp.sum(w * t, -1) - jnp.asarray(rng.uniform(0.1, 2.0, rows), jnp.float32)
  project = jax.jit(lambda t, w, b: fab.project_hyperplane(t, w, b, norm=norm))
  sort = jax.jit(lambda t: jnp.argsort(t, axis=-1))
  out = {"shape": list(shape), "rows": rows, "norm": norm}
  for name, fn, args in (("project_hyperplane", project, (t, w, b)), ("argsort", sort, (t,))):
    r = benchlib.time_compiled(fn, args, warmup=1, repeats=repeats)
    out[name] = {k: r[k] for k in ("compile_s", "median_s", "times_s")}
  out["sort_over_projection"] = round(out["argsort"]["median_s"] / out["project_hyperplane"]["median_s"], 2)
  return out


def main(argv=None):
  args = parse_args(argv)
  sizes = ["32x32x1"] if args.quick else args.sizes.split(",")
  rows, repeats = (16, 2) if args.quick else (args.rows, args.repeats)
  result = {"bench": "fab_projection", "machine": benchlib.machine(), "results": []}
  for size in sizes:
    shape = tuple(int(v) for v in size.split("x"))
    for norm in ("linf", "l2"):
      result["results"].append(measure(shape, rows, repeats, norm))
  benchlib.write(result, args.out or benchlib.default_out("fab_projection", args.quick))


if __name__ == "__main__":
  main()
