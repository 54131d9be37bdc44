"""Writes the adversarial evaluation of :mod:`rsrnn_jax.robustness.suite`: results.json, report.md and the plots.

  python -m rsrnn_jax.robustness.results WORKDIR/attack_paper      # re-draw report.md and the plots from results.json

Files (in ``WORKDIR/attack_<profile>/``):
  results.json            every number, the config and the profile (NaN written as null)
  report.md               tables: accuracy per ε at steps k and T_eval, ASR, sanity checks (pass/fail + numbers)
  accuracy_per_step.png   accuracy vs step, one line per ε, one panel per attack (paper AAAI Fig. 5, adv2.png)
  accuracy_bars.png       bars per ε at steps k and T_eval (AAAI Fig. 4, adv1.png)
  asr_per_step.png        ASR vs step per ε, untargeted and targeted (v1 Fig. 4b, fign4.png)
  prob_maps.png / .npz    adversarial probability maps "1" and "1&2" (v1 Fig. 5, fign5.png)
  adversarial_eps<ε>.npz  the verified adversarial sets (written by the suite; rsrnn_jax/robustness/verify.py)

report.md leads with the profile's headline robust accuracy per step (the worst case for strong and
adaptive), then, under robust flags, what each attack took away, and the verified sets.
"""
from __future__ import annotations

import json
import math
import os
import sys

import numpy as np

from rsrnn_jax import workdir as workdir_lib
from rsrnn_jax.robustness import readings as check_readings
from rsrnn_jax.robustness import registry
from rsrnn_jax.report import figures as viz


def _jsonable(obj):
  if isinstance(obj, dict):
    return {str(k): _jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_jsonable(v) for v in obj]
  if isinstance(obj, np.ndarray):
    return _jsonable(obj.tolist())
  if isinstance(obj, (np.floating, float)):
    v = float(obj)
    return v if math.isfinite(v) else None
  if isinstance(obj, (np.integer,)):
    return int(obj)
  if isinstance(obj, (np.bool_,)):
    return bool(obj)
  if obj is None or isinstance(obj, (str, int, bool)):
    return obj
  return str(obj)


def _split_arrays(results: dict):
  """Removes the image arrays of the probability maps (they go to prob_maps.npz)."""
  results = dict(results)
  arrays = {}
  pm = results.get("prob_maps")
  if pm:
    pm = dict(pm)
    for key in ("adv_images", "clean_images"):
      if key in pm:
        arrays[key] = np.asarray(pm.pop(key))
    results["prob_maps"] = pm
  return results, arrays


def write_all(results: dict, out_dir: str) -> dict:
  """results.json, prob_maps.npz, report.md and the plots in ``out_dir``. Returns the JSON-ready results."""
  os.makedirs(out_dir, exist_ok=True)
  results, arrays = _split_arrays(results)
  clean = _jsonable(results)
  workdir_lib.write_json(os.path.join(out_dir, "results.json"), clean)  # atomic: temporary file + rename
  pm = clean.get("prob_maps")
  if pm and arrays:
    with workdir_lib.atomic_path(os.path.join(out_dir, "prob_maps.npz")) as tmp:
      np.savez_compressed(tmp, **arrays,
                          adv_1=np.asarray(pm["adv"]["1"]), adv_12=np.asarray(pm["adv"]["1&2"]),
                          clean_1=np.asarray(pm["clean"]["1"]), clean_12=np.asarray(pm["clean"]["1&2"]),
                          targets=np.asarray(pm["targets"]), labels=np.asarray(pm["labels"]),
                          fixations=np.asarray(pm["own_fixations"]))
  write_report(clean, out_dir, arrays)
  return clean


def write_report(results: dict, out_dir: str, arrays: dict | None = None) -> None:
  """report.md and the plots from a (JSON-ready) results dict."""
  plots = make_plots(results, out_dir, arrays)
  workdir_lib.write_text(os.path.join(out_dir, "report.md"), markdown(results, plots))


# ----------------------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------------------

def _curves(entries, key="adv_acc"):
  return {e["eps"]: e[key] for e in entries}


def _untargeted_order(unt: dict) -> list[str]:
  """The untargeted results in the order the suite ran them, the worst case last."""
  return [n for n in unt if n != registry.WORST] + ([registry.WORST] if registry.WORST in unt else [])


def make_plots(results: dict, out_dir: str, arrays: dict | None = None) -> list[str]:
  k, t = results["attack_step"], results["eval_steps"]
  profile = results["profile"]
  unt = results["untargeted"]["attacks"]
  made = []
  panels = {registry.title(n): _curves(unt[n]) for n in _untargeted_order(unt) if registry.plotted(n)}
  if panels:
    name = "accuracy_per_step.png"
    viz.plot_adv_accuracy_per_step(panels, os.path.join(out_dir, name), clean=results["clean"]["accuracy_per_step"],
                                   attack_step=k, title=f"{results['model']}: untargeted {results['norm']} "
                                   f"attack, run {t} steps [profile {profile}]")
    made.append(name)
  ref = results.get("reference", "pgd")
  step_name, full_name = f"{ref}_step", f"{ref}_full"
  if step_name in unt:
    eps = results["untargeted"]["epsilons"]
    series = {f"step {k} (attack step {k})": [e["adv_acc"][k - 1] for e in unt[step_name]],
              f"step {t} (attack step {k})": [e["adv_acc"][t - 1] for e in unt[step_name]]}
    if full_name in unt:
      series[f"step {t} (full-horizon attack)"] = [e["adv_acc"][t - 1] for e in unt[full_name]]
    if "worst" in unt:
      series[f"step {t} (worst case)"] = [e["adv_acc"][t - 1] for e in unt["worst"]]
    name = "accuracy_bars.png"
    viz.plot_adv_accuracy_bars(eps, series, os.path.join(out_dir, name),
                               title=f"{results['model']}: accuracy under attack [profile {profile}]")
    made.append(name)
  asr_panels = {}
  if step_name in unt:
    asr_panels[f"untargeted, attack step {k}"] = _curves(unt[step_name], "asr")
  if full_name in unt:
    asr_panels["untargeted, full horizon"] = _curves(unt[full_name], "asr")
  tgt = results.get("targeted", {}).get("attacks", {})
  if "pgd_step" in tgt:
    asr_panels[f"targeted, attack step {k}"] = _curves(tgt["pgd_step"], "asr")
  if asr_panels:
    name = "asr_per_step.png"
    viz.plot_asr_per_step(asr_panels, os.path.join(out_dir, name), attack_step=k,
                          title=f"{results['model']}: attack success rate [profile {profile}]")
    made.append(name)
  pm = results.get("prob_maps")
  if pm:
    images = None
    if arrays and "adv_images" in arrays:
      images = arrays["adv_images"]
    elif os.path.exists(os.path.join(out_dir, "prob_maps.npz")):
      images = np.load(os.path.join(out_dir, "prob_maps.npz"))["adv_images"]
    if images is not None:
      rows = {"1": np.asarray(pm["adv"]["1"]), "1&2": np.asarray(pm["adv"]["1&2"]),
              "clean 1": np.asarray(pm["clean"]["1"]), "clean 1&2": np.asarray(pm["clean"]["1&2"])}
      titles = [f"y={y} t={tt}" for y, tt in zip(pm["labels"], pm["targets"])]
      name = "prob_maps.png"
      viz.plot_probability_maps(images, rows, os.path.join(out_dir, name), fixations=pm["own_fixations"],
                                titles=titles)
      made.append(name)
  return made


# ----------------------------------------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------------------------------------

def _pct(v) -> str:
  return "–" if v is None else f"{100 * v:.1f}"


def _table(header, rows) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


def _header(results: dict) -> list[str]:
  k, t = results["attack_step"], results["eval_steps"]
  headline = results.get("headline", "pgd_step")
  out = [f"# Adversarial evaluation — profile `{results['profile']}`", ""]
  out.append(f"- model: `{results['model']}`, checkpoint step {results.get('checkpoint_step', '?')}, "
             f"{results['num_examples']} test examples, {results['num_classes']} classes "
             f"(chance {100 / results['num_classes']:.1f}%)")
  out.append(f"- attack step k = {k}, adversarial images run for T_eval = {t} steps (trained with "
             f"{results.get('train_steps', '?')})")
  out.append(f"- profile `{results['profile']}`: {results['profile_description']}")
  ov = results.get("profile_overrides") or {}
  if ov:
    fmt = lambda v: f"{v:g}" if isinstance(v, float) else str(v)
    out.append("- **differs from the named profile** in: " + ", ".join(
        f"`{k_}` = {fmt(v['config'])} (profile: {fmt(v['profile'])})" for k_, v in ov.items()))
  out.append(f"- headline robust accuracy: `{headline}` ({registry.title(headline)})")
  for note in results.get("notes") or []:
    out.append(f"- **not run**: {note}")
  out.append("")
  checks = results.get("checks", [])
  if checks:
    npass = sum(c["status"] == "pass" for c in checks)
    nfail = sum(c["status"] == "fail" for c in checks)
    out.append(f"**Sanity checks: {npass} pass, {nfail} fail, {len(checks) - npass - nfail} skipped** "
               "(table below).")
    out.append("")
  clean = results["clean"]["accuracy_per_step"]
  out += ["## Clean accuracy per step (%)", ""]
  out.append(_table([f"{s}" for s in range(1, t + 1)], [[_pct(v) for v in clean]]))
  out.append("")
  return out + _headline(results)


def _headline(results: dict) -> list[str]:
  """The headline robust accuracy per ε and step, with the examples robust at k and still at T_eval."""
  k, t = results["attack_step"], results["eval_steps"]
  name = results.get("headline", "pgd_step")
  entries = results["untargeted"]["attacks"].get(name, [])
  if not entries:
    return []
  out = [f"## Headline: robust accuracy (%) per step — `{name}` ({registry.title(name)})", ""]
  header = ["ε"] + [str(s) for s in range(1, t + 1)]
  if "robust_at_k_and_T" in entries[0]:
    header.append(f"robust @{k} and @{t}")
  rows = []
  for e in entries:
    row = [f"{e['eps']:g}"] + [_pct(v) for v in e["adv_acc"]]
    if "robust_at_k_and_T" in e:
      row.append(f"{e['robust_at_k_and_T']} of {e['robust_at_k']} robust @{k}")
    rows.append(row)
  out += [_table(header, rows), ""]
  if name == registry.WORST:
    out.append("Per example and per step: robust at step t only if correct at t under every attack"
               + (" (robust flags: exact at the flag steps, an upper bound elsewhere; see below)."
                  if results.get("flags") else "."))
    out.append("")
  return out + _flags(results) + _verified(results)


def _flags(results: dict) -> list[str]:
  fl = results.get("flags")
  if not fl:
    return []
  k, t = results["attack_step"], results["eval_steps"]
  out = ["## Robust flags: what each attack took away", "",
         f"Each attack ran only on the examples every earlier attack left robust at one of its flag steps (the "
         f"steps its objective aims at: {k} for step k, 1–{k} for the mean of steps 1..k, 1–{t} for the full "
         f"horizon). \"broke\": examples it broke first at one of them; the last columns: examples still robust "
         f"after it.", ""]
  for per in fl["per_eps"]:
    rows = []
    for r in per["rows"]:
      extra = ", ".join(f"{key.removesuffix('_count')} {v}" for key, v in r.items() if key.endswith("_count"))
      rows.append([r["attack"], r["flag_step"], r["attacked"], r["broke"], r["broke_at_k"], r["broke_at_T"],
                   r["robust_at_k"], r["robust_at_T"], extra or "–"])
    out += [f"ε = {per['eps']:g}:", "",
            _table(["attack", "flag steps", "attacked", "broke", f"broke @{k}", f"broke @{t}", f"robust @{k}",
                    f"robust @{t}", "per-example flags"], rows), ""]
  return out


def _verified(results: dict) -> list[str]:
  ver = results.get("verified")
  if not ver:
    return []
  t = results["eval_steps"]
  out = ["## Verified adversarial sets (`--mode=verify` re-scores them)", "",
         "Per ε the strongest image found per example (wrong at step k if any attack made it so, then at "
         "T_eval, then at the most steps), re-scored by the model alone; at step k this equals the worst case, "
         "elsewhere one image per example can be weaker than the per-step worst case.", ""]
  rows = [[f"{v['eps']:g}", v["file"]] + [_pct(a) for a in v["accuracy_per_step"]]
          + [v["differ_from_worst_at_k"], ", ".join(f"{a} {n}" for a, n in v["won_by"].items())] for v in ver]
  out += [_table(["ε", "file"] + [str(s) for s in range(1, t + 1)] + ["≠ worst @k", "won by"], rows), ""]
  return out


def _per_step_table(entries, key: str, t: int) -> str:
  return _table(["ε"] + [str(s) for s in range(1, t + 1)],
                [[f"{e['eps']:g}"] + [_pct(v) for v in e[key]] for e in entries])


def _untargeted(results: dict) -> list[str]:
  k, t = results["attack_step"], results["eval_steps"]
  unt = results["untargeted"]["attacks"]
  if not unt:
    return []
  clean = results["clean"]["accuracy_per_step"]
  out = [f"## Untargeted attacks: accuracy (%) at steps k = {k} and T_eval = {t}", ""]
  names = _untargeted_order(unt)
  header = ["ε", f"clean @{k}", f"clean @{t}"]
  for n in names:
    header += [f"{n} @{k}", f"{n} @{t}"]
  rows = []
  for i, eps in enumerate(results["untargeted"]["epsilons"]):
    row = [f"{eps:g}", _pct(clean[k - 1]), _pct(clean[t - 1])]
    for n in names:
      e = unt[n][i]
      row += [_pct(e["adv_acc"][k - 1]), _pct(e["adv_acc"][t - 1])]
    rows.append(row)
  out.append(_table(header, rows))
  out.append("")
  out.append("; ".join(f"{n}: {registry.title(n)}" for n in names) + " (k: the attack step; T: T_eval; the "
             "worst case is per example and per step, over every attack incl. the check-3 attack"
             + ("; robust flags: each column is the worst case after that attack, the attacks in this order)."
                if results.get("flags") else ")."))
  out.append("")
  out += [f"## Untargeted attack success rate (%) per step (over the clean-correct examples)", ""]
  for n in names:
    out += [f"**{n}** ({registry.title(n)})", "", _per_step_table(unt[n], "asr", t), ""]
  ref = f"{results.get('reference', 'pgd')}_step"
  if ref in unt:
    out += [f"## Accuracy (%) per step under `{ref}`", ""]
    out += [_per_step_table(unt[ref], "adv_acc", t), ""]
  return out


def _targeted(results: dict) -> list[str]:
  k, t = results["attack_step"], results["eval_steps"]
  tgt = results.get("targeted", {}).get("attacks", {})
  if not tgt:
    return []
  out = [f"## Targeted attack (PGD on step {k}, targets uniform over the other classes)", ""]
  rows = [[f"{e['eps']:g}", _pct(e["asr"][0]), _pct(e["asr"][k - 1]), _pct(e["asr"][t - 1]),
           _pct(e["adv_acc"][k - 1]), _pct(e["adv_acc"][t - 1])] for e in tgt["pgd_step"]]
  out.append(_table(["ε", "ASR @1", f"ASR @{k}", f"ASR @{t}", f"acc @{k}", f"acc @{t}"], rows))
  out += ["", _per_step_table(tgt["pgd_step"], "asr", t), ""]
  return out


def _checks(results: dict) -> list[str]:
  k, t = results["attack_step"], results["eval_steps"]
  checks = results.get("checks", [])
  if not checks:
    return []
  out = ["## Sanity checks (Carlini et al. 2019; Athalye et al. 2018)", ""]
  out.append(_table(["#", "check", "result", "numbers"],
                    [[c["id"], c["name"], f"**{c['status'].upper()}**", c["detail"].replace("|", "/")]
                     for c in checks]))
  out.append("")
  failed = [c for c in checks if c["status"] == "fail"]
  if failed:
    out += ["What each failure means for the numbers (finding: a property of the model; covered: the stronger "
            "attack is in the worst case; warning: the numbers may overstate robustness):", ""]
    for c in failed:
      kind, meaning = check_readings.reading(c["id"], bool(results.get("flags")), c)
      out.append(f"- check {c['id']} ({kind}): {meaning}.")
    out.append("")
  pc = results.get("policy_check")
  if pc and pc.get("num_examples"):
    out.append(f"Check 9: each policy attack alone on {pc['num_examples']} examples `{pc['reference']}` broke "
               f"(ε = {pc['eps']:g}): " + ", ".join(f"`{a}` broke {v['broke']}" for a, v in pc["attacks"].items()))
    out.append("")
  conv = results.get("convergence") or []
  if conv:
    out.append(_table(["ε", "examples", f"acc @{k} (profile)", f"acc @{k} ({conv[0]['iterations']} it × "
                       f"{conv[0]['restarts']} restarts, worst)"],
                      [[f"{r['eps']:g}", r["num_examples"], _pct(r["base_acc"]), _pct(r["strong_acc"])]
                       for r in conv]))
    out.append("")
  g = results.get("gradients")
  if g:
    rows = []
    for loss, v in g["per_loss"].items():
      rows.append([loss, "median"] + [f"{x:.3g}" if x is not None else "–" for x in v["median_norm"]])
      rows.append([loss, "zero %"] + [_pct(x) for x in v["zero_frac"]])
    out.append(f"Input-gradient L2 norm per step ({g['num_examples']} examples):")
    out.append("")
    out.append(_table(["loss", ""] + [str(s) for s in range(1, t + 1)], rows))
    out.append("")
  return out


def _prob_maps(results: dict) -> list[str]:
  pm = results.get("prob_maps")
  if not pm:
    return []
  out = ["## Adversarial probability maps", ""]
  out.append(f"Targeted adversarial images (ε = {pm['eps']:g}); the fixation forced to every cell of a "
             f"{pm['grid']}×{pm['grid']} grid; colour = probability of the target class. Row \"1\": first "
             "fixation at the cell, read at step 1; \"1&2\": the model's own first fixation, the second at the "
             "cell, read at step 2; \"clean\": the same on the clean image. Gaze: the model's own fixations 1 "
             "(blue) and 2 (red) on the adversarial image.")
  out.append("")
  rows = []
  for i, idx in enumerate(pm["indices"]):
    a1, a12 = np.asarray(pm["adv"]["1"][i]), np.asarray(pm["adv"]["1&2"][i])
    c1 = np.asarray(pm["clean"]["1"][i])
    rows.append([idx, pm["labels"][i], pm["targets"][i], _pct(float(a1.mean())), _pct(float((a1 > 0.5).mean())),
                 _pct(float(a12.mean())), _pct(float((a12 > 0.5).mean())), _pct(float(c1.mean()))])
  out.append(_table(["example", "label", "target", "mean p(t) 1", "cells p>50% 1", "mean p(t) 1&2",
                     "cells p>50% 1&2", "clean mean p(t) 1"], rows))
  out.append("")
  return out


def _figures_and_timing(results: dict, plots) -> list[str]:
  out = []
  if plots:
    out += ["## Figures", ""]
    out += [f"![{p}]({p})" for p in plots]
    out.append("")
  timing = results.get("timing", {})
  if timing:
    out.append("Run time: " + ", ".join(f"{k_.removesuffix('_s')} {v:.0f} s" for k_, v in timing.items()
                                        if isinstance(v, (int, float))))
    out.append("")
  return out


def markdown(results: dict, plots: list[str] = ()) -> str:
  """report.md: header and clean accuracy, untargeted and targeted attacks, checks, maps, figures, run time."""
  return "\n".join(_header(results) + _untargeted(results) + _targeted(results) + _checks(results)
                   + _prob_maps(results) + _figures_and_timing(results, plots))


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  if len(argv) != 1:
    print("usage: python -m rsrnn_jax.robustness.results WORKDIR/attack_<profile>", file=sys.stderr)
    return 2
  out_dir = argv[0]
  with open(os.path.join(out_dir, "results.json")) as f:
    results = json.load(f)
  write_report(results, out_dir)
  print(os.path.join(out_dir, "report.md"))
  return 0


if __name__ == "__main__":
  sys.exit(main())
