"""Hyperspectral pixel classification scores: overall accuracy, average accuracy, Cohen's kappa."""
from __future__ import annotations

from typing import Any

import numpy as np

from ._arrays import to_labels


def hsi_scores(y_true: Any, y_pred: Any) -> dict[str, Any]:
    """OA, AA and kappa of a pixel classification (fractions, not %).

    Over the classes K = labels seen in y_true or y_pred, with N pixels and confusion
    n[t, p]:
      OA    = sum_k n[k, k] / N
      AA    = mean over classes present in y_true of recall_k = n[k, k] / sum_p n[k, p]
              (a class absent from y_true is left out, not counted as 0)
      kappa = (p_o - p_e) / (1 - p_e), p_o = OA, p_e = sum_k true_k * pred_k / N^2
              (true_k, pred_k = row and column sums); nan when p_e = 1, as in scikit-learn.
    "per_class" maps each class present in y_true to its recall.
    """
    t, p = to_labels(y_true, "y_true"), to_labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape} vs {p.shape}")
    if t.size == 0:
        raise ValueError("empty labelling")
    classes, inv = np.unique(np.concatenate([t, p]), return_inverse=True)
    ti, pi = inv[: len(t)], inv[len(t) :]
    n = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(n, (ti, pi), 1)
    total = n.sum()
    true_k, pred_k = n.sum(axis=1), n.sum(axis=0)
    oa = np.trace(n) / total
    present = true_k > 0
    recall = np.diag(n)[present] / true_k[present]
    p_e = float(np.sum(true_k.astype(np.float64) * pred_k) / float(total) ** 2)
    kappa = (oa - p_e) / (1 - p_e) if p_e < 1 else float("nan")
    return {
        "oa": float(oa),
        "aa": float(recall.mean()),
        "kappa": float(kappa),
        "per_class": {int(c): float(r) for c, r in zip(classes[present], recall)},
    }
