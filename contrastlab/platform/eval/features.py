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


def _rows_agree(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row: do a[i] and b[i] hold the same values? Floats up to batch-dependent rounding
    (1e-3 of the row's largest finite magnitude, + 1e-6), NaN equal to NaN; anything else exactly."""
    if np.issubdtype(a.dtype, np.inexact) and np.issubdtype(b.dtype, np.inexact):
        a2, b2 = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            finite = np.isfinite(a2) & np.isfinite(b2)
            mag = np.where(finite, np.maximum(np.abs(a2), np.abs(b2)), 0.0).max(axis=1, initial=0.0)
            close = finite & (np.abs(a2 - b2) <= 1e-3 * mag[:, None] + 1e-6)
            same = (a2 == b2) | (np.isnan(a2) & np.isnan(b2)) | close
        return same.all(axis=1)
    eq = np.asarray(a == b)
    return eq.reshape(len(a), -1).all(axis=1) if eq.ndim else np.full(len(a), bool(eq))


def _check_duplicates(idx_all: np.ndarray, first: np.ndarray, inverse: np.ndarray, arrays: dict[str, np.ndarray],
                      index_key: str) -> None:
    """Raise when two rows share an index but differ in features or a column (distinct samples)."""
    rows = np.flatnonzero(first[inverse] != np.arange(len(idx_all)))  # every row that is not its index's first
    if not len(rows):
        return
    reps = first[inverse[rows]]
    differ = np.zeros(len(rows), dtype=bool)
    names = []
    for name, values in arrays.items():
        d = ~_rows_agree(values[rows], values[reps])
        if d.any():
            names.append("features" if name == "feats" else repr(name))
        differ |= d
    if differ.any():
        clash = np.unique(idx_all[rows[differ]])
        raise ValueError(
            f"{index_key!r} values must be unique across the extracted split: {len(clash)} {index_key} value(s) "
            f"are shared by rows that differ (in {', '.join(names)}), e.g. {index_key} {clash[0]}. Duplicates are "
            f"only merged when identical (padding); distinct samples would be silently dropped. Sources converted "
            f"separately each restart their {index_key} at 0: give them disjoint ranges (e.g. an offset per source)"
        )


def extract_features(batches: Iterable[dict] | Callable[[], Iterable[dict]], fn: Callable[[dict], torch.Tensor],
                     max_batches: int = 0, index_key: str = "index") -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Run `fn(batch) -> (B, D)` over this worker's batches (no grad) and gather from every worker.

    `batches`: an iterable of dict batches (e.g. `ray.train.get_dataset_shard("eval").iter_torch_batches(...)`,
    or `ctx.datasets["eval"]`) or a callable returning one. Every batch needs `index_key` (the platform
    adds `index` to every sample). Returns `(indices ascending, features (N, D) float32 in that order,
    {column: values}` for every other 1-D tensor column such as labels), identical on every rank.

    `fn` must return one row per sample (B rows for a batch of B; a multi-crop fn stacking 2B rows
    must concatenate along dim 1 or average instead), and every 1-D column must have B entries:
    otherwise ValueError. Rows sharing an index are merged (padding duplicates) when their features
    and columns agree (features up to float rounding); rows sharing an index that differ raise
    ValueError, as the index must identify one sample across the whole split.
    """
    feats, columns = [], {}
    with torch.no_grad():
        for i, batch in enumerate(batches() if callable(batches) else batches):
            if max_batches and i >= max_batches:
                break
            if index_key not in batch:
                raise KeyError(f"extract_features needs an {index_key!r} column in every batch; got columns {sorted(batch)}")
            n = len(batch[index_key])
            out = fn(batch).detach().float().cpu().numpy()
            if out.ndim == 0 or len(out) != n:
                raise ValueError(f"fn(batch) must return one row per sample: the batch has {n} samples ({index_key!r}) "
                                 f"but fn returned shape {out.shape}; a multi-view fn must concatenate views along "
                                 f"dim 1 (or average them), not stack them as extra rows")
            feats.append(out)
            for k, v in batch.items():
                if torch.is_tensor(v) and v.ndim == 1:
                    v = v.cpu().numpy()
                elif not (isinstance(v, np.ndarray) and v.ndim == 1):
                    continue
                if len(v) != n:
                    raise ValueError(f"column {k!r} has {len(v)} entries but the batch has {n} samples ({index_key!r})")
                columns.setdefault(k, []).append(v)
    n_rows = sum(len(f) for f in feats)
    for k, v in columns.items():
        if sum(len(c) for c in v) != n_rows:
            raise ValueError(f"column {k!r} is missing from some batches ({sum(len(c) for c in v)} of {n_rows} rows)")
    # a worker with no batches sends no names (it cannot know the feature width); tensor all-gathers in
    # bounded chunks (gather_arrays), not pickles, so large banks gather in one copy per rank
    local = {"feats": np.concatenate(feats), **{k: np.concatenate(v) for k, v in columns.items()}} if feats else {}
    parts = [p for p in dist_utils.gather_arrays(local) if len(p.get("feats", ()))]
    if not parts:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32), {}
    for p in parts:
        missing = [k for k, v in p.items() if len(v) != len(p["feats"])]
        if missing:
            raise ValueError(f"column(s) {missing} are missing on some workers' batches: every worker's batches need the "
                             f"same 1-D columns")
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    idx_all = merged.pop(index_key)
    # sorted; duplicates (padding of uneven shards) dropped once checked to be the same sample
    idx, first, inverse = np.unique(idx_all, return_index=True, return_inverse=True)
    if len(idx) < len(idx_all):
        _check_duplicates(idx_all, first, inverse.reshape(-1), merged, index_key)
    return idx, merged.pop("feats")[first], {k: v[first] for k, v in merged.items()}
