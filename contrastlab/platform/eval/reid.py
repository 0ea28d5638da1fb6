"""Person re-identification: mAP and CMC under the Market-1501 protocol."""
from __future__ import annotations

from typing import Any

import numpy as np

from ._arrays import check_finite, to_labels, to_numpy


def reid_evaluate(
    distmat: Any,
    q_pids: Any,
    g_pids: Any,
    q_cams: Any,
    g_cams: Any,
    max_rank: int = 50,
) -> dict[str, Any]:
    """mAP and CMC of a (num_query, num_gallery) distance matrix (smaller = more similar).

    For each query, gallery entries with the query's identity AND camera are removed (the same
    person seen by the same camera is too easy); same-camera entries of other identities stay.
    The rest is sorted by ascending distance, equal distances by gallery index (stable sort).
    With hits at 0-based positions p_1 < ... < p_m among the kept entries:
      AP = (1/m) sum_i i / (p_i + 1)   (non-interpolated; precision at each true match),
      CMC_q[r] = 1 if p_1 <= r else 0, for r = 0 .. max_rank-1 (rank-(r+1) accuracy).
    A query with no true match left (m = 0) is skipped and counted in `num_skipped_queries`;
    mAP and CMC average over the other ("valid") queries. AP is the non-interpolated form (mean of
    the precisions at the true matches, as torchreid and open-reid compute it), not the trapezoidal
    one of Market-1501's official compute_AP.m, which gives slightly different values.
    No pid is treated specially: every entry is either a true match or a negative. Under the
    Market-1501 protocol, junk gallery images (pid -1) must be dropped by the caller before calling
    (as torchreid's loader does), while distractors (pid 0) stay in the gallery as negatives.
    NaN/inf distances raise ValueError (the model diverged; NaN would sort last and rank by index).

    Returns {"mAP", "cmc" (np.ndarray of length max_rank), "rank1", "rank5", "rank10"
    (those <= max_rank), "num_valid_queries", "num_skipped_queries"}.
    Raises ValueError when no query has a valid match.
    """
    dist = to_numpy(distmat)
    q_pids, g_pids = to_labels(q_pids, "q_pids"), to_labels(g_pids, "g_pids")
    q_cams, g_cams = to_labels(q_cams, "q_cams"), to_labels(g_cams, "g_cams")
    if dist.ndim != 2 or dist.shape != (len(q_pids), len(g_pids)):
        raise ValueError(f"distmat shape {dist.shape} does not match {len(q_pids)} queries x {len(g_pids)} gallery")
    check_finite(dist, "distmat")
    if len(q_cams) != len(q_pids) or len(g_cams) != len(g_pids):
        raise ValueError("camera ids and person ids differ in length")
    if max_rank < 1:
        raise ValueError("max_rank must be >= 1")

    cmc_sum = np.zeros(max_rank, dtype=np.float64)
    ap_sum, n_valid = 0.0, 0
    ranks = np.arange(max_rank)
    for q in range(len(q_pids)):
        order = np.argsort(dist[q], kind="stable")
        same_id = g_pids[order] == q_pids[q]
        keep = ~(same_id & (g_cams[order] == q_cams[q]))
        hits = same_id[keep]
        positions = np.flatnonzero(hits)
        if len(positions) == 0:
            continue
        n_valid += 1
        ap_sum += np.mean(np.arange(1, len(positions) + 1) / (positions + 1))
        cmc_sum += ranks >= positions[0]
    n_skipped = len(q_pids) - n_valid
    if n_valid == 0:
        raise ValueError(f"none of the {len(q_pids)} queries has a true match in the gallery")
    cmc = cmc_sum / n_valid
    out: dict[str, Any] = {"mAP": float(ap_sum / n_valid), "cmc": cmc}
    for r in (1, 5, 10):
        if r <= max_rank:
            out[f"rank{r}"] = float(cmc[r - 1])
    out["num_valid_queries"] = n_valid
    out["num_skipped_queries"] = n_skipped
    return out
