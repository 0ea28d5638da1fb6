"""Shard writing/reading without Ray: patterns, every schema's round trip, and the bad-sample policy."""
import io
import json
import tarfile

import numpy as np
import pytest

from contrastlab.platform.data.codecs import encode_jpeg, encode_png
from contrastlab.platform.data.paths import ShardPatternError, expand_braces, resolve_shards
from contrastlab.platform.data.reader import BadSampleError, PreprocessBatches, decode_member, iter_tar_samples, sample_index
from contrastlab.platform.data.shards import write_shards

RNG = np.random.default_rng(0)


def schema_samples(n=4):
    img = RNG.integers(0, 255, (16, 16, 3), dtype=np.uint8)
    return {
        "image-text": lambda i: {"jpg": encode_jpeg(img), "txt": f"caption {i}", "json": {"index": i}},
        "image-labels": lambda i: {"jpg": encode_jpeg(img), "json": {"label": i % 2, "index": i, "camera": 1, "pid": 3}},
        "segmentation": lambda i: {"jpg": encode_jpeg(img), "png": encode_png(np.full((16, 16), 255, np.uint8)), "json": {"labels": [1], "index": i}},
        "video": lambda i: {"mp4": b"\x00\x00\x00\x18ftypmp42", "json": {"label": 0, "fps": 25, "index": i}},
        "product": lambda i: {"jpg": encode_jpeg(img), "txt": "title", "table.json": {"colour": "red"}, "wav": b"RIFF", "json": {"category": 2, "index": i}},
        "hsi": lambda i: {"npy": np.ones((5, 3, 3), np.float16), "json": {"label": 1, "row": i, "col": 0, "index": i}},
    }


def test_brace_expansion():
    assert expand_braces("a-{000..002}.tar") == ["a-000.tar", "a-001.tar", "a-002.tar"]
    assert expand_braces("{x,y}-{1..2}") == ["x-1", "x-2", "y-1", "y-2"]


def test_pattern_errors(tmp_path):
    with pytest.raises(ShardPatternError, match="empty shard list"):
        resolve_shards("")
    with pytest.raises(ShardPatternError, match="matches no file"):
        resolve_shards(str(tmp_path / "*.tar"))
    with pytest.raises(ShardPatternError, match="does not exist"):
        resolve_shards(str(tmp_path / "s-{0..1}.tar"))
    with pytest.raises(ShardPatternError, match="cannot open|cannot reach|does not exist"):
        resolve_shards("nosuchscheme://bucket/x.tar")


@pytest.mark.parametrize("schema", list(schema_samples()))
def test_every_schema_round_trips(tmp_path, schema):
    make = schema_samples()[schema]
    written = {f"{i:05d}": make(i) for i in range(5)}
    paths = write_shards(written.items(), tmp_path, maxcount=2)
    assert len(paths) == 3 and json.load(open(tmp_path / "shard.manifest.json"))["total"] == 5
    got = [s for p in paths for s in iter_tar_samples(open(p, "rb"), p, "raise")]
    assert [s["__key__"] for s in got] == list(written)
    for s in got:
        for ext, value in written[s["__key__"]].items():
            decoded = decode_member(ext, s[ext])
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(decoded, value)
            elif isinstance(value, dict):
                assert decoded == value
            elif isinstance(value, str):
                assert decoded == value
        assert sample_index(s["__key__"], decode_member("json", s["json"]), s["__url__"]) == int(s["__key__"])


def test_img2dataset_layout_index_from_numeric_key(tmp_path):
    # img2dataset writes key.jpg/key.txt/key.json with a zero-padded numeric key and no `index`
    path = tmp_path / "00000.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in [("000000012.jpg", encode_jpeg(np.zeros((8, 8, 3), np.uint8))), ("000000012.txt", b"a cat"),
                           ("000000012.json", json.dumps({"url": "http://x", "key": "000000012", "status": "success"}).encode())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (sample,) = list(iter_tar_samples(open(path, "rb"), str(path), "raise"))
    assert sample_index(sample["__key__"], decode_member("json", sample["json"]), str(path)) == 12


def _truncated(tmp_path):
    paths = write_shards(((f"{i:05d}", {"txt": "x" * 3000}) for i in range(6)), tmp_path)
    data = open(paths[0], "rb").read()
    bad = tmp_path / "bad.tar"
    bad.write_bytes(data[: len(data) // 2])
    return str(bad)


def test_truncated_tar_raise_names_shard(tmp_path):
    bad = _truncated(tmp_path)
    with pytest.raises(BadSampleError, match="bad.tar.*truncated"):
        list(iter_tar_samples(open(bad, "rb"), bad, "raise"))


def test_truncated_tar_skip_keeps_complete_samples(tmp_path):
    bad = _truncated(tmp_path)
    got = list(iter_tar_samples(open(bad, "rb"), bad, "skip"))
    assert 0 < len(got) < 6 and all(len(s["txt"]) == 3000 for s in got)


def _batch(samples):
    cols = sorted({k for s in samples for k in s})
    return {c: np.array([s.get(c) for s in samples], dtype=object) for c in cols}


def test_undecodable_jpeg_raise_and_skip():
    good = {"__key__": "ok", "__url__": "s.tar", "jpg": encode_jpeg(np.zeros((8, 8, 3), np.uint8)), "txt": b"a"}
    bad = {"__key__": "broken", "__url__": "s.tar", "jpg": b"not a jpeg", "txt": b"b"}
    fn = lambda s, rng: {"h": np.int64(s["jpg"].shape[0])}  # noqa: E731
    with pytest.raises(BadSampleError, match="shard s.tar, key broken"):
        PreprocessBatches(fn, ("jpg",), "raise", None, 0, "train")(_batch([good, bad]))
    out = PreprocessBatches(fn, ("jpg",), "skip", None, 0, "train")(_batch([good, bad]))
    assert out["h"].tolist() == [8]


def test_missing_member_and_non_utf8_caption():
    s1 = {"__key__": "a", "__url__": "s.tar", "txt": b"fine"}
    s2 = {"__key__": "b", "__url__": "s.tar", "txt": b"\xff\xfe"}
    fn = lambda s, rng: {"n": np.int64(len(s["txt"]))}  # noqa: E731
    with pytest.raises(BadSampleError, match=r"key a: .*missing member\(s\) \['jpg'\]"):
        PreprocessBatches(fn, ("jpg", "txt"), "raise", None, 0, "train")(_batch([s1]))
    with pytest.raises(BadSampleError, match="key b: .*not UTF-8"):
        PreprocessBatches(fn, ("txt",), "raise", None, 0, "train")(_batch([s2]))


def test_augmentation_seed_depends_on_epoch_and_key_not_batching():
    from contrastlab.platform.data.reader import sample_rng

    assert sample_rng(0, 1, "k").random() == sample_rng(0, 1, "k").random()
    assert sample_rng(0, 1, "k").random() != sample_rng(0, 2, "k").random()
