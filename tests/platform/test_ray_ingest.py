"""Ray Data ingest through a real local Ray cluster: every schema, img2dataset shards, bad samples."""
import numpy as np
import pytest

from contrastlab.platform.data.codecs import encode_jpeg
from contrastlab.platform.data.reader import build_dataset, get_or_create_run_state
from contrastlab.platform.data.shards import write_shards
from test_shards import schema_samples


def _describe(sample, rng):
    """A generic per-sample fn: which members arrived decoded, and a random draw (seeded per key)."""
    members = sorted(k for k in sample if k not in ("__key__", "index"))
    return {"n_members": np.int64(len(members)), "draw": np.float64(rng.random())}


@pytest.mark.parametrize("schema", list(schema_samples()))
def test_schema_through_ray_data(ray_cluster, tmp_path, schema):
    make = schema_samples()[schema]
    paths = write_shards(((f"{i:05d}", make(i)) for i in range(6)), tmp_path, maxcount=4)
    rows = build_dataset(paths, _describe, cpus=0.25).take_all()
    assert sorted(int(r["index"]) for r in rows) == list(range(6))
    assert {int(r["n_members"]) for r in rows} == {len(make(0))}


def test_bad_samples_raise_names_shard_and_key(ray_cluster, tmp_path):
    good = {"jpg": encode_jpeg(np.zeros((8, 8, 3), np.uint8)), "json": {"index": 0}}
    paths = write_shards([("00000", good), ("00001", {"jpg": b"garbage", "json": {"index": 1}})], tmp_path)
    fn = lambda s, rng: {"h": np.int64(s["jpg"].shape[0])}  # noqa: E731
    with pytest.raises(Exception) as err:
        build_dataset(paths, fn, required=("jpg",), cpus=0.25).take_all()
    assert "shard-00000.tar, key 00001" in str(err.value) and "not a decodable JPEG" in str(err.value)


def test_bad_samples_skip_are_counted(ray_cluster, tmp_path):
    good = {"jpg": encode_jpeg(np.zeros((8, 8, 3), np.uint8)), "json": {"index": 0}}
    paths = write_shards([("00000", good), ("00001", {"jpg": b"garbage", "json": {"index": 1}})], tmp_path)
    data = open(paths[0], "rb").read()
    trunc = tmp_path / "trunc.tar"
    cut = data.find(b"00001.jpg") + 512 + 3  # 3 bytes into the second sample's JPEG member
    trunc.write_bytes(data[:cut])
    state = get_or_create_run_state("test-skip-state")
    fn = lambda s, rng: {"h": np.int64(s["jpg"].shape[0])}  # noqa: E731
    rows = build_dataset(paths + [str(trunc)], fn, required=("jpg",), policy="skip", run_state_name="test-skip-state", cpus=0.25).take_all()
    assert len(rows) == 2  # the good sample from each shard
    skipped = ray_cluster.get(state.skipped_in_epoch.remote(0))
    reasons = " ".join(r for _, _, r in skipped)
    assert len(skipped) == 2 and "not a decodable JPEG" in reasons and "truncated" in reasons
