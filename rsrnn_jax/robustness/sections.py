"""The suite's sections, each one function of the shared :class:`rsrnn_jax.robustness.suite.SuiteRun` and the
run's :class:`~rsrnn_jax.robustness.plan.Plan`: every attack on every example (the ``paper`` and ``strong``
profiles), and the sections every profile shares (large ε, targeted, Square, gradients, probability maps, the
worst case). Under robust flags the untargeted attacks and checks 3 and 9 are :mod:`rsrnn_jax.robustness.cascade`'s;
:mod:`rsrnn_jax.robustness.suite` orchestrates them and its docstring lists what each section measures."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from rsrnn_jax.robustness import cascade, gradients, probmaps, subset
from rsrnn_jax.robustness.plan import Plan
from rsrnn_jax.robustness.sweep import per_example_stats
from rsrnn_jax.train import parallel

_to_host = parallel.to_host


def total_work(r, plan: Plan) -> float:
  """Work estimate for the progress bar (relative glimpse-step evaluations × images); under flags every
  attack is counted on every example and the cascade takes off what the flags skip."""
  w = lambda spec: spec.cost(r.setup)
  everything = r.rows(len(r.batches))
  return (sum(w(s) for s in plan.untargeted.values()) * len(plan.eps) * everything
          + (w(plan.untargeted[_ref(plan)]) * r.rows(plan.large_eps_batches) if plan.large_eps > 0 else 0)
          + w(plan.targeted) * len(plan.targeted_eps) * everything
          + w(plan.convergence) * len(plan.convergence_eps) * r.rows(plan.convergence_batches)
          + (w(plan.square) * r.rows(plan.square_batches) if plan.run_square else 0))


def _ref(plan: Plan) -> str:
  return f"{plan.reference}_step"


def untargeted_section(r, plan: Plan) -> dict:
  """Every untargeted attack at every ε: {result name: [one entry per ε]}; the images go to the keepers."""
  out = {}
  everyone = np.arange(len(r.clean_correct))
  for name, spec in plan.untargeted.items():
    with r.timed(f"untargeted_{name}_s"):
      out[name] = r.attack(spec, plan.eps, name, keep_images=True)
    for keeper, entry in zip(r.keepers, out[name]):
      keeper.offer(name, everyone, entry.pop("adv_images"), entry["adv_correct"])
  return out


def large_eps_section(r, plan: Plan) -> dict:
  """Check 2: the step-k reference attack at a large ε (on the first ``checks.large_eps_examples``)."""
  if plan.large_eps <= 0:
    return {}
  with r.timed("large_eps_s"):
    return {_ref(plan): r.attack(plan.untargeted[_ref(plan)], [plan.large_eps], "large", label="large ε",
                                 num_batches=plan.large_eps_batches)[0]}


def _base_at(r, plan: Plan, untargeted: dict, eps: float, num_batches: int, label: str) -> dict:
  """The step-k reference result at ``eps``: from the sweep, or (ε outside the list) run on the same batches."""
  base = _find_eps(untargeted[_ref(plan)], eps)
  if base is None:
    base = r.attack(plan.untargeted[_ref(plan)], [eps], _ref(plan), num_batches=num_batches, label=label)[0]
  return base


def convergence_section(r, plan: Plan, untargeted: dict):
  """Check 3: more iterations and restarts, worst per example with the original attack.

  Returns (rows of the check, {ε: the stronger attack's adv_correct [n, T]} for the worst case)."""
  rows, entries = [], {}
  if not plan.convergence_eps:
    return rows, entries
  spec, k = plan.convergence, r.k
  with r.timed("convergence_s"):
    results = r.attack(spec, plan.convergence_eps, spec.name, num_batches=plan.convergence_batches,
                       label="convergence", keep_images=True)
    n = len(results[0]["adv_correct"]) if results else 0
    for e, res in zip(plan.convergence_eps, results):
      base_k = _base_at(r, plan, untargeted, e, plan.convergence_batches, "convergence base")["adv_correct"][:n, k - 1]
      strong_k = base_k & res["adv_correct"][:, k - 1]
      entries[e] = res["adv_correct"]
      i = cascade._eps_index(plan.eps, e)
      if i is not None:
        r.keepers[i].offer(spec.name, np.arange(n), res.pop("adv_images"), res["adv_correct"])
      rows.append({"eps": e, "num_examples": int(n), "iterations": spec.opts["num_iterations"],
                   "restarts": spec.opts["num_restarts"], "base_acc": float(base_k.mean()),
                   "strong_acc": float(strong_k.mean()), "converged_attack_acc": float(res["adv_acc"][k - 1])})
  return rows, entries


def targeted_section(r, plan: Plan) -> dict:
  """The step-k PGD towards the targets at every targeted ε."""
  if not plan.targeted_eps:
    return {}
  with r.timed("targeted_s"):
    return {"pgd_step": r.attack(plan.targeted, plan.targeted_eps, "targeted", label="targeted")}


def square_section(r, plan: Plan, untargeted: dict):
  """Check 5: the gradient-free Square attack vs PGD on the same examples."""
  if not plan.run_square:
    return None
  k, t = r.k, r.t_eval
  with r.timed("square_s"):
    sq = r.attack(plan.square, [plan.square_eps], "square", num_batches=plan.square_batches, label="square")[0]
    n = len(sq["adv_correct"])
    base = _base_at(r, plan, untargeted, plan.square_eps, plan.square_batches, "square base")  # the reference
    sq_broken = ~sq["adv_correct"][:, k - 1]
    pgd_broken = ~base["adv_correct"][:n, k - 1]
    return {"eps": plan.square_eps, "queries": plan.square.opts["num_queries"], "num_examples": int(n),
            "square_broken": int(sq_broken.sum()), "pgd_broken": int(pgd_broken.sum()),
            "square_only": int((sq_broken & ~pgd_broken).sum()),
            "square_acc_k": float(sq["adv_acc"][k - 1]), "square_acc_T": float(sq["adv_acc"][t - 1])}


def gradients_section(r):
  """Check 6: input-gradient norms per step on the first ``checks.grad_examples`` examples."""
  a = r.config.attack
  with r.timed("gradients_s"):
    if int(a.checks.grad_examples) <= 0:
      return None
    grad_fn = jax.jit(functools.partial(gradients.input_gradient_norms, r.model, num_steps=r.t_eval,
                                        fixations=a.fixations))
    per = {"ce": [], "margin": []}
    for j, sub in enumerate(subset.first_examples(r.batches_np, int(a.checks.grad_examples), r.mesh)):
      g = _to_host(grad_fn(r.variables, sub["image"], sub["label"], rng=r.eval_keys[j]))
      sub_mask = np.asarray(_to_host(sub["mask"])) > 0
      for l in per:
        per[l].append(np.asarray(g[l])[:, sub_mask])
    norms = {l: np.concatenate(v, axis=1) for l, v in per.items()}
    return {"num_examples": int(norms["ce"].shape[1]), "per_loss": gradients.gradient_summary(norms)}


def worst_section(r, plan: Plan, untargeted: dict, convergence_entries: dict) -> list:
  """Per example and step, the worst case over every untargeted attack (and the check-3 attack) at each ε."""
  worst = []
  for i, e in enumerate(plan.eps):
    correct = np.ones_like(r.clean_correct)
    for entries in untargeted.values():
      correct &= entries[i]["adv_correct"]
    if e in convergence_entries:
      correct[:len(convergence_entries[e])] &= convergence_entries[e]
    worst.append(worst_entry(r, e, correct))
  return worst


def worst_entry(r, eps: float, correct) -> dict:
  k, t = r.k, r.t_eval
  return {"eps": eps, **per_example_stats(r.clean_correct, correct, r.clean_correct & ~correct),
          "robust_at_k_and_T": int((correct[:, k - 1] & correct[:, t - 1]).sum()),
          "robust_at_k": int(correct[:, k - 1].sum()), "adv_correct": correct}


def prob_maps_section(r, plan: Plan):
  """Targeted adversarial images of the first batch at the maps' ε → probability maps of their targets."""
  if not plan.run_maps:
    return None
  pm = r.config.attack.prob_map
  with r.timed("prob_maps_s"):
    # The same key as the targeted sweep at this ε (identical adversarial images when ε is in the list).
    hits = [i for i, e in enumerate(plan.targeted_eps) if abs(e - plan.maps_eps) <= 1e-12 * max(1.0, plan.maps_eps)]
    i = hits[0] if hits else len(plan.targeted_eps)
    key = jax.random.fold_in(jax.random.fold_in(r.key_for("targeted"), i), 0)
    out = r.fn_for(plan.targeted)(r.variables, r.batches[0], r.clean_logits[0],
                                  jnp.asarray(plan.maps_eps, jnp.float32), key, r.eval_keys[0])
    batch = {k: np.asarray(v) for k, v in _to_host({k: r.batches[0][k] for k in ("image", "label", "mask",
                                                                                 "target", "index")}).items()}
    correct = np.argmax(r.clean_host[0][r.t_eval - 1], -1) == batch["label"]
    return probmaps.adversarial_maps(r.model, r.variables, batch, _to_host(out["adv_images"]), correct,
                                     eps=plan.maps_eps, num_images=int(pm.num_images), grid=int(pm.grid),
                                     chunk=int(pm.chunk), mesh=r.mesh)



def _find_eps(entries, eps):
  for e in entries:
    if abs(e["eps"] - eps) <= 1e-12 * max(1.0, abs(eps)):
      return e
  return None
