"""Product retrieval metrics of the SCALE evaluation (card f); the platform's eval library only has
image-text recall@k, so mAP@k / Prec@k / HitRate@k with label relevance live here.

For one query with a ranked gallery (the query itself excluded) and its positives P (gallery items
sharing the query's label):
    k_eff     = min(k, |P|, |list|)
    AP@k      = (sum over ranks r <= k holding a positive of precision@r) / k_eff
    Prec@k    = #positives in the top k / min(k, |list|)
    HitRate@k = 1 if any positive is in the top k
Queries without any positive are left out of the means. Example (card h.9): ranked [a, d, b, c],
P = {b, c}: AP@4 = (1/3 + 2/4) / 2 = 0.416667.
Scores are dot products (card f: the product embedding is a sum of first-token outputs, not
normalised); ties are broken by gallery order (stable sort).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def average_precision_at_k(relevant_ranked: Sequence[bool] | np.ndarray, k: int, n_positives: int) -> float:
    """AP@k of one ranked list of relevance flags with `n_positives` positives in the whole list."""
    rel = np.asarray(relevant_ranked, dtype=bool)
    k_eff = min(k, n_positives, len(rel))
    if k_eff <= 0:
        return float("nan")
    top = rel[:k]
    hits = np.cumsum(top)
    precision_at_hits = hits[top] / (np.flatnonzero(top) + 1)
    return float(precision_at_hits.sum() / k_eff)


@torch.no_grad()
def retrieval_map(features, labels, ks: Sequence[int] = (1, 5, 10), chunk_size: int = 512, prefix: str = "") -> dict[str, float]:
    """Leave-one-out retrieval within one set: every item queries all the others by dot product.

    Returns {f"{prefix}map_at_{k}", f"{prefix}prec_at_{k}", f"{prefix}hit_at_{k}"} for k in ks, plus
    f"{prefix}map_avg" (the mean of the mAP@k values)."""
    x = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(labels)).long()
    n = len(x)
    ks = sorted({int(k) for k in ks})
    k_max = min(ks[-1], n - 1)
    positives = (y[:, None] == y[None, :]).sum(1) - 1  # same label, query excluded
    sums = {f"{name}_{k}": 0.0 for k in ks for name in ("map_at", "prec_at", "hit_at")}
    counted = 0
    for a in range(0, n, chunk_size):
        b = min(a + chunk_size, n)
        s = x[a:b] @ x.T
        s[torch.arange(b - a), torch.arange(a, b)] = float("-inf")  # the query itself
        # stable descending sort: ties keep gallery order
        order = torch.sort(-s, dim=1, stable=True).indices[:, :k_max]
        rel = (y[order] == y[a:b, None]).numpy()
        for row in range(b - a):
            n_pos = int(positives[a + row])
            if n_pos == 0:
                continue
            counted += 1
            for k in ks:
                top = rel[row, :k]
                sums[f"map_at_{k}"] += average_precision_at_k(rel[row], k, min(n_pos, n - 1))
                sums[f"prec_at_{k}"] += float(top.sum()) / min(k, n - 1)
                sums[f"hit_at_{k}"] += float(top.any())
    out = {f"{prefix}{name}": (v / counted if counted else float("nan")) for name, v in sums.items()}
    out[f"{prefix}map_avg"] = float(np.mean([out[f"{prefix}map_at_{k}"] for k in ks]))
    return out
