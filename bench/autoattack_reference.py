"""The project's ``attacks.autoattack`` against the AutoAttack authors' code, same models, same images.

A measuring instrument outside the project (like ../shared/torch_ref): the authors' code (PyPI ``pyautoattack``,
import name ``pyautoattack``) needs PyTorch, which the project never depends on. Make the side venv once:

  python3 -m venv /work/sidevenvs/aa
  /work/sidevenvs/aa/bin/pip install torch==2.13.0 pyautoattack==0.2.0 -r requirements.txt

and run from the repository root (JSON to --out and stdout; bench/README.md has the table, printed by
``python bench/autoattack_reference.py --table RESULT.json ...``):

  /work/sidevenvs/aa/bin/python bench/autoattack_reference.py --models rsrnn,ff_cnn,mlp --eps 0.02,0.03 \
      --examples 500 --iterations 100 --queries 5000

A JAX ``logits_fn`` is wrapped as a ``torch.nn.Module`` (:class:`JaxModule`): forward = the jitted JAX forward,
backward = its VJP (a ``torch.autograd.Function``), images NCHW on the torch side, NHWC on the JAX side; batches
are padded to powers of two so the authors' shrinking batches reuse a few compilations. Per model and ε it runs
the standard version (APGD-CE, APGD-T, FAB-T, Square) with robust flags on both sides, then each attack alone
(``--runs``), once per seed of ``--seeds`` (both sides' random starts), and reports the robust accuracy of each
(both sides' images re-scored by the same JAX model, ε-ball checked).

Models: ``rsrnn`` (--rsrnn_workdir, logits of step k = 4), ``ff_cnn`` (--ff_cnn_workdir) and ``mlp`` (a one
hidden-layer MLP trained here, --mlp_steps Adam steps on the training split; deterministic).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_compilation_cache_dir", os.environ.get("JAX_COMPILATION_CACHE_DIR", "/tmp/jax_cache_aa"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

STANDARD = ("apgd-ce", "apgd-t", "fab-t", "square")


class _Bridge(torch.autograd.Function):
  @staticmethod
  def forward(ctx, x, module):
    ctx.module = module
    ctx.save_for_backward(x)
    return torch.from_numpy(module.call("forward", x.detach().numpy()))

  @staticmethod
  def backward(ctx, grad):
    (x,) = ctx.saved_tensors
    return torch.from_numpy(ctx.module.call("backward", x.detach().numpy(), grad.detach().numpy())), None


class JaxModule(torch.nn.Module):
  """``logits_fn(images NHWC) -> [B, K]`` (JAX) as a torch module on NCHW tensors, differentiable."""

  def __init__(self, logits_fn):
    super().__init__()
    self.fns = {"forward": jax.jit(logits_fn),
                "backward": jax.jit(lambda x, ct: jax.vjp(logits_fn, x)[1](ct)[0])}

  def call(self, what, x, ct=None):
    n = x.shape[0]
    size = 1 << max(n - 1, 0).bit_length()  # pad to a power of two: few compilations
    pad = lambda a: np.concatenate([a, np.zeros((size - n,) + a.shape[1:], a.dtype)]) if size > n else a
    xj = pad(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
    out = self.fns[what](xj) if ct is None else self.fns[what](xj, pad(ct))
    out = np.asarray(out)[:n]
    return np.ascontiguousarray(out if what == "forward" else out.transpose(0, 3, 1, 2)).astype(np.float32)

  def forward(self, x):
    return _Bridge.apply(x, self)


# ----------------------------------------------------------------------------------------------------------
# models and data
# ----------------------------------------------------------------------------------------------------------

def test_images(n: int):
  from rsrnn_jax import data
  cfg = data.default_data_config()
  batches = data.eval_batches(cfg, global_batch_size=min(n, 500), max_examples=n)
  xs, ys = zip(*[(b["image"][b["mask"] > 0], b["label"][b["mask"] > 0]) for b in batches])
  return np.concatenate(xs)[:n].astype(np.float32), np.concatenate(ys)[:n].astype(np.int32)


def checkpoint_logits_fn(workdir: str, attack_step: int):
  import rsrnn_jax
  from rsrnn_jax.attacks import objectives
  m = rsrnn_jax.load(workdir)
  return objectives.model_logits_fn(m.model, m.variables, horizon="step", attack_step=attack_step), m.step


def trained_mlp(steps: int, hidden: int = 256, seed: int = 0):
  """A one-hidden-layer MLP on the flattened canvases, ``steps`` Adam steps of batch 128 (deterministic)."""
  import optax
  from rsrnn_jax import data
  cfg = data.default_data_config()
  it = data.train_batches(cfg, global_batch_size=128, seed=seed)
  first = next(it)
  d, k = int(np.prod(first["image"].shape[1:])), data.dataset_info(cfg).num_classes
  k1, k2 = jax.random.split(jax.random.key(seed))
  params = {"w1": jax.random.normal(k1, (d, hidden)) / np.sqrt(d), "b1": jnp.zeros(hidden),
            "w2": jax.random.normal(k2, (hidden, k)) / np.sqrt(hidden), "b2": jnp.zeros(k)}

  def apply(p, x):
    return jax.nn.relu(x.reshape(x.shape[0], -1) @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]

  opt = optax.adam(1e-3)
  state = opt.init(params)

  @jax.jit
  def step(p, s, x, y):
    loss, g = jax.value_and_grad(lambda q: optax.softmax_cross_entropy_with_integer_labels(apply(q, x), y).mean())(p)
    u, s = opt.update(g, s)
    return optax.apply_updates(p, u), s, loss

  batch = first
  for i in range(steps):
    params, state, _ = step(params, state, data.unit_float(batch["image"]), batch["label"])  # uint8 batches
    batch = next(it)
  return lambda x: apply(params, x)


def load_model(name, args):
  if name == "rsrnn":
    fn, step = checkpoint_logits_fn(args.rsrnn_workdir, 4)
    return fn, f"RS-RNN {args.rsrnn_workdir} (checkpoint step {step}), logits of step k = 4"
  if name == "ff_cnn":
    fn, step = checkpoint_logits_fn(args.ff_cnn_workdir, 1)
    return fn, f"FF-CNN {args.ff_cnn_workdir} (checkpoint step {step})"
  if name == "mlp":
    return trained_mlp(args.mlp_steps), f"MLP 9216-256-10 (ReLU), {args.mlp_steps} Adam steps of batch 128, seed 0"
  raise ValueError(f"unknown model {name!r}; choose rsrnn, ff_cnn, mlp")


# ----------------------------------------------------------------------------------------------------------
# the two sides
# ----------------------------------------------------------------------------------------------------------

def authors_autoattack(module, eps, attacks, args, seed):
  """The authors' AutoAttack, standard version's parameters, cut to ``attacks`` and the budget."""
  from pyautoattack import AutoAttack
  aa = AutoAttack(module, norm="Linf", eps=eps, version="standard", seed=seed, device="cpu")
  aa.attacks_to_run = list(attacks)
  aa.verbose = False
  for apgd in (aa.apgd, aa.apgd_targeted):
    apgd.n_iter = args.iterations
    apgd.n_iter_2, apgd.n_iter_min = max(int(0.22 * args.iterations), 1), max(int(0.06 * args.iterations), 1)
    apgd.size_decr = max(int(0.03 * args.iterations), 1)
  aa.fab.n_iter, aa.square.n_queries = args.iterations, args.queries
  return aa


def run_authors(logits_fn, module, x, y, eps, attacks, args, seed):
  aa = authors_autoattack(module, eps, attacks, args, seed)
  start = time.perf_counter()
  xt, yt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(y.astype(np.int64))
  x_adv, _ = aa.run_standard_evaluation(xt, yt, batch_size=args.batch_size)
  seconds = time.perf_counter() - start
  return np.ascontiguousarray(x_adv.numpy().transpose(0, 2, 3, 1)), seconds


def run_ours(logits_fn, x, y, eps, attacks, args, seed):
  from rsrnn_jax import attacks as A
  start = time.perf_counter()
  res = A.autoattack(logits_fn, x, y, eps=eps, rng=jax.random.key(seed), batch_size=args.batch_size,
                     attacks=attacks, iterations=args.iterations, queries=args.queries)
  return res.images, time.perf_counter() - start


def rescore(logits_fn, x, y, adv, eps, batch=250):
  """Robust accuracy of ``adv`` by the JAX model, the largest L∞ distance (must be ≤ ε), and how many changed
  images this forward pass still classifies correctly (both sides keep an image only for an example their own
  forward pass judged broken: these are decision-boundary ties between two forward programs)."""
  fn = jax.jit(logits_fn)
  pred = np.concatenate([np.asarray(jnp.argmax(fn(adv[i:i + batch]), -1)) for i in range(0, len(x), batch)])
  changed = np.any((adv != x).reshape(len(x), -1), axis=1)
  return float(np.mean(pred == y)), float(np.abs(adv - x).max()), int(np.sum(changed & (pred == y)))


def compare(name, logits_fn, x, y, eps, args, seed):
  module = JaxModule(logits_fn)
  rows = []
  for label in args.runs:
    attacks = STANDARD if label == "standard" else (label,)
    row = {"model": name, "eps": eps, "attacks": label, "seed": seed}
    for side, run in (("ours", lambda: run_ours(logits_fn, x, y, eps, attacks, args, seed)),
                      ("authors", lambda: run_authors(logits_fn, module, x, y, eps, attacks, args, seed))):
      adv, seconds = run()
      acc, dist, ties = rescore(logits_fn, x, y, adv, eps)
      if dist > eps + 1e-5:
        raise SystemExit(f"{side} {label}: an image {dist:.6f} from its original, beyond ε = {eps}")
      row[side] = {"robust_acc": acc, "seconds": round(seconds, 1), "changed_but_correct": ties}
    row["diff_points"] = round(100 * (row["ours"]["robust_acc"] - row["authors"]["robust_acc"]), 2)
    print(json.dumps(row), flush=True)
    rows.append(row)
  return rows


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--models", default="rsrnn,ff_cnn,mlp")
  p.add_argument("--eps", default="0.02,0.03", help="ε grid (L∞), for every model without its own")
  p.add_argument("--model_eps", default="", help="per-model ε grids, e.g. mlp=0.005+0.01;ff_cnn=0.01+0.02")
  p.add_argument("--examples", type=int, default=500, help="the first N test images")
  p.add_argument("--iterations", type=int, default=100, help="per APGD / FAB run (AutoAttack: 100)")
  p.add_argument("--queries", type=int, default=5000, help="Square's budget (AutoAttack: 5000)")
  p.add_argument("--batch_size", type=int, default=250)
  p.add_argument("--runs", default=",".join(("standard",) + STANDARD),
                 help="what to compare, in order: 'standard' (the four with robust flags) and attacks alone")
  p.add_argument("--seeds", default="0", help="seeds of both sides' random starts (comma-separated): each run "
                 "once per seed")
  p.add_argument("--rsrnn_workdir", default="workdirs/demo")
  p.add_argument("--ff_cnn_workdir", default="workdirs/ffcnn")
  p.add_argument("--mlp_steps", type=int, default=1500)
  p.add_argument("--out", default="bench/results/autoattack_reference.json")
  args = p.parse_args(argv)
  args.runs = [a for a in args.runs.split(",") if a]
  bad = [a for a in args.runs if a not in ("standard",) + STANDARD]
  if bad or not args.runs:
    p.error(f"--runs: choose from standard, {', '.join(STANDARD)}; got {args.runs}")
  args.seeds = [int(s) for s in args.seeds.split(",") if s]
  own = dict(item.split("=") for item in args.model_eps.split(";") if item)
  args.eps_of = lambda name: [float(e) for e in (own[name].split("+") if name in own else args.eps.split(","))]
  return args


def _cell(values):
  """Robust accuracy (%) of one side: the value, or mean [min, max] over seeds."""
  v = [100 * a for a in values]
  return f"{v[0]:.1f}" if len(v) == 1 else f"{np.mean(v):.1f} [{min(v):.1f}, {max(v):.1f}]"


def markdown(paths) -> str:
  """The comparison table (robust accuracy %, ours / the authors', Δ in points) of one or more result JSONs; rows
  run with several seeds are merged into one (mean [min, max]; Δ of the means; times summed)."""
  lines = ["| model | ε | images | iterations / queries | attacks | seeds | ours | authors' | Δ (points) | "
           "time ours / authors' (s) |", "|---|---|---|---|---|---|---|---|---|---|"]
  for path in paths:
    res = json.load(open(path))
    groups = {}
    for r in res["rows"]:
      groups.setdefault((r["model"], r["eps"], r["attacks"]), []).append(r)
    for (model, eps, attacks), rows in groups.items():
      ours, theirs = ([r[side]["robust_acc"] for r in rows] for side in ("ours", "authors"))
      time_ = lambda side: sum(r[side]["seconds"] for r in rows)
      lines.append(f"| {model} | {eps:g} | {res['examples']} | {res['iterations']} / {res['queries']} | {attacks} | "
                   f"{len(rows)} | {_cell(ours)} | {_cell(theirs)} | {100 * (np.mean(ours) - np.mean(theirs)):+.1f} | "
                   f"{time_('ours'):.0f} / {time_('authors'):.0f} |")
  return "\n".join(lines)


def main(argv=None):
  if argv is None and sys.argv[1:2] == ["--table"]:
    print(markdown(sys.argv[2:]))
    return
  args = parse_args(argv)
  torch.set_num_threads(os.cpu_count() or 1)
  x, y = test_images(args.examples)
  out = {"command": "python bench/autoattack_reference.py " + " ".join(sys.argv[1:]), "examples": len(x),
         "iterations": args.iterations, "queries": args.queries, "batch_size": args.batch_size,
         "loadavg_start": os.getloadavg(), "models": {}, "rows": []}
  for name in args.models.split(","):
    logits_fn, description = load_model(name, args)
    out["models"][name] = {"description": description, "clean_acc": rescore(logits_fn, x, y, x, 1.0)[0]}
    for eps in args.eps_of(name):
      for seed in args.seeds:
        out["rows"] += compare(name, logits_fn, x, y, eps, args, seed)
      out["loadavg_end"] = os.getloadavg()
      os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
      with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
  print(json.dumps(out, indent=1))


if __name__ == "__main__":
  main()
