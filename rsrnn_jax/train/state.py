"""The train state: model from config, optimiser and learning-rate schedule, initialisation."""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from rsrnn_jax import data
from rsrnn_jax.models import build_model
from rsrnn_jax.train import parallel


class TrainState(train_state.TrainState):
  batch_stats: Any = None


def model_from_config(config, info=None):
  info = info or data.dataset_info(config.data)
  return build_model(config.model, num_classes=info.num_classes, mean=config.data.mean,
                     std=config.data.std), info


def learning_rate_schedule(cfg):
  total = int(cfg.num_train_steps)
  warmup = min(int(cfg.warmup_steps), max(total - 1, 0))
  if cfg.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, cfg.learning_rate, warmup, max(total, warmup + 1))
  if cfg.schedule == "step":
    boundaries = {int(b * total): 0.1 for b in cfg.lr_boundaries}
    main = optax.piecewise_constant_schedule(cfg.learning_rate, boundaries)
    return optax.join_schedules([optax.linear_schedule(0.0, cfg.learning_rate, warmup), main], [warmup])
  raise ValueError(f"unknown schedule {cfg.schedule!r}; use 'cosine' or 'step'")


def make_optimizer(cfg):
  lr = learning_rate_schedule(cfg)
  if cfg.optimizer == "adamw":
    opt = optax.adamw(lr, weight_decay=cfg.weight_decay)
  elif cfg.optimizer == "sgd":
    opt = optax.chain(optax.add_decayed_weights(cfg.weight_decay),
                      optax.sgd(lr, momentum=cfg.momentum, nesterov=True))
  else:
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; use 'adamw' or 'sgd'")
  if cfg.grad_clip:
    opt = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), opt)
  return opt


def init_state(model, config, image_shape, rng) -> TrainState:
  """Initialises parameters on a tiny batch (shapes do not depend on the batch size)."""
  dummy = jnp.zeros((2, *image_shape), jnp.float32)
  p_rng, f_rng = jax.random.split(rng)
  variables = model.init({"params": p_rng, "fixation": f_rng}, dummy,
                         num_steps=int(config.train.num_glimpses), train=False)
  return TrainState.create(apply_fn=model.apply, params=variables["params"],
                           batch_stats=variables.get("batch_stats", {}),
                           tx=make_optimizer(config.train))


def replicated_state(model, config, image_shape, rng, mesh) -> TrainState:
  """:func:`init_state` as one jitted computation whose result is replicated over ``mesh``.

  One compilation instead of one per eager initialiser op (hundreds, each a global computation in a
  multi-process job), and no host round trip before the parameters reach every device.
  """
  init = jax.jit(functools.partial(init_state, model, config, image_shape),
                 out_shardings=parallel.replicated(mesh))
  return init(rng)


def variables_of(state):
  v = {"params": state.params}
  if state.batch_stats:
    v["batch_stats"] = state.batch_stats
  return v
