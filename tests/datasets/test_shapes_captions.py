import itertools
import json
import re

import numpy as np
import pytest
import simplejpeg

from contrastlab.platform.datasets import ensure_dataset
from contrastlab.platform.datasets import shapes_captions as sc

SMALL = dict(n_train=80, n_test=20, n_heldout=20)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return ensure_dataset("shapes-captions", seed=0, cache_dir=tmp_path_factory.mktemp("cache"), **SMALL)


@pytest.fixture(scope="module")
def samples(small, shards):
    return {split: shards.read(paths) for split, paths in small.splits.items()}


def _objects(samples, split):
    return [obj for fields in samples[split].values() for obj in json.loads(fields["json"])["objects"]]


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path, shards):
    a = ensure_dataset("shapes-captions", seed=3, cache_dir=tmp_path / "a", n_train=30, n_test=10, n_heldout=10, image_size=32)
    b = ensure_dataset("shapes-captions", seed=3, cache_dir=tmp_path / "b", n_train=30, n_test=10, n_heldout=10, image_size=32)
    c = ensure_dataset("shapes-captions", seed=4, cache_dir=tmp_path / "c", n_train=30, n_test=10, n_heldout=10, image_size=32)
    assert a.root.name == b.root.name != c.root.name
    tree_a, tree_b, tree_c = shards.tree(a.root), shards.tree(b.root), shards.tree(c.root)
    assert tree_a == tree_b
    assert tree_a["train-00000.tar"] != tree_c["train-00000.tar"]


def test_heldout_combos_never_in_training(small, samples):
    heldout = set(small.meta["heldout_classes"])
    assert len(heldout) == 5
    assert small.meta["heldout_classnames"] == [sc.CLASSES[c] for c in sorted(heldout)]
    for obj in _objects(samples, "train") + _objects(samples, "test"):
        assert sc.class_id(obj["colour"], obj["shape"]) not in heldout
    names = [sc.CLASSES[c] for c in heldout]
    for fields in samples["train"].values():
        caption = sc.canonicalize(fields["txt"].decode())
        for name in names:
            colour, shape = name.split()
            assert name not in caption and f"{shape} in {colour}" not in caption, caption


def test_every_colour_and_shape_still_trained(samples):
    objs = _objects(samples, "train")
    assert {o["colour"] for o in objs} == set(sc.COLOURS)
    assert {o["shape"] for o in objs} == set(sc.SHAPES)


@pytest.mark.parametrize("n_combos", [1, 5, 12])
def test_heldout_choice_keeps_a_training_partner_for_every_colour_and_shape(n_combos):
    for seed in range(50):
        ids = sc.choose_heldout_combos(seed, n_combos)
        assert len(set(ids)) == n_combos
        seen = set(range(24)) - set(ids)
        assert {c // 4 for c in seen} == set(range(6))
        assert {c % 4 for c in seen} == set(range(4))
    assert sc.choose_heldout_combos(7) == sc.choose_heldout_combos(7)


def test_heldout_and_test_splits_hold_one_object_of_the_right_kind(small, samples):
    heldout = set(small.meta["heldout_classes"])
    for split, want_heldout in (("heldout", True), ("test", False)):
        for fields in samples[split].values():
            meta = json.loads(fields["json"])
            assert len(meta["objects"]) == 1 and meta["split"] == split
            assert (meta["label"] in heldout) is want_heldout
    assert {json.loads(f["json"])["label"] for f in samples["heldout"].values()} <= heldout


def test_labels_and_primary_object(samples):
    n_objects = []
    for fields in samples["train"].values():
        meta = json.loads(fields["json"])
        objects, primary = meta["objects"], meta["objects"][0]
        n_objects.append(len(objects))
        assert meta["label"] == sc.class_id(primary["colour"], primary["shape"]) == primary["label"]
        assert meta["label"] == meta["colour_id"] * 4 + meta["shape_id"]
        assert (meta["colour"], meta["shape"]) == (sc.COLOURS[meta["colour_id"]], sc.SHAPES[meta["shape_id"]])
        # the primary is the largest: large objects are listed first
        sizes = [o["size"] for o in objects]
        assert sizes == sorted(sizes, key=lambda s: s != "large")
        assert len({o["position"] for o in objects}) == len(objects)
        assert len({o["label"] for o in objects}) == len(objects)
    assert set(n_objects) == {1, 2, 3}


def test_caption_names_every_object_after_synonym_mapping(samples):
    for split in samples:
        for fields in samples[split].values():
            caption, meta = fields["txt"].decode(), json.loads(fields["json"])
            assert caption == meta["caption"]
            canonical = sc.canonicalize(caption)
            for obj in meta["objects"]:
                colour, shape = obj["colour"], obj["shape"]
                assert re.search(rf"\b{colour} {shape}\b|\b{shape} in {colour}\b", canonical), (caption, obj)
            if len(meta["objects"]) == 1:  # any size or position word must be the object's own
                obj, words = meta["objects"][0], set(re.findall(r"[a-z]+", canonical))
                assert words & set(sc.SIZES) <= {obj["size"]}, caption
                assert words & set(sc.POSITIONS) <= {obj["position"]}, caption


def test_canonicalize_maps_synonyms_back():
    assert sc.canonicalize("A big crimson ring on the left-hand side") == "a large red circle on the left"
    assert sc.canonicalize("a tiny amber box at the upper part") == "a small orange square at the top"


def test_synonyms_are_used(samples):
    words = " ".join(f["txt"].decode() for f in samples["train"].values())
    assert sum(alt in words for alts in sc.SYNONYMS.values() for alt in alts) >= 10


def test_images_decode_and_show_the_primary_colour(samples):
    for split in samples:
        for fields in samples[split].values():
            meta = json.loads(fields["json"])
            image = simplejpeg.decode_jpeg(fields["jpg"])
            assert image.shape == (64, 64, 3)
            x0, y0, x1, y1 = meta["objects"][0]["bbox"]
            cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
            centre = image[cy - 1:cy + 2, cx - 1:cx + 2].reshape(-1, 3).mean(0)
            palette = np.array([sc.COLOUR_RGB[c] for c in sc.COLOURS], dtype=float)
            nearest = sc.COLOURS[int(np.argmin(((palette - centre) ** 2).sum(1)))]
            assert nearest == meta["colour"], (split, meta)


def test_indices_unique_and_manifests_count(small, samples):
    indices = [json.loads(f["json"])["index"] for split in samples for f in samples[split].values()]
    assert sorted(indices) == list(range(sum(SMALL.values())))
    for split, n in (("train", 80), ("test", 20), ("heldout", 20)):
        manifest = json.loads((small.root / f"{split}.manifest.json").read_text())
        assert manifest["total"] == n == len(samples[split]) == small.meta["counts"][split]
        assert all(set(f) == {"jpg", "txt", "json"} for f in samples[split].values())


def test_zero_shot_meta(small):
    zs = small.meta["zero_shot"]
    assert zs["colour_shape"]["classnames"] == sc.CLASSES and len(sc.CLASSES) == 24
    assert zs["colour"]["classnames"] == sc.COLOURS and zs["colour"]["label_field"] == "colour_id"
    assert zs["shape"]["classnames"] == sc.SHAPES and zs["shape"]["label_field"] == "shape_id"
    for task in zs.values():
        assert all("{}" in t for t in task["templates"])
        assert len(task["prompts"]) == len(task["classnames"])
    assert zs["colour_shape"]["prompts"][sc.class_id("orange", "circle")][0] == "a photo of an orange circle."
    assert small.meta["classes"][sc.class_id("red", "circle")] == "red circle"


def test_shapes_differ_in_pixels():
    grid = tuple(g.astype(np.float32) + 0.5 for g in np.mgrid[0:64, 0:64][::-1])
    masks = {s: sc.shape_mask(s, 32, 32, 10, 0.0, *grid) for s in sc.SHAPES}
    for a, b in itertools.combinations(sc.SHAPES, 2):
        assert (masks[a] ^ masks[b]).sum() > 40, (a, b)
    assert all(150 < m.sum() < 450 for m in masks.values())


def test_heldout_combo_bounds_match_the_docstring():
    """The docs said "at most three held-out colours per shape": 12 combos hold out 4 of a shape's 6 colours.
    The algorithm stays (other datasets and tests depend on it); the docs now state its real bounds."""
    from collections import Counter

    for n in range(1, sc.MAX_HELDOUT_COMBOS + 1):
        worst_shape = worst_colour = 0
        for seed in range(40):
            ids = sc.choose_heldout_combos(seed, n)
            assert len(set(ids)) == n
            worst_shape = max(worst_shape, max(Counter(i % len(sc.SHAPES) for i in ids).values()))
            worst_colour = max(worst_colour, max(Counter(i // len(sc.SHAPES) for i in ids).values()))
        assert worst_colour <= 2  # a colour loses at most two of its 4 shapes
        assert worst_shape == (1 if n <= 4 else 2 if n <= 7 else 3 if n <= 11 else 4), n  # colours lost per shape
    assert sc.choose_heldout_combos(0, 12) and "four for 12" in " ".join(sc.__doc__.split())
