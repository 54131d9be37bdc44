"""The paper's claims and the three-valued rule that judges them: pure functions of per-example results and
published numbers (tested on hand-made ones); the same rule judges our runs and the paper's own numbers.

Claims name models by their key in ``paper_numbers.PAPER`` (the paper's names); :func:`by_paper_key` maps our
runs onto those keys through the model registry. Each claim is a statistic, a linear combination of accuracies
averaged over the ε grid (:func:`claim_tests`): for "A more robust than B" the group-mean accuracy of A minus
that of B, read at step k and at step T_eval (two tests); for the recovery claim RS-RNN's accuracy at T_eval
minus its accuracy at k under the same attack (one test). A test's interval decides it (:func:`verdict`):

* **holds** if the interval's lower end is above 0,
* **fails** if its upper end is below 0 (the interval excludes the claimed direction),
* **undecided** otherwise (the data allow either sign at this budget).

A claim read at k AND T_eval combines its two tests (:func:`combine`): it holds iff both hold, fails iff either
fails, else it is undecided. Each claim is also judged on the examples that every compared model (every seed)
classifies correctly clean at both read-outs (``clean``: :func:`clean_correct_examples`): there each model's clean
accuracy is 100%, so accuracy under attack is 1 − its attack success rate, and a model that is weak clean cannot
carry the verdict. Our intervals are the paired bootstrap of :mod:`rsrnn_jax.reproduction.stats`;
the paper's are its estimate ± the read-off tolerance propagated in the worst case (:func:`paper_test`: every
value of AAAI Fig. 4 is read off to ±1 point, paper.md; a statistic Σ w·value has the tolerance Σ|w| points).
"""
from __future__ import annotations

import numpy as np

from rsrnn_jax.models import registry
from rsrnn_jax.reproduction import stats
from rsrnn_jax.reproduction.paper_numbers import PAPER

HOLDS, FAILS, UNDECIDED, NOT_EVALUATED = "holds", "fails", "undecided", "not evaluated"
CLAIMS = (
    {"id": "retina", "text": "retina more robust than crops", "higher": ("RS-RNN", "Base-Retina"),
     "lower": ("DRAM", "GF-Net-m")},
    {"id": "crops", "text": "crops more robust than S3TA and FF-CNN", "higher": ("DRAM", "GF-Net-m"),
     "lower": ("S3TA", "FF-CNN")},
    {"id": "recovery", "text": "RS-RNN recovers with more glimpses", "model": "RS-RNN"},
)


def pairs_of(claim: dict) -> tuple:
  """A group claim's one-model-against-one sub-claims (every higher × lower pair, ``of`` naming the claim): the
  same test with one model per side, to see which pairs carry a group verdict. None for a one-model claim."""
  return tuple({"id": f"{claim['id']}:{h}>{lo}", "of": claim["id"], "text": f"{h} more robust than {lo}",
                "higher": (h,), "lower": (lo,)} for h in claim.get("higher", ()) for lo in claim.get("lower", ()))


PAIRS = tuple(p for c in CLAIMS for p in pairs_of(c))
READ_OUTS = ("k", "T")  # the read-out axis of the per-example data: accuracy at step k, at step T_eval
PAPER_TOLERANCE = 0.01  # AAAI Fig. 4 read off to ±1 point per value (paper.md §8)


def verdict(interval) -> str:
  """holds if the interval lies above 0, fails if it lies below 0, else undecided."""
  lo, hi = interval
  return HOLDS if lo > 0 else FAILS if hi < 0 else UNDECIDED


def combine(verdicts) -> str:
  """Several tests of one claim: holds iff every test holds, fails iff any fails, else undecided."""
  verdicts = list(verdicts)
  if any(v == FAILS for v in verdicts):
    return FAILS
  return HOLDS if verdicts and all(v == HOLDS for v in verdicts) else UNDECIDED


def needed_models(claim: dict) -> tuple:
  return (claim["model"],) if "model" in claim else tuple(claim["higher"]) + tuple(claim["lower"])


def claim_tests(claim: dict) -> dict:
  """{test name: [(model, read-out index, weight)]}: the statistic(s) of ``claim``."""
  k, t = READ_OUTS.index("k"), READ_OUTS.index("T")
  if "model" in claim:
    return {"T vs k": [(claim["model"], t, 1.0), (claim["model"], k, -1.0)]}
  return {name: [(m, r, 1.0 / len(claim["higher"])) for m in claim["higher"]]
          + [(m, r, -1.0 / len(claim["lower"])) for m in claim["lower"]] for name, r in (("k", k), ("T", t))}


def _model_summaries(data: dict, models) -> dict:
  """Per model: its accuracy averaged over ε and examples, mean ± sd over seeds, per read-out."""
  out = {}
  for m in models:
    per_seed = np.asarray(data[m], np.float64).mean(axis=(1, 2))  # [S, R]
    out[m] = {r: stats.mean_sd(per_seed[:, i]) for i, r in enumerate(READ_OUTS)}
  return out


def clean_correct_examples(clean: dict, models) -> np.ndarray:
  """[n] bool: the examples every seed of every model of ``models`` classifies correctly clean at every read-out
  (``clean``: {model: [S, n, R]})."""
  return np.logical_and.reduce([np.asarray(clean[m], bool).all(axis=(0, 2)) for m in models])


def judge_claim(claim: dict, data: dict, clean: dict | None = None, **bootstrap_kw) -> dict:
  """``claim`` on ``data`` ({paper key: [S, E, n, 2]} 0/1, read-outs k and T): {"verdict", "tests": {name:
  {"estimate", "interval", "verdict", ...}}, "models": per-model mean ± sd, "missing"}. With ``clean`` ({paper
  key: [S, n, 2]}), on the examples every compared model classifies correctly clean only (their number:
  ``num_examples``)."""
  needed = needed_models(claim)
  missing = [m for m in needed if m not in data or (clean is not None and m not in clean)]
  if missing:
    return {"verdict": NOT_EVALUATED, "tests": {}, "models": {}, "missing": missing}
  extra = {}
  if clean is not None:
    keep = clean_correct_examples(clean, needed)
    data = {m: np.asarray(data[m])[:, :, keep] for m in needed}
    extra = {"num_examples": int(keep.sum())}
    if not keep.any():
      return {"verdict": NOT_EVALUATED, "tests": {}, "models": {}, "missing": [], **extra}
  tests = {}
  for name, terms in claim_tests(claim).items():
    b = stats.bootstrap(data, terms, **bootstrap_kw)
    tests[name] = {**b, "verdict": verdict(b["interval"])}
  return {"verdict": combine(t["verdict"] for t in tests.values()), "tests": tests,
          "models": _model_summaries(data, dict.fromkeys(needed)), "missing": [], **extra}


def judge(data_by_attack: dict, claims=CLAIMS, clean_by_attack: dict | None = None, **bootstrap_kw) -> list[dict]:
  """Every claim (of ``claims``: :data:`CLAIMS` or :data:`PAIRS`) under every attack: [{"claim", "attack",
  "verdict", "tests", "models", "missing"}]; ``data_by_attack``: {attack: {paper key: [S, E, n, 2]}}; with
  ``clean_by_attack`` ({attack: {paper key: [S, n, 2]}}) on the clean-correct examples (:func:`judge_claim`)."""
  return [{"claim": c, "attack": a,
           **judge_claim(c, data, None if clean_by_attack is None else clean_by_attack[a], **bootstrap_kw)}
          for c in claims for a, data in data_by_attack.items()]


def paper_test(values: dict, terms, tolerance: float = PAPER_TOLERANCE) -> dict:
  """A test on published numbers ({model: {"k": [per ε], "T": [per ε]}}, fractions) each read off to
  ±``tolerance``: the estimate and the interval estimate ± tolerance·Σ|w| (the worst case of every value off by
  its tolerance in the unfavourable direction)."""
  weights = {}
  for m, r, w in terms:
    weights[(m, r)] = weights.get((m, r), 0.0) + w
  estimate = float(sum(w * np.mean(values[m][READ_OUTS[r]]) for (m, r), w in weights.items()))
  half = tolerance * sum(abs(w) for w in weights.values())
  interval = [estimate - half, estimate + half]
  return {"estimate": estimate, "interval": interval, "tolerance": half, "verdict": verdict(interval)}


def judge_paper(values: dict | None = None, tolerance: float = PAPER_TOLERANCE, claims=CLAIMS) -> list[dict]:
  """Every claim of ``claims`` on the paper's AAAI Fig. 4 numbers (or ``values``), attack "paper"."""
  values = paper_accuracies() if values is None else values
  out = []
  for c in claims:
    missing = [m for m in needed_models(c) if m not in values]
    tests = {} if missing else {n: paper_test(values, terms, tolerance) for n, terms in claim_tests(c).items()}
    out.append({"claim": c, "attack": "paper", "missing": missing, "tests": tests,
                "verdict": NOT_EVALUATED if missing else combine(t["verdict"] for t in tests.values())})
  return out


def by_paper_key(per_model: dict) -> dict:
  """Our runs' values {run name: ...} keyed by the paper's names (runs the paper has no name for dropped)."""
  keys = {m: registry.variant(m).paper_key for m in per_model}
  return {keys[m]: v for m, v in per_model.items() if keys[m]}


def paper_accuracies() -> dict:
  """The paper's Fig. 4 accuracies ({model: {"k": [per ε], "T": [per ε]}}, fractions)."""
  p = PAPER["adv_accuracy"]
  return {m: {"k": [v / 100 for v in p["at_k"][m]], "T": [v / 100 for v in p["at_T"][m]]} for m in p["at_k"]}
