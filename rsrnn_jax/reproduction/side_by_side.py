"""``OUT/report.md``: the data settings of :mod:`rsrnn_jax.reproduction.settings` side by side, read from each
setting's ``OUT/<setting>/verdicts.json`` only (no runs, no JAX): the geometry, Table 1 relative to RS-RNN against
the paper's differences, the claims' verdicts (also on the examples every compared model classifies correctly,
and without the runs whose policy died), the pairs that disagree with their claim, accuracy under attack and the
sanity checks. Each setting's own report (``OUT/<setting>/report.md``) has every table and figure in full.
"""
from __future__ import annotations

import json
import os
import time

from rsrnn_jax import workdir
from rsrnn_jax.report.tables import table
from rsrnn_jax.reproduction.cells import seeds_cell
from rsrnn_jax.reproduction.paper_numbers import PAPER

REFERENCE = "RS-RNN"          # Table 1 is read relative to this model (the paper's)
TABLE1_TOLERANCE = 5.0        # points: a baseline's clean gap to RS-RNN within this of the paper's gap
PAPER_GEOMETRY = {"image_side": 336, "glimpse_side": 64, "crop_fractions": [0.25, 0.5],
                  "object_area_fraction": 0.358}  # paper.md §6, §9; ImageNet's mean object scale (docs/design.md)


def load(out_dir: str, names) -> dict:
  """{setting: its verdicts.json} for the settings of ``names`` whose report exists (in that order)."""
  found = {}
  for name in names:
    path = os.path.join(out_dir, name, "verdicts.json")
    if os.path.exists(path):
      with open(path) as f:
        found[name] = json.load(f)
  return found


def _pt(x, sign: bool = False) -> str:
  return "–" if x is None else (f"{100 * x:+.1f}" if sign else f"{100 * x:.1f}")


def _cell(v: dict | None) -> str:
  """A judged claim as `verdict: Δk [lo, hi] / ΔT [lo, hi]` (one test for the recovery claim)."""
  if not v:
    return "–"
  if v["verdict"] == "not evaluated":
    return "not evaluated" + (f" (missing {', '.join(v['missing'])})" if v.get("missing") else "")
  tests = [v["tests"][k] for k in ("k", "T", "T vs k") if k in v["tests"]]
  parts = [f"{_pt(t['estimate'], True)} [{_pt(t['interval'][0], True)}, {_pt(t['interval'][1], True)}]"
           for t in tests]
  n = f" (n = {v['num_examples']})" if "num_examples" in v and v.get("clean_correct") else ""
  return f"**{v['verdict']}**: " + " / ".join(parts) + n


def _geometry_rows(g: dict) -> list:
  """The settings table's cells of one setting's geometry ("–" where its verdicts.json does not say)."""
  if not g.get("image_side"):
    return ["–"] * 6
  return [g["image_side"], g["glimpse_side"], f"{g['image_side'] / g['glimpse_side']:.2f} : 1",
          ", ".join(f"{c:g}" for c in g["crop_fractions"]),
          f"{g['object_side']}, {100 * g['object_area_fraction']:.1f}%",
          ", ".join(f"{s}²" for s in g["whole_image_input"])]


def settings_table(found: dict) -> list[str]:
  labels = ["image side (px)", "glimpse side (px)", "image : glimpse", "crop fractions of the side",
            "object side (px), share of the image area", "whole-image models see (px)"]
  cols = [_geometry_rows(v.get("setting") or {}) for v in found.values()]
  p = PAPER_GEOMETRY
  paper = [p["image_side"], p["glimpse_side"], f"{p['image_side'] / p['glimpse_side']:.2f} : 1",
           ", ".join(f"{c:g}" for c in p["crop_fractions"]), f"ImageNet mean {100 * p['object_area_fraction']:.1f}%",
           "224²"]
  rows = [[label, *(c[i] for c in cols), paper[i]] for i, label in enumerate(labels)]
  rows.append(["attacks (paper / adaptive ε)", *(
      f"{'/'.join(f'{e:g}' for e in v['budget']['epsilons'])} / "
      f"{'/'.join(f'{e:g}' for e in v['budget']['adaptive_epsilons'])}" for v in found.values()), "1e-3..1e-2"])
  rows.append(["seeds, attacked images", *(f"{'/'.join(map(str, v['seeds']))}, {v['num_attacked_examples']}"
                                          for v in found.values()), "–"])
  rows.append(["code", *(", ".join(f"`{c}`" for c in v.get("code_versions", [])) or "its report"
                         for v in found.values()), "–"])
  out = ["## The settings", "", table(["", *found, "paper (ImageNet100)"], rows), ""]
  out += [f"- **{n}**: ε chosen as {v['setting']['why_epsilons']}." for n, v in found.items()
          if (v.get("setting") or {}).get("why_epsilons")]
  return out + [""]


def table1(found: dict) -> list[str]:
  """Clean accuracy at T_train, and each model's gap to RS-RNN against the paper's gap (AAAI Table 1)."""
  top1 = PAPER["table1"]["top1"]
  models = list(dict.fromkeys(m for v in found.values() for m in v["models"]))
  header = ["model", "paper top-1", "paper Δ to RS-RNN"]
  for name in found:
    header += [f"{name}: clean @k", f"{name}: Δ to RS-RNN", f"{name}: within {TABLE1_TOLERANCE:g} pt of the paper's Δ"]
  rows, exceptions = [], []
  for m in models:
    disp = next(v["models"][m]["display"] for v in found.values() if m in v["models"])
    paper_delta = top1[disp] - top1[REFERENCE] if disp in top1 else None
    row = [disp, top1.get(disp, "–"), "–" if paper_delta is None else f"{paper_delta:+.2f}"]
    for name, v in found.items():
      ref = next((x for x in v["models"].values() if x["display"] == REFERENCE), None)
      mine = v["models"].get(m)
      acc = (mine or {}).get("clean_at_train", {}).get("mean")
      ref_acc = (ref or {}).get("clean_at_train", {}).get("mean")
      if acc is None or ref_acc is None:
        row += [_pt(acc), "–", "–"]
        continue
      delta = 100 * (acc - ref_acc)
      ok = "–" if paper_delta is None or disp == REFERENCE else ("yes" if abs(delta - paper_delta) <= TABLE1_TOLERANCE
                                                                 else "**no**")
      if ok == "**no**":
        why = (v.get("setting") or {}).get("table1_reasons", {}).get(disp)
        exceptions.append(f"{disp} in {name} ({delta:+.1f} against the paper's {paper_delta:+.2f}"
                          + (f": {why})" if why else ")"))
      row += [_pt(acc), f"{delta:+.1f}", ok]
    rows.append(row)
  dead = [f"{v['models'][m]['display']} seed {p['seed']} in {name}" for name, v in found.items()
          for m in v["models"] for p in v["models"][m].get("policy", []) if p.get("one_scanpath")]
  out = ["## Table 1: clean accuracy relative to RS-RNN (paper: AAAI Table 1)", "", table(header, rows), ""]
  out += ["Clean top-1 (%) at T_train, mean over seeds, on the whole test split. The paper's numbers are ImageNet100; "
          "what is compared is each baseline's gap to RS-RNN."
          + (" Outside the tolerance: " + "; ".join(exceptions) + "." if exceptions else "")
          + (" One scanpath for every image (the policy died in training; each setting's report, \"Policy\"): "
             + "; ".join(dead) + "." if dead else ""), ""]
  return out


def claims(found: dict) -> list[str]:
  """Each claim under each attack: the verdict per setting, on all attacked images and on the clean-correct ones."""
  keys = list(dict.fromkeys((c["id"], c["text"], c["attack"], c.get("attack_title", c["attack"]))
                            for v in found.values() for c in v["claims"]))
  paper = {c["id"]: c for v in found.values() for c in v["paper"]}
  index = {name: ({(c["id"], c["attack"]): c for c in v["claims"]},
                  {(c["id"], c["attack"]): {**c, "clean_correct": True} for c in v.get("claims_clean_correct", [])})
           for name, v in found.items()}
  header = ["claim", "attack"]
  for name in found:
    header += [f"{name}: all attacked images", f"{name}: images every model gets right clean"]
  header.append("the paper's own numbers")
  rows = []
  for cid, text, attack, title in keys:
    row = [text, title]
    for name in found:
      allx, cc = index[name]
      row += [_cell(allx.get((cid, attack))), _cell(cc.get((cid, attack)))]
    row.append(_cell(paper.get(cid)) if attack == "paper" else "–")
    rows.append(row)
  out = ["## The paper's claims in both settings", "", table(header, rows), ""]
  out += ["Δ in points at k / at T_eval [95% interval of the paired bootstrap over seeds and examples] (recovery: "
          "T_eval − k); **holds** / **fails** / **undecided** by the interval (each setting's report, \"How the "
          "verdicts are computed\"). The clean-correct column takes only the attacked images that every seed of "
          "every model of the claim classifies correctly clean, so no model's clean weakness can carry it.", ""]
  return out


def pairs(found: dict) -> list[str]:
  """The one-against-one pairs whose verdict differs from their group claim's, in any setting."""
  rows = []
  for name, v in found.items():
    group = {(c["id"], c["attack"]): c["verdict"] for c in v["claims"]}
    for p in v.get("pairs", []):
      if p["verdict"] not in ("not evaluated", group.get((p.get("of"), p["attack"]))):
        rows.append([name, p["text"], p.get("attack_title", p["attack"]), _cell(p)])
  if not rows:
    return []
  return ["## Pairs that disagree with their group claim", "", table(["setting", "pair", "attack", "verdict"], rows),
          ""]


def live_policy(found: dict) -> list[str]:
  """The claims judged again without the runs whose policy died (one scanpath for every image), where any died,
  and the pairs whose verdict changes without them."""
  rows = []
  for name, v in found.items():
    every = {(c["id"], c["attack"]): c for c in v["claims"] + v.get("pairs", [])}
    for c in v.get("claims_live_policy", []) + v.get("pairs_live_policy", []):
      if "of" in c and c["verdict"] in ("not evaluated", every.get((c["id"], c["attack"]), {}).get("verdict")):
        continue  # a pair is shown where its verdict changes
      rows.append([name, c["text"], c.get("attack_title", c["attack"]), seeds_cell(c), _cell(c),
                   _cell(every.get((c["id"], c["attack"])))])
  if not rows:
    return []
  dead = "; ".join(f"{name}: " + ", ".join(f"{v['models'].get(m, {}).get('display', m)} seed {s}"
                                         for m, s in v["one_scanpath_runs"])
                   for name, v in found.items() if v.get("one_scanpath_runs"))
  return ["## The claims without the runs whose policy died", "",
          table(["setting", "claim", "attack", "seeds left", "verdict without them", "verdict on every run"], rows), "",
          f"Left out (one scanpath for every image): {dead}. Every claim with such a model in it, and the pairs "
          "(one against one) whose verdict changes. A model left with one seed has an interval over the examples "
          "only, not over seeds.", ""]


def under_attack(found: dict) -> list[str]:
  out = ["## Accuracy under attack (%), at k / at T_eval, mean over seeds", ""]
  for name, v in found.items():
    cols = [(a, i, e) for a, per in v.get("under_attack", {}).items() if per
            for i, e in enumerate(next(iter(per.values()))["eps"])]
    if not cols:
      continue
    models = list(dict.fromkeys(m for per in v["under_attack"].values() for m in per))
    rows = [[v["models"].get(m, {}).get("display", m), *(
        f"{_pt(v['under_attack'][a][m]['k'][i])} / {_pt(v['under_attack'][a][m]['T'][i])}"
        if m in v["under_attack"][a] else "–" for a, i, _ in cols)] for m in models]
    out += [f"**{name}**", "", table(["model", *(f"{a} ε={e:g}" for a, _, e in cols)], rows), ""]
  return out


def sanity(found: dict) -> list[str]:
  rows, meanings = [], {}
  for name, v in found.items():
    for m, per in v.get("sanity", {}).items():
      for profile, s in per.items():
        read = s.get("readings", {})
        meanings.update({(c, r[0]): tuple(r) for c, r in read.items()})
        failed = ", ".join(f"{c} ({n}/{s['runs']}{'; ' + read[c][0] if c in read else ''})"
                           for c, n in s["failed"].items()) or "all pass"
        rows.append([name, v["models"].get(m, {}).get("display", m), profile, s["runs"], failed])
  if not rows:
    return []
  return ["## Sanity checks (gradient masking): the checks that failed, per model and profile", "",
          table(["setting", "model", "profile", "runs", "failed checks (runs; reading)"], rows), "",
          "Each setting's report lists every check with its numbers. A failure is read as a **finding** (a "
          "property of the model), **covered** (the stronger attack that exposed it is in the worst case the "
          "verdicts read) or a **warning** (the numbers may overstate robustness):", "",
          *(f"- {c} ({kind}): {meaning}." for (c, _), (kind, meaning) in sorted(meanings.items())), ""]


def markdown(found: dict) -> str:
  links = ", ".join(f"[{n}]({n}/report.md)" for n in found)
  out = ["# Reproduction: RS-RNN and its baselines in two settings", "",
         f"Written by `python -m rsrnn_jax.reproduction.run` (`make reproduce`) on {time.strftime('%Y-%m-%d %H:%M')} "
         f"from each setting's verdicts.json. Every table and figure of a setting: {links}.", ""]
  missing = {n: len(v.get("still_missing") or []) for n, v in found.items()}
  if any(missing.values()):
    out += ["**Interim**: stages still to run: " + ", ".join(f"{n} {k}" for n, k in missing.items())
            + " (each setting's report, \"Budget, compute and what is missing\"). Every verdict rests on the runs "
            "it has; each setting's report lists the seeds per model.", ""]
  out += settings_table(found) + table1(found) + claims(found) + live_policy(found) + pairs(found)
  out += under_attack(found) + sanity(found)
  return "\n".join(out)


def write(out_dir: str, names) -> str:
  """``out_dir/report.md`` from the settings of ``names`` that have a report; "" (and nothing written) if none."""
  found = load(out_dir, names)
  if not found:
    return ""
  path = os.path.join(out_dir, "report.md")
  workdir.write_text(path, markdown(found))
  return path
