"""SCALE preprocessing: masking rules (card h.8), missing members as zeros, corrupt members raise."""
from __future__ import annotations

import numpy as np
import pytest

from contrastlab.methods.scale.config import SCALEConfig
from contrastlab.methods.scale.data import (
    IGNORE, MASK, HashTokenizer, mask_features, mask_mem, mask_mlm, parse_table, scale_sample_fn,
)
from contrastlab.platform.data.codecs import DecodeError
from contrastlab.platform.data.media import encode_mp4, encode_wav


def test_mem_masks_whole_property_or_whole_value_and_nothing_else():
    tok = HashTokenizer(1000)
    pairs = [("colour", "light sky blue"), ("material", "cotton"), ("price band", "mid-range"), ("category", "ankle boot")]
    ids, spans = tok.encode_pairs(pairs, 40)
    assert len(spans) == 2 * len(pairs)
    rng = np.random.default_rng(0)
    seen_prop = seen_value = False
    for _ in range(300):
        masked, labels = mask_mem(ids, spans, 0.5, rng)
        labelled = labels != IGNORE
        assert np.all(masked[labelled] == MASK) and np.all(labels[labelled] == ids[labelled])
        assert np.all(masked[~labelled] == ids[~labelled])  # no position outside the mask changes or has a label
        for start, end in spans:  # each piece is all-or-nothing
            part = labelled[start:end]
            assert part.all() or not part.any()
        for k in range(0, len(spans), 2):  # never both the property and the value of a pair
            p, v = spans[k], spans[k + 1]
            assert not (labelled[p[0]:p[1]].any() and labelled[v[0]:v[1]].any())
            seen_prop |= bool(labelled[p[0]:p[1]].any())
            seen_value |= bool(labelled[v[0]:v[1]].any())
    assert seen_prop and seen_value


def test_mlm_labels_only_at_selected_positions_and_specials_untouched():
    ids = np.array([1, 10, 11, 12, 13, 14, 15, 2, 0, 0])
    rng = np.random.default_rng(1)
    for _ in range(200):
        masked, labels = mask_mlm(ids, 0.5, 100, rng)
        sel = labels != IGNORE
        assert np.all(labels[sel] == ids[sel])
        assert np.all(masked[~sel] == ids[~sel])
        assert not sel[[0, 7, 8, 9]].any()


def test_mask_features_zeroes_only_selected():
    feats = np.ones((50, 3), np.float32)
    out, sel = mask_features(feats, 0.3, 1.0, np.random.default_rng(0))
    assert np.all(out[sel] == 0) and np.all(out[~sel] == 1)


def test_parse_table_formats():
    assert parse_table({"pairs": [["a", "b"]]}) == [("a", "b")]
    assert parse_table({"a": "b", "c": "d"}) == [("a", "b"), ("c", "d")]
    assert parse_table("a#:#b#;#c#:#d") == [("a", "b"), ("c", "d")]


CFG = SCALEConfig(image_size=16, image_grid=4, video_frames=4, frame_size=4, audio_seconds=0.5, n_mels=8, title_len=8, table_len=12)


def full_sample(cfg=CFG):
    rng = np.random.default_rng(0)
    return {
        "__key__": "00000001", "index": 1,
        "jpg": rng.integers(0, 255, (16, 16, 3), dtype=np.uint8),
        "txt": "red cotton sneaker",
        "table.json": {"pairs": [["colour", "red"], ["material", "cotton"]]},
        "mp4": encode_mp4(rng.integers(0, 255, (6, 16, 16, 3), dtype=np.uint8)),
        "wav": encode_wav(rng.normal(0, 0.1, 4000).astype(np.float32), 8000),
        "json": {"category": 7, "index": 1, "audio_noise": True},
    }


def expected_shapes(cfg):
    return {"text_ids": (cfg.title_len,), "table_ids": (cfg.table_len,), "image_feats": (cfg.n_regions, cfg.region_dim),
            "video_feats": (cfg.video_frames, cfg.frame_dim), "audio_feats": cfg.audio_shape, "present": (5,)}


@pytest.mark.parametrize("split", ["train", "eval"])
def test_missing_members_give_zero_tensors_of_the_right_shape(split):
    fn = scale_sample_fn(CFG, split)
    full = fn(full_sample(), np.random.default_rng(0))
    only_json = fn({"__key__": "k", "index": 3, "json": {"category": 2}}, np.random.default_rng(0))
    for name, shape in expected_shapes(CFG).items():
        assert full[name].shape == shape and only_json[name].shape == shape, name
    assert np.all(full["present"] == 1) and np.all(only_json["present"] == 0)
    for name in ("text_ids", "table_ids", "image_feats", "video_feats", "audio_feats"):
        assert not np.any(only_json[name]), name
    assert full["label"] == 7 and full["audio_noise"] == 1 and only_json["audio_noise"] == -1
    if split == "train":
        for name in ("text_labels", "table_labels"):
            assert np.all(only_json[name] == IGNORE)
        for name in ("image_mask", "video_mask", "audio_mask"):
            assert not only_json[name].any()


def test_missing_video_only():
    sample = full_sample()
    del sample["mp4"]
    out = scale_sample_fn(CFG, "train")(sample, np.random.default_rng(0))
    assert list(out["present"]) == [1, 1, 1, 0, 1]
    assert not out["video_feats"].any() and not out["video_mask"].any()


@pytest.mark.parametrize("member", ["mp4", "wav"])
def test_corrupt_present_member_raises_decode_error(member):
    sample = full_sample()
    sample[member] = b"not a media file at all"
    with pytest.raises(DecodeError):
        scale_sample_fn(CFG, "eval")(sample, np.random.default_rng(0))


def test_modality_dropout_keeps_one():
    cfg = SCALEConfig(**{**CFG.__dict__, "modality_dropout": 1.0})
    out = scale_sample_fn(cfg, "train")(full_sample(cfg), np.random.default_rng(0))
    assert out["present"].sum() == 1
