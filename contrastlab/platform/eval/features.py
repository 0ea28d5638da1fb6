"""Feature extraction over a (Ray) dataset split on every Train worker, gathered in index order.

Each worker runs `fn` over its own part of the evaluation data; the parts are all-gathered, padding
duplicates dropped by sample index and sorted, so every rank holds the same (indices, features,
columns) and any metric of this library can then run on rank 0 (or everywhere, identically).
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import torch

from contrastlab.platform import distributed as dist_utils


def extract_features(batches: Iterable[dict] | Callable[[], Iterable[dict]], fn: Callable[[dict], torch.Tensor],
                     max_batches: int = 0, index_key: str = "index") -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Run `fn(batch) -> (B, D)` over this worker's batches (no grad) and gather from every worker.

    `batches`: an iterable of dict batches (e.g. `ray.train.get_dataset_shard("eval").iter_torch_batches(...)`,
    or `ctx.datasets["eval"]`) or a callable returning one. Every batch needs `index_key` (the platform
    adds `index` to every sample). Returns `(indices ascending, features (N, D) float32 in that order,
    {column: values}` for every other 1-D tensor column such as labels), identical on every rank.
    """
    feats, columns = [], {}
    with torch.no_grad():
        for i, batch in enumerate(batches() if callable(batches) else batches):
            if max_batches and i >= max_batches:
                break
            if index_key not in batch:
                raise KeyError(f"extract_features needs an {index_key!r} column in every batch; got columns {sorted(batch)}")
            feats.append(fn(batch).detach().float().cpu().numpy())
            for k, v in batch.items():
                if torch.is_tensor(v) and v.ndim == 1:
                    columns.setdefault(k, []).append(v.cpu().numpy())
                elif isinstance(v, np.ndarray) and v.ndim == 1:
                    columns.setdefault(k, []).append(v)
    local = {"feats": np.concatenate(feats) if feats else None, **{k: np.concatenate(v) for k, v in columns.items()}}
    parts = [p for p in dist_utils.gather_objects(local) if p["feats"] is not None]
    if not parts:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32), {}
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    idx_all = merged.pop(index_key)
    idx, first = np.unique(idx_all, return_index=True)  # sorted; duplicates (padding of uneven shards) dropped
    return idx, merged.pop("feats")[first], {k: v[first] for k, v in merged.items()}
