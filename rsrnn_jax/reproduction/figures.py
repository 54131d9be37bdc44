"""The report's figures, drawn from the saved runs (:mod:`rsrnn_jax.reproduction.runs`) and the paper's numbers
with :mod:`rsrnn_jax.report.figures`. Each function returns the file name it wrote in ``out_dir`` (None when
there was nothing to draw)."""
from __future__ import annotations

import os

from rsrnn_jax.models import registry
from rsrnn_jax.report import figures as viz
from rsrnn_jax.reproduction.paper_numbers import PAPER
from rsrnn_jax.reproduction.runs import ATTACK_TITLES, display


def _paper_display() -> dict:
  """Paper key → our display name, for the registered models the paper has numbers for."""
  return {registry.variant(v).paper_key: registry.variant(v).display for v in registry.variant_names()
          if registry.variant(v).paper_key}


def _gmacs_curve(run) -> tuple[list, list] | None:
  ev, co = run["eval"], run["compute"]
  if not ev or not co:
    return None
  acc = ev["accuracy_per_step"]
  return ([co["gmacs_once"] + (t + 1) * co["gmacs_per_step"] for t in range(len(acc))], [100 * a for a in acc])


def accuracy_vs_gmacs(runs, out_dir) -> str | None:
  """Accuracy vs GMACs as the steps grow (AAAI Fig. 3): a curve per glimpse model; a model without fixations
  is one point, as in the paper (at its training step count; FF-CNN's answer does not change)."""
  ours = {}
  for m, r in runs.items():
    curve = _gmacs_curve(r)
    if curve is None:
      continue
    x, y = curve
    entry = registry.get(registry.variant(m).model)
    if not entry.has_fixations:
      t = r["eval"]["train_glimpses"] if entry.is_recurrent else len(y)
      x, y = [x[t - 1]], [y[t - 1]]
    ours[display(m)] = (x, y)
  if not ours:
    return None
  names = _paper_display()
  paper = {names.get(m, m): ([p[0] for p in pts], [p[1] for p in pts])
           for m, pts in PAPER["accuracy_vs_gmacs"]["curves"].items()}
  name = "accuracy_vs_gmacs.png"
  viz.plot_accuracy_vs_gmacs({"ours: cluttered Fashion-MNIST (clean test accuracy, steps 1..T_eval)": ours,
                              "paper: ImageNet100 (AAAI Fig. 3, read-off)": paper}, os.path.join(out_dir, name))
  return name


def adv_bars(acc_by_attack, eps, k, t, out_dir) -> str | None:
  """Accuracy under PGD at steps k and T_eval per ε and model, ours and the paper's (AAAI Fig. 4)."""
  panels = []
  for attack, acc in acc_by_attack.items():
    if acc:
      for r, step in (("k", k), ("T", t)):
        panels.append((f"ours, {ATTACK_TITLES[attack]}: step {step}", eps,
                       {display(m): v[r] for m, v in acc.items()}))
  if not panels:
    return None
  p, names = PAPER["adv_accuracy"], _paper_display()
  for r, step in (("at_k", p["attack_step"]), ("at_T", p["eval_steps"])):
    panels.append((f"paper (ImageNet100, AAAI Fig. 4): step {step}", p["epsilons"],
                   {names.get(m, m): [v / 100 for v in p[r][m]] for m in p[r]}))
  name = "adv_accuracy_bars.png"
  viz.plot_bar_panels(panels, os.path.join(out_dir, name), ncols=2,
                      title=f"Accuracy under untargeted L∞ PGD made at step k = {k}, read at steps k and "
                            f"T_eval = {t}")
  return name


def adv_per_step(runs, acc_by_attack, k, out_dir) -> str | None:
  """Accuracy vs step per ε, one panel per model (AAAI Fig. 5)."""
  paper_acc, strongest = acc_by_attack.get("paper", {}), acc_by_attack.get("strongest", {})
  if not paper_acc:
    return None
  panels = {display(m): v["per_step"] for m, v in paper_acc.items()}
  dashed = {display(m): v["per_step"] for m, v in strongest.items()}
  clean = {display(m): runs[m]["attack"]["clean"]["accuracy_per_step"] for m in paper_acc}
  name = "adv_accuracy_per_step.png"
  viz.plot_adv_accuracy_per_step(panels, os.path.join(out_dir, name), clean=clean, attack_step=k, dashed=dashed,
                                 ncols=4, styles=("paper attack", "strongest"),
                                 title="Accuracy per step under untargeted PGD made at step k (dotted line)")
  return name


def fixations(runs, out_dir) -> str | None:
  """The first fixations (or S3TA's attention) of every attention model on the same images (v1 Fig. 3a)."""
  rows, images, titles = {}, None, None
  for m, r in runs.items():
    f = r["figures"]
    if f is None or not ("fixations" in f or "attention" in f):
      continue
    images = f["images"] if images is None else images
    names = [str(s) for s in f["class_names"]]
    titles = titles or [names[int(y)] for y in f["labels"]]
    rows[display(m)] = {"fixations": f["fixations"]} if "fixations" in f else {"attention": f["attention"]}
  if not rows:
    return None
  name = "fixations.png"
  viz.plot_fixations_by_model(images, rows, os.path.join(out_dir, name), titles=titles)
  return name


def glimpses_gif(runs, out_dir, model: str = registry.DEFAULT_MODEL, max_images: int = 4) -> str | None:
  """``model``'s fixations and retinal images step by step (the seed README's animation)."""
  f = (runs.get(model) or {}).get("figures")
  if f is None or "glimpses" not in f:
    return None
  n = min(max_images, len(f["images"]))
  frames = viz.glimpse_frames(f["images"][:n], f["fixations"][:, :n], f["glimpses"][:, :n],
                              probs=f["probs"][:, :n], labels=f["labels"][:n],
                              class_names=[str(s) for s in f["class_names"]])
  name = f"{model}_glimpses.gif"
  viz.save_gif(frames, os.path.join(out_dir, name))
  return name
