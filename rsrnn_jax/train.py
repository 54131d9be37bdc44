"""Training: state, losses (per-step cross-entropy + REINFORCE), the data-parallel step and the loop.

The loop is resumable: the latest Orbax checkpoint in ``WORKDIR/checkpoints`` is restored automatically and the
input pipeline restarts at the same batch, so ``kill -9`` followed by the same command finishes the same run.
"""
from __future__ import annotations

import functools
import logging
import time
import types
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from rsrnn_jax import attacks, checkpoints, configlib, data, parallel, robustness, writers
from rsrnn_jax.models import build_model

log = logging.getLogger(__name__)


class TrainState(train_state.TrainState):
  batch_stats: Any = None


# ----------------------------------------------------------------------------------------------- model / state

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


def abstract_state(model, config, image_shape) -> TrainState:
  return jax.eval_shape(functools.partial(init_state, model, config, image_shape), jax.random.key(0))


def variables_of(state):
  v = {"params": state.params}
  if state.batch_stats:
    v["batch_stats"] = state.batch_stats
  return v


# --------------------------------------------------------------------------------------------------- losses

def is_multi_label(labels) -> bool:
  """The task type, from the labels' rank: class ids [B] or multi-hot [B, K] (data.MULTI_LABEL_DATASETS)."""
  return labels.ndim == 2


def classification_loss(logits, labels, mask, loss_steps: str = "all"):
  """Per-step loss, averaged over the (masked) batch and over steps (or the last step only).

  Single-label (labels [B]): softmax cross-entropy. Multi-label (labels multi-hot [B, K]): sigmoid binary
  cross-entropy averaged over the K classes (BCE-with-logits, paper.md §9).
  """
  if is_multi_label(labels):
    ce = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels[None].astype(logits.dtype)), -1)  # [T,B]
  else:
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels[None, :])  # [T,B]
  ce = jnp.sum(ce * mask[None], axis=1) / jnp.maximum(jnp.sum(mask), 1.0)
  return ce[-1] if loss_steps == "last" else jnp.mean(ce)


def step_rewards(logits, labels):
  """Per-step, per-example score in [0, 1], [T,B]: 1[argmax = y] (single-label) or, for multi-hot labels, the
  example's F1 of the predicted set {k: logit_k > 0} against the true set (1 when both are empty)."""
  if not is_multi_label(labels):
    return (jnp.argmax(logits, -1) == labels[None]).astype(jnp.float32)
  pred, true = logits > 0, labels[None] > 0
  both = jnp.sum(pred & true, -1).astype(jnp.float32)
  total = (jnp.sum(pred, -1) + jnp.sum(true, -1)).astype(jnp.float32)
  return jnp.where(total > 0, 2 * both / jnp.maximum(total, 1.0), 1.0)


def true_class_probability(logits, labels):
  """Per-step probability of the right answer [T,B]: softmax p_s(y), or for multi-hot labels the mean over classes
  of the sigmoid probability of each class's true state. The dense alternative to ``step_rewards``."""
  if is_multi_label(labels):
    p = jax.nn.sigmoid(logits)
    return jnp.mean(jnp.where(labels[None] > 0, p, 1.0 - p), -1)
  return jnp.take_along_axis(jax.nn.softmax(logits, -1), labels[None, :, None], -1)[..., 0]


def reinforce_loss(logits, labels, log_probs, baselines, mask, center_advantage: bool = False,
                   reward: str = "correct"):
  """REINFORCE for the fixation policy with a learned baseline.

  The action taken at step t chooses l_{t+1}; its return is the mean score of the later steps
  G_t = mean_{s>t} r_s, r_s = 1[argmax p_s = y] (multi-label: the example's F1 at step s, ``step_rewards``).
  Loss = −E[A_t log π_t] + E[(G_t − b_t)²] with the advantage A_t = G_t − b_t detached. The last step's action
  is never used and gets no loss. ``center_advantage``: subtract from A_t its mean over the (masked) batch at
  each step, so a baseline that lags the returns (early in training it starts at 0 while G_t > 0) cannot push
  up the log-probability of every action taken, which would collapse the policy onto whatever it already
  prefers. ``reward``: "correct" (r_s as above) or "prob" (r_s = p_s(y), ``true_class_probability``: it moves
  with every change of the classifier's belief, not only when the argmax flips). Rewards carry no gradient.
  Returns (policy_loss, baseline_loss).
  """
  num_steps = logits.shape[0]
  if num_steps < 2:
    return jnp.zeros(()), jnp.zeros(())
  scores = true_class_probability if reward == "prob" else step_rewards
  correct = jax.lax.stop_gradient(scores(logits, labels))  # [T,B]
  future = jnp.cumsum(correct[::-1], axis=0)[::-1]  # sum_{s>=t}
  counts = jnp.arange(num_steps, 0, -1, dtype=jnp.float32)[:, None]
  returns = (future[1:] / counts[1:])  # mean over s>t for t = 0..T-2
  b = baselines[:-1]
  adv = jax.lax.stop_gradient(returns - b)
  if center_advantage:
    adv = adv - jnp.sum(adv * mask[None], axis=1, keepdims=True) / jnp.maximum(jnp.sum(mask), 1.0)
  denom = jnp.maximum(jnp.sum(mask), 1.0) * (num_steps - 1)
  policy = -jnp.sum(adv * log_probs[:-1] * mask[None]) / denom
  baseline = jnp.sum((returns - b) ** 2 * mask[None]) / denom
  return policy, baseline


def per_step_correct(logits, labels, mask):
  """Number of correct (masked) examples at each step [T] (multi-label: the sum of the examples' F1)."""
  return jnp.sum(step_rewards(logits, labels) * mask[None], axis=1)


def per_step_metric_name(multi_label: bool) -> str:
  """The train-log key of ``per_step_correct / n``: accuracy, or the mean example F1 for multi-label data."""
  return "f1_per_step" if multi_label else "accuracy_per_step"


# --------------------------------------------------------------------------------------------- train step

# ------------------------------------------------------------------------------------ adversarial training

def adversarial_attack_step(config) -> int:
  """k: the unrolled step whose logits the training attack ascends (0 in the config = train.num_glimpses)."""
  return int(config.train.adversarial.attack_step) or int(config.train.num_glimpses)


def adversarial_images(state: TrainState, batch, rng, *, config):
  """The training batch's images with the first ``adv_fraction`` of them replaced by PGD examples.

  The attack (:func:`rsrnn_jax.attacks.pgd` on :func:`rsrnn_jax.robustness.model_logits_fn`) runs against the
  current parameters in **evaluation mode**: BatchNorm reads its running statistics and nothing is updated
  (the ``batch_stats`` collection is not mutable there), and the overt-attention models take their argmax
  fixations from the centre, i.e. exactly the deterministic model an evaluation attack (``--mode=attack``)
  sees. Returns (images [B,...], is_adversarial [B] bool); the images carry no gradient.
  """
  a = config.train.adversarial
  model = types.SimpleNamespace(apply=state.apply_fn)  # all model_logits_fn needs of the module
  logits_fn = robustness.model_logits_fn(model, variables_of(state), horizon=a.horizon,
                                         attack_step=adversarial_attack_step(config))
  eps = float(a.eps)
  x = batch["image"]
  x_adv = attacks.pgd(logits_fn, x, batch["label"], eps=eps, step_size=float(a.step_size) * eps,
                      num_steps=int(a.num_iterations), random_start=bool(a.random_start), rng=rng,
                      unroll=True)  # few iterations; a rolled loop is slow on XLA:CPU
  n_adv = int(round(float(a.adv_fraction) * x.shape[0]))
  is_adv = jnp.arange(x.shape[0]) < n_adv
  return jnp.where(is_adv.reshape((-1,) + (1,) * (x.ndim - 1)), x_adv, x), is_adv


# --------------------------------------------------------------------------------------------- train step

def train_step(state: TrainState, batch, rng, *, config):
  """One optimiser step on a global batch (jit partitions it over the ``data`` axis).

  With ``train.adversarial.enabled`` the step first replaces (part of) the batch by PGD examples against the
  current parameters (:func:`adversarial_images`, key ``fold_in(rng, 1)``), then trains on them as usual:
  train-mode forward, sampled fixations from ``rng``, BatchNorm statistics updated once, from that batch.
  """
  cfg = config.train
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
  state = state.apply_gradients(grads=grads)
  if state.batch_stats:
    state = state.replace(batch_stats=new_vars["batch_stats"])
  n = jnp.maximum(jnp.sum(mask), 1.0)
  key = per_step_metric_name(is_multi_label(batch["label"]))
  metrics[key] = per_step_correct(logits, batch["label"], mask) / n
  metrics["grad_norm"] = optax.global_norm(grads)
  metrics.update(extra)
  return state, metrics


def make_train_step(config, mesh):
  rep, shard = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  return jax.jit(functools.partial(train_step, config=config),
                 in_shardings=(rep, shard, rep), out_shardings=(rep, rep), donate_argnums=(0,))


# --------------------------------------------------------------------------------------------------- loop

def train_and_evaluate(config, workdir: str):
  """Trains ``config`` in ``workdir`` (resuming from its latest checkpoint), then evaluates."""
  configlib.validate(config)
  info = data.dataset_info(config.data)
  model, _ = model_from_config(config, info)
  mesh = parallel.make_mesh(config.num_devices)
  parallel.local_batch_size(config.train.batch_size, mesh)
  manager = checkpoints.manager(workdir, config, create=True)
  meta = checkpoints.metadata(config, info)
  checkpoints.check_compatible(manager, meta)

  rng = jax.random.key(config.seed)
  init_rng, step_rng = jax.random.split(rng)
  with jax.set_mesh(mesh):
    state = replicated_state(model, config, info.image_shape, init_rng, mesh)
    state = checkpoints.restore_latest(manager, state) or state
    start = int(jax.device_get(state.step))
    total = int(config.train.num_train_steps)
    if start:
      log.info("resumed from step %d in %s", start, workdir)
    step_fn = make_train_step(config, mesh)
    batches = data.train_batches(config.data, global_batch_size=config.train.batch_size,
                                 seed=config.seed, start_step=start,
                                 process_index=jax.process_index(), process_count=jax.process_count())
    writer = writers.MetricWriter(workdir, enabled=jax.process_index() == 0, resume_step=start)
    progress = writers.Progress(total, start, enabled=jax.process_index() == 0)
    window_t, window_n = time.perf_counter(), 0
    try:
      for step in range(start, total):
        batch = parallel.shard_batch(next(batches), mesh)
        state, metrics = step_fn(state, batch, jax.random.fold_in(step_rng, step))
        window_n += config.train.batch_size
        done = step + 1
        if done % config.train.log_every == 0 or done == total:
          metrics = jax.device_get(metrics)
          elapsed = time.perf_counter() - window_t
          scalars = {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0}
          scalars["images_per_sec"] = window_n / max(elapsed, 1e-9)
          scalars["learning_rate"] = float(learning_rate_schedule(config.train)(step))
          key = per_step_metric_name(info.multi_label)
          acc = [float(a) for a in metrics[key]]
          writer.write(done, scalars, **{key: acc})
          progress.update(done, loss=scalars["loss"], acc=acc[-1], img_s=scalars["images_per_sec"])
          window_t, window_n = time.perf_counter(), 0
        else:
          progress.update(done)
        if done % config.train.checkpoint_every == 0 or done == total:
          checkpoints.save(manager, done, state, meta)
    finally:  # an interrupted run still commits the checkpoint being written
      manager.wait_until_finished()
      progress.close()
      writer.close()
  results = None
  if config.train.eval_at_end:
    from rsrnn_jax import evaluate  # local import: evaluate imports this module
    results = evaluate.evaluate(config, workdir)
  return results
