"""Markdown cells shared by the sections of a setting's report (:mod:`rsrnn_jax.reproduction.sections`,
:mod:`rsrnn_jax.reproduction.health`): mean ± sd, a test's estimate with its interval, a verdict, an ε grid, and
the table of the claims judged on a subset of the examples or runs."""
from __future__ import annotations

from rsrnn_jax.report.tables import table
from rsrnn_jax.reproduction.runs import ATTACK_TITLES


def mean_sd_cell(d: dict | None, scale: float = 100.0) -> str:
  """mean ± sd (a stats.mean_sd dict) in points."""
  if not d or d.get("mean") is None:
    return "–"
  return f"{scale * d['mean']:.1f}" + (f" ± {scale * d['sd']:.1f}" if d["n"] > 1 else "")


def interval_cell(test: dict | None) -> str:
  if not test:
    return "–"
  lo, hi = test["interval"]
  return f"{100 * test['estimate']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def verdict_word(v: str) -> str:
  return f"**{v}**" if v in ("holds", "fails", "undecided") else v


def verdict_cell(v: dict) -> str:
  """A judged claim's verdict, with the models it lacks."""
  return verdict_word(v["verdict"]) + (f" (missing: {', '.join(v['missing'])})" if v["missing"] else "")


def eps_cell(values) -> str:
  return "/".join(f"{e:g}" for e in values)


def seeds_cell(entry: dict) -> str:
  """The seeds a judged claim used per model, e.g. ``RS-RNN 0/1/2; DRAM 1``."""
  return "; ".join(f"{m} {'/'.join(map(str, s))}" for m, s in entry.get("seeds", {}).items()) or "–"


def claims_table(k: int, t: int, entries: list, what: str, count, extra=None) -> str:
  """The claims judged on a subset (of examples or runs; ``entries``: verdicts.judge entries): claim, attack,
  ``what`` (``count(entry)``), Δ at step ``k`` and at ``t`` (T_eval), verdict, and the columns ``extra`` =
  (headers, entry → cells) if given."""
  rows = []
  for v in entries:
    tests, one = v["tests"], "model" in v["claim"]
    cells = ([interval_cell(tests.get("T vs k")), "(one test)"] if one
             else [interval_cell(tests.get("k")), interval_cell(tests.get("T"))])
    rows.append([v["claim"]["text"], ATTACK_TITLES[v["attack"]], count(v), *cells, verdict_cell(v),
                 *(extra[1](v) if extra else [])])
  return table(["claim", "attack", what, f"Δ at k={k} [95% CI] (pt)", f"Δ at T_eval={t} [95% CI]",
                "verdict", *(extra[0] if extra else [])], rows)
