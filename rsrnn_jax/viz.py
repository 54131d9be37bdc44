"""Figures: accuracy vs glimpse step, fixation trajectories with the retinal glimpses."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


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
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_fixations(images, fixations, glimpses, path: str, *, labels=None, predictions=None,
                   class_names=None):
  """images [B,H,W,C], fixations [T,B,2], glimpses [T,B,n,n,C] → one row per image: scanpath + glimpses."""
  num_steps, batch = fixations.shape[:2]
  fig, axes = plt.subplots(batch, num_steps + 1, figsize=(1.6 * (num_steps + 1), 1.7 * batch),
                           squeeze=False)
  cmap = "gray" if images.shape[-1] == 1 else None
  for b in range(batch):
    ax = axes[b, 0]
    ax.imshow(np.squeeze(images[b]), cmap=cmap, vmin=0, vmax=1)
    px = to_pixels(fixations[:, b], images.shape[1])
    ax.plot(px[:, 0], px[:, 1], "-", color="yellow", lw=0.8, alpha=0.8)
    for t in range(num_steps):
      ax.plot(px[t, 0], px[t, 1], "s", ms=4, color=plt.cm.autumn(t / max(num_steps - 1, 1)))
      ax.annotate(str(t + 1), px[t], color="cyan", fontsize=6, xytext=(2, 2), textcoords="offset points")
    title = ""
    if labels is not None:
      name = (lambda i: class_names[i]) if class_names else str
      title = f"y={name(int(labels[b]))}"
      if predictions is not None:
        title += f" p={name(int(predictions[b]))}"
    ax.set_title(title, fontsize=7)
    for t in range(num_steps):
      axes[b, t + 1].imshow(np.squeeze(np.clip(glimpses[t, b], 0, 1)), cmap=cmap, vmin=0, vmax=1)
      if b == 0:
        axes[b, t + 1].set_title(f"glimpse {t + 1}", fontsize=7)
  for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
