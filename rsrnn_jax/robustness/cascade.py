"""The suite's sections under robust flags (``config.attack.flags``; :mod:`rsrnn_jax.robustness.flags` explains
the flags): the untargeted attacks as a cascade, check 3 on the examples the cascade left robust, check 9 (each
policy attack alone on examples the reference attack broke), the randomness flag, and the numbers checks 5, 8,
10 and 11 read from the cascade."""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from rsrnn_jax.robustness.flags import flag_steps, run_cascade
from rsrnn_jax.robustness.sweep import per_example_stats
from rsrnn_jax.train import parallel

_to_host = parallel.to_host


def attack_rows(r, spec, eps: float, rows, key, *, label: str = "") -> dict:
  """``spec`` at ``eps`` on the examples ``rows`` only (re-packed into full batches): per row ``adv_correct``
  [n, T], ``adv_images`` [n, ...] and the attack's ``info`` arrays [n]."""
  fn, weight, eval_key = r.fn_for(spec), spec.cost(r.setup), r.key_for("eval_repacked")
  adv, images, info = [], [], {}
  for j, (batch, n) in enumerate(r.repacker.batches(rows)):
    if r.bar is not None:
      r.bar.set_postfix_str(f"{label or spec.name} eps={eps:g}", refresh=False)
    clean = r.clean_fn(r.variables, batch["image"], eval_key)
    out = fn(r.variables, batch, clean, jnp.asarray(eps, jnp.float32), jax.random.fold_in(key, j), eval_key)
    host = _to_host({"adv_correct": out["adv_correct"], "adv_images": out["adv_images"], "info": out["info"]})
    adv.append(np.asarray(host["adv_correct"])[:, :n].T)
    images.append(np.asarray(host["adv_images"])[:n])
    for name, v in host["info"].items():
      info.setdefault(name, []).append(np.asarray(v)[:n])
    if r.bar is not None:
      r.bar.update(weight * n)
  if not adv:
    return {"adv_correct": np.zeros((0, r.t_eval), bool), "adv_images": None, "info": {}}
  return {"adv_correct": np.concatenate(adv), "adv_images": np.concatenate(images),
          "info": {name: np.concatenate(v) for name, v in info.items()}}


def cascade_section(r, plan):
  """Every untargeted attack at every ε with robust flags, the ε in increasing order: at each ε after the first,
  only the examples still robust at the one before are attacked (its worst case and adversarial images carry
  over: the larger ε-ball contains them).

  Returns (entries: name → [per ε: the worst case after that attack, as a result entry], flags: the table of
  what each attack attacked and broke per ε, with the wall seconds it took in this process (its compilation
  included, at the first ε it runs; None when the journal replayed it), finals: per ε the worst case [N, T]
  after all attacks, own: per ε name → the attack's own per-row results, for the checks)."""
  k, t = r.k, r.t_eval
  steps = {name: flag_steps(spec.horizon, k, t) for name, spec in plan.untargeted.items()}
  entries = {name: [] for name in plan.untargeted}
  n_eps = len(plan.eps)
  tables, finals, own = [None] * n_eps, [None] * n_eps, [None] * n_eps
  everyone = len(r.clean_correct)
  before = None  # the index of the next smaller ε done so far
  for i in sorted(range(n_eps), key=lambda j: plan.eps[j]):
    eps = plan.eps[i]
    mine, seconds = {}, {}

    def attack(name, spec, rows, i=i, eps=eps, mine=mine, seconds=seconds):
      if r.bar is not None:  # the progress total assumed every example: drop the ones the flags skip
        r.bar.total = max(r.bar.total - spec.cost(r.setup) * (everyone - len(rows)), r.bar.n)
      res = r.journal.load(i, name, rows) if r.journal else None  # done before an interruption
      seconds[name] = None
      if res is None:
        tic = time.perf_counter()
        res = attack_rows(r, spec, eps, rows, jax.random.fold_in(r.key_for(name), i), label=name)
        seconds[name] = round(time.perf_counter() - tic, 1)
        if r.journal:
          r.journal.save(i, name, rows, res)
      mine[name] = {"rows": np.asarray(rows), "adv_correct": res["adv_correct"], "info": res["info"]}
      return res

    start, label = None, ""
    if before is not None and plan.eps[before] < eps:
      start, label = finals[before], f"broken at ε={plan.eps[before]:g}"
      prev = r.keepers[before]
      carried = np.flatnonzero(prev.source > 0)  # examples with an adversarial image at the smaller ε
      r.keepers[i].offer(label, carried, prev.images[carried], prev.correct[carried])
    with r.timed(f"cascade_eps{eps:g}_s"):
      correct, cumulative, table = run_cascade(plan.untargeted, steps, r.clean_correct, attack, attack_step=k,
                                               eval_steps=t, keeper=r.keepers[i], start=start, start_label=label)
    for row in table:  # rows of the attacks (the first may be the examples carried from the smaller ε)
      if row["attack"] in seconds:
        row["seconds"] = seconds[row["attack"]]
    for name in plan.untargeted:
      entries[name].append((i, {"eps": eps, **per_example_stats(r.clean_correct, cumulative[name]),
                                "adv_correct": cumulative[name]}))
    tables[i], finals[i], own[i] = {"eps": eps, "rows": table}, correct, mine
    before = i
  entries = {name: [e for _, e in sorted(per)] for name, per in entries.items()}
  return entries, {"flag_steps": steps, "per_eps": tables}, finals, own


def convergence_section(r, plan, finals):
  """Check 3 under flags: the reference attack with more iterations and restarts on the examples of the
  convergence subset that every attack left robust at step k; ``finals`` (and the kept images) are updated."""
  rows_out = []
  if not plan.convergence_eps:
    return rows_out
  spec, k = plan.convergence, r.k
  n = int(sum(m.sum() for m in r.masks[:plan.convergence_batches]))  # the real examples of those batches
  with r.timed("convergence_s"):
    for e in plan.convergence_eps:
      i = _eps_index(plan.eps, e)
      if i is None:
        continue  # under flags check 3 strengthens the cascade's worst case: only at an ε of the grid
      correct = finals[i]
      base = correct[:n, k - 1].copy()
      rows = np.flatnonzero(base)
      res = attack_rows(r, spec, e, rows, jax.random.fold_in(r.key_for(spec.name), i), label="convergence")
      correct[rows] &= res["adv_correct"]
      if res["adv_images"] is not None:
        r.keepers[i].offer(spec.name, rows, res["adv_images"], res["adv_correct"])
      rows_out.append({"eps": e, "num_examples": int(n), "iterations": spec.opts["num_iterations"],
                       "restarts": spec.opts["num_restarts"], "attacked": int(len(rows)),
                       "base_acc": float(base.mean()) if n else 0.0,
                       "strong_acc": float(correct[:n, k - 1].mean()) if n else 0.0})
  return rows_out


def policy_check_section(r, plan, own):
  """Check 9: each policy attack alone (BPDA, the scanpath search) on up to ``checks.policy_examples``
  examples that the reference attack broke at step k, at ``plan.policy_eps``."""
  i = _eps_index(plan.eps, plan.policy_eps)
  ref = f"{plan.reference}_step"
  if not plan.policy_checks or i is None or ref not in own[i]:
    return None
  k, mine = r.k, own[i][ref]
  broke = mine["rows"][~mine["adv_correct"][:, k - 1]]
  pick = broke[:int(r.config.attack.checks.policy_examples)]
  out = {"eps": plan.policy_eps, "reference": ref, "num_examples": int(len(pick)), "attacks": {}}
  with r.timed("policy_check_s"):
    for name, spec in plan.policy_checks.items():
      res = attack_rows(r, spec, plan.policy_eps, pick, r.key_for(f"policy_{name}"), label=f"check 9 {name}")
      out["attacks"][name] = {"broke": int((~res["adv_correct"][:, k - 1]).sum()) if len(pick) else 0}
  return out


def randomness_section(r):
  """AutoAttack's randomness flag: the evaluation twice on the first batch with the same key (must agree);
  with sampled fixations also with another key (the model is stochastic by design: EOT)."""
  mask = r.masks[0]
  again = np.asarray(_to_host(r.clean_fn(r.variables, r.batches[0]["image"], r.eval_keys[0])))[:, mask]
  first = r.clean_host[0][:, mask]
  out = {"same_key_max_diff": float(np.max(np.abs(again - first))) if first.size else 0.0,
         "fixations": r.setup.fixations, "other_key_max_diff": None}
  if r.setup.fixations == "sample":
    other = np.asarray(_to_host(r.clean_fn(r.variables, r.batches[0]["image"], r.key_for("randomness"))))
    out["other_key_max_diff"] = float(np.max(np.abs(other[:, mask] - first)))
  return out


def square_numbers(r, plan, flags: dict):
  """Check 5 under flags: what Square broke at step k after the white-box attacks (at ``plan.square_eps``)."""
  i = _eps_index(plan.eps, plan.square_eps)
  if i is None or "square_step" not in plan.untargeted:
    return None
  rows = {row["attack"]: row for row in flags["per_eps"][i]["rows"]}
  sq = rows["square_step"]
  n = len(r.clean_correct)
  white_box = int(r.clean_correct[:, r.k - 1].sum()) - (sq["robust_at_k"] + sq["broke_at_k"])
  return {"eps": plan.square_eps, "queries": plan.untargeted["square_step"].opts["num_queries"],
          "num_examples": int(n), "square_broken": sq["broke_at_k"], "pgd_broken": int(white_box),
          "square_only": sq["broke_at_k"], "cascade": True}


def _eps_index(eps_list, eps):
  for i, e in enumerate(eps_list):
    if abs(e - eps) <= 1e-12 * max(1.0, abs(eps)):
      return i
  return None
