"""Product retrieval metrics of the SCALE evaluation (card f); the platform's eval library only has
image-text recall@k, so mAP@k / Prec@k / HitRate@k with label relevance live here.

For one query with a ranked gallery (the query itself excluded) and its positives P (gallery items
sharing the query's label), the official evaluation (`evaluate_unit_v2.py`, card f) first cuts the list:
    k_eff     = min(k, |P|, |list|)
    AP@k      = (sum over ranks r <= k_eff holding a positive of precision@r) / #hits in the top k_eff
                (0 when there is no hit)
    Prec@k    = #hits in the top k_eff / k_eff
    HitRate@k = 1 if any positive is in the top k_eff
Queries without any positive are left out of the means. Card h.9's example is `average_precision` of a
whole list: ranked [a, d, b, c], P = {b, c}: (1/3 + 2/4) / 2 = 0.416667 (with the cut, AP@4 of that
query is 0: k_eff = |P| = 2 and neither of the first two is a positive).

The card states both the divisor (#hits) and the cut (k_eff) only in words, and its example does not
tell the readings apart, so the formula is a config option (`method.retrieval_ap`):
- "official" (default): the above, which is what the paper's Tables 3-5 report;
- "min_k_pos": the common AP@k normalisation, which this code used before session 19: the top k are
  scanned, the sum is divided by min(k, |P|), and Prec@k divides the hits in the top k by min(k, |list|).
  Its figures are lower (a query with one hit at rank 1 of 10 positives scores 0.1, not 1).
Scores are dot products (card f: the product embedding is a sum of first-token outputs, not
normalised); ties are broken by gallery order (stable sort).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

AP_FORMULAS = ("official", "min_k_pos")


def average_precision(relevant_ranked: Sequence[bool] | np.ndarray) -> float:
    """Sum of precision at each hit / number of hits, over the whole list given (0 with no hit)."""
    rel = np.asarray(relevant_ranked, dtype=bool)
    hits = np.cumsum(rel)
    if not hits.size or hits[-1] == 0:
        return 0.0
    return float((hits[rel] / (np.flatnonzero(rel) + 1)).sum() / hits[-1])


def average_precision_at_k(relevant_ranked: Sequence[bool] | np.ndarray, k: int, n_positives: int,
                           formula: str = "official") -> float:
    """AP@k of one ranked list of relevance flags with `n_positives` positives in the whole gallery."""
    rel = np.asarray(relevant_ranked, dtype=bool)
    k_eff = min(k, n_positives, len(rel))
    if k_eff <= 0:
        return float("nan")
    if formula == "official":
        return average_precision(rel[:k_eff])
    if formula == "min_k_pos":
        top = rel[:k]
        hits = np.cumsum(top)
        return float((hits[top] / (np.flatnonzero(top) + 1)).sum() / k_eff)
    raise ValueError(f"unknown AP formula {formula!r}; one of {AP_FORMULAS}")


@torch.no_grad()
def retrieval_map(features, labels, ks: Sequence[int] = (1, 5, 10), chunk_size: int = 512, prefix: str = "",
                  formula: str = "official") -> dict[str, float]:
    """Leave-one-out retrieval within one set: every item queries all the others by dot product.

    Returns {f"{prefix}map_at_{k}", f"{prefix}prec_at_{k}", f"{prefix}hit_at_{k}"} for k in ks, plus
    f"{prefix}map_avg" (the mean of the mAP@k values over ks; the official code's per-k "average" of
    mAP, Prec and HitRate is not reproduced)."""
    if formula not in AP_FORMULAS:
        raise ValueError(f"unknown AP formula {formula!r}; one of {AP_FORMULAS}")
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
                # official: every figure reads the list cut at k_eff; min_k_pos: the top k
                cut = min(k, n_pos, n - 1) if formula == "official" else min(k, n - 1)
                top = rel[row, :cut]
                sums[f"map_at_{k}"] += average_precision_at_k(rel[row], k, n_pos, formula)
                sums[f"prec_at_{k}"] += float(top.sum()) / cut
                sums[f"hit_at_{k}"] += float(top.any())
    out = {f"{prefix}{name}": (v / counted if counted else float("nan")) for name, v in sums.items()}
    out[f"{prefix}map_avg"] = float(np.mean([out[f"{prefix}map_at_{k}"] for k in ks]))
    return out
