"""Robust flags (AutoAttack's economy) and the per-example worst case with its adversarial images.

With ``config.attack.flags`` the attacks of a profile run one after the other, each only on the examples that
are still robust at one of its flag steps (under the clean image and every earlier attack). The flag steps are
the steps the attack's objective aims at: k for the step-k objective, 1..k for the mean of steps 1..k, 1..T_eval
for the full horizon, T_eval for the last step. An example broken at k is therefore never attacked again on step
k, so a strong profile costs little more than its first attack, and the report can say what each attack took
away (how many examples it broke first at one of its flag steps).

What the numbers mean: at step k the worst case is exact for the step-k attacks, and every step t is attacked
by every objective that covers t on every example still robust at t (the full-horizon objective covers all
steps), so the worst case at t is over all of those; an attack on another objective skipped an example once
it was broken at that objective's steps, so at t it is an upper bound over the whole profile.

:func:`run_cascade` is the bookkeeping (pure, any ``attack_rows`` callback); :class:`Repacker` packs the rows
still robust into full batches of the suite's batch size (one compilation per attack); :class:`Keeper` keeps,
per example, the strongest adversarial image found so far and which attack made it (the verified sets).
"""
from __future__ import annotations

import jax
import numpy as np

from rsrnn_jax.attacks.objectives import single_step
from rsrnn_jax.train import parallel

CLEAN = "clean"  # the name of the unattacked image in a Keeper


def flag_steps(horizon: str, attack_step: int, eval_steps: int) -> tuple[int, ...]:
  """The steps (1-based) the objective ``horizon`` aims at: an attack on it runs on every example still correct
  at one of them."""
  if horizon == "full":
    return tuple(range(1, eval_steps + 1))
  if horizon == "avg":
    return tuple(range(1, attack_step + 1))
  return (single_step(horizon, attack_step, eval_steps),)


def steps_label(steps) -> str:
  """(4,) → "4"; (1, 2, 3, 4) → "1–4"."""
  steps = tuple(steps)
  return str(steps[0]) if len(steps) == 1 else f"{steps[0]}–{steps[-1]}"


def strength_key(correct, attack_step: int, eval_steps: int):
  """Per example, lower = stronger adversarial image: wrong at step k first, then wrong at T_eval, then wrong
  at more steps. ``correct`` [N, T] → int [N]."""
  correct = np.asarray(correct, bool)
  t = correct.shape[1]
  return (correct[:, attack_step - 1] * 4 * (t + 1) + correct[:, eval_steps - 1] * 2 * (t + 1)
          + correct.sum(1)).astype(np.int64)


class Keeper:
  """Per example the strongest adversarial image so far (:func:`strength_key`) and the attack that made it."""

  def __init__(self, clean_images, clean_correct, attack_step: int, eval_steps: int):
    self.images = np.array(clean_images, copy=True)
    self.correct = np.array(clean_correct, bool, copy=True)
    self.k, self.t = attack_step, eval_steps
    self.names = [CLEAN]
    self.source = np.zeros(len(self.images), np.int32)

  def offer(self, name: str, rows, images, correct) -> None:
    """The candidates ``images`` [n, ...] of the examples ``rows`` [n] with their per-step ``correct`` [n, T]."""
    rows = np.asarray(rows, np.int64)
    if not len(rows):
      return
    if name not in self.names:
      self.names.append(name)
    better = (strength_key(correct, self.k, self.t) < strength_key(self.correct[rows], self.k, self.t))
    take = rows[better]
    self.images[take] = np.asarray(images)[better]
    self.correct[take] = np.asarray(correct, bool)[better]
    self.source[take] = self.names.index(name)

  def winners(self) -> list[str]:
    """Per example, the attack whose image is kept (``clean``: no attack beat the clean image)."""
    return [self.names[i] for i in self.source]


def run_cascade(specs: dict, steps_of: dict, clean_correct, attack_rows, *, attack_step: int, eval_steps: int,
                keeper: Keeper | None = None, start=None, start_label: str = ""):
  """The attacks of ``specs`` (name → spec, in order) with robust flags (``steps_of``: name → its flag steps).

  attack_rows(name, spec, rows) → dict with ``adv_correct`` [n, T] (bool), ``adv_images`` [n, ...] (or None)
  and ``info`` (per-example [n] arrays) for the examples ``rows`` (indices into the N examples; may be empty:
  then it returns empty arrays without attacking).
  ``start`` [N, T] (default: ``clean_correct``): what is still robust before the first attack, e.g. the worst
  case at a smaller ε (an example broken there is broken here: the larger ball contains the smaller one); the
  table's first row (``start_label``) then says what it took away.
  Returns (``correct`` [N, T]: the worst case after every attack, the clean image included; ``cumulative``:
  name → the worst case [N, T] after that attack; ``rows``: per attack what it attacked and took away, and per
  boolean ``info`` array (e.g. APGD's ``zero_grad``) ``<key>_count``, the attacked examples it flags, and
  ``<key>_robust_count``, those of them still robust at one of the attack's flag steps after the whole cascade:
  a flag on an example some attack broke cannot have made the numbers overstate robustness; for ``zero_grad``
  also ``zero_grad_uncovered_count``, those of the robust ones that no other attack reporting ``zero_grad``
  attacked from a non-zero gradient at a step where they stay robust (:func:`_working_gradient`)).
  """
  k, t = attack_step, eval_steps
  clean_correct = np.asarray(clean_correct, bool)
  correct = np.array(clean_correct if start is None else np.asarray(start, bool) & clean_correct, copy=True)
  cumulative, table, flagged, gradients = {}, [], [], []
  if start is not None:
    newly = clean_correct & ~correct
    table.append({"attack": start_label or "start", "flag_step": "–", "attacked": 0,
                  "broke": int(newly.any(1).sum()), "broke_at_k": int(newly[:, k - 1].sum()),
                  "broke_at_T": int(newly[:, t - 1].sum()), "robust_at_k": int(correct[:, k - 1].sum()),
                  "robust_at_T": int(correct[:, t - 1].sum())})
  for name, spec in specs.items():
    s = np.asarray(steps_of[name], np.int64) - 1
    rows = np.flatnonzero(correct[:, s].any(1))
    res = attack_rows(name, spec, rows)
    adv = np.asarray(res["adv_correct"], bool).reshape(len(rows), t)
    newly = correct[rows] & ~adv  # [n, T]: broken by this attack and by none before it
    correct[rows] &= adv
    if keeper is not None and len(rows) and res.get("adv_images") is not None:
      keeper.offer(name, rows, res["adv_images"], adv)
    cumulative[name] = correct.copy()
    row = {"attack": name, "flag_step": steps_label(steps_of[name]), "attacked": int(len(rows)),
           "broke": int(newly[:, s].any(1).sum()),
           "broke_at_k": int(newly[:, k - 1].sum()), "broke_at_T": int(newly[:, t - 1].sum()),
           "robust_at_k": int(correct[:, k - 1].sum()), "robust_at_T": int(correct[:, t - 1].sum())}
    for key, v in (res.get("info") or {}).items():
      v = np.asarray(v)
      if v.dtype == np.bool_:
        row[f"{key}_count"] = int(v.sum())
        flagged.append((row, key, rows[v.reshape(len(rows))], s, len(gradients)))
        if key == ZERO_GRAD:
          gradients.append((rows[~v.reshape(len(rows))], s))
    table.append(row)
  for row, key, which, s, i in flagged:  # after the whole cascade: which flagged examples no attack broke
    robust = which[correct[which][:, s].any(1)]
    row[f"{key}_robust_count"] = int(len(robust))
    if key == ZERO_GRAD:
      row["zero_grad_uncovered_count"] = int((~_working_gradient(gradients, correct, skip=i)[robust]).sum())
  return correct, cumulative, table


ZERO_GRAD = "zero_grad"  # the info key of APGD's zero-gradient start (AutoAttack's flag; sanity check 11)


def _working_gradient(gradients, correct, skip: int):
  """[N]: the examples some attack of ``gradients`` (its rows that started from a non-zero gradient, its flag
  steps), other than the one at index ``skip``, attacked at a step where they are still robust after the cascade:
  a zero-gradient start elsewhere cannot be what keeps them robust."""
  out = np.zeros(len(correct), bool)
  for i, (rows, s) in enumerate(gradients):
    if i != skip:
      out[rows[correct[rows][:, s].any(1)]] = True
  return out


class Repacker:
  """The attacked examples (global host copies) re-packed into full batches of the rows still robust."""

  def __init__(self, host: dict, batch_size: int, mesh):
    self.host, self.batch_size, self.mesh = host, int(batch_size), mesh

  def batches(self, rows):
    """[(sharded batch with image/label/mask/target/index, number of real rows)] for ``rows`` in order; the
    last batch is padded with copies of its first row (mask 0)."""
    rows = np.asarray(rows, np.int64)
    bs = self.batch_size
    p_index, p_count = jax.process_index(), jax.process_count()
    local = bs // p_count
    out = []
    for start in range(0, len(rows), bs):
      chunk = rows[start:start + bs]
      n = len(chunk)
      padded = np.concatenate([chunk, np.full(bs - n, chunk[0], np.int64)])
      batch = {key: np.asarray(v)[padded] for key, v in self.host.items()}
      batch["mask"] = (np.arange(bs) < n).astype(np.float32)
      mine = {key: v[p_index * local:(p_index + 1) * local] for key, v in batch.items()}
      out.append((parallel.shard_batch(mine, self.mesh), n))
    return out
