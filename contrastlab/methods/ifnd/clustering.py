"""IFND clustering pass: hierarchical spherical k-means pseudo-labels, confidence, acceptance (card c).

Everything here is deterministic given the features and the seed (explicit torch.Generator,
stable sorts, no reliance on the order features arrived in once `dedupe_by_index` sorted them),
so every rank that clusters the same gathered features gets identical labels; `labels_digest`
hashes them for the cross-rank check. On CPU this holds bit for bit. On CUDA the centroid
update's index_add_ uses atomic adds whose order can vary, so for multi-GPU runs cluster on
rank 0 and broadcast the tables (platform `broadcast_object`), then compare digests. The [R] choices of the card are options:
`hierarchy` (nested | independent), acceptance `scope` (global | per_cluster), `schedule`
(linear | step | constant).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

HIERARCHIES = ("nested", "independent")
SCOPES = ("global", "per_cluster")
SCHEDULES = ("linear", "step", "constant")


def _generator(seed: int | torch.Generator | None) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    g = torch.Generator()
    g.manual_seed(0 if seed is None else int(seed))
    return g


def _assign(x: torch.Tensor, centroids: torch.Tensor, chunk: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid by cosine (rows already normalised), chunked so N x k is never held whole."""
    labels = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    best = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for s in range(0, x.shape[0], chunk):
        sim = x[s : s + chunk] @ centroids.T
        best[s : s + chunk], labels[s : s + chunk] = sim.max(dim=1)
    return labels, best


def _init_centroids(x: torch.Tensor, k: int, g: torch.Generator, init: str) -> torch.Tensor:
    n = x.shape[0]
    if init == "random":  # k distinct points (faiss default)
        return x[torch.randperm(n, generator=g)[:k].to(x.device)].clone()
    if init != "kmeans++":
        raise ValueError(f"init must be 'kmeans++' or 'random', got {init!r}")
    # k-means++ with cosine distance 1 - cos: each new seed drawn with probability ~ d^2.
    first = int(torch.randint(n, (1,), generator=g))
    chosen = [first]
    d2 = (1.0 - x @ x[first]).clamp(min=0) ** 2
    for _ in range(1, k):
        total = float(d2.sum())
        if total <= 0:  # fewer distinct points than k: fill with unchosen points in order
            taken = set(chosen)
            rest = [i for i in range(n) if i not in taken]
            chosen.extend(rest[: k - len(chosen)])
            break
        u = float(torch.rand(1, generator=g)) * total
        idx = int(torch.searchsorted(torch.cumsum(d2.double(), 0), torch.tensor([u], dtype=torch.float64, device=x.device)).clamp(max=n - 1))
        chosen.append(idx)
        d2 = torch.minimum(d2, (1.0 - x @ x[idx]).clamp(min=0) ** 2)
    return x[torch.tensor(chosen, device=x.device)].clone()


@dataclass
class KMeansResult:
    labels: torch.Tensor  # (N,) int64
    centroids: torch.Tensor  # (k, D) L2-normalised
    objective: float  # sum_i cos(x_i, centroid of x_i), maximised


def spherical_kmeans(
    x: torch.Tensor, k: int, iters: int = 20, restarts: int = 3, seed: int | torch.Generator | None = 0, init: str = "kmeans++"
) -> KMeansResult:
    """Spherical (cosine) k-means of rows of `x` into k clusters; best objective of `restarts` runs.

    Centroid update = normalised mean of members. An empty cluster is re-seeded with the point
    that currently fits its centroid worst (deterministic), so all k centroids stay meaningful.
    Rejects k > N with a clear error.
    """
    n = x.shape[0]
    if k < 1 or k > n:
        raise ValueError(f"k-means: cannot make k={k} clusters from N={n} points (need 1 <= k <= N)")
    x = F.normalize(x.float(), dim=1)
    g = _generator(seed)
    best: KMeansResult | None = None
    for _ in range(max(1, restarts)):
        c = _init_centroids(x, k, g, init)
        for _ in range(iters):
            labels, sim = _assign(x, c)
            sums = torch.zeros_like(c).index_add_(0, labels, x)
            counts = torch.bincount(labels, minlength=k)
            empty = (counts == 0).nonzero().flatten()
            if len(empty):
                worst = torch.argsort(sim, stable=True)[: len(empty)]
                sums[empty] = x[worst]
            c = F.normalize(sums, dim=1)
        labels, sim = _assign(x, c)
        obj = float(sim.double().sum())
        if best is None or obj > best.objective:
            best = KMeansResult(labels, c, obj)
    return best


def cluster_centroids(x: torch.Tensor, labels: torch.Tensor, k: int, fallback: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised mean of each cluster's (normalised) members; empty clusters take `fallback` rows."""
    x = F.normalize(x.float(), dim=1)
    sums = torch.zeros((k, x.shape[1]), dtype=x.dtype, device=x.device).index_add_(0, labels, x)
    counts = torch.bincount(labels, minlength=k)
    if fallback is not None:
        sums[counts == 0] = fallback.to(sums)[counts == 0]
    return F.normalize(sums, dim=1)


def hierarchical_pseudo_labels(
    feats: torch.Tensor,
    ks: tuple[int, ...] | list[int],
    hierarchy: str = "nested",
    seed: int = 0,
    iters: int = 20,
    restarts: int = 3,
    init: str = "kmeans++",
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Pseudo-labels (M, N) int64 and per-level centroids [(k_m, D)] of N features (card c) [R].

    nested: level 1 = k-means of the features into k_1; level m > 1 = k-means of the level-(m-1)
    centroids into k_m clusters, each image inheriting its centroid's label (so images that share
    a level-m label share every coarser label). independent: a separate k-means per k (PCL).
    Returned centroids are the normalised means of each level's member features (empty clusters
    keep their k-means centroid), i.e. "the centroid of its cluster" used by `confidence`.
    """
    if hierarchy not in HIERARCHIES:
        raise ValueError(f"hierarchy must be one of {HIERARCHIES}, got {hierarchy!r}")
    x = F.normalize(feats.float(), dim=1)
    g = _generator(seed)
    labels, centroids = [], []
    points, point_label = x, None  # what is clustered at this level, and map image -> point
    for m, k in enumerate(ks):
        if hierarchy == "nested" and m > 0 and k > ks[m - 1]:
            raise ValueError(f"nested hierarchy needs non-increasing ks, got k={k} after k={ks[m - 1]} (level {m + 1})")
        if hierarchy == "independent" or m == 0:
            res = spherical_kmeans(x, k, iters, restarts, g, init)
            lab = res.labels
        else:
            res = spherical_kmeans(points, k, iters, restarts, g, init)
            lab = res.labels[point_label]
        labels.append(lab)
        centroids.append(cluster_centroids(x, lab, k, fallback=res.centroids))
        # nested: the next level clusters this level's k-means centroids
        points, point_label = res.centroids, lab
    return torch.stack(labels), centroids


def confidence(feats: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    """conf_i = cos(f_i, mu_{y_i}); labels (N,) with centroids (k, D), or (M, N) with a list -> (M, N)."""
    x = F.normalize(feats.float(), dim=1)
    if labels.dim() == 1:
        return (x * F.normalize(centroids.float(), dim=1)[labels]).sum(dim=1)
    return torch.stack([confidence(x, labels[m], centroids[m]) for m in range(labels.shape[0])])


def _n_accept(rate: float, n: int) -> int:
    # floor(rate*n), tolerant of float noise such as 0.29*100 = 28.999999999999996
    return min(n, max(0, math.floor(rate * n + 1e-9)))


def accept(conf: torch.Tensor, rate: float, scope: str = "global", labels: torch.Tensor | None = None) -> torch.Tensor:
    """Acceptance flags: the floor(rate*N) highest-confidence items (per level if conf is (M, N)).

    scope="global" ranks all N items of a level; scope="per_cluster" [R option] accepts the
    floor(rate*n_c) most confident members of each cluster (needs `labels`). Ties are broken by
    index (stable sort) so every rank agrees.
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"acceptance rate must be in [0, 1], got {rate}")
    if conf.dim() == 2:
        return torch.stack([accept(conf[m], rate, scope, None if labels is None else labels[m]) for m in range(conf.shape[0])])
    n = conf.shape[0]
    out = torch.zeros(n, dtype=torch.bool, device=conf.device)
    if scope == "global":
        order = torch.sort(-conf.float(), stable=True).indices
        out[order[: _n_accept(rate, n)]] = True
        return out
    if labels is None:
        raise ValueError("per_cluster acceptance needs labels")
    # sort by (cluster, -conf, index); rank within cluster = position - cluster start
    order = torch.sort(-conf.float(), stable=True).indices
    order = order[torch.sort(labels[order], stable=True).indices]
    lab_sorted = labels[order]
    counts = torch.bincount(lab_sorted)
    starts = torch.cumsum(counts, 0) - counts
    rank_in = torch.arange(n, device=conf.device) - starts[lab_sorted]
    quota = torch.tensor([_n_accept(rate, int(c)) for c in counts.tolist()], device=conf.device)
    out[order[rank_in < quota[lab_sorted]]] = True
    return out


def acceptance_rate(epoch: int, epochs: int, warmup_epochs: int, schedule: str = "linear") -> float:
    """r_e of card c [R], epochs counted from 0.

    linear:   0 for e < e_w, else min(1, (e - e_w + 1) / (E - e_w))  (1.0 at the last epoch)
    step:     the linear ramp rounded up to 10 equal steps (0.1 at the first clustering epoch,
              1.0 over the last tenth)
    constant: 1.0 from e_w (the non-incremental ablation)
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if epochs <= warmup_epochs:
        raise ValueError(f"need epochs > warmup_epochs, got {epochs} <= {warmup_epochs}")
    if epoch < warmup_epochs:
        return 0.0
    if schedule == "constant":
        return 1.0
    lin = min(1.0, (epoch - warmup_epochs + 1) / (epochs - warmup_epochs))
    if schedule == "step":
        return min(1.0, math.ceil(lin * 10 - 1e-9) / 10)
    return lin


def fn_precision_recall(labels, accepted, true_labels) -> tuple[float, float]:
    """FN-detection precision and recall of one level, without an N x N matrix.

    Detected pairs = ordered pairs (i != j) both accepted with the same pseudo-label;
    precision = fraction of those sharing the true label; recall = detected true pairs over all
    ordered same-class pairs of the N images. From the (cluster, true label) count table:
    pairs = sum n(n-1). Returns nan where a denominator is 0.
    """
    lab = np.asarray(torch.as_tensor(labels).cpu(), dtype=np.int64)
    acc = np.asarray(torch.as_tensor(accepted).cpu(), dtype=bool)
    true = np.asarray(torch.as_tensor(true_labels).cpu(), dtype=np.int64)

    def pairs(counts: np.ndarray) -> float:
        return float((counts.astype(np.float64) * (counts - 1)).sum())

    la, ta = lab[acc], true[acc]
    _, cluster_counts = np.unique(la, return_counts=True)
    _, joint_counts = np.unique(np.stack([la, ta]), axis=1, return_counts=True) if len(la) else (None, np.zeros(0, np.int64))
    _, class_counts = np.unique(true, return_counts=True)
    detected, correct, possible = pairs(cluster_counts), pairs(joint_counts), pairs(class_counts)
    precision = correct / detected if detected > 0 else float("nan")
    recall = correct / possible if possible > 0 else float("nan")
    return precision, recall


def fn_precision(labels, accepted, true_labels) -> float:
    """Fraction of accepted same-cluster pairs that share the true label (card c); nan if none."""
    return fn_precision_recall(labels, accepted, true_labels)[0]


def cluster_sizes(labels: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """Histogram of cluster sizes of one level (for logging)."""
    return torch.bincount(labels.flatten().long(), minlength=k or 0)


def labels_digest(*tensors: torch.Tensor) -> str:
    """SHA-256 of the tensors' shapes and int64 contents: equal on every rank iff the labels are."""
    h = hashlib.sha256()
    for t in tensors:
        a = np.ascontiguousarray(torch.as_tensor(t).detach().cpu().numpy().astype(np.int64))
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def dedupe_by_index(indices: torch.Tensor, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique dataset indices in ascending order with the first feature seen for each.

    Gathered features contain the DistributedSampler's padding duplicates and arrive in rank
    order; sorting by index makes the clustering input independent of both.
    """
    order = torch.sort(indices.long(), stable=True).indices
    idx = indices.long()[order]
    keep = torch.ones_like(idx, dtype=torch.bool)
    keep[1:] = idx[1:] != idx[:-1]
    return idx[keep], feats[order][keep]


def label_tables(indices: torch.Tensor, labels: torch.Tensor, accepted: torch.Tensor, size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Scatter per-sample labels/flags (M, n) into tables (M, size) indexed by dataset index.

    Indices never seen get label -1 and are not accepted. `size` defaults to max(index) + 1.
    """
    idx = indices.long()
    size = int(idx.max()) + 1 if size is None else size
    m = labels.shape[0]
    lab_t = torch.full((m, size), -1, dtype=torch.long, device=labels.device)
    acc_t = torch.zeros((m, size), dtype=torch.bool, device=labels.device)
    lab_t[:, idx] = labels.long()
    acc_t[:, idx] = accepted.bool()
    return lab_t, acc_t


@dataclass
class PseudoLabels:
    labels: torch.Tensor  # (M, N) int64, in the order of the input features
    accepted: torch.Tensor  # (M, N) bool
    confidence: torch.Tensor  # (M, N) float
    centroids: list[torch.Tensor]
    rate: float

    def digest(self) -> str:
        return labels_digest(self.labels, self.accepted)


def cluster_pass(
    feats: torch.Tensor,
    ks: tuple[int, ...] | list[int],
    rate: float,
    hierarchy: str = "nested",
    scope: str = "global",
    seed: int = 0,
    iters: int = 20,
    restarts: int = 3,
    init: str = "kmeans++",
) -> PseudoLabels:
    """One clustering pass of card c: labels per level, confidences, acceptance at `rate`."""
    labels, cents = hierarchical_pseudo_labels(feats, ks, hierarchy, seed, iters, restarts, init)
    conf = confidence(feats, labels, cents)
    return PseudoLabels(labels, accept(conf, rate, scope, labels), conf, cents, rate)
