"""C3-GAN clustering metrics with the official conventions (card f) and a collapse diagnostic.

- ACC with over-clustering: count table T[g, k] (classes x Y clusters); stack OVER copies of T
  row-wise so every class appears OVER times; Hungarian assignment maximising matched counts;
  ACC = matched total / N. Each class thus gets exactly OVER clusters; OVER=1 is Hungarian ACC.
- NMI (official): p_ij = T / N, H with log2 and +1e-6 inside each log,
  MI = sum_ij p_ij log2(p_ij / (p_i p_j + 1e-6) + 1e-6), NMI = MI / max(H_class, H_cluster).
  Not sklearn's arithmetic-mean NMI; a perfect clustering scores ~0.99999, not 1.
- `cluster_metrics`: the platform's names for the method's metrics: cluster_acc (Hungarian, each
  class matched to OVER clusters), cluster_nmi (scikit-learn, arithmetic mean, comparable with the
  other methods), cluster_ari, plus cluster_nmi_official and the usage of real-image clusters; ACC,
  NMI and ARI come from the evaluation library (contrastlab.platform.eval).
- `generator_collapse`: mode-collapse diagnostic on generated samples (how many clusters the
  samples of all Y codes fall into, and how often a sample lands in its own code's cluster).
Inputs are integer arrays (numpy or torch); gather predictions from all ranks first.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

EPS = 1e-6


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x).astype(np.int64).ravel()


def count_table(true_labels, pred, n_clusters: int | None = None, n_classes: int | None = None) -> np.ndarray:
    """T[g, k] = #images of class g assigned to cluster k, shape (classes, Y); empty columns kept."""
    t, p = _np(true_labels), _np(pred)
    n_classes = int(t.max()) + 1 if n_classes is None else n_classes
    n_clusters = int(p.max()) + 1 if n_clusters is None else n_clusters
    table = np.zeros((n_classes, n_clusters), dtype=np.int64)
    np.add.at(table, (t, p), 1)
    return table


def official_acc(true_labels, pred, n_clusters: int | None = None, over: int = 1) -> float:
    """Hungarian ACC where each class is matched to exactly `over` clusters (card f)."""
    table = count_table(true_labels, pred, n_clusters)
    stacked = np.tile(table, (over, 1))
    rows, cols = linear_sum_assignment(stacked, maximize=True)
    return float(stacked[rows, cols].sum()) / float(table.sum())


def official_nmi(true_labels, pred, n_clusters: int | None = None) -> float:
    """NMI with log2, +1e-6 in every log, normalised by the larger entropy (official code)."""
    table = count_table(true_labels, pred, n_clusters).astype(np.float64)
    p = table / table.sum()
    pi, pj = p.sum(1), p.sum(0)
    h_class = -(pi * np.log2(pi + EPS)).sum()
    h_cluster = -(pj * np.log2(pj + EPS)).sum()
    mi = (p * np.log2(p / (pi[:, None] * pj[None, :] + EPS) + EPS)).sum()
    return float(mi / max(h_class, h_cluster))


def cluster_usage(assignments, n_clusters: int) -> dict[str, float]:
    """Mode-collapse diagnostic on real data: clusters used, empty, max share, normalised entropy.

    normalised entropy = H(cluster histogram) / ln Y: 1 = perfectly even use, 0 = one cluster.
    """
    counts = np.bincount(_np(assignments), minlength=n_clusters).astype(np.float64)
    share = counts / max(counts.sum(), 1.0)
    nz = share[share > 0]
    entropy = float(-(nz * np.log(nz)).sum())
    return {
        "clusters_used": int((counts > 0).sum()),
        "clusters_empty": int((counts == 0).sum()),
        "max_cluster_share": float(share.max()) if len(share) else 0.0,
        "usage_entropy": entropy / np.log(n_clusters) if n_clusters > 1 else 1.0,
    }


def clustering_report(true_labels, pred, n_clusters: int, over: int = 1) -> dict[str, float]:
    """All the card-f numbers at once: official ACC and NMI, sklearn NMI and ARI, usage."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    t, p = _np(true_labels), _np(pred)
    return {
        "acc": official_acc(t, p, n_clusters, over),
        "nmi": official_nmi(t, p, n_clusters),
        "nmi_sklearn": float(normalized_mutual_info_score(t, p)),
        "ari": float(adjusted_rand_score(t, p)),
        **cluster_usage(p, n_clusters),
    }


def cluster_metrics(true_labels, pred, n_clusters: int, over: int = 1) -> dict[str, float]:
    """Evaluation metrics of the method under the platform's names (see the module docstring)."""
    from contrastlab.platform.eval import ari, clustering_accuracy, nmi

    t, p = _np(true_labels), _np(pred)
    usage = cluster_usage(p, n_clusters)
    return {
        "cluster_acc": clustering_accuracy(t, p, clusters_per_class=over),
        "cluster_nmi": nmi(t, p),
        "cluster_ari": ari(t, p),
        "cluster_nmi_official": official_nmi(t, p, n_clusters),
        **{f"real_{k}": float(v) for k, v in usage.items()},
    }


def generator_collapse(codes, assigned, n_clusters: int) -> dict[str, float]:
    """Mode-collapse diagnostic: D's clusters of generated samples against the codes that made them.

    gen_clusters_hit: distinct clusters the samples of all Y codes fall into (collapse -> 1, healthy -> Y);
    gen_code_agreement: fraction of samples assigned to their own code's cluster (the info term's job);
    gen_codes_distinct: distinct modal clusters over the codes (codes that look alike share one).
    """
    c, a = _np(codes), _np(assigned)
    modal = {int(k): int(np.bincount(a[c == k], minlength=n_clusters).argmax()) for k in np.unique(c)}
    return {
        "gen_clusters_hit": float(len(np.unique(a))),
        "gen_code_agreement": float((c == a).mean()) if len(c) else 0.0,
        "gen_codes_distinct": float(len(set(modal.values()))),
    }
