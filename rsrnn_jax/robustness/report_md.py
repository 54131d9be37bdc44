"""report.md of an attack run (:mod:`rsrnn_jax.robustness.results` writes it): the headline robust accuracy per
step, what each attack took away under robust flags, the verified sets, the untargeted and targeted tables, the
sanity checks with their readings, the probability maps, the figures and the run time."""
from __future__ import annotations

import numpy as np

from rsrnn_jax.report.tables import pct, table
from rsrnn_jax.robustness import readings as check_readings
from rsrnn_jax.robustness import registry


def untargeted_order(unt: dict) -> list[str]:
  """The untargeted results in the order the suite ran them, the worst case last."""
  return [n for n in unt if n != registry.WORST] + ([registry.WORST] if registry.WORST in unt else [])


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
  out.append(table([f"{s}" for s in range(1, t + 1)], [[pct(v) for v in clean]]))
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
    row = [f"{e['eps']:g}"] + [pct(v) for v in e["adv_acc"]]
    if "robust_at_k_and_T" in e:
      row.append(f"{e['robust_at_k_and_T']} of {e['robust_at_k']} robust @{k}")
    rows.append(row)
  out += [table(header, rows), ""]
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
         f"horizon). \"broke\": examples it broke first at one of them; \"robust\": examples still robust after "
         f"it; \"seconds\": its wall time in the run that made it (compilation included at the first ε; – when "
         f"replayed from the journal of an interrupted run).", ""]
  for per in fl["per_eps"]:
    rows = []
    for r in per["rows"]:
      extra = ", ".join(f"{key.removesuffix('_count')} {v}" for key, v in r.items() if key.endswith("_count"))
      spent = r.get("seconds")
      rows.append([r["attack"], r["flag_step"], r["attacked"], r["broke"], r["broke_at_k"], r["broke_at_T"],
                   r["robust_at_k"], r["robust_at_T"], extra or "–", "–" if spent is None else f"{spent:.0f}"])
    out += [f"ε = {per['eps']:g}:", "",
            table(["attack", "flag steps", "attacked", "broke", f"broke @{k}", f"broke @{t}", f"robust @{k}",
                    f"robust @{t}", "per-example flags", "seconds"], rows), ""]
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
  rows = [[f"{v['eps']:g}", v["file"]] + [pct(a) for a in v["accuracy_per_step"]]
          + [v["differ_from_worst_at_k"], ", ".join(f"{a} {n}" for a, n in v["won_by"].items())] for v in ver]
  out += [table(["ε", "file"] + [str(s) for s in range(1, t + 1)] + ["≠ worst @k", "won by"], rows), ""]
  return out


def _per_steptable(entries, key: str, t: int) -> str:
  return table(["ε"] + [str(s) for s in range(1, t + 1)],
                [[f"{e['eps']:g}"] + [pct(v) for v in e[key]] for e in entries])


def _untargeted(results: dict) -> list[str]:
  k, t = results["attack_step"], results["eval_steps"]
  unt = results["untargeted"]["attacks"]
  if not unt:
    return []
  clean = results["clean"]["accuracy_per_step"]
  out = [f"## Untargeted attacks: accuracy (%) at steps k = {k} and T_eval = {t}", ""]
  names = untargeted_order(unt)
  header = ["ε", f"clean @{k}", f"clean @{t}"]
  for n in names:
    header += [f"{n} @{k}", f"{n} @{t}"]
  rows = []
  for i, eps in enumerate(results["untargeted"]["epsilons"]):
    row = [f"{eps:g}", pct(clean[k - 1]), pct(clean[t - 1])]
    for n in names:
      e = unt[n][i]
      row += [pct(e["adv_acc"][k - 1]), pct(e["adv_acc"][t - 1])]
    rows.append(row)
  out.append(table(header, rows))
  out.append("")
  out.append("; ".join(f"{n}: {registry.title(n)}" for n in names) + " (k: the attack step; T: T_eval; the "
             "worst case is per example and per step, over every attack incl. the check-3 attack"
             + ("; robust flags: each column is the worst case after that attack, the attacks in this order)."
                if results.get("flags") else ")."))
  out.append("")
  out += [f"## Untargeted attack success rate (%) per step (over the clean-correct examples)", ""]
  for n in names:
    out += [f"**{n}** ({registry.title(n)})", "", _per_steptable(unt[n], "asr", t), ""]
  ref = f"{results.get('reference', 'pgd')}_step"
  if ref in unt:
    out += [f"## Accuracy (%) per step under `{ref}`", ""]
    out += [_per_steptable(unt[ref], "adv_acc", t), ""]
  return out


def _targeted(results: dict) -> list[str]:
  k, t = results["attack_step"], results["eval_steps"]
  tgt = results.get("targeted", {}).get("attacks", {})
  if not tgt:
    return []
  out = [f"## Targeted attack (PGD on step {k}, targets uniform over the other classes)", ""]
  rows = [[f"{e['eps']:g}", pct(e["asr"][0]), pct(e["asr"][k - 1]), pct(e["asr"][t - 1]),
           pct(e["adv_acc"][k - 1]), pct(e["adv_acc"][t - 1])] for e in tgt["pgd_step"]]
  out.append(table(["ε", "ASR @1", f"ASR @{k}", f"ASR @{t}", f"acc @{k}", f"acc @{t}"], rows))
  out += ["", _per_steptable(tgt["pgd_step"], "asr", t), ""]
  return out


def _checks(results: dict) -> list[str]:
  k, t = results["attack_step"], results["eval_steps"]
  checks = results.get("checks", [])
  if not checks:
    return []
  out = ["## Sanity checks (Carlini et al. 2019; Athalye et al. 2018)", ""]
  out.append(table(["#", "check", "result", "numbers"],
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
    out.append(table(["ε", "examples", f"acc @{k} (profile)", f"acc @{k} ({conv[0]['iterations']} it × "
                       f"{conv[0]['restarts']} restarts, worst)"],
                      [[f"{r['eps']:g}", r["num_examples"], pct(r["base_acc"]), pct(r["strong_acc"])]
                       for r in conv]))
    out.append("")
  g = results.get("gradients")
  if g:
    rows = []
    for loss, v in g["per_loss"].items():
      rows.append([loss, "median"] + [f"{x:.3g}" if x is not None else "–" for x in v["median_norm"]])
      rows.append([loss, "zero %"] + [pct(x) for x in v["zero_frac"]])
    out.append(f"Input-gradient L2 norm per step ({g['num_examples']} examples):")
    out.append("")
    out.append(table(["loss", ""] + [str(s) for s in range(1, t + 1)], rows))
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
    rows.append([idx, pm["labels"][i], pm["targets"][i], pct(float(a1.mean())), pct(float((a1 > 0.5).mean())),
                 pct(float(a12.mean())), pct(float((a12 > 0.5).mean())), pct(float(c1.mean()))])
  out.append(table(["example", "label", "target", "mean p(t) 1", "cells p>50% 1", "mean p(t) 1&2",
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
