"""The numerics job of bench/gpu_check.py, and the configs and one-device meshes every job of the check uses.

numerics: RS-RNN at the ImageNet config, parameters initialised once on the CPU; the accelerator's logits (f32
at JAX's default precision, f32 at "highest", bf16) against the f32 CPU reference of the same process, with a
forced scanpath and with the policy's own argmax fixations; then a few SGD steps on both, whose
cross-entropies must agree (bench/gpu_check.py's docstring has the details).
"""

from __future__ import annotations

import contextlib

import benchlib  # puts the repository on sys.path
import jax
import jax.numpy as jnp
import numpy as np

from configs import common
from rsrnn_jax import data
from rsrnn_jax.train import parallel
from rsrnn_jax.train import state as train_state
from rsrnn_jax.train import step as train_step

VARIANTS = {"f32_default": ("float32", None), "f32_highest": ("float32", "highest"), "bf16": ("bfloat16", None)}
TOLERANCES = {"f32_highest": 1e-3, "f32_default": 2e-2, "bf16": 1e-1}  # relative logit / loss errors


def make_config(model: str, *, tiny: bool, dtype: str = "float32", unroll: int = 1, remat: bool = False,
                batch: int = 8):
  """configs/imagenet.py for ``model`` (shrunk to toy widths and 32² images with ``tiny``)."""
  c = benchlib.load_config(f"configs/imagenet.py:model={model}")
  if tiny:
    c.data.image_size, c.data.eval_resize = 32, 36
    common.set_model(c, model, stages=((4, 1, 1), (8, 1, 1), (8, 1, 1), (8, 1, 0)), out_size=16,
                     density_ratio=4.0)
    c.model.dorsal.saliency_size, c.model.dorsal.hidden, c.model.ior_size = 4, 4, 8
    c.train.num_glimpses = 2
  c.model.dtype, c.model.unroll, c.model.remat = dtype, int(unroll), bool(remat)
  c.train.batch_size = batch
  c.train.warmup_steps = 0  # the full learning rate from step 1: a few steps move the parameters
  return c


def mesh_of(device) -> jax.sharding.Mesh:
  return jax.sharding.Mesh(np.array([device]), (parallel.DATA_AXIS,))


def _rel(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-6))


def _forward(model, num_steps: int):
  """(logits with forced fixations, logits and fixations with the policy's argmax) of an eval forward pass."""
  def fn(variables, images, scanpath):
    forced = model.apply(variables, images, num_steps=num_steps, train=False, fixations=scanpath,
                         fixation_mask=jnp.ones((num_steps,), bool))["logits"]
    free = model.apply(variables, images, num_steps=num_steps, train=False)
    return forced, free["logits"], free["fixations"]
  return jax.jit(fn)


def _train_losses(config, host_state, batches, device, steps: int) -> list[dict]:
  mesh = mesh_of(device)
  model, _ = train_state.model_from_config(config, dataset_info(config))
  state = jax.device_put(host_state.replace(apply_fn=model.apply), parallel.replicated(mesh))
  step = train_step.make_train_step(config, mesh)
  out = []
  with jax.set_mesh(mesh):
    for i in range(steps):
      state, metrics = step(state, parallel.shard_batch(batches[i], mesh), jax.random.key(100 + i))
      out.append({k: float(metrics[k]) for k in ("loss", "ce", "grad_norm")})
  return out


def dataset_info(config):
  shape, classes = benchlib.image_shape_and_classes(config)
  return data.DatasetInfo(config.data.name, classes, shape, 0, 0, ())


def numerics(sizes, tiny: bool, accel, cpu) -> dict:
  b, steps = sizes["numerics_batch"], sizes["numerics_steps"]
  ref_cfg = make_config("rsrnn", tiny=tiny, unroll=0, batch=b)  # full unroll: the fast CPU scan
  _, state, _ = benchlib.random_setup(ref_cfg, b, mesh_of(cpu), seed=0)
  host_state = jax.device_get(state)
  variables = train_state.variables_of(host_state)
  rng = np.random.default_rng(1)
  shape, classes = benchlib.image_shape_and_classes(ref_cfg)
  batches = [{"image": rng.uniform(0, 1, (b, *shape)).astype(np.float32),
              "label": rng.integers(0, classes, b).astype(np.int32)} for _ in range(steps)]
  T = int(ref_cfg.train.num_glimpses)
  scanpath = rng.uniform(-0.9, 0.9, (T, b, 2)).astype(np.float32)
  on = lambda dev, x: jax.device_put(x, dev)

  def forward(config, dev):
    model, _ = train_state.model_from_config(config, dataset_info(config))
    return jax.device_get(_forward(model, T)(on(dev, variables), on(dev, batches[0]["image"]), on(dev, scanpath)))

  ref = forward(ref_cfg, cpu)
  out = {"batch": b, "steps": T, "reference": "f32 on " + str(cpu), "logits": {}, "train": {}}
  for name in sizes["logit_variants"]:
    dtype, precision = VARIANTS[name]
    cfg = make_config("rsrnn", tiny=tiny, dtype=dtype, unroll=1, batch=b)
    with jax.default_matmul_precision(precision) if precision else contextlib.nullcontext():
      forced, free, fix = forward(cfg, accel)
    err = _rel(forced, ref[0])
    out["logits"][name] = {"rel_err_forced": err, "tol": TOLERANCES[name], "ok": bool(err <= TOLERANCES[name]),
                           "rel_err_step1": _rel(free[0], ref[1][0]),
                           "argmax_fixations_equal": float(np.mean(np.all(np.isclose(fix, ref[2], atol=1e-4),
                                                                          axis=-1)))}
  ref_losses = _train_losses(ref_cfg, host_state, batches, cpu, steps)
  for name in sizes["train_variants"]:
    cfg = make_config("rsrnn", tiny=tiny, dtype=VARIANTS[name][0], unroll=1, batch=b)
    losses = _train_losses(cfg, host_state, batches, accel, steps)
    err = {k: max(abs(x[k] - r[k]) / max(abs(r[k]), 1e-6) for x, r in zip(losses, ref_losses))
           for k in ("loss", "ce")}
    # Gate on the cross-entropy: the REINFORCE part of the loss has a 0/1 reward (argmax = label) that a
    # rounding difference can flip for a near-tied example; its agreement is reported as loss_ok.
    out["train"][name] = {"losses": [x["loss"] for x in losses], "reference": [r["loss"] for r in ref_losses],
                          "rel_err_loss": err["loss"], "rel_err_ce": err["ce"], "tol": TOLERANCES[name],
                          "ok": bool(err["ce"] <= TOLERANCES[name]),
                          "loss_ok": bool(err["loss"] <= TOLERANCES[name])}
  out["ok"] = all(v["ok"] for sec in ("logits", "train") for v in out[sec].values())
  return out
