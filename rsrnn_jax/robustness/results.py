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
from rsrnn_jax.robustness import registry
from rsrnn_jax.robustness.report_md import markdown, untargeted_order
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


def make_plots(results: dict, out_dir: str, arrays: dict | None = None) -> list[str]:
  k, t = results["attack_step"], results["eval_steps"]
  profile = results["profile"]
  unt = results["untargeted"]["attacks"]
  made = []
  panels = {registry.title(n): _curves(unt[n]) for n in untargeted_order(unt) if registry.plotted(n)}
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
