"""Multi-label classification metrics (MS-COCO; paper.md §6): mAP and CP / CR / CF1 / OP / OR / OF1.

Conventions (numpy, host side, over a whole evaluation split):

* ``logits`` [N, K] (any monotone score works for AP), ``labels`` [N, K] multi-hot (0/1).
* Threshold: a class is predicted when its logit is > 0, i.e. sigmoid probability > 0.5 (the standard choice,
  and the authors' ``utils_multilabel.py``).
* AP of a class: the area under its precision-recall curve as a step function,
  AP = Σ_k (R_k − R_{k−1}) · P_k over the distinct score thresholds in decreasing order (equal scores form one
  threshold, so the result does not depend on the order of ties; it equals the mean, over the positives, of
  the precision at the rank of each positive when there are no ties). mAP is the mean AP over the classes that
  have at least one positive (AP of a class without positives is undefined: NaN, left out).
* Per class c: TP_c, FP_c, FN_c at the threshold; P_c = TP_c / (TP_c + FP_c), R_c = TP_c / (TP_c + FN_c) with
  0/0 = 0 (as the authors' code: a class never predicted has precision 0).
  CP = mean_c P_c, CR = mean_c R_c, CF1 = 2·CP·CR / (CP + CR);
  OP = Σ TP / Σ (TP + FP), OR = Σ TP / Σ (TP + FN), OF1 = 2·OP·OR / (OP + OR)
  (the usual definitions, e.g. ML-GCN, Chen et al. CVPR 2019; the authors' code averaged per-class F1 for CF1).
All values are fractions in [0, 1].
"""
from __future__ import annotations

import numpy as np

METRICS = ("mAP", "CP", "CR", "CF1", "OP", "OR", "OF1")


def _div(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape), where=b > 0)


def average_precision(scores, labels) -> np.ndarray:
  """AP per class [K] (NaN for a class without positives); scores, labels [N, K]."""
  scores, labels = np.asarray(scores, np.float64), np.asarray(labels) > 0
  out = np.full(scores.shape[1], np.nan)
  for c in range(scores.shape[1]):
    pos = labels[:, c]
    if not pos.any():
      continue
    order = np.argsort(-scores[:, c], kind="stable")
    s, p = scores[order, c], pos[order]
    last = np.r_[s[1:] != s[:-1], True]  # the last element of each group of equal scores
    tp = np.cumsum(p)[last]
    seen = (np.flatnonzero(last) + 1).astype(np.float64)
    recall = tp / pos.sum()
    out[c] = np.sum(np.diff(np.r_[0.0, recall]) * tp / seen)
  return out


def _f1(p, r):
  return float(_div(2 * p * r, p + r))


def metrics(logits, labels) -> dict:
  """mAP and CP/CR/CF1/OP/OR/OF1 (see the module docstring), plus the per-class ``AP``."""
  logits, labels = np.asarray(logits), np.asarray(labels) > 0
  pred = logits > 0
  tp = np.sum(pred & labels, 0)
  fp = np.sum(pred & ~labels, 0)
  fn = np.sum(~pred & labels, 0)
  ap = average_precision(logits, labels)
  cp, cr = float(np.mean(_div(tp, tp + fp))), float(np.mean(_div(tp, tp + fn)))
  op, orc = float(_div(tp.sum(), (tp + fp).sum())), float(_div(tp.sum(), (tp + fn).sum()))
  has = ~np.isnan(ap)
  return {"mAP": float(np.mean(ap[has])) if has.any() else float("nan"), "CP": cp, "CR": cr,
          "CF1": _f1(cp, cr), "OP": op, "OR": orc, "OF1": _f1(op, orc), "AP": ap,
          "num_classes_with_positives": int(has.sum())}


def metrics_per_step(logits, labels) -> dict:
  """``metrics`` at every step: logits [T, N, K], labels [N, K] → {metric: [T values]} for METRICS."""
  per = [metrics(z, labels) for z in np.asarray(logits)]
  return {k: [float(m[k]) for m in per] for k in METRICS}
