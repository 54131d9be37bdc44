"""Markdown table helpers shared by every report the project writes (attack runs, the reproduction)."""
from __future__ import annotations


def pct(v) -> str:
  """A fraction as a percentage with one decimal; "–" for a missing value."""
  return "–" if v is None else f"{100 * v:.1f}"


def table(header, rows) -> str:
  """A markdown table: one header row, a rule, one line per row (cells through ``str``)."""
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)
