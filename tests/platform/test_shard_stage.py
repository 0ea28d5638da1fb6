"""Shard-to-shard stages (`data.stage`): one output shard per input, manifest, ray == local bytes."""
import json
import tarfile

import pytest

from contrastlab.platform.data.paths import manifest_count
from contrastlab.platform.data.shards import write_shards
from contrastlab.platform.data.stage import collect_shards, map_shards, resolve_engine


def _inputs(directory, n=12, maxcount=5):
    """n samples in shards of `maxcount` (5, 5, 2 by default): caption + json with the index."""
    return write_shards(((f"{i:05d}", {"txt": f"caption {i}", "json": {"index": i}}) for i in range(n)), directory,
                        prefix="raw", maxcount=maxcount)


# Module-level so Ray workers unpickle them by reference (tests/conftest.py puts this folder on their path).
def _shout(sample, ctx):
    """Upper-case the caption and stamp the broadcast context into the json."""
    info = json.loads(sample["json"])
    info["tag"] = ctx["tag"]
    info["shard"] = sample["__url__"].rsplit("-", 1)[-1]
    return sample["__key__"], {"txt": sample["txt"].decode().upper(), "json": info}


def _odd_keys(sample):
    index = json.loads(sample["json"])["index"]
    return {"key": sample["__key__"], "index": index} if index % 2 else None


def test_map_shards_through_ray_one_shard_per_input(ray_cluster, tmp_path):
    paths = _inputs(tmp_path / "raw")
    out = map_shards(paths, tmp_path / "ray", "train", _shout, {"tag": "ctx-ok"}, engine="ray", num_cpus=0.5)
    assert [p.rsplit("/", 1)[-1] for p in out] == ["train-00000.tar", "train-00001.tar", "train-00002.tar"]
    manifest = json.loads((tmp_path / "ray" / "train.manifest.json").read_text())
    assert manifest == {"shards": ["train-00000.tar", "train-00001.tar", "train-00002.tar"], "counts": [5, 5, 2], "total": 12}
    assert manifest_count(out) == 12
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == ["train-00000.tar", "train-00001.tar", "train-00002.tar",
                                                                  "train.manifest.json"]  # no staging or *.tmp left
    with tarfile.open(out[1]) as tar:
        names = tar.getnames()
        info = json.loads(tar.extractfile("00005.json").read())
        txt = tar.extractfile("00005.txt").read()
    assert names == [f"{i:05d}.{ext}" for i in range(5, 10) for ext in ("txt", "json")]  # sample order kept
    assert info == {"index": 5, "tag": "ctx-ok", "shard": "00001.tar"} and txt == b"CAPTION 5"  # context reached the task

    local = map_shards(paths, tmp_path / "local", "train", _shout, {"tag": "ctx-ok"}, engine="local")
    for a, b in zip(out, local):
        assert open(a, "rb").read() == open(b, "rb").read()
    assert (tmp_path / "ray" / "train.manifest.json").read_bytes() == (tmp_path / "local" / "train.manifest.json").read_bytes()


def test_collect_shards_keeps_shard_and_sample_order(ray_cluster, tmp_path):
    paths = _inputs(tmp_path, n=12, maxcount=3)
    expected = [{"key": f"{i:05d}", "index": i} for i in range(1, 12, 2)]  # None results are dropped
    assert collect_shards(paths, _odd_keys, engine="ray", num_cpus=0.5) == expected
    assert collect_shards(paths, _odd_keys, engine="local") == expected
    assert resolve_engine("auto") == "ray"  # connected to the test cluster


def test_empty_input_shard_keeps_numbering(tmp_path):
    paths = _inputs(tmp_path / "raw", n=3, maxcount=5)
    empty = tmp_path / "raw" / "raw-00001.tar"
    tarfile.open(empty, "w", format=tarfile.USTAR_FORMAT).close()
    out = map_shards([paths[0], str(empty)], tmp_path / "out", "x", _shout, {"tag": 1}, engine="local")
    assert [p.rsplit("/", 1)[-1] for p in out] == ["x-00000.tar", "x-00001.tar"]
    assert json.loads((tmp_path / "out" / "x.manifest.json").read_text())["counts"] == [3, 0]
    with tarfile.open(out[1]) as tar:
        assert tar.getnames() == []
    with pytest.raises(ValueError, match="engine"):
        map_shards(paths, tmp_path / "out", "x", _shout, engine="spark")
