"""The data-parallel train step (optionally on PGD examples: adversarial training)."""
from __future__ import annotations

import functools
import types

import jax
import jax.numpy as jnp
import optax

from rsrnn_jax import attacks
from rsrnn_jax.attacks import objectives
from rsrnn_jax.data.transforms import unit_float
from rsrnn_jax.train import parallel
from rsrnn_jax.train.losses import (classification_loss, labels_multi_hot, per_step_correct, per_step_metric_name,
                                    reinforce_loss)
from rsrnn_jax.train.state import TrainState, variables_of


def adversarial_attack_step(config) -> int:
  """k: the unrolled step whose logits the training attack ascends (0 in the config = train.num_glimpses)."""
  return int(config.train.adversarial.attack_step) or int(config.train.num_glimpses)


def adversarial_images(state: TrainState, batch, rng, *, config):
  """The training batch's images with the first ``adv_fraction`` of them replaced by PGD examples.

  The attack (:func:`rsrnn_jax.attacks.pgd` on :func:`rsrnn_jax.attacks.objectives.model_logits_fn`) runs against the
  current parameters in **evaluation mode**: BatchNorm reads its running statistics and nothing is updated
  (the ``batch_stats`` collection is not mutable there), and the overt-attention models take their argmax
  fixations from the centre, i.e. exactly the deterministic model an evaluation attack (``--mode=attack``)
  sees. Returns (images [B,...], is_adversarial [B] bool); the images carry no gradient.
  """
  a = config.train.adversarial
  model = types.SimpleNamespace(apply=state.apply_fn)  # all model_logits_fn needs of the module
  logits_fn = objectives.model_logits_fn(model, variables_of(state), horizon=a.horizon,
                                         attack_step=adversarial_attack_step(config))
  eps = float(a.eps)
  x = unit_float(batch["image"])
  x_adv = attacks.pgd(logits_fn, x, batch["label"], eps=eps, step_size=float(a.step_size) * eps,
                      num_steps=int(a.num_iterations), random_start=bool(a.random_start), rng=rng)
  n_adv = int(round(float(a.adv_fraction) * x.shape[0]))
  is_adv = jnp.arange(x.shape[0]) < n_adv
  return jnp.where(is_adv.reshape((-1,) + (1,) * (x.ndim - 1)), x_adv, x), is_adv


def train_step(state: TrainState, batch, rng, *, config):
  """One optimiser step on a global batch (jit partitions it over the ``data`` axis). uint8 images (the input
  pipeline's default hand-over) are mapped to float32 in [0, 1] first, on the device.

  With ``train.adversarial.enabled`` the step first replaces (part of) the batch by PGD examples against the
  current parameters (:func:`adversarial_images`, key ``fold_in(rng, 1)``), then trains on them as usual:
  train-mode forward, sampled fixations from ``rng``, BatchNorm statistics updated once, from that batch.

  ``metrics["finite"]`` (bool) is False when the loss or a gradient is NaN/Inf. With ``train.nonfinite='skip'``
  such a step leaves the parameters, optimiser and BatchNorm state as they were (only ``step`` advances);
  with the default ``'stop'`` the loop stops before saving (:mod:`rsrnn_jax.train.loop`).
  """
  cfg = config.train
  batch = {**batch, "image": unit_float(batch["image"])}  # uint8 batches (the default) become [0, 1] here
  mask = batch.get("mask", jnp.ones(batch["label"].shape[:1], jnp.float32))
  extra = {}
  if cfg.adversarial.enabled:
    images, is_adv = adversarial_images(state, batch, jax.random.fold_in(rng, 1), config=config)
    extra["adv_linf"] = jnp.max(jnp.abs(images - batch["image"]))
    extra["adv_fraction"] = jnp.mean(is_adv.astype(jnp.float32))
    batch = {**batch, "image": images}

  def loss_fn(params):
    variables = {"params": params}
    mutable = []
    if state.batch_stats:
      variables["batch_stats"] = state.batch_stats
      mutable = ["batch_stats"]
    kwargs = {}
    if cfg.init_fixation == "center":
      kwargs["init_fixations"] = jnp.zeros((batch["image"].shape[0], 2), jnp.float32)
    out, new_vars = state.apply_fn(variables, batch["image"], num_steps=int(cfg.num_glimpses),
                                   train=True, rngs={"fixation": rng}, mutable=mutable, **kwargs)
    ce = classification_loss(out["logits"], batch["label"], mask, cfg.loss_steps)
    metrics = {"ce": ce}
    loss = ce
    if "log_probs" in out:
      pol, base = reinforce_loss(out["logits"], batch["label"], out["log_probs"], out["baselines"], mask,
                                 center_advantage=bool(cfg.rl_center_advantage), reward=cfg.rl_reward)
      loss = loss + cfg.rl_weight * pol + cfg.baseline_weight * base
      metrics.update(policy_loss=pol, baseline_loss=base)
    metrics["loss"] = loss
    return loss, (metrics, out["logits"], new_vars)

  (_, (metrics, logits, new_vars)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  new_state = state.apply_gradients(grads=grads)
  if new_state.batch_stats:
    new_state = new_state.replace(batch_stats=new_vars["batch_stats"])
  metrics["grad_norm"] = optax.global_norm(grads)
  # The finite-loss guard: False if the loss or any gradient is NaN/Inf (the loop stops, or skips the step).
  finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
  if cfg.get("nonfinite", "stop") == "skip":  # keep the previous parameters and optimiser state
    kept = jax.tree_util.tree_map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    new_state = kept.replace(step=new_state.step)
  state = new_state
  n = jnp.maximum(jnp.sum(mask), 1.0)
  key = per_step_metric_name(labels_multi_hot(batch["label"]))
  metrics[key] = per_step_correct(logits, batch["label"], mask) / n
  metrics["finite"] = finite
  metrics.update(extra)
  return state, metrics


def make_train_step(config, mesh):
  rep, shard = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  return jax.jit(functools.partial(train_step, config=config),
                 in_shardings=(rep, shard, rep), out_shardings=(rep, rep), donate_argnums=(0,))
