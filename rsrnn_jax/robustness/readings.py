"""What a failed sanity check (:mod:`rsrnn_jax.robustness.checks`) means for the numbers a verdict reads, read
from the check's id, whether the profile ran under robust flags, and where it decides, the check's own numbers
(results written before a reading existed read the same):

  finding  a property of the model the check exposed, not a weakness of the attack;
  covered  a stronger attack exposed it and is part of the worst case the verdicts read;
  warning  the numbers may overstate robustness: a stronger or different attack is needed.

Every report prints it beside every FAIL (the run's report.md, each setting's reproduction report, the
side-by-side report and ``verdicts.json``).
"""
from __future__ import annotations

READING_KINDS = ("finding", "covered", "warning")
_READINGS = {
    1: ("warning", "the attack is weaker at a larger ε than at a smaller one: the larger ε's numbers overstate "
                   "robustness"),
    2: ("warning", "the attack cannot reach chance at a large ε: gradients may be masked"),
    3: ("covered", "the attack with more iterations and restarts is part of the worst case (the paper-attack rows "
                   "are the paper's fixed PGD-5 by design)"),
    4: ("warning", "a one-step attack beat the iterative one: the iterative attack is not working"),
    5: ("warning", "a gradient-free attack found examples the gradient attacks missed: gradients may be masked"),
    6: ("warning", "the input gradients vanish, explode or are not finite at some step"),
    7: ("finding", "the model's recovery with more glimpses does not survive an attacker of every step: the "
                   "recovery is a property of the step-k attack, not of the model"),
    8: ("warning", "the policy attacks did not move the fixations: their gradient through the policy is dead"),
    9: ("covered", "the policy attacks run after APGD-CE under robust flags: the examples they miss that APGD-CE "
                   "broke are counted broken, and what they break beyond it still counts"),
    10: ("warning", "a transfer attack beat the white-box attacks: white-box gradients may be masked"),
    11: ("warning", "an AutoAttack flag was raised: an APGD run started at a zero gradient on an example no attack "
                    "broke (each such example can overstate robust accuracy by one example: the run's report counts "
                    "them), non-determinism, or Square"),
}
_FLAGGED = {5: ("covered", "under robust flags Square runs in the cascade: what it breaks counts in the worst "
                           "case; a gradient-free attack found examples the gradient attacks missed")}
_ZERO_GRADIENTS_COVERED = ("covered", "an APGD run started at a zero gradient on examples no attack broke, and each "
                                      "of them was also attacked by another APGD run from a non-zero gradient at a "
                                      "step where it stays robust: its robustness does not rest on the zero gradient")
_ANSWERED = ("covered", "the same run's stronger profile (under robust flags, Square in its cascade) passes this "
                        "check: the gradient-free attack finds nothing its gradient attacks miss, so the gap was the "
                        "weakness of this profile's fixed attack, not masked gradients (the paper-attack rows are "
                        "the paper's fixed PGD-5 by design)")
_ANSWERABLE = (5,)  # checks a stronger profile of the same run can answer by passing them
_FIXED_POLICY = ("finding", "no attack moved a fixation, the plain APGD-CE included: the policy does not respond to "
                            "the image (a fixed scanpath), so a policy attack has nothing to move and the plain "
                            "attacks on that scanpath are exact")


def _zero_gradients_covered(check: dict) -> bool:
  """Check 11 failed on zero-gradient starts only (not on randomness or Square), and every such example that
  stayed robust was also attacked by another APGD run from a non-zero gradient at a step where it stays robust
  (results that predate the count: where their counts prove it, checks._zero_grad_uncovered)."""
  n = check.get("numbers") or {}
  rnd = n.get("randomness") or {}
  return (check["id"] == 11 and n.get("zero_grad_robust", 0) > 0 and n.get("zero_grad_uncovered") == 0
          and not (rnd.get("same_key_max_diff") or 0) > 0 and n.get("square") != "fail")


def fixed_policy(check: dict) -> bool:
  """Check 8 failed because nothing moves the fixations: the reference attack attacked examples and changed no
  scanpath either (results without ``reference_attacked``: the reference attack runs first, on every example)."""
  n = check.get("numbers") or {}
  return (check["id"] == 8 and n.get("changed") == 0 and n.get("reference_share") == 0
          and n.get("reference_attacked", n.get("attacked", 0)) > 0)


def reading(check_id: int, flags: bool = False, check: dict | None = None) -> tuple[str, str]:
  """(kind, sentence): what a FAIL of check ``check_id`` means for the numbers (``READING_KINDS``); ``flags``:
  the profile ran under robust flags, where every attack's breaks count in the worst case; ``check``: the
  failed check itself, where its numbers decide the reading (check 8 on a fixed policy)."""
  if check is not None and fixed_policy(check):
    return _FIXED_POLICY
  if check is not None and _zero_gradients_covered(check):
    return _ZERO_GRADIENTS_COVERED
  if check is not None and check.get("answered_by"):
    return _ANSWERED
  if flags and check_id in _FLAGGED:
    return _FLAGGED[check_id]
  return _READINGS[check_id]


def run_checks(attacks: dict, profile: str) -> list[dict]:
  """The sanity checks of one run's ``profile`` (``attacks``: {profile: {"checks": [...]}}, each profile's
  ``sanity_checks``), where a failed check of ``_ANSWERABLE`` that another profile of the same run, run under
  robust flags (checks 8-11 present), passes is marked ``answered_by`` that profile (then read as covered)."""
  stronger = {p: {c["id"]: c["status"] for c in a["checks"]} for p, a in attacks.items()
              if a and p != profile and any(c["id"] >= 8 for c in a["checks"])}
  out = []
  for c in attacks[profile]["checks"]:
    by = [p for p, st in sorted(stronger.items()) if st.get(c["id"]) == "pass"]
    answered = c["status"] == "fail" and c["id"] in _ANSWERABLE and by
    out.append({**c, "answered_by": by[0]} if answered else c)
  return out


def readings(check_lists) -> dict:
  """{check id: (name, kind, meaning)} of every check that failed in any of ``check_lists`` (each a
  ``sanity_checks`` list; checks 8-11 present = the profile ran under robust flags). Where runs read one check
  differently, the most severe reading is kept (warning, then covered, then finding)."""
  out = {}
  for checks in check_lists:
    flags = any(c["id"] >= 8 for c in checks)
    for c in checks:
      if c["status"] == "fail":
        read = (c["name"], *reading(c["id"], flags, c))
        if c["id"] not in out or READING_KINDS.index(read[1]) > READING_KINDS.index(out[c["id"]][1]):
          out[c["id"]] = read
  return dict(sorted(out.items()))
