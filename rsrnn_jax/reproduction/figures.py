"""The report's figures, drawn from the saved runs (:mod:`rsrnn_jax.reproduction.runs`) and the paper's numbers.
Ours are means over the seeds with error bars of ± one sd over the seeds (none for a single seed). Each function
returns the file name it wrote in ``out_dir`` (None when there was nothing to draw)."""
from __future__ import annotations

import os

import numpy as np

from rsrnn_jax.models import registry
from rsrnn_jax.report import figures as viz
from rsrnn_jax.reproduction.paper_numbers import PAPER
from rsrnn_jax.reproduction.runs import ATTACK_TITLES, display, first_figures

plt = viz.plt  # matplotlib with the Agg backend
LINESTYLES = {"paper": "-", "strongest": "--", "adaptive": ":"}


def _paper_display() -> dict:
  """Paper key → our display name, for the registered models the paper has numbers for."""
  return {registry.variant(v).paper_key: registry.variant(v).display for v in registry.variant_names()
          if registry.variant(v).paper_key}


def _palette(names) -> dict:
  return {m: plt.cm.tab10.colors[i % 10] for i, m in enumerate(dict.fromkeys(names))}


def _save(fig, out_dir: str, name: str) -> str:
  viz.save_figure(fig, os.path.join(out_dir, name), dpi=110)  # atomic, and closes the figure
  return name


def accuracy_vs_gmacs(clean: dict, computes: dict, out_dir: str) -> str | None:
  """Accuracy vs GMACs as the steps grow (AAAI Fig. 3): ours (mean ± sd over seeds; a model without fixations
  one point at its training step count, as in the paper) beside the paper's curves. ``clean``:
  runs.clean_summary; ``computes``: {model: compute.json}."""
  ours = {}
  for m, c in clean.items():
    co = computes.get(m)
    if not co:
      continue
    y, sd = 100 * np.asarray(c["per_step"]), 100 * np.asarray(c["per_step_sd"])
    x = co["gmacs_once"] + co["gmacs_per_step"] * np.arange(1, len(y) + 1)
    if not registry.get(registry.variant(m).model).has_fixations:  # one point, at the training step count
      t = c["train_glimpses"] - 1
      x, y, sd = x[t:t + 1], y[t:t + 1], sd[t:t + 1]
    ours[display(m)] = (x, y, sd)
  if not ours:
    return None
  names = _paper_display()
  paper = {names.get(m, m): ([p[0] for p in pts], [p[1] for p in pts])
           for m, pts in PAPER["accuracy_vs_gmacs"]["curves"].items()}
  palette = _palette(list(ours) + list(paper))
  fig, axes = plt.subplots(1, 2, figsize=(11.6, 3.8))
  for m, (x, y, sd) in ours.items():
    single = len(x) == 1
    axes[0].errorbar(x, y, yerr=sd, fmt="o" if single else "-o", ms=10 if single else 4, capsize=3,
                     color=palette[m], lw=1.5, label=m)
  for m, (x, y) in paper.items():
    axes[1].plot(x, y, "o" if len(x) == 1 else "-o", ms=10 if len(x) == 1 else 4, color=palette[m], label=m)
  for ax, title in zip(axes, ("ours: cluttered Fashion-MNIST, clean test accuracy, mean ± sd over seeds",
                              "paper: ImageNet100 (AAAI Fig. 3, read-off)")):
    ax.set(xlabel="GMACs", ylabel="accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.4)
    ax.legend(fontsize=7)
  fig.tight_layout()
  return _save(fig, out_dir, "accuracy_vs_gmacs.png")


def _bars(ax, eps, series: dict, palette: dict) -> None:
  """Grouped bars per ε, one per model; ``series``: {model: (values, sd or None)} in fractions."""
  width = 0.8 / max(len(series), 1)
  x = np.arange(len(eps))
  for i, (m, (v, sd)) in enumerate(series.items()):
    v = 100 * np.asarray(v, np.float64)
    err = None if sd is None else 100 * np.asarray(sd, np.float64)
    ax.bar(x - 0.4 + width * (i + 0.5), v, width, yerr=err, capsize=2, color=palette[m], edgecolor="black",
           lw=0.5, label=m, error_kw={"lw": 0.8})
  ax.set_xticks(x)
  ax.set_xticklabels([f"{e:g}" for e in eps])
  ax.set(xlabel="epsilon", ylabel="accuracy (%)", ylim=(0, 105))
  ax.grid(axis="y", alpha=0.3)


def adv_bars(acc_by_attack: dict, k: int, t: int, out_dir: str) -> str | None:
  """Accuracy under attack at steps k and T_eval per ε and model, mean ± sd over seeds, per attack; and the
  paper's (AAAI Fig. 4)."""
  panels = [(f"ours, {ATTACK_TITLES[a]}: step {step}", next(iter(acc.values()))["eps"],
             {display(m): (v[r], v[f"{r}_sd"] if v["seeds"] > 1 else None) for m, v in acc.items()})
            for a, acc in acc_by_attack.items() if acc for r, step in (("k", k), ("T", t))]
  if not panels:
    return None
  p, names = PAPER["adv_accuracy"], _paper_display()
  for r, step in (("at_k", p["attack_step"]), ("at_T", p["eval_steps"])):
    panels.append((f"paper (ImageNet100, AAAI Fig. 4): step {step}", p["epsilons"],
                   {names.get(m, m): ([v / 100 for v in p[r][m]], None) for m in p[r]}))
  palette = _palette(m for _, _, series in panels for m in series)
  nrows = -(-len(panels) // 2)
  fig, axes = plt.subplots(nrows, 2, figsize=(11.6, 3.3 * nrows), squeeze=False)
  for ax, (title, eps, series) in zip(axes.ravel(), panels):
    _bars(ax, eps, series, palette)
    ax.set_title(title, fontsize=9)
  for ax in axes.ravel()[len(panels):]:
    ax.axis("off")
  fig.legend([plt.Rectangle((0, 0), 1, 1, color=c) for c in palette.values()], list(palette), loc="center right",
             fontsize=8)
  fig.suptitle(f"Accuracy under untargeted L∞ attacks made at step k = {k}, read at steps k and T_eval = {t} "
               "(ours: mean ± sd over seeds)", fontsize=10)
  fig.tight_layout(rect=(0, 0, 0.86, 1))
  return _save(fig, out_dir, "adv_accuracy_bars.png")


def adv_per_step(acc_by_attack: dict, k: int, out_dir: str) -> str | None:
  """Accuracy vs step per ε, one panel per model (AAAI Fig. 5): each attack a line style, mean over seeds with a
  ± sd band; clean accuracy black dashed."""
  models = list(dict.fromkeys(m for acc in acc_by_attack.values() for m in acc))
  if not models:
    return None
  eps_all = sorted({e for acc in acc_by_attack.values() for v in acc.values() for e in v["eps"]})
  colors = {e: plt.cm.tab10.colors[i % 10] for i, e in enumerate(eps_all)}
  ncols = min(4, len(models))
  nrows = -(-len(models) // ncols)
  width = 3.6 * ncols + 3.6
  fig, axes = plt.subplots(nrows, ncols, figsize=(width, 3.3 * nrows), squeeze=False, sharey=True)
  for ax, m in zip(axes.ravel(), models):
    clean = None
    for a, acc in acc_by_attack.items():
      if m not in acc:
        continue
      v = acc[m]
      clean = v["clean"]
      for e in v["eps"]:
        y, sd = 100 * np.asarray(v["per_step"][e]), 100 * np.asarray(v["per_step_sd"][e])
        steps = np.arange(1, len(y) + 1)
        ax.plot(steps, y, LINESTYLES[a], color=colors[e], lw=1.8)
        if v["seeds"] > 1:
          ax.fill_between(steps, y - sd, y + sd, color=colors[e], alpha=0.12, lw=0)
    if clean is not None:
      ax.plot(np.arange(1, len(clean) + 1), 100 * np.asarray(clean), "--", color="black", lw=1.0)
    ax.axvline(k, color="gray", ls=":", lw=1)
    ax.set_title(display(m), fontsize=9)
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.grid(alpha=0.4)
  for ax in axes.ravel()[len(models):]:
    ax.axis("off")
  for row in axes:
    row[0].set_ylabel("accuracy (%)")
  handles = [plt.Line2D([], [], color=colors[e], lw=2) for e in eps_all]
  handles += [plt.Line2D([], [], color="gray", ls=LINESTYLES[a]) for a in acc_by_attack]
  handles.append(plt.Line2D([], [], color="black", ls="--"))
  labels = [f"ε = {e:g}" for e in eps_all] + [ATTACK_TITLES[a] for a in acc_by_attack] + ["clean"]
  labels = [label.replace(" (", "\n(", 1) for label in labels]
  fig.legend(handles, labels, loc="center right", fontsize=7)
  fig.suptitle("Accuracy per step under untargeted attacks made at step k (dotted line); mean ± sd over seeds",
               fontsize=10)
  fig.tight_layout(rect=(0, 0, 1 - 3.4 / width, 1))
  return _save(fig, out_dir, "adv_accuracy_per_step.png")


def fixations(runs, out_dir) -> str | None:
  """The first fixations (or S3TA's attention) of every attention model on the same images (v1 Fig. 3a), from
  each model's first seed."""
  rows, images, titles = {}, None, None
  for m in runs:
    f = first_figures(runs, m)
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
  """``model``'s fixations and retinal images step by step (the seed README's animation), first seed."""
  f = first_figures(runs, model)
  if f is None or "glimpses" not in f:
    return None
  n = min(max_images, len(f["images"]))
  frames = viz.glimpse_frames(f["images"][:n], f["fixations"][:, :n], f["glimpses"][:, :n],
                              probs=f["probs"][:, :n], labels=f["labels"][:n],
                              class_names=[str(s) for s in f["class_names"]])
  name = f"{model}_glimpses.gif"
  viz.save_gif(frames, os.path.join(out_dir, name))
  return name
