"""Speed of ``attacks.autoattack`` against the AutoAttack authors' code on the demo RS-RNN, in one interleaved run.

Three ways of running the same attack on the same images, round after round (``--rounds``):

* ``ours``: ``attacks.autoattack`` (JAX) on the demo checkpoint's step-k logits;
* ``authors_bridged``: the authors' AutoAttack (``pyautoattack``) on the same JAX model wrapped as a torch module
  (bench/autoattack_reference.py's ``JaxModule``: forward = jitted JAX, backward = its VJP);
* ``authors_native``: the authors' AutoAttack on the eager PyTorch mirror of the demo RS-RNN
  (../shared/torch_ref/rsrnn_torch.py, an instrument outside the project, set to configs/demo.py's shapes; random
  weights: speed does not depend on them).

The attack is APGD-CE alone (``--attacks``), with each side's labels set to its model's own clean predictions, so
every image is attacked for every iteration on every side (the robust flags then leave the same work, whatever
the weights). The first call of each side includes its compilation (JAX) and is reported apart; the median of
the later rounds is the speed. Side venv and command as in bench/autoattack_reference.py:

  /work/sidevenvs/aa/bin/python bench/autoattack_speed.py --examples 100 --iterations 20 --rounds 3

The JSON records the load average (os.getloadavg()) before and after: other processes slow every number down.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import autoattack_reference as ref  # noqa: E402  (sets up JAX and the bridge)

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

MIRROR = dict(image_size=96, in_channels=1, pixel_mean=0.05, pixel_std=0.19, retina_size=32, density_ratio=10.0,
              enc1_widths=(16, 32, 64), enc1_pool=(True, True, True), convs_per_block=1, norm="none",
              gru_channels=64, gru_groups=32, enc2_widths=(64,), sal_size=8, sal_hidden=32, ior_size=24, steps=4)


class StepK(torch.nn.Module):
  """The mirror's logits of step k (its forward returns every step's)."""

  def __init__(self, net, k):
    super().__init__()
    self.net, self.k = net.eval(), k

  def forward(self, x):
    return self.net(x, steps=self.k)["logits"][self.k - 1]


def mirror(torch_ref: str):
  sys.path.insert(0, torch_ref)
  import rsrnn_torch
  torch.manual_seed(0)
  return StepK(rsrnn_torch.build_model(rsrnn_torch.ModelConfig(**MIRROR)), 4)


def own_labels(predict, x, batch=100):
  return np.concatenate([predict(x[i:i + batch]) for i in range(0, len(x), batch)]).astype(np.int32)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--examples", type=int, default=100)
  p.add_argument("--iterations", type=int, default=20)
  p.add_argument("--queries", type=int, default=300)
  p.add_argument("--attacks", default="apgd-ce")
  p.add_argument("--eps", type=float, default=0.03)
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--rsrnn_workdir", default="workdirs/demo")
  p.add_argument("--torch_ref", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                                      "shared", "torch_ref"))
  p.add_argument("--out", default="bench/results/autoattack_speed.json")
  args = p.parse_args(argv)
  args.batch_size, args.seed = args.examples, 0
  attacks = tuple(args.attacks.split(","))
  torch.set_num_threads(os.cpu_count() or 1)
  out = {"command": "python bench/autoattack_speed.py " + " ".join(sys.argv[1:]), "examples": args.examples,
         "iterations": args.iterations, "attacks": attacks, "eps": args.eps, "loadavg_start": os.getloadavg()}
  x, _ = ref.test_images(args.examples)
  logits_fn, _ = ref.checkpoint_logits_fn(args.rsrnn_workdir, 4)
  fwd = jax.jit(logits_fn)
  y_jax = own_labels(lambda v: np.asarray(fwd(v)).argmax(-1), x)
  net, module = mirror(args.torch_ref), ref.JaxModule(logits_fn)
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
  with torch.no_grad():
    y_torch = own_labels(lambda v: net(torch.from_numpy(v.transpose(0, 3, 1, 2).copy())).argmax(-1).numpy(), x)
  sides = {
      "ours": lambda: ref.run_ours(logits_fn, x, y_jax, args.eps, attacks, args, args.seed)[1],
      "authors_bridged": lambda: ref.run_authors(logits_fn, module, x, y_jax, args.eps, attacks, args, args.seed)[1],
      "authors_native": lambda: _native(net, xt, y_torch, args, attacks)}
  times = {k: [] for k in sides}
  for r in range(args.rounds):
    for name, run in sides.items():
      times[name].append(round(run(), 2))
      print(name, r, times[name][-1], flush=True)
  out["seconds"] = times
  out["median_after_first"] = {k: statistics.median(v[1:] or v) for k, v in times.items()}
  m = out["median_after_first"]
  out["ratio_authors_bridged_over_ours"] = round(m["authors_bridged"] / m["ours"], 2)
  out["ratio_authors_native_over_ours"] = round(m["authors_native"] / m["ours"], 2)
  out["loadavg_end"] = os.getloadavg()
  with open(args.out, "w") as f:
    json.dump(out, f, indent=1)
  print(json.dumps(out, indent=1))


def _native(net, xt, y, args, attacks):
  aa = ref.authors_autoattack(net, args.eps, attacks, args, args.seed)
  start = time.perf_counter()
  aa.run_standard_evaluation(xt, torch.from_numpy(y.astype(np.int64)), batch_size=args.batch_size)
  return time.perf_counter() - start


if __name__ == "__main__":
  main()
