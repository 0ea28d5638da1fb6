"""`distributed.gather_arrays` on 3 real gloo processes (no Ray): uneven row counts (one rank with none,
and without the names at all), several dtypes, strings, a zero-width array, and chunks far smaller than
an array (so rows cross many all-gathers); a dtype disagreement is a clear error on every rank. And its
users' banks with a rank that evaluated nothing: extract_features, FAME's gather_features, DeCLIP's
recorded retrieval embeddings."""
import datetime
import json
import os

import numpy as np
import torch
import torch.distributed as dist

from contrastlab.platform.distributed import gather_arrays
from two_ranks import run_ranks

WORLD = 3
ROWS = {0: 5, 1: 0, 2: 3}  # rank 1 extracted nothing (e.g. fewer eval batches than ranks)


def _arrays(rank: int) -> dict:
    n = ROWS[rank]
    if not n:
        return {}  # a rank with no rows may not know the names
    base = np.arange(n) + 100 * rank
    return {
        "feats": np.stack([base, base + 0.5, -base], axis=1).astype(np.float32),
        "index": base.astype(np.int64),
        "flag": base % 2 == 0,
        "half": base.astype(np.float16),
        "key": np.array([f"r{rank}-{i}" + "x" * rank for i in range(n)]),  # string widths differ per rank
        "empty": np.zeros((n, 0), np.float32),
    }


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=60))
    parts = gather_arrays(_arrays(rank), chunk_bytes=10)  # 10 bytes: feats (12 B/row) go one row per all-gather
    got = [{k: (v.dtype.str, list(v.shape), v.tolist()) for k, v in p.items()} for p in parts]
    clash = {"x": np.zeros(2, np.float32 if rank == 0 else np.float64)}
    try:
        gather_arrays(clash)
        error = ""
    except ValueError as exc:
        error = str(exc)
    with open(os.path.join(out_dir, f"{rank}.json"), "w") as fh:
        json.dump({"parts": got, "error": error, "users": _users(rank)}, fh)
    dist.destroy_process_group()


def _rank_batches(rank: int) -> list[dict]:
    """Rank 0: samples 0-3 and a padding duplicate of 3; rank 1: nothing; rank 2: samples 4-5."""
    index = {0: [0, 1, 2, 3, 3], 1: [], 2: [4, 5]}[rank]
    if not index:
        return []
    i = torch.tensor(index)
    return [{"index": i, "label": i % 2, "x": torch.stack([i.float(), -i.float()], 1)}]


def _users(rank: int) -> dict:
    from contrastlab.methods.declip.method import DeCLIP
    from contrastlab.methods.fame.evaluation import gather_features
    from contrastlab.platform.eval import extract_features

    batches = _rank_batches(rank)
    idx, feats, cols = extract_features(lambda: batches, lambda b: b["x"] * 2)
    fame_feats, fame_cols = gather_features(lambda: batches, lambda b: b["x"], extra=("label",))
    recorded = [{"image": b["x"], "text": -b["x"], "ids": b["index"] * 10, "index": b["index"], "label": b["label"]}
                for b in batches]
    declip = DeCLIP._gather_recorded(recorded, ["label"])
    return {"extract": [idx.tolist(), feats.tolist(), cols["label"].tolist()],
            "fame": [fame_feats.tolist(), fame_cols["index"].tolist(), fame_cols["label"].tolist()],
            "declip": {k: v.tolist() for k, v in declip.items()}}


def test_uneven_ranks_many_dtypes_small_chunks(tmp_path):
    run_ranks(_worker, (str(tmp_path / "init"), str(tmp_path)), "3-rank gather_arrays", 240, WORLD)
    results = [json.load(open(tmp_path / f"{r}.json")) for r in range(WORLD)]
    for r in range(1, WORLD):
        assert results[r] == results[0]  # every rank holds the same
    parts = results[0]["parts"]
    reference = _arrays(0)
    for rank in range(WORLD):
        expected = _arrays(rank)
        for name, ref in reference.items():
            dtype, shape, values = parts[rank][name]
            if name == "key":  # a string's width is its rank's own
                assert dtype[:2] == "<U" and shape == [ROWS[rank]], (rank, name)
            else:
                assert dtype == ref.dtype.str and shape == [ROWS[rank], *ref.shape[1:]], (rank, name)
            if ROWS[rank]:
                assert values == expected[name].tolist(), (rank, name)
            else:
                assert values == []
    assert all("'x'" in r["error"] and "dtype" in r["error"] for r in results)

    # the users: every sample once, in index order, on every rank (rank 1 had no batches)
    users = results[0]["users"]
    rows = list(range(6))
    assert users["extract"] == [rows, [[2.0 * i, -2.0 * i] for i in rows], [i % 2 for i in rows]]
    assert users["fame"] == [[[float(i), -float(i)] for i in rows], rows, [i % 2 for i in rows]]
    assert users["declip"]["index"] == rows and users["declip"]["ids"] == [10 * i for i in rows]
    assert users["declip"]["text"] == [[-float(i), float(i)] for i in rows] and users["declip"]["label"] == [i % 2 for i in rows]
