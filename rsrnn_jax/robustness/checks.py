"""The sanity checks of an adversarial evaluation, each a pure function of the results dict (Carlini et al.
2019, "On evaluating adversarial robustness"; Athalye et al. 2018; AutoAttack's checks.py and flags_doc.md).
Each returns ``{"id", "name", "status": pass | fail | skipped, "detail", "numbers"}``. "The reference
attack" is ``config.attack.reference`` (PGD; APGD-CE in the adaptive profile); under robust flags its entries
are the worst case after it, and Square's comparison is with every white-box attack before it.

1. accuracy does not rise with ε: clean, then every ε, then the large ε; at steps k and T_eval, for every
   horizon of the reference attack; a rise above ``checks.monotone_tol`` fails;
2. at ``checks.large_eps`` the step-k reference attack brings step-k accuracy to chance (1/K +
   ``chance_tol``) or below;
3. the step-k attack with ``iteration_factor``× the iterations and ``extra_restarts`` more restarts (worst
   per example with the original) changes robust accuracy at step k by less than ``convergence_tol`` (1
   point), else "not converged" (at ``convergence_eps``, on the first ``convergence_examples``);
4. FGSM is not stronger than PGD: FGSM accuracy at step k >= PGD accuracy − ``fgsm_tol`` at every ε;
5. the gradient-free Square attack (margin loss, ``square_queries`` queries, at ``square_eps``) breaks no
   example that PGD did not: the count of examples misclassified at step k after Square but not after PGD
   must be at most floor(``square_tol`` × N). The tolerance (1% by default: 2 of 200) absorbs examples that
   sit on the decision boundary, where any extra search may flip them; a masked model loses many more;
6. input-gradient norms per step (loss on each step's logits w.r.t. the input, CE and margin, argmax
   fixations): fail on any NaN/inf, if at some step more than ``grad_zero_frac`` of the examples have an
   exactly zero gradient for every loss of the profile, or if the per-step median norms of the margin loss
   (no softmax saturation) span more than a factor ``grad_ratio`` (exploding/vanishing through the unroll);
7. full horizon vs step k: the paper's recovery is acc_T(step-k attack) − acc_k(step-k attack). It
   "survives" at an ε if acc_T under the full-horizon attack still exceeds acc_k under the step-k attack by
   more than ``monotone_tol``. Pass: it survives at every ε where the step-k attack shows a recovery;
   skipped when there is no recovery to test or the model has no glimpse steps.

Under robust flags (the adaptive profile) also:

8. the policy attacks (BPDA, scanpath search) changed the argmax scanpath of some of the examples they
   attacked (the share is reported next to the reference attack's); fail if they attacked some and moved none;
9. each policy attack alone breaks all but floor(``policy_tol`` × n) of n examples the reference
   attack broke (``policy_examples``, at ``policy_eps``): else its surrogate gradient is broken;
10. the transfer attack breaks at most floor(``transfer_tol`` × N) examples that every white-box attack left
   robust (else the white-box gradients are masked); skipped without a source model;
11. AutoAttack's flags: no APGD run starts at an exactly zero gradient, two forward passes of the same input
   give the same logits, and check 5 passed.

What a FAIL means for the numbers: :mod:`rsrnn_jax.robustness.readings`.
"""
from __future__ import annotations

import math

import numpy as np

from rsrnn_jax.robustness import registry
from rsrnn_jax.robustness.readings import fixed_policy


def _check(cid: int, name: str, status: str, detail: str, **numbers) -> dict:
  return {"id": cid, "name": name, "status": status, "detail": detail, "numbers": numbers}


def _acc_at(entry, step: int) -> float:
  return float(entry["adv_acc"][step - 1])


def _ref(results: dict) -> str:
  """The reference attack checks 1-3 and 7 build on (``pgd``; ``apgd_ce`` in the adaptive profile)."""
  return results.get("reference", "pgd")


def _reference_attacks(results: dict) -> list[str]:
  ref = _ref(results)
  return [name for name in results["untargeted"].get("attacks", {}) if name.rpartition("_")[0] == ref]


def check_monotone(results: dict, tol: float) -> dict:
  """1. Accuracy does not rise as ε grows (clean → ε list → large ε), at steps k and T_eval, per reference
  attack (under robust flags: the worst case after it)."""
  k, t = results["attack_step"], results["eval_steps"]
  unt = results["untargeted"]
  clean = results["clean"]["accuracy_per_step"]
  curves, worst_rise, where = {}, -math.inf, ""
  for name in _reference_attacks(results):
    points = [(0.0, clean)] + [(e["eps"], e["adv_acc"]) for e in unt["attacks"][name]]
    large = results.get("large_eps", {}).get(name)
    same = lambda e: e.get("num_examples") == unt["attacks"][name][0].get("num_examples")
    if large is not None and same(large):  # the large ε on a subset (large_eps_examples) is not comparable
      points.append((large["eps"], large["adv_acc"]))
    points.sort(key=lambda p: p[0])
    for step in sorted({k, t}):
      accs = [float(p[1][step - 1]) for p in points]
      curves[f"{name}@{step}"] = {"eps": [p[0] for p in points], "acc": accs}
      for i in range(1, len(accs)):
        rise = accs[i] - accs[i - 1]
        if rise > worst_rise:
          worst_rise, where = rise, f"{name} step {step}: {accs[i - 1]:.3f} at ε={points[i - 1][0]:g} → " \
                                    f"{accs[i]:.3f} at ε={points[i][0]:g}"
  if not curves:
    return _check(1, "accuracy does not rise with ε", "skipped", f"no {_ref(results)} results")
  ok = worst_rise <= tol
  detail = (f"largest rise {max(worst_rise, 0):.3f} ≤ {tol:g}" if ok else
            f"accuracy rises by {worst_rise:.3f} > {tol:g} ({where})")
  return _check(1, "accuracy does not rise with ε", "pass" if ok else "fail", detail,
                max_rise=float(worst_rise), tol=tol, curves=curves)


def check_large_eps(results: dict, tol: float) -> dict:
  """2. At the large ε the step-k attack brings accuracy at step k to chance (1/K + tol) or below."""
  large = results.get("large_eps", {}).get(f"{_ref(results)}_step")
  if large is None:
    return _check(2, "accuracy falls to chance at a large ε", "skipped", "large-ε attack not run")
  k, t = results["attack_step"], results["eval_steps"]
  chance = 1.0 / results["num_classes"]
  acc_k, acc_t = _acc_at(large, k), _acc_at(large, t)
  ok = acc_k <= chance + tol
  detail = (f"step-{k} accuracy {acc_k:.3f} at ε={large['eps']:g} (chance {chance:.3f} + {tol:g}); "
            f"step {t}: {acc_t:.3f}")
  if not ok:
    detail = "NOT at chance: " + detail + " — gradients may be masked"
  return _check(2, "accuracy falls to chance at a large ε", "pass" if ok else "fail", detail,
                eps=large["eps"], acc_at_k=acc_k, acc_at_T=acc_t, chance=chance, tol=tol)


def check_convergence(results: dict, tol: float) -> dict:
  """3. More iterations + restarts change robust accuracy (step k) by < tol, else "not converged"."""
  rows = results.get("convergence", [])
  if not rows:
    return _check(3, "attack converged (2× iterations + restarts)", "skipped", "not run")
  deltas = [abs(r["base_acc"] - r["strong_acc"]) for r in rows]
  worst = int(np.argmax(deltas))
  ok = max(deltas) < tol
  r = rows[worst]
  detail = (f"max Δacc {max(deltas):.3f} (ε={r['eps']:g}: {r['base_acc']:.3f} → {r['strong_acc']:.3f} with "
            f"{r['iterations']} it × {r['restarts']} restarts, {r['num_examples']} examples)")
  if not ok:
    detail = "not converged: " + detail
  return _check(3, "attack converged (2× iterations + restarts)", "pass" if ok else "fail", detail,
                rows=rows, max_delta=float(max(deltas)), tol=tol)


def check_fgsm(results: dict, tol: float) -> dict:
  """4. FGSM is not stronger than PGD (accuracy at step k, every ε)."""
  attacks = results["untargeted"]["attacks"]
  if "fgsm_step" not in attacks or "pgd_step" not in attacks:
    return _check(4, "FGSM not stronger than PGD", "skipped", "not run")
  k = results["attack_step"]
  rows = [{"eps": f["eps"], "fgsm_acc": _acc_at(f, k), "pgd_acc": _acc_at(p, k)}
          for f, p in zip(attacks["fgsm_step"], attacks["pgd_step"])]
  bad = [r for r in rows if r["fgsm_acc"] < r["pgd_acc"] - tol]
  ok = not bad
  gap = min(r["fgsm_acc"] - r["pgd_acc"] for r in rows)
  detail = (f"FGSM − PGD accuracy at step {k} ≥ {gap:.3f} at every ε" if ok else
            "FGSM stronger than PGD at ε=" + ", ".join(f"{r['eps']:g} ({r['fgsm_acc']:.3f} < {r['pgd_acc']:.3f})"
                                                     for r in bad))
  return _check(4, "FGSM not stronger than PGD", "pass" if ok else "fail", detail, rows=rows, tol=tol)


def check_square(results: dict, tol: float) -> dict:
  """5. The gradient-free attack breaks no example PGD did not (≤ floor(tol·N) such examples)."""
  sq = results.get("square")
  if not sq:
    return _check(5, "gradient-free attack finds nothing PGD missed", "skipped", "not run")
  allowed = int(math.floor(tol * sq["num_examples"]))
  ok = sq["square_only"] <= allowed
  if sq.get("cascade"):  # robust flags: Square ran after the white-box attacks, on what they left robust
    detail = (f"Square ({sq['queries']} queries, ε={sq['eps']:g}) broke {sq['square_only']} of "
              f"{sq['num_examples']} examples that every white-box attack left robust (allowed {allowed}); the "
              f"white-box attacks broke {sq['pgd_broken']}")
  else:
    detail = (f"Square ({sq['queries']} queries, ε={sq['eps']:g}) broke {sq['square_only']} of "
              f"{sq['num_examples']} examples PGD did not (allowed {allowed}); Square broke "
              f"{sq['square_broken']}, PGD {sq['pgd_broken']}")
  return _check(5, "gradient-free attack finds nothing PGD missed", "pass" if ok else "fail", detail,
                allowed=allowed, **{k: v for k, v in sq.items()})


def check_gradients(results: dict, zero_frac: float, ratio: float, losses=("ce",)) -> dict:
  """6. Input-gradient norms per step: no NaN/inf, not zero (for every attack loss), no explosion."""
  g = results.get("gradients")
  if not g:
    return _check(6, "input gradients healthy at every step", "skipped", "not run")
  per = g["per_loss"]
  problems = []
  nonfinite = sum(sum(v["num_nonfinite"]) for v in per.values())
  if nonfinite:
    problems.append(f"{nonfinite} non-finite gradient norms")
  used = [l for l in losses if l in per]
  if used:
    steps = len(per[used[0]]["zero_frac"])
    for s in range(steps):
      fracs = [per[l]["zero_frac"][s] for l in used]
      if min(fracs) > zero_frac:
        problems.append(f"step {s + 1}: {min(fracs):.0%} of examples have a zero gradient ({'/'.join(used)})")
  spread = None
  ref = per.get("margin") or per[next(iter(per))]
  med = np.asarray([v for v in ref["median_norm"]], np.float64)
  if med.size and np.all(np.isfinite(med)):
    lo, hi = float(med.min()), float(med.max())
    spread = math.inf if lo <= 0 else hi / lo
    if spread > ratio:
      problems.append(f"median margin-gradient norm spans ×{spread:.3g} over steps (> ×{ratio:g}): "
                      f"exploding/vanishing through the unroll")
  ok = not problems
  medians = ", ".join(f"{v:.3g}" for v in ref["median_norm"])
  detail = ("finite, non-zero; median margin-gradient norm per step: " + medians if ok else "; ".join(problems))
  return _check(6, "input gradients healthy at every step", "pass" if ok else "fail", detail,
                spread=spread, zero_frac_tol=zero_frac, ratio_tol=ratio, num_examples=g.get("num_examples"))


def check_full_horizon(results: dict, tol: float) -> dict:
  """7. Does the step-k attack's "recovery with more glimpses" survive a full-horizon attacker?"""
  attacks, ref = results["untargeted"]["attacks"], _ref(results)
  if f"{ref}_full" not in attacks or f"{ref}_step" not in attacks:
    return _check(7, "recovery survives a full-horizon attack", "skipped",
                  "no full-horizon attack (model without glimpse steps, or 'full' not in horizons)")
  k, t = results["attack_step"], results["eval_steps"]
  rows = []
  for s, f in zip(attacks[f"{ref}_step"], attacks[f"{ref}_full"]):
    acc_k, acc_t, full_t = _acc_at(s, k), _acc_at(s, t), _acc_at(f, t)
    rows.append({"eps": s["eps"], "step_attack_acc_k": acc_k, "step_attack_acc_T": acc_t,
                 "full_attack_acc_k": _acc_at(f, k), "full_attack_acc_T": full_t,
                 "recovery": acc_t - acc_k, "recovery_under_full": full_t - acc_k})
  claimed = [r for r in rows if r["recovery"] > tol]
  if not claimed:
    return _check(7, "recovery survives a full-horizon attack", "skipped",
                  f"no recovery to test: step-{k} attack accuracy does not rise by > {tol:g} from step {k} to {t}",
                  rows=rows, tol=tol)
  lost = [r for r in claimed if r["recovery_under_full"] <= tol]
  ok = not lost
  show = ", ".join(f"ε={r['eps']:g}: {r['step_attack_acc_k']:.3f}→{r['step_attack_acc_T']:.3f} (full: "
                   f"{r['full_attack_acc_T']:.3f})" for r in claimed)
  detail = ("recovery survives: " if ok else "recovery does NOT survive at some ε: ") + show
  return _check(7, "recovery survives a full-horizon attack", "pass" if ok else "fail", detail,
                rows=rows, tol=tol)


# ----------------------------------------------------------------------------------------------------------
# Checks of the robust-flags cascade (adaptive profile)
# ----------------------------------------------------------------------------------------------------------

def _cascade_rows(results: dict, want) -> list[dict]:
  """The cascade rows (every ε) of the attacks whose registry entry satisfies ``want``."""
  out = []
  for per in (results.get("flags") or {}).get("per_eps", []):
    for row in per["rows"]:
      attack = row["attack"].rpartition("_")[0]
      if attack in registry.ATTACKS and want(registry.ATTACKS[attack]):
        out.append({**row, "eps": per["eps"]})
  return out


def check_scanpath_changed(results: dict) -> dict:
  """8. The policy attacks moved the fixations: share of the attacked examples whose adversarial scanpath
  (argmax, T_eval steps) differs from the clean one; fail if they attacked examples and moved none."""
  name = "policy attacks change the scanpath"
  rows = [r for r in _cascade_rows(results, lambda e: e.policy) if r["attacked"]]
  if not rows or "scanpath_changed_count" not in rows[0]:
    return _check(8, name, "skipped", "no policy attack ran (no examples left, or a model without fixations)")
  attacked, changed = sum(r["attacked"] for r in rows), sum(r.get("scanpath_changed_count", 0) for r in rows)
  ref = [r for r in _cascade_rows(results, lambda e: True) if r["attack"] == f"{_ref(results)}_step"]
  ref_attacked = sum(r["attacked"] for r in ref)
  ref_changed = sum(r.get("scanpath_changed_count", 0) for r in ref)
  share, ref_share = changed / attacked, ref_changed / max(ref_attacked, 1)
  per = ", ".join(f"{r['attack']} ε={r['eps']:g}: {r.get('scanpath_changed_count', 0)}/{r['attacked']}"
                  for r in rows)
  detail = (f"the policy attacks changed the scanpath of {100 * share:.1f}% of the examples they attacked "
            f"({per}); {_ref(results)}_step: {100 * ref_share:.1f}%")
  c = _check(8, name, "pass" if changed > 0 else "fail", detail, share=share, reference_share=ref_share,
             attacked=attacked, changed=changed, reference_attacked=ref_attacked)
  if fixed_policy(c):
    c["detail"] += "; no attack moved a fixation, the plain one included: the policy does not respond to the image"
  return c


def check_policy_not_weaker(results: dict, tol: float) -> dict:
  """9. Each policy attack alone breaks all but floor(tol·n) of n examples the reference attack broke (else
  its surrogate gradient is broken: weaker than plain APGD where it was meant to add)."""
  name = "policy attacks not weaker than the plain attack"
  pc = results.get("policy_check")
  if not pc or not pc["num_examples"]:
    return _check(9, name, "skipped", "not run (no policy attack, or the reference attack broke nothing)")
  n = pc["num_examples"]
  allowed = int(math.floor(tol * n))
  weak = {a: v["broke"] for a, v in pc["attacks"].items() if v["broke"] < n - allowed}
  shown = ", ".join(f"{a} {v['broke']}/{n}" for a, v in pc["attacks"].items())
  detail = (f"on {n} examples {pc['reference']} broke at ε={pc['eps']:g}: {shown} (allowed to miss {allowed})")
  if weak:
    detail = "surrogate weaker than plain APGD: " + detail
  return _check(9, name, "fail" if weak else "pass", detail, allowed=allowed, weak=weak, **pc)


def check_transfer(results: dict, tol: float) -> dict:
  """10. The transfer attack breaks at most floor(tol·N) examples every white-box attack left robust."""
  name = "transfer not stronger than white-box"
  rows = _cascade_rows(results, lambda e: e.transfer)
  if not rows:
    notes = [n for n in results.get("notes", []) if n.startswith("transfer")]
    return _check(10, name, "skipped", notes[0] if notes else "no transfer attack in the profile")
  n = results["num_examples"]
  allowed = int(math.floor(tol * n))
  worst = max(rows, key=lambda r: r["broke_at_k"])
  detail = (f"the transfer attack broke {worst['broke_at_k']} of {n} examples the white-box attacks left robust "
            f"at step {results['attack_step']} (ε={worst['eps']:g}; allowed {allowed})")
  return _check(10, name, "pass" if worst["broke_at_k"] <= allowed else "fail", detail, allowed=allowed,
                rows=rows)


def _zero_grad_uncovered(row: dict, rows: list[dict], flag_steps: dict) -> int:
  """The row's zero-gradient starts on robust examples that no other APGD run attacked from a non-zero gradient
  at a step where they stay robust. Results that predate ``zero_grad_uncovered_count``: none where the counts
  prove it (every flag step of the row is a flag step of another APGD run at the same ε with no zero-gradient
  start: an example robust at that step after the cascade was robust there before that run, so it attacked
  it), else every such start (``flag_steps``: attack → its steps, the results' ``flags.flag_steps``)."""
  robust = row.get("zero_grad_robust_count", row["zero_grad_count"])
  if "zero_grad_uncovered_count" in row or not robust or row["attack"] not in flag_steps:
    return row.get("zero_grad_uncovered_count", robust)
  working = {step for other in rows if other is not row and other["eps"] == row["eps"]
             and other["zero_grad_count"] == 0 for step in flag_steps.get(other["attack"], ())}
  return 0 if set(flag_steps[row["attack"]]) <= working else robust


def check_autoattack_flags(results: dict, square_status: str) -> dict:
  """11. AutoAttack's flags: no APGD run starts at an exactly zero gradient on an example the cascade leaves
  robust (one that another attack broke cannot inflate the numbers; results without the cascade's
  ``zero_grad_robust_count`` count every such start), two forward passes of the same input agree, and Square
  finds nothing the white-box attacks missed (check 5)."""
  name = "AutoAttack flags (zero gradients, randomness, Square)"
  rows = [r for r in _cascade_rows(results, lambda e: True) if "zero_grad_count" in r]
  rnd = results.get("randomness")
  if not rows and not rnd:
    return _check(11, name, "skipped", "not run")
  attacked, zero = sum(r["attacked"] for r in rows), sum(r["zero_grad_count"] for r in rows)
  zero_robust = sum(r.get("zero_grad_robust_count", r["zero_grad_count"]) for r in rows)
  flag_steps = (results.get("flags") or {}).get("flag_steps") or {}
  uncovered = sum(_zero_grad_uncovered(r, rows, flag_steps) for r in rows)
  problems = []
  if zero_robust:
    problems.append(f"{zero} of {attacked} APGD runs started at a zero gradient, {zero_robust} of them on "
                    f"examples no attack broke, {uncovered} of those not attacked by another APGD run from a "
                    "non-zero gradient at a step where they stay robust")
  if rnd and rnd["same_key_max_diff"] > 0:
    problems.append(f"two forward passes of the same input differ by {rnd['same_key_max_diff']:.3g}")
  if square_status == "fail":
    problems.append("Square found examples the white-box attacks missed (check 5)")
  stochastic = (f"; sampled fixations: another key changes the logits by {rnd['other_key_max_diff']:.3g} (EOT)"
                if rnd and rnd.get("other_key_max_diff") is not None else "")
  broken_anyway = " (on examples another attack broke)" if zero else ""
  detail = ("; ".join(problems) if problems else
            f"zero-gradient starts {zero}/{attacked}{broken_anyway}; same input twice: identical logits; Square: "
            f"{square_status}" + stochastic)
  return _check(11, name, "fail" if problems else "pass", detail, zero_grad=zero, zero_grad_robust=zero_robust,
                zero_grad_uncovered=uncovered, attacked=attacked, randomness=rnd, square=square_status)


def sanity_checks(results: dict, checks) -> list[dict]:
  """The seven checks on a results dict (``checks``: the ``config.attack.checks`` fields), and under robust
  flags (``results["flags"]``) checks 8-11."""
  get = lambda k: checks[k]
  out = [
      check_monotone(results, float(get("monotone_tol"))),
      check_large_eps(results, float(get("chance_tol"))),
      check_convergence(results, float(get("convergence_tol"))),
      check_fgsm(results, float(get("fgsm_tol"))),
      check_square(results, float(get("square_tol"))),
      check_gradients(results, float(get("grad_zero_frac")), float(get("grad_ratio")),
                      tuple(results.get("losses", ("ce",)))),
      check_full_horizon(results, float(get("monotone_tol"))),
  ]
  if results.get("flags"):
    out += [check_scanpath_changed(results),
            check_policy_not_weaker(results, float(checks.get("policy_tol", 0.1))),
            check_transfer(results, float(checks.get("transfer_tol", 0.01))),
            check_autoattack_flags(results, out[4]["status"])]
  return out
