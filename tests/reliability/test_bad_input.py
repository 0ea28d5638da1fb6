"""Bad input: every kind gives a clear error naming shard and key (policy raise) or a counted skip
(policy skip); never a hang, never a silent wrong result.

Most checks drive the reader's own code in-process (the tar reader and the `map_batches` function
Ray Data runs), so they are fast; one test pushes every kind of bad sample through a real Ray Data
pipeline with policy skip and checks the run's skip counter.
"""
import io
import logging
import tarfile
import time

import numpy as np
import pytest

from contrastlab.platform.data.codecs import DecodeError, check_array, check_label, encode_jpeg, encode_npy, encode_png
from contrastlab.platform.data.media import decode_mp4, decode_wav, encode_mp4, encode_wav
from contrastlab.platform.data.paths import ShardPatternError, resolve_shards
from contrastlab.platform.data.reader import BadSampleError, PreprocessBatches, iter_tar_samples
from contrastlab.platform.data.shards import write_shards

JPG = encode_jpeg(np.full((8, 8, 3), 100, np.uint8))


def _batch(samples, shard="/data/shard-00000.tar"):
    """A numpy batch as Ray Data hands it to `map_batches` (missing members are None)."""
    cols = sorted({c for s in samples for c in s if c != "__key__"})
    batch = {"__key__": np.array([s["__key__"] for s in samples], dtype=object),
             "__url__": np.array([shard] * len(samples), dtype=object)}
    for c in cols:
        batch[c] = np.array([s.get(c) for s in samples] + [None], dtype=object)[:-1]
    return batch


def _run(samples, fn, required=(), policy="raise"):
    return PreprocessBatches(fn, tuple(required), policy, None, seed=0, split="eval", epoch=0)(_batch(samples))


# per-sample functions in the style of the methods' (decoding of video/audio happens in them)
def image_fn(s, rng):
    return {"h": np.int64(s["jpg"].shape[0])}


def video_fn(s, rng):
    return {"t": np.int64(decode_mp4(s["mp4"]).shape[0])}


def audio_fn(s, rng):
    return {"n": np.int64(decode_wav(s["wav"])[0].shape[0])}


def mask_fn(s, rng):
    return {"m": np.int64(s["png"].sum())}


def patch_fn(s, rng):  # a hyperspectral method expecting 4 bands of 5x5 float patches
    return {"patch": check_array(s["npy"], "patch", shape=(4, 5, 5), kinds="f").astype(np.float32)}


def caption_fn(s, rng):
    return {"len": np.int64(len(s["txt"]))}


def label_fn(s, rng):
    return {"label": np.int64(check_label(s["json"]["label"], num_classes=10))}


GOOD_MP4 = encode_mp4(np.zeros((3, 16, 16, 3), np.uint8), fps=4)
GOOD_WAV = encode_wav(np.zeros(800, np.float32), 8000)

BAD_CASES = {
    # name: (good sample, bad sample, fn, required, words the error must contain)
    "jpeg": ({"jpg": JPG}, {"jpg": b"\xff\xd8 not a jpeg"}, image_fn, ("jpg",), "not a decodable JPEG"),
    "png": ({"png": encode_png(np.ones((4, 4), np.uint8))}, {"png": JPG}, mask_fn, ("png",), "expected PNG"),
    "mp4": ({"mp4": GOOD_MP4}, {"mp4": GOOD_MP4[:150]}, video_fn, ("mp4",), "not a decodable MP4"),
    "wav": ({"wav": GOOD_WAV}, {"wav": b"RIFF....WAVEjunk"}, audio_fn, ("wav",), "not a decodable WAV"),
    "npy-garbage": ({"npy": encode_npy(np.zeros((4, 5, 5), np.float32))}, {"npy": b"\x93NUMPY garbage"}, patch_fn, ("npy",),
                    "not a valid .npy"),
    "npy-shape": ({"npy": encode_npy(np.zeros((4, 5, 5), np.float32))}, {"npy": encode_npy(np.zeros((3, 5, 5), np.float32))},
                  patch_fn, ("npy",), "patch has shape (3, 5, 5), expected (4, 5, 5)"),
    "npy-dtype": ({"npy": encode_npy(np.zeros((4, 5, 5), np.float32))}, {"npy": encode_npy(np.zeros((4, 5, 5), np.int64))},
                  patch_fn, ("npy",), "patch has dtype int64"),
    "npy-strings": ({"npy": encode_npy(np.zeros((4, 5, 5), np.float32))}, {"npy": encode_npy(np.array(["a", "b"]))},
                    patch_fn, ("npy",), "expected a numeric"),
    "caption-not-utf8": ({"txt": b"a red circle"}, {"txt": "une b\xe9te".encode("latin-1")}, caption_fn, ("txt",),
                         "caption is not UTF-8"),
    "missing-field": ({"jpg": JPG, "txt": b"x"}, {"jpg": JPG}, image_fn, ("jpg", "txt"), "missing member(s) ['txt']"),
    "label-outside-classes": ({"json": b'{"label": 3}'}, {"json": b'{"label": 10}'}, label_fn, ("json",),
                              "label 10 outside the configured classes 0..9"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_member_raise_names_shard_and_key(case):
    good, bad, fn, required, words = BAD_CASES[case]
    samples = [{"__key__": "00000", **good}, {"__key__": "00007", **bad}]
    with pytest.raises(BadSampleError) as err:
        _run(samples, fn, required, "raise")
    msg = str(err.value)
    assert "shard /data/shard-00000.tar, key 00007" in msg and words in msg, msg
    assert "data.bad_samples=skip" in msg  # says how to carry on


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_member_skip_keeps_the_good_sample_and_logs(case, caplog):
    good, bad, fn, required, words = BAD_CASES[case]
    samples = [{"__key__": "00000", **good}, {"__key__": "00007", **bad}]
    with caplog.at_level(logging.WARNING, logger="contrastlab.platform.data.reader"):
        out = _run(samples, fn, required, "skip")
    assert out["index"].tolist() == [0]  # only the good sample, never a half-decoded one
    assert any("key 00007" in r.getMessage() for r in caplog.records)


def _tar_bytes(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_truncated_tar_raise_names_shard_and_key():
    data = _tar_bytes([("00000.jpg", JPG), ("00000.txt", b"a"), ("00001.jpg", JPG), ("00001.txt", b"b")])
    cut = data.find(b"00001.jpg") + 512 + 10  # 10 bytes into sample 00001's JPEG
    got = []
    with pytest.raises(BadSampleError) as err:
        for s in iter_tar_samples(io.BytesIO(data[:cut]), "s3://b/train-00003.tar", "raise"):
            got.append(s["__key__"])
    assert got == ["00000"]  # the complete sample before the break was delivered
    assert "shard s3://b/train-00003.tar, key 00001" in str(err.value) and "truncated or corrupt tar" in str(err.value)


def test_truncated_tar_skip_never_passes_on_the_torn_sample():
    data = _tar_bytes([("00000.jpg", JPG), ("00000.txt", b"a"), ("00001.jpg", JPG), ("00001.txt", b"b")])
    cut = data.find(b"00001.txt") - 100  # inside 00001.jpg: 00001 has a jpg start but no txt
    keys = [s["__key__"] for s in iter_tar_samples(io.BytesIO(data[:cut]), "shard.tar", "skip")]
    assert keys == ["00000"]


def test_not_a_tar_at_all():
    with pytest.raises(BadSampleError, match=r"shard x.tar: truncated or corrupt tar.*no sample could be read"):
        list(iter_tar_samples(io.BytesIO(b"this is not a tar file" * 40), "x.tar", "raise"))
    assert list(iter_tar_samples(io.BytesIO(b""), "empty.tar", "skip")) == []


# --------------------------------------------------------------------------- shard patterns
def test_empty_shard_list():
    for pattern in ("", " , ", []):
        with pytest.raises(ShardPatternError, match="empty shard list"):
            resolve_shards(pattern)


def test_glob_and_brace_that_match_nothing(tmp_path):
    write_shards([("00000", {"txt": "a"})], tmp_path, prefix="train")
    with pytest.raises(ShardPatternError, match="matches no file"):
        resolve_shards(str(tmp_path / "valid-*.tar"))
    with pytest.raises(ShardPatternError, match=r"train-00001.tar.*does not exist"):
        resolve_shards(str(tmp_path / "train-{00000..00001}.tar"))  # one of the range is missing
    with pytest.raises(ShardPatternError, match="is empty"):
        resolve_shards(str(tmp_path / "train-{00005..00001}.tar"))
    (tmp_path / "nothing-here").mkdir()
    with pytest.raises(ShardPatternError, match="holds no"):
        resolve_shards(str(tmp_path / "nothing-here"))
    assert resolve_shards(str(tmp_path / "train-{00000..00000}.tar"))[0] == [str(tmp_path / "train-00000.tar")]


def test_misspelled_or_unreachable_uri_fails_fast(monkeypatch):
    import contrastlab.platform.data.paths as paths

    with pytest.raises(ShardPatternError, match="Unrecognized filesystem type"):
        resolve_shards("s4://bucket/train-00000.tar")  # misspelled scheme
    # No network here: S3 fails on DNS; GCS retries for minutes, so the look-up is time-limited.
    monkeypatch.setattr(paths, "URI_TIMEOUT_S", 5.0)
    t0 = time.time()
    for uri in ("gs://contrastlab-no-such-bucket/train-{00000..00001}.tar", "s3://contrastlab-no-such-bucket/train-*.tar"):
        with pytest.raises(ShardPatternError, match="cannot (reach|open|list)"):
            resolve_shards(uri)
    assert time.time() - t0 < 40


def test_check_label_refuses_non_integers():
    for bad in ("3", 2.5, True, None):
        with pytest.raises(DecodeError, match="not an integer class id"):
            check_label(bad, 10)
    assert check_label(np.int64(9), 10) == 9 and check_label(4.0, 10) == 4


# --------------------------------------------------------------------------- through Ray Data
def test_every_bad_kind_is_skipped_and_counted_through_ray(ray_cluster, tmp_path):
    from contrastlab.platform.data.reader import build_dataset, get_or_create_run_state

    def fn(s, rng):  # a multi-modal method needing every member
        return {"h": image_fn(s, rng)["h"], "t": video_fn(s, rng)["t"], "n": audio_fn(s, rng)["n"],
                "p": patch_fn(s, rng)["patch"], "c": caption_fn(s, rng)["len"], "label": label_fn(s, rng)["label"]}

    good = {"jpg": JPG, "mp4": GOOD_MP4, "wav": GOOD_WAV, "npy": np.zeros((4, 5, 5), np.float32), "txt": "a caption",
            "json": {"label": 1}}
    bads = [{"jpg": b"junk"}, {"mp4": b"junk"}, {"wav": b"junk"}, {"npy": np.zeros((4, 5, 5), np.int16)},
            {"txt": b"\xff\xfe"}, {"json": {"label": 11}}]
    samples = [(f"{i:05d}", {**good, "json": {"label": 1, "index": i}}) for i in range(3)]
    samples += [(f"{10 + i:05d}", {**good, **b, "json": b.get("json", {"label": 1}) | {"index": 10 + i}}) for i, b in enumerate(bads)]
    missing = {k: v for k, v in good.items() if k != "wav"}
    samples.append(("00020", {**missing, "json": {"label": 2, "index": 20}}))
    paths = write_shards(samples, tmp_path, maxcount=5)
    state = get_or_create_run_state("reliability-skip-state")
    rows = build_dataset(paths, fn, required=("jpg", "mp4", "wav", "npy", "txt", "json"), policy="skip",
                         run_state_name="reliability-skip-state", cpus=0.25, batch_size=4).take_all()
    assert sorted(int(r["index"]) for r in rows) == [0, 1, 2]
    time.sleep(1)  # skip reports are fire-and-forget actor calls
    skipped = ray_cluster.get(state.skipped_in_epoch.remote(0))
    assert sorted(k for _, k, _ in skipped) == ["00010", "00011", "00012", "00013", "00014", "00015", "00020"]
    assert all(s.endswith(".tar") for s, _, _ in skipped)
