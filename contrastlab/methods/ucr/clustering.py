"""UCR pseudo-labels (card c): k-reciprocal Jaccard distance, DBSCAN, centroids, camera proxies,
and the rehearsal-buffer selection. Pure numpy; deterministic given the features, so every rank
that clusters the same gathered features gets the same labels (the method still clusters on
rank 0 and broadcasts, see method.py).
"""
from __future__ import annotations

import numpy as np


def _initial_rank(features: np.ndarray, k: int, chunk: int = 2048) -> np.ndarray:
    """(N, k) nearest neighbours by squared L2, self included (exact, chunked instead of faiss)."""
    n = features.shape[0]
    sq = (features ** 2).sum(1)
    out = np.empty((n, k), dtype=np.int64)
    for s in range(0, n, chunk):
        d = sq[s:s + chunk, None] + sq[None, :] - 2.0 * features[s:s + chunk] @ features.T
        d[np.arange(d.shape[0]), np.arange(s, s + d.shape[0])] = -np.inf  # self first, even with ties
        part = np.argpartition(d, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (d.shape[0], 1))
        rows = np.arange(d.shape[0])[:, None]
        out[s:s + chunk] = part[rows, np.argsort(d[rows, part], axis=1, kind="stable")]
    return out


def _k_reciprocal(initial_rank: np.ndarray, i: int, k: int) -> np.ndarray:
    """R(i, k): forward neighbours of i (first k+1 columns; the rank table has k1 columns, so
    for k = k1 this is k1 items, as the official faiss version) whose own list contains i."""
    forward = initial_rank[i, :k + 1]
    backward = initial_rank[forward, :k + 1]
    return forward[np.any(backward == i, axis=1)]


def jaccard_distance(features: np.ndarray, k1: int = 30, k2: int = 6) -> np.ndarray:
    """k-reciprocal Jaccard distance (N, N) of unit-norm features (card c).

    V_i = softmax over the expanded k-reciprocal set of -(2 - 2 f_i.f_j) (0 elsewhere); the set is
    R(i, k1) plus R(j, round(k1/2)) of each member j sharing more than 2/3 of it with R(i, k1);
    query expansion V_i <- mean of V over i's first k2 neighbours;
    d_J(i, j) = 1 - sum_k min(V_ik, V_jk) / (2 - sum_k min(V_ik, V_jk)), clipped at >= 0.
    Symmetric, zero diagonal, values in [0, 1].
    """
    x = np.asarray(features, dtype=np.float32)
    n = x.shape[0]
    k1 = min(k1, n)
    rank = _initial_rank(x, k1)
    half = int(np.around(k1 / 2))
    v = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        r_i = _k_reciprocal(rank, i, k1)
        expanded = r_i
        for j in r_i:
            r_j = _k_reciprocal(rank, j, half)
            if len(np.intersect1d(r_j, r_i)) > 2.0 / 3.0 * len(r_j):
                expanded = np.append(expanded, r_j)
        expanded = np.unique(expanded)
        weights = np.exp(-(2.0 - 2.0 * x[expanded] @ x[i]))
        v[i, expanded] = weights / weights.sum()
    if k2 > 1:
        v = np.stack([v[rank[i, :k2]].mean(axis=0) for i in range(n)])
    overlap = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        nz = np.flatnonzero(v[i])
        overlap[i] = np.minimum(v[i, nz][None, :], v[:, nz]).sum(axis=1)
    dist = 1.0 - overlap / (2.0 - overlap)
    dist = np.maximum(dist, 0.0)
    dist = np.minimum(dist, dist.T)  # exact symmetry despite float summation order
    np.fill_diagonal(dist, 0.0)
    return dist


def dbscan_labels(distance: np.ndarray, eps: float = 0.55, min_samples: int = 4) -> np.ndarray:
    """DBSCAN on a precomputed distance matrix; -1 = outlier, clusters 0..K-1."""
    from sklearn.cluster import DBSCAN

    return DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed", n_jobs=1).fit_predict(distance).astype(np.int64)


def relabel(labels: np.ndarray) -> np.ndarray:
    """Map arbitrary ids (negative = ignore) to 0..K-1 in order of first sorted id; negatives stay -1."""
    labels = np.asarray(labels)
    out = np.full(labels.shape, -1, dtype=np.int64)
    keep = labels >= 0
    out[keep] = np.unique(labels[keep], return_inverse=True)[1]
    return out


def cluster_centroids(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(K, D) mean feature of each cluster 0..K-1 (outliers -1 ignored; not re-normalised)."""
    k = int(labels.max()) + 1 if (labels >= 0).any() else 0
    out = np.zeros((k, features.shape[1]), dtype=np.float32)
    keep = labels >= 0
    np.add.at(out, labels[keep], features[keep])
    return out / np.bincount(labels[keep], minlength=k)[:, None].astype(np.float32)


def camera_proxies(features: np.ndarray, labels: np.ndarray, cameras: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-(cluster, camera) mean features, sorted by (cluster, camera): (proxies, owner cluster, camera)."""
    keep = labels >= 0
    pairs = np.stack([labels[keep], cameras[keep]], axis=1)
    uniq, inverse = np.unique(pairs, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    proxies = np.zeros((len(uniq), features.shape[1]), dtype=np.float32)
    np.add.at(proxies, inverse, features[keep])
    proxies /= np.bincount(inverse, minlength=len(uniq))[:, None].astype(np.float32)
    return proxies, uniq[:, 0].astype(np.int64), uniq[:, 1].astype(np.int64)


def centroid_scores(features: np.ndarray, labels: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """cosine(feature, its centroid) per sample; -inf for outliers."""
    out = np.full(len(labels), -np.inf, dtype=np.float32)
    keep = labels >= 0
    c = centroids[labels[keep]]
    f = features[keep]
    out[keep] = (f * c).sum(1) / (np.linalg.norm(f, axis=1) * np.linalg.norm(c, axis=1) + 1e-12)
    return out


def select_buffer(labels: np.ndarray, scores: np.ndarray, mem_samples: int = 2) -> np.ndarray:
    """Positions of the `mem_samples` samples with the highest centroid score in every cluster
    (all of a smaller cluster); outliers never chosen. Sorted by (cluster, descending score)."""
    chosen = []
    for k in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == k)
        order = members[np.argsort(-scores[members], kind="stable")]
        chosen.append(order[:mem_samples])
    return np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
