"""The `moving-shapes` video dataset: shards, json schema, motions, the train-only background shortcut."""
import json

import numpy as np
import pytest

from contrastlab.platform.data.media import decode_mp4
from contrastlab.platform.datasets import ensure_dataset
from contrastlab.platform.datasets.moving_shapes import MOTIONS, N_FAMILIES, _families, _texture_sources, _trajectory, render_video

from conftest import read_shards


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return ensure_dataset("moving-shapes", cache_dir=str(cache), n_train=24, n_test=12, n_frames=12)


def test_shards_and_json_schema(tiny):
    assert tiny.meta["counts"] == {"train": 24, "test": 12}
    assert tiny.meta["classes"] == MOTIONS and tiny.meta["modality"] == "video"
    indices = []
    for split in ("train", "test"):
        samples = read_shards(tiny.splits[split])
        for key, members in samples.items():
            assert set(members) == {"mp4", "json"}
            info = json.loads(members["json"])
            assert {"label", "label_name", "dataset", "split", "fold", "fps", "num_frames", "video_id", "bg_id", "motion_class", "index"} <= set(info)
            assert info["split"] == split and info["label"] == info["motion_class"] and info["label_name"] == MOTIONS[info["label"]]
            assert 0 <= info["bg_id"] < N_FAMILIES and key == f"{info['index']:08d}"
            indices.append(info["index"])
        frames = decode_mp4(next(iter(samples.values()))["mp4"])
        assert frames.shape == (12, 40, 40, 3) and frames.dtype == np.uint8
    assert sorted(indices) == list(range(36))


def test_background_shortcut_in_train_only():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, 20000)
    fam = _families(labels, 0.9, rng)
    assert abs(np.mean(fam == labels) - 0.9) < 0.01
    other = fam[fam != labels]  # the 10% elsewhere: spread over the other five families
    assert np.bincount(other, minlength=6).min() > 0.15 * len(other)


def test_test_split_families_independent_of_class(tmp_path):
    ds = ensure_dataset("moving-shapes", cache_dir=str(tmp_path), n_train=6, n_test=60, n_frames=4)
    infos = [json.loads(m["json"]) for m in read_shards(ds.splits["test"]).values()]
    same = np.mean([i["bg_id"] == i["label"] for i in infos])
    assert same < 0.4  # 1/6 expected; the train split would give ~0.9


@pytest.mark.parametrize("motion", range(6))
def test_trajectories_carry_the_class(motion):
    rng = np.random.default_rng(motion)
    pos = _trajectory(motion, 24, 40, 6, rng)
    assert pos.min() >= 0 and pos.max() <= 34
    dy, dx = np.diff(pos[:, 0]), np.diff(pos[:, 1])
    name = MOTIONS[motion]
    if name == "right":
        assert dx.sum() > 15 and (dx >= 0).all() and (dy == 0).all()
    elif name == "left":
        assert dx.sum() < -15 and (dx <= 0).all() and (dy == 0).all()
    elif name == "down":
        assert dy.sum() > 15 and (dy >= 0).all() and (dx == 0).all()
    elif name == "up":
        assert dy.sum() < -15 and (dy <= 0).all() and (dx == 0).all()
    elif name == "diagonal":
        assert dy.sum() > 15 and dx.sum() > 15
    else:
        assert (dx > 0).any() and (dx < 0).any() and (dy == 0).all()


def test_render_blob_over_real_texture_background():
    sources = _texture_sources(0)
    rng = np.random.default_rng(1)
    frames, pos = render_video(0, 2, n_frames=8, size=40, blob_size=6, noise=0.01, sources=sources, rng=rng)
    y, x = pos[3]
    blob = frames[3, y:y + 6, x:x + 6].reshape(-1, 3).astype(int)
    assert np.ptp(blob, axis=0).max() <= 6  # one colour (+- per-frame noise of 0.01 * 255)
    bg_pixels = np.ones((40, 40), bool)
    for yy, xx in pos:
        bg_pixels[yy:yy + 6, xx:xx + 6] = False
    still = frames[:, bg_pixels].astype(int)
    assert np.abs(still - still[0]).max() <= 6  # static background up to noise
    assert still[0].std() > 5  # textured, not flat
