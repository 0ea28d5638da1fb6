"""A method's per-epoch DataSelection: the draw, and through real Ray Data via the run's RunState actor."""
import numpy as np
import pytest

from contrastlab.platform.data.codecs import encode_jpeg
from contrastlab.platform.data.reader import build_dataset, epoch_rows, get_or_create_run_state
from contrastlab.platform.data.selection import DataSelection
from contrastlab.platform.data.shards import write_shards


def _sample(i: int) -> dict:
    return {"jpg": encode_jpeg(np.full((8, 8, 3), i % 250, np.uint8)), "json": {"index": i, "domain": f"d{i % 3}"}}


def test_copies_field_indices_and_round_trip():
    sel = DataSelection("domain", ("d1",), indices=(0, 3), index_copies=2.5)
    assert sel.copies({"domain": "d1"}, 7, "k7", 0, 0) == 1
    assert sel.copies({"domain": "d2"}, 8, "k8", 0, 0) == 0
    drawn = [sel.copies({"domain": "d0"}, 0, f"k{e}", 0, e) for e in range(200)]
    assert set(drawn) == {2, 3} and abs(np.mean(drawn) - 2.5) < 0.15
    assert DataSelection.from_dict(sel.to_dict()) == sel and DataSelection.from_dict(None) is None
    assert DataSelection().copies(None, 5, "k", 0, 0) == 1  # no field: everything
    with pytest.raises(ValueError, match="index_copies"):
        DataSelection("domain", ("d1",), index_copies=-1)


def test_epoch_rows_tags_repeats():
    raw = {"__key__": "00003", "jpg": b"x", "json": b'{"index": 3, "domain": "d0"}'}
    rows = epoch_rows(raw, "s.tar", 0, 0, selection=DataSelection("domain", ("d1",), indices=(3,), index_copies=2))
    assert [r["__repeat__"] for r in rows] == [0, 1] and "__source__" not in rows[0]
    assert epoch_rows(raw, "s.tar", 0, 0, selection=DataSelection("domain", ("d1",))) == []
    upsampled = epoch_rows(raw, "s.tar", 0, 0, selection=DataSelection("domain", ("d0",), value_copies=3))
    assert [r["__repeat__"] for r in upsampled] == [0, 1, 2]  # a matched sample, repeated


def test_ray_reader_follows_the_run_state_selection(ray_cluster, tmp_path):
    paths = write_shards(((f"{i:05d}", _sample(i)) for i in range(30)), tmp_path, maxcount=10)
    fn = lambda s, rng: {"domain": np.int64(int(s["json"]["domain"][1:])), "draw": np.float64(rng.random())}  # noqa: E731
    state = get_or_create_run_state("test-selection-state")
    ray_cluster.get(state.set_epoch.remote(1, DataSelection("domain", ("d2",), indices=(0, 3), index_copies=2).to_dict()))
    rows = build_dataset(paths, fn, split="train", run_state_name="test-selection-state", cpus=0.25).take_all()
    index = sorted(int(r["index"]) for r in rows)
    assert index == sorted([i for i in range(30) if i % 3 == 2] + [0, 0, 3, 3])
    draws = {float(r["draw"]) for r in rows if int(r["index"]) == 0}
    assert len(draws) == 2  # each copy has its own augmentation
    # evaluation splits ignore the selection; a cleared selection reads everything again
    assert len(build_dataset(paths, fn, split="eval", run_state_name="test-selection-state", cpus=0.25).take_all()) == 30
    # the matched stream repeated too (value_copies), through the actor's dict round trip
    ray_cluster.get(state.set_epoch.remote(3, DataSelection("domain", ("d2",), value_copies=2).to_dict()))
    rows = build_dataset(paths, fn, split="train", run_state_name="test-selection-state", cpus=0.25).take_all()
    assert sorted(int(r["index"]) for r in rows) == sorted(2 * [i for i in range(30) if i % 3 == 2])
    ray_cluster.get(state.set_epoch.remote(2, None))
    assert len(build_dataset(paths, fn, split="train", run_state_name="test-selection-state", cpus=0.25).take_all()) == 30


def test_value_copies_size_the_matched_stream():
    sel = DataSelection("domain", ("d1",), indices=(0,), index_copies=3.0, value_copies=2.4)
    drawn = [sel.copies({"domain": "d1"}, i, f"k{i}", 0, 0) for i in range(2000)]
    assert set(drawn) == {2, 3} and abs(np.mean(drawn) - 2.4) < 0.05
    assert sel.copies({"domain": "d0"}, 0, "k0", 0, 0) == 3  # the indexed stream keeps its own factor
    assert sel.copies({"domain": "d1"}, 5, "k5", 1, 4) == sel.copies({"domain": "d1"}, 5, "k5", 1, 4)  # same on every reader
    thinned = DataSelection("domain", ("d1",), value_copies=0.25)
    kept = [thinned.copies({"domain": "d1"}, i, f"k{i}", 0, 0) for i in range(2000)]
    assert set(kept) == {0, 1} and abs(np.mean(kept) - 0.25) < 0.03
    assert DataSelection().copies(None, 5, "k", 0, 0) == 1
    assert DataSelection.from_dict(sel.to_dict()) == sel
    assert DataSelection.from_dict({"field": "domain", "values": ["d1"]}).value_copies == 1.0  # older dicts
    assert "x2.40" in sel.describe()
    with pytest.raises(ValueError, match="value_copies"):
        DataSelection("domain", ("d1",), value_copies=float("nan"))
