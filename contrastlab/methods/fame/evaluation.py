"""FAME's evaluation (card f) on frozen backbone features: linear probe top-1 and clip retrieval.

Retrieval (official `main_retrieve`): query = test videos, gallery = train videos; a video's feature is
the mean over its clips of the L2-normalised pooled clip features (`mean_of_unit_features`: the official
model's fc is replaced by Normalize before the clip mean), then

    q_i <- normalise(q_i - mean_query),   g_j <- normalise(g_j - mean_gallery)   (each set centred by its own mean)
    R@k = fraction of queries whose k most cosine-similar gallery items hold >= 1 of the query's class.

Ties in similarity are broken by gallery order (stable sort), so results are deterministic.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def mean_of_unit_features(per_clip: torch.Tensor) -> torch.Tensor:
    """(B, n, D) per-clip features -> (B, D): L2-normalise every clip feature, then average over the n clips."""
    return torch.nn.functional.normalize(per_clip.float(), dim=-1).mean(dim=1)


def centre_and_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def class_retrieval_recall(query: np.ndarray, query_labels: np.ndarray, gallery: np.ndarray, gallery_labels: np.ndarray,
                           ks: Sequence[int] = (1, 5, 10), centre: bool = True) -> dict[str, float]:
    """{"r1": ..., "r5": ..., ...}: class-level recall@k of query -> gallery (see module doc)."""
    query_labels, gallery_labels = np.asarray(query_labels), np.asarray(gallery_labels)
    if len(query) != len(query_labels) or len(gallery) != len(gallery_labels):
        raise ValueError("features and labels differ in length")
    if centre:
        q, g = centre_and_normalise(query), centre_and_normalise(gallery)
    else:
        q = np.asarray(query, np.float64) / np.maximum(np.linalg.norm(query, axis=1, keepdims=True), 1e-12)
        g = np.asarray(gallery, np.float64) / np.maximum(np.linalg.norm(gallery, axis=1, keepdims=True), 1e-12)
    sims = q @ g.T
    order = np.argsort(-sims, axis=1, kind="stable")
    hits = gallery_labels[order] == query_labels[:, None]  # (Nq, Ng) in ranked order
    first_hit = np.where(hits.any(axis=1), hits.argmax(axis=1), len(gallery))
    return {f"r{k}": float(np.mean(first_hit < k)) for k in ks}


@torch.no_grad()
def gather_features(batches, fn, extra: Sequence[str] = ("label", "bg_id")) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Run `fn(batch) -> (B, D)` over `batches()`, gather from every worker, keep one row per sample
    index (sorted). Returns (features, {"index", *extra})."""
    from contrastlab.platform import distributed as dist_utils

    feats, cols = [], {k: [] for k in ("index", *extra)}
    for batch in batches():
        feats.append(fn(batch).float().cpu().numpy())
        for k in cols:
            if k in batch:
                cols[k].append(batch[k].cpu().numpy())
    # a rank with no batches sends no names; features travel as tensors (gather_arrays)
    local = {"feats": np.concatenate(feats), **{k: np.concatenate(v) for k, v in cols.items() if v}} if feats else {}
    parts = [p for p in dist_utils.gather_arrays(local) if len(p.get("feats", ()))]
    if not parts:
        return np.zeros((0, 0), np.float32), {}
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]
              if all(len(p[k]) == len(p["feats"]) for p in parts)}
    _, first = np.unique(merged["index"], return_index=True)
    return merged.pop("feats")[first], {k: v[first] for k, v in merged.items()}
