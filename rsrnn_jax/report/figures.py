"""Figures: accuracy vs glimpse step, fixation trajectories with the retinal glimpses, S3TA attention maps."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rsrnn_jax.workdir import atomic_path  # noqa: E402


def save_figure(fig, path: str, *, dpi: int = 110) -> None:
  """Writes ``fig`` to ``path`` atomically (a failed or interrupted save leaves the previous file) and closes it."""
  try:
    with atomic_path(path) as tmp:
      fig.savefig(tmp, dpi=dpi)
  finally:
    plt.close(fig)


def to_pixels(fix, size: int):
  """Normalised (x, y) in [-1, 1] → pixel (col, row), align_corners convention."""
  return (np.asarray(fix) + 1.0) / 2.0 * (size - 1)


def plot_accuracy_per_step(curves: dict, path: str, *, train_glimpses: int | None = None,
                           title: str = "clean accuracy per glimpse step", ylabel: str = "accuracy (%)"):
  fig, ax = plt.subplots(figsize=(6, 4))
  for name, acc in curves.items():
    acc = np.asarray(acc) * 100
    ax.plot(np.arange(1, len(acc) + 1), acc, marker="o", ms=3, label=name)
  if train_glimpses:
    ax.axvline(train_glimpses, color="gray", ls=":", lw=1, label=f"T train = {train_glimpses}")
  ax.set_xlabel("step (glimpse)")
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  save_figure(fig, path, dpi=120)


def _example_title(b: int, labels=None, predictions=None, class_names=None) -> str:
  if labels is None:
    return ""
  name = (lambda i: class_names[i]) if class_names else str
  title = f"y={name(int(labels[b]))}"
  if predictions is not None:
    title += f" p={name(int(predictions[b]))}"
  return title


def _step_grid(images, num_steps: int):
  """One row per image, the image then one panel per step; returns (fig, axes, cmap)."""
  batch = images.shape[0]
  fig, axes = plt.subplots(batch, num_steps + 1, figsize=(1.6 * (num_steps + 1), 1.7 * batch), squeeze=False)
  return fig, axes, "gray" if images.shape[-1] == 1 else None


def _save_grid(fig, axes, path: str):
  for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
  fig.tight_layout()
  save_figure(fig, path, dpi=110)


def plot_fixations(images, fixations, glimpses, path: str, *, labels=None, predictions=None,
                   class_names=None):
  """images [B,H,W,C], fixations [T,B,2], glimpses [T,B,n,n,C] → one row per image: scanpath + glimpses."""
  num_steps, batch = fixations.shape[:2]
  fig, axes, cmap = _step_grid(images, num_steps)
  for b in range(batch):
    ax = axes[b, 0]
    ax.imshow(np.squeeze(images[b]), cmap=cmap, vmin=0, vmax=1)
    px = to_pixels(fixations[:, b], images.shape[1])
    ax.plot(px[:, 0], px[:, 1], "-", color="yellow", lw=0.8, alpha=0.8)
    for t in range(num_steps):
      ax.plot(px[t, 0], px[t, 1], "s", ms=4, color=plt.cm.autumn(t / max(num_steps - 1, 1)))
      ax.annotate(str(t + 1), px[t], color="cyan", fontsize=6, xytext=(2, 2), textcoords="offset points")
    ax.set_title(_example_title(b, labels, predictions, class_names), fontsize=7)
    for t in range(num_steps):
      axes[b, t + 1].imshow(np.squeeze(np.clip(glimpses[t, b], 0, 1)), cmap=cmap, vmin=0, vmax=1)
      if b == 0:
        axes[b, t + 1].set_title(f"glimpse {t + 1}", fontsize=7)
  _save_grid(fig, axes, path)


def plot_attention(images, attention, path: str, *, labels=None, predictions=None, class_names=None):
  """images [B,H,W,C], attention [T,B,heads,h,w] (S3TA) → one row per image: the image, then per step the
  attention maps of the heads (summed) over the image."""
  num_steps, batch = attention.shape[:2]
  height, width = images.shape[1:3]
  fig, axes, cmap = _step_grid(images, num_steps)
  for b in range(batch):
    axes[b, 0].imshow(np.squeeze(images[b]), cmap=cmap, vmin=0, vmax=1)
    axes[b, 0].set_title(_example_title(b, labels, predictions, class_names), fontsize=7)
    for t in range(num_steps):
      ax = axes[b, t + 1]
      ax.imshow(np.squeeze(images[b]), cmap=cmap, vmin=0, vmax=1)
      ax.imshow(attention[t, b].sum(0), cmap="inferno", alpha=0.6, interpolation="nearest",
                extent=(-0.5, width - 0.5, height - 0.5, -0.5))
      if b == 0:
        ax.set_title(f"step {t + 1}", fontsize=7)
  _save_grid(fig, axes, path)


# ----------------------------------------------------------------------------------------------------------
# Adversarial evaluation (rsrnn_jax/robustness/suite.py, rsrnn_jax/robustness/results.py), in the style of the paper's figures
# ----------------------------------------------------------------------------------------------------------

def _eps_label(eps: float) -> str:
  s = f"{eps:.0e}".replace("e-0", "e-").replace("e+0", "e")
  return s.replace(".0e", "e")


def plot_adv_accuracy_per_step(panels: dict, path: str, *, clean=None, attack_step: int | None = None,
                               title: str = "", ylabel: str = "accuracy (%)", dashed: dict | None = None,
                               ncols: int = 0, styles: tuple = ("", "")):
  """adv2.png style: one panel per attack, accuracy vs step with one line per ε (dict ε → [T] accuracy).

  ``clean``: the clean accuracy per step (one list, or a dict panel → list), drawn dashed black in every panel;
  ``attack_step``: a dotted line at k; ``dashed``: per panel a second set of curves (dict ε → [T]) drawn dashed
  in the same colours, named in the legend by ``styles`` = (solid label, dashed label); ``ncols``: panels per
  row (0 = all in one row).
  """
  n = max(len(panels), 1)
  ncols = ncols or n
  nrows = -(-n // ncols)
  fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols + 1.4, 3.4 * nrows), squeeze=False, sharey=True)
  colors = plt.cm.tab10.colors
  for ax, (name, curves) in zip(axes.ravel(), panels.items()):
    extra = (dashed or {}).get(name, {})
    for i, (eps, acc) in enumerate(sorted(curves.items())):
      acc = np.asarray(acc, np.float64) * 100
      ax.plot(np.arange(1, len(acc) + 1), acc, lw=2, color=colors[i % 10], label=_eps_label(eps))
      if eps in extra:
        other = np.asarray(extra[eps], np.float64) * 100
        ax.plot(np.arange(1, len(other) + 1), other, "--", lw=1.5, color=colors[i % 10])
    c = clean.get(name) if isinstance(clean, dict) else clean
    if c is not None:
      c = np.asarray(c, np.float64) * 100
      ax.plot(np.arange(1, len(c) + 1), c, "--", color="black", lw=1.2, label="clean")
    if attack_step:
      ax.axvline(attack_step, color="gray", ls=":", lw=1)
    ax.set_title(name)
    ax.set_xlabel("Steps")
    ax.grid(alpha=0.4)
  for ax in axes.ravel()[n:]:
    ax.axis("off")
  for row in axes:
    row[0].set_ylabel(ylabel)
  handles, labels = axes[0, 0].get_legend_handles_labels()
  if dashed and any(styles):
    handles += [plt.Line2D([], [], color="gray", lw=2), plt.Line2D([], [], color="gray", lw=1.5, ls="--")]
    labels += list(styles)
  fig.legend(handles, labels, title="epsilon", loc="center right", frameon=True, fontsize=8)
  if title:
    fig.suptitle(title)
  fig.tight_layout(rect=(0, 0, 1 - 1.6 / (3.6 * ncols + 1.4), 1))
  save_figure(fig, path, dpi=110)


def _draw_bars(ax, epsilons, series: dict, *, colors=None, ylabel: str = "accuracy (%)", legend: bool = True):
  """Grouped bars on ``ax``: one group per ε, one bar per series (dict label → [len(ε)] fractions or None);
  grey hatched bars unless ``colors`` (one per series) is given."""
  eps = list(epsilons)
  m = max(len(series), 1)
  width = 0.8 / m
  hatches = ["", "//", "..", "xx", "\\\\", "oo"]
  greys = plt.cm.Greys(np.linspace(0.25, 0.95, m))
  x = np.arange(len(eps))
  for i, (label, values) in enumerate(series.items()):
    v = np.asarray([np.nan if a is None else a for a in values], np.float64) * 100
    style = (dict(color=colors[i], edgecolor="black") if colors is not None else
             dict(color=greys[i], edgecolor="black", hatch=hatches[i % len(hatches)]))
    bars = ax.bar(x - 0.4 + width * (i + 0.5), v, width, label=label, lw=0.6, **style)
    for b, val in zip(bars, v):
      if np.isfinite(val):
        ax.annotate(f"{val:.1f}", (b.get_x() + b.get_width() / 2, val), ha="center", va="bottom",
                    fontsize=6 if m < 6 else 4.5)
  ax.set_xticks(x)
  ax.set_xticklabels([_eps_label(e) for e in eps])
  ax.set_xlabel("epsilon")
  ax.set_ylabel(ylabel)
  ax.set_ylim(0, 105)
  ax.grid(axis="y", alpha=0.3)
  if legend:
    ax.legend(fontsize=7)


def plot_adv_accuracy_bars(epsilons, series: dict, path: str, *, title: str = "", ylabel: str = "accuracy (%)"):
  """adv1.png style: grouped bars, one group per ε, one bar per series (dict label → [len(ε)] accuracy)."""
  m = max(len(series), 1)
  fig, ax = plt.subplots(figsize=(1.3 + 1.1 * len(list(epsilons)) * max(m, 2) / 2, 3.6))
  _draw_bars(ax, epsilons, series, ylabel=ylabel)
  if title:
    ax.set_title(title)
  fig.tight_layout()
  save_figure(fig, path, dpi=120)


def plot_bar_panels(panels, path: str, *, ncols: int = 2, title: str = ""):
  """adv1.png with one colour per model: ``panels`` is a list of (title, ε list, {model: [len(ε)] fractions}),
  drawn row-major on a grid of ``ncols`` columns; the legend is shared."""
  nrows = -(-len(panels) // ncols)
  fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.3 * nrows), squeeze=False)
  names = list(dict.fromkeys(m for _, _, series in panels for m in series))
  palette = {m: plt.cm.tab10.colors[i % 10] for i, m in enumerate(names)}
  for ax, (name, eps, series) in zip(axes.ravel(), panels):
    _draw_bars(ax, eps, series, colors=[palette[m] for m in series], legend=False)
    ax.set_title(name, fontsize=9)
  for ax in axes.ravel()[len(panels):]:
    ax.axis("off")
  handles = [plt.Rectangle((0, 0), 1, 1, color=palette[m]) for m in names]
  fig.legend(handles, names, loc="center right", fontsize=8)
  if title:
    fig.suptitle(title)
  fig.tight_layout(rect=(0, 0, 1 - 1.4 / (5.2 * ncols), 1))
  save_figure(fig, path, dpi=110)


def plot_asr_per_step(panels: dict, path: str, *, attack_step: int | None = None, title: str = ""):
  """fign4.png (b) style: one panel per attack, ASR (%) vs step with one line style per ε."""
  n = max(len(panels), 1)
  fig, axes = plt.subplots(1, n, figsize=(3.4 * n + 0.4, 3.4), squeeze=False, sharey=True)
  styles = [":", "-.", "--", "-"]
  colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink"]
  for ax, (name, curves) in zip(axes[0], panels.items()):
    for i, (eps, asr) in enumerate(sorted(curves.items())):
      a = np.asarray([np.nan if v is None else v for v in asr], np.float64) * 100
      ax.plot(np.arange(1, len(a) + 1), a, styles[i % 4], color=colors[i % len(colors)], lw=1.8,
              label=_eps_label(eps))
    if attack_step:
      ax.axvline(attack_step, color="gray", ls=":", lw=1)
    ax.set_title(name)
    ax.set_xlabel("Steps")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(title="epsilon", fontsize=7)
  axes[0, 0].set_ylabel("ASR (%)")
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  save_figure(fig, path, dpi=120)


def plot_probability_maps(images, rows: dict, path: str, *, fixations=None, titles=None):
  """fign5.png (b) style: first row the images with the model's fixations 1 (blue) and 2 (red), then one
  row per map set (dict label → [n, G, G] target-class probabilities, shown 0–100% on a jet scale)."""
  images = np.asarray(images)
  n = images.shape[0]
  r = 1 + len(rows)
  fig, axes = plt.subplots(r, n, figsize=(1.5 * n + 1.2, 1.5 * r), squeeze=False)
  cmap = "gray" if images.shape[-1] == 1 else None
  im = None
  for i in range(n):
    ax = axes[0, i]
    ax.imshow(np.squeeze(np.clip(images[i], 0, 1)), cmap=cmap, vmin=0, vmax=1)
    if fixations is not None:
      px = to_pixels(np.asarray(fixations[i]), images.shape[1])
      ax.plot(px[0, 0], px[0, 1], "s", color="blue", ms=4)
      if len(px) > 1:
        ax.plot(px[1, 0], px[1, 1], "s", color="red", ms=4)
    if titles is not None:
      ax.set_title(titles[i], fontsize=6)
    for j, (label, maps) in enumerate(rows.items()):
      im = axes[j + 1, i].imshow(np.asarray(maps[i]) * 100, cmap="jet", vmin=0, vmax=100,
                                 extent=(0, images.shape[2], images.shape[1], 0))
  axes[0, 0].set_ylabel("Gaze", fontsize=8)
  for j, label in enumerate(rows):
    axes[j + 1, 0].set_ylabel(label, fontsize=8)
  for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
  fig.tight_layout(rect=(0, 0, 0.9, 1))
  if im is not None:
    cax = fig.add_axes((0.92, 0.1, 0.02, 0.8))
    cb = fig.colorbar(im, cax=cax)
    cb.set_label("target-class probability (%)", fontsize=7)
  save_figure(fig, path, dpi=120)


# ----------------------------------------------------------------------------------------------------------
# The reproduction report (rsrnn_jax/reproduction/report.py), in the style of the paper's figures
# ----------------------------------------------------------------------------------------------------------

def plot_accuracy_vs_gmacs(panels: dict, path: str):
  """recog.png style: per panel (dict title → {model: ([GMACs], [accuracy %])}), one line per model as its
  number of steps grows; a model with a single point (FF-CNN, S3TA) is drawn as a large marker."""
  names = list(dict.fromkeys(m for curves in panels.values() for m in curves))
  palette = {m: plt.cm.tab10.colors[i % 10] for i, m in enumerate(names)}
  fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels) + 1.6, 3.8), squeeze=False)
  for ax, (title, curves) in zip(axes[0], panels.items()):
    for m, (x, y) in curves.items():
      if len(x) == 1:
        ax.plot(x, y, "*" if "ff" in m.lower() else "o", ms=14, color=palette[m], label=m)
      else:
        ax.plot(x, y, "-o", ms=4, lw=3 if m.lower().startswith("rs") else 1.5, color=palette[m], label=m)
    ax.set_xlabel("GMACs")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.4)
  handles = [plt.Line2D([], [], color=palette[m], lw=2, marker="o") for m in names]
  fig.legend(handles, names, loc="center right", fontsize=8)
  fig.tight_layout(rect=(0, 0, 1 - 1.6 / (5.0 * len(panels) + 1.6), 1))
  save_figure(fig, path, dpi=110)


STEP_COLORS = ("red", "blue", "lime", "black")  # the paper's Fig. 3a: first to fourth fixation


def plot_fixations_by_model(images, rows: dict, path: str, *, num_steps: int = 4, titles=None):
  """fign3.png (a) style: the same test images (columns) for every attention model (rows).

  ``rows``: label → {"fixations": [T,n,2]} (overt: the first ``num_steps`` fixations as squares coloured
  red, blue, green, black) or {"attention": [T,n,h,w]} (covert: the mean map of those steps over the image,
  and each step's peak as a square in the same colours).
  """
  images = np.asarray(images)
  n, height, width = images.shape[:3]
  fig, axes = plt.subplots(len(rows), n, figsize=(1.45 * n + 0.8, 1.5 * len(rows)), squeeze=False)
  cmap = "gray" if images.shape[-1] == 1 else None
  for r, (label, row) in enumerate(rows.items()):
    for i in range(n):
      ax = axes[r, i]
      ax.imshow(np.squeeze(np.clip(images[i], 0, 1)), cmap=cmap, vmin=0, vmax=1)
      if "attention" in row:
        att = np.asarray(row["attention"])[:num_steps, i]  # [t,h,w]
        ax.imshow(att.mean(0), cmap="inferno", alpha=0.5, interpolation="nearest",
                  extent=(-0.5, width - 0.5, height - 0.5, -0.5))
        h, w = att.shape[1:]
        peaks = [np.unravel_index(np.argmax(a), a.shape) for a in att]
        px = [((c + 0.5) * width / w - 0.5, (rr + 0.5) * height / h - 0.5) for rr, c in peaks]
      else:
        px = to_pixels(np.asarray(row["fixations"])[:num_steps, i], height)
      for t, (x, y) in enumerate(px):
        ax.plot(x, y, "s", ms=5, color=STEP_COLORS[t % len(STEP_COLORS)], mec="white", mew=0.5)
      ax.set_xlim(-0.5, width - 0.5)
      ax.set_ylim(height - 0.5, -0.5)
      if r == 0 and titles is not None:
        ax.set_title(titles[i], fontsize=7)
    axes[r, 0].set_ylabel(label, fontsize=8)
  _save_grid(fig, axes, path)


def glimpse_frames(images, fixations, glimpses, *, probs=None, labels=None, class_names=None):
  """One RGB frame [H,W,3] uint8 per step: top row the images with the scanpath so far (current fixation
  red), bottom row the retinal image of the step; titles: the prediction at that step and its probability."""
  images, fixations, glimpses = np.asarray(images), np.asarray(fixations), np.asarray(glimpses)
  num_steps, n = fixations.shape[:2]
  size = images.shape[1]
  cmap = "gray" if images.shape[-1] == 1 else None
  name = (lambda k: class_names[k]) if class_names is not None else str
  frames = []
  for t in range(num_steps):
    fig, axes = plt.subplots(2, n, figsize=(1.7 * n, 3.7), squeeze=False)
    for i in range(n):
      ax = axes[0, i]
      ax.imshow(np.squeeze(np.clip(images[i], 0, 1)), cmap=cmap, vmin=0, vmax=1)
      px = to_pixels(fixations[:t + 1, i], size)
      ax.plot(px[:, 0], px[:, 1], "-", color="yellow", lw=1, alpha=0.8)
      ax.plot(px[:-1, 0], px[:-1, 1], "s", ms=3, color="orange")
      ax.plot(px[-1, 0], px[-1, 1], "s", ms=6, color="red", mec="white", mew=0.6)
      title = f"y={name(int(labels[i]))}\n" if labels is not None else ""
      if probs is not None:
        k = int(np.argmax(probs[t, i]))
        title += f"p={name(k)} {100 * float(probs[t, i, k]):.0f}%"
      ax.set_title(title, fontsize=7)
      axes[1, i].imshow(np.squeeze(np.clip(glimpses[t, i], 0, 1)), cmap=cmap, vmin=0, vmax=1)
    axes[1, 0].set_ylabel("retinal image", fontsize=7)
    for ax in axes.ravel():
      ax.set_xticks([])
      ax.set_yticks([])
    fig.suptitle(f"step {t + 1}", fontsize=9)
    fig.tight_layout()
    fig.canvas.draw()
    frames.append(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
    plt.close(fig)
  return frames


def save_gif(frames, path: str, *, seconds_per_frame: float = 0.8):
  """Frames (uint8 [H,W,3]) → a looping GIF (imageio)."""
  import imageio.v2 as imageio
  with atomic_path(path) as tmp:
    imageio.mimsave(tmp, frames, duration=int(round(1000 * seconds_per_frame)), loop=0)  # ms per frame
