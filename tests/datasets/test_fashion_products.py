"""`fashion-products`: five-modality product shards with missing members, decodable media, meta."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import read_shards
from contrastlab.platform.data.codecs import decode_jpeg
from contrastlab.platform.data.media import decode_mp4, decode_wav
from contrastlab.platform.datasets import fashion_products as fp

SMALL = dict(n_train=40, n_test=12, image_size=32, frames=8, video_size=32, audio="tones", audio_rate=8000, audio_seconds=1.0,
             missing_image=0.1, missing_text=0.1, missing_table=0.2, missing_video=0.4, missing_audio=0.2, noise_audio=0.5,
             contradiction=0.1, table_drop=0.15)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("fp")
    splits, meta = fp.generate(out, seed=0, **SMALL)
    return splits, meta, {s: read_shards(p) for s, p in splits.items()}


def test_members_follow_the_has_flags(small):
    _, meta, samples = small
    ext = {"image": "jpg", "text": "txt", "table": "table.json", "video": "mp4", "audio": "wav"}
    indices = []
    missing = {m: 0 for m in ext}
    for split, by_key in samples.items():
        assert len(by_key) == SMALL[f"n_{split}"]
        for key, members in by_key.items():
            info = json.loads(members["json"])
            indices.append(info["index"])
            assert key == f"{info['index']:08d}" and info["split"] == split
            assert info["category"] == info["label"] and 0 <= info["label"] < 10
            for m, e in ext.items():
                assert (e in members) == info[f"has_{m}"], (key, m)
                missing[m] += not info[f"has_{m}"]
            assert (info["audio_noise"] is None) == (not info["has_audio"])
    assert len(set(indices)) == len(indices)
    assert min(i for i in indices if i >= 60000) == 60000
    assert missing["video"] > 5  # ~40 % of 52
    assert meta["audio_source"] == "tones" and meta["missing_video"] == 0.4 and meta["modality"] == "product"


def test_media_decode_and_carry_the_product(small):
    _, _, samples = small
    seen_noise = seen_clean = False
    for members in samples["train"].values():
        info = json.loads(members["json"])
        if "jpg" in members:
            img = decode_jpeg(members["jpg"])
            assert img.shape == (32, 32, 3)
            if info["attributes"]["colour"] == "red" and img.max() > 60:  # the tint: red dominates
                assert img[..., 0].astype(int).sum() > img[..., 2].astype(int).sum()
        if "mp4" in members:
            video = decode_mp4(members["mp4"])
            assert video.shape == (8, 32, 32, 3) and info["motion"] in fp.MOTIONS
        if "wav" in members:
            wave, rate = decode_wav(members["wav"])
            assert rate == 8000 and len(wave) == 8000
            seen_noise |= info["audio_noise"]
            seen_clean |= not info["audio_noise"]
        if "table.json" in members:
            pairs = json.loads(members["table.json"])["pairs"]
            assert pairs and all(len(p) == 2 for p in pairs)
            assert {p for p, _ in pairs} <= set(fp._VALUES)
        if "txt" in members:
            assert members["txt"].decode().strip()
    assert seen_noise and seen_clean


def test_titles_and_tables_mostly_agree_with_attributes():
    rng = np.random.default_rng(0)
    agree = 0
    for _ in range(200):
        attrs = fp.sample_attributes(3, rng)
        title = fp.make_title(attrs, 3, 0.1, rng)
        agree += attrs["colour"] in title.split()
        table = dict(map(tuple, fp.make_table(attrs, 0.0, 0.0, rng)))
        assert table == attrs
    assert 150 < agree < 200  # contradictions happen, but rarely


def test_same_seed_same_data(tmp_path):
    """Same seed, same bytes in every member, MP4 included (encode_mp4 is byte-stable)."""
    params = {**SMALL, "n_train": 4, "n_test": 2}
    a = read_shards(fp.generate(tmp_path / "a", seed=1, **params)[0]["train"])
    b = read_shards(fp.generate(tmp_path / "b", seed=1, **params)[0]["train"])
    assert a.keys() == b.keys()
    assert any("mp4" in members for members in a.values())
    for key in a:
        assert a[key].keys() == b[key].keys()
        for ext in a[key]:
            assert a[key][ext] == b[key][ext], (key, ext)


def test_bad_parameters_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="missing_video"):
        fp.generate(tmp_path, seed=0, **{**SMALL, "missing_video": 1.5})
    with pytest.raises(ValueError, match="audio"):
        fp.generate(tmp_path, seed=0, **{**SMALL, "audio": "opera"})


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_espeak_audio_is_spoken_and_cached():
    speaker = fp.Speaker("espeak", 8000, 1.5)
    rng = np.random.default_rng(0)
    wave = speaker(7, "red", rng)
    assert speaker.source == "espeak-ng" and len(wave) == 12000 and np.abs(wave).max() > 0.05
    speaker(7, "red", rng)
    assert list(speaker._cache) == ["red sneaker"]


TINY = {**SMALL, "n_train": 6, "n_test": 2, "image_size": 16, "frames": 2, "video_size": 16}


def test_auto_audio_is_resolved_before_the_cache_key(tmp_path, monkeypatch):
    """audio="auto" used to be hashed as "auto" whatever backend ran: on a machine without espeak-ng it is the
    tones dataset (same folder as audio="tones"), with espeak-ng found it is the espeak one (another key)."""
    from contrastlab.platform.datasets import ensure_dataset

    params = {k: v for k, v in TINY.items() if k != "audio"}
    monkeypatch.setattr(fp.shutil, "which", lambda name: None)
    auto = ensure_dataset("fashion-products", cache_dir=tmp_path, audio="auto", **params)
    assert auto.meta["params"]["audio"] == "tones" and auto.meta["audio_source"] == "tones"
    assert set(auto.meta["sources"]) == {"fashion_mnist"}
    assert ensure_dataset("fashion-products", cache_dir=tmp_path, audio="tones", **params).root == auto.root
    monkeypatch.setattr(fp.shutil, "which", lambda name: "/usr/bin/espeak-ng")
    monkeypatch.setattr(fp, "_espeak_version", lambda path: "eSpeak NG text-to-speech: 1.51")
    resolved, sources = fp.resolve_audio({**fp.SPEC.defaults, **params, "audio": "auto"})
    assert resolved["audio"] == "espeak" and sources["espeak"].startswith("eSpeak NG")


def test_non_audio_members_do_not_depend_on_the_audio_backend(tmp_path, monkeypatch):
    """espeak waves are longer than the tones; their jitter used to be drawn from the shared stream, so every
    later product (attributes, image, title, table, clip) changed with the backend. Simulated with longer tones."""
    a = read_shards(fp.generate(tmp_path / "a", seed=3, **TINY)[0]["train"])
    real = fp.Speaker._tones
    monkeypatch.setattr(fp.Speaker, "_tones", lambda self, label, colour: np.tile(real(self, label, colour), 2)[:5000])
    b = read_shards(fp.generate(tmp_path / "b", seed=3, **TINY)[0]["train"])
    assert a.keys() == b.keys()
    assert any("wav" in m and not json.loads(m["json"])["audio_noise"] and m["wav"] != b[k]["wav"] for k, m in a.items())
    for key in a:
        assert {e: v for e, v in a[key].items() if e != "wav"} == {e: v for e, v in b[key].items() if e != "wav"}, key
