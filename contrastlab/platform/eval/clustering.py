"""Clustering quality against ground-truth classes: Hungarian accuracy, NMI, ARI.

scipy and scikit-learn are imported inside the functions, so importing the eval package stays cheap.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ._arrays import to_labels


def contingency_table(y_true: Any, y_pred: Any) -> np.ndarray:
    """T[g, k] = number of samples of class g put in cluster k (classes and clusters in sorted order)."""
    t, p = to_labels(y_true, "y_true"), to_labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape} vs {p.shape}")
    _, ti = np.unique(t, return_inverse=True)
    _, pi = np.unique(p, return_inverse=True)
    table = np.zeros((ti.max(initial=-1) + 1, pi.max(initial=-1) + 1), dtype=np.int64)
    np.add.at(table, (ti, pi), 1)
    return table


def clustering_accuracy(y_true: Any, y_pred: Any, clusters_per_class: int = 1) -> float:
    """ACC = max over matchings M of sum_{(g,k) in M} T[g, k] / N (Hungarian, scipy).

    With `clusters_per_class=1` (default) the matching is one-to-one: each class gets at most
    one cluster and vice versa, so when there are more clusters than classes the samples in
    unmatched clusters count as wrong. `clusters_per_class=r` stacks r copies of every class
    row, so each class may take up to r clusters: C3-GAN's over-clustering protocol
    (Y = r x #classes clusters). Cluster ids and class ids need not coincide or be contiguous.
    """
    if clusters_per_class < 1:
        raise ValueError("clusters_per_class must be >= 1")
    table = contingency_table(y_true, y_pred)
    n = table.sum()
    if n == 0:
        raise ValueError("empty labelling")
    from scipy.optimize import linear_sum_assignment

    table = np.repeat(table, clusters_per_class, axis=0)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / n)


def nmi(y_true: Any, y_pred: Any, average_method: str = "arithmetic") -> float:
    """Normalised mutual information, scikit-learn's `normalized_mutual_info_score`.

    NMI = I(Y; K) / mean(H(Y), H(K)); `average_method="arithmetic"` is sklearn's default,
    `"max"` gives I / max(H(Y), H(K)) (C3-GAN's normalisation, without its 1e-6 epsilon).
    """
    from sklearn.metrics import normalized_mutual_info_score

    return float(normalized_mutual_info_score(to_labels(y_true), to_labels(y_pred), average_method=average_method))


def ari(y_true: Any, y_pred: Any) -> float:
    """Adjusted Rand index, scikit-learn's `adjusted_rand_score`."""
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(to_labels(y_true), to_labels(y_pred)))
