"""Training losses: per-step classification loss (softmax or sigmoid CE) and REINFORCE for the fixation policy."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from rsrnn_jax.data.registry import labels_multi_hot  # the task type, from the labels' rank


def classification_loss(logits, labels, mask, loss_steps: str = "all"):
  """Per-step loss, averaged over the (masked) batch and over steps (or the last step only).

  Single-label (labels [B]): softmax cross-entropy. Multi-label (labels multi-hot [B, K]): sigmoid binary
  cross-entropy averaged over the K classes (BCE-with-logits, paper.md §9).
  """
  if labels_multi_hot(labels):
    ce = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels[None].astype(logits.dtype)), -1)  # [T,B]
  else:
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels[None, :])  # [T,B]
  ce = jnp.sum(ce * mask[None], axis=1) / jnp.maximum(jnp.sum(mask), 1.0)
  return ce[-1] if loss_steps == "last" else jnp.mean(ce)


def step_rewards(logits, labels):
  """Per-step, per-example score in [0, 1], [T,B]: 1[argmax = y] (single-label) or, for multi-hot labels, the
  example's F1 of the predicted set {k: logit_k > 0} against the true set (1 when both are empty)."""
  if not labels_multi_hot(labels):
    return (jnp.argmax(logits, -1) == labels[None]).astype(jnp.float32)
  pred, true = logits > 0, labels[None] > 0
  both = jnp.sum(pred & true, -1).astype(jnp.float32)
  total = (jnp.sum(pred, -1) + jnp.sum(true, -1)).astype(jnp.float32)
  return jnp.where(total > 0, 2 * both / jnp.maximum(total, 1.0), 1.0)


def true_class_probability(logits, labels):
  """Per-step probability of the right answer [T,B]: softmax p_s(y), or for multi-hot labels the mean over classes
  of the sigmoid probability of each class's true state. The dense alternative to ``step_rewards``."""
  if labels_multi_hot(labels):
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
