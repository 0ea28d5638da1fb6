import io
import json

import numpy as np
import pytest
from PIL import Image

from contrastlab.platform.datasets import ensure_dataset


@pytest.fixture(scope="module")
def reference():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target


@pytest.fixture(scope="module")
def default_digits(tmp_path_factory):
    return ensure_dataset("digits", cache_dir=tmp_path_factory.mktemp("cache"))


def test_digits_png_lossless_split_and_indices(default_digits, shards, reference):
    raw, target = reference
    paths = default_digits
    assert paths.meta["classes"] == [str(d) for d in range(10)]
    seen = {}
    for split, n in (("train", 1257), ("test", 540)):
        samples = shards.read(paths.splits[split])
        assert len(samples) == n == paths.meta["counts"][split]
        labels = []
        for key, fields in samples.items():
            meta = json.loads(fields["json"])
            assert set(fields) == {"png", "json"} and meta["split"] == split
            image = np.asarray(Image.open(io.BytesIO(fields["png"])))
            expected = np.rint(raw[meta["index"]] * 255 / 16).astype(np.uint8)
            np.testing.assert_array_equal(image, expected)  # lossless
            assert meta["label"] == target[meta["index"]]
            labels.append(meta["label"])
            seen[meta["index"]] = split
        # stratified: every class keeps its share (within one sample) of the 30% test fraction
        counts, totals = np.bincount(labels, minlength=10), np.bincount(target, minlength=10)
        share = 0.7 if split == "train" else 0.3
        assert np.all(np.abs(counts - share * totals) <= 1)
    assert sorted(seen) == list(range(1797))


def test_digits_split_matches_sklearn_seed_0(default_digits, shards, reference):
    from sklearn.model_selection import train_test_split

    _, target = reference
    _, test = train_test_split(np.arange(1797), test_size=0.3, stratify=target, random_state=0)
    paths = default_digits
    got = sorted(json.loads(f["json"])["index"] for f in shards.read(paths.splits["test"]).values())
    assert got == sorted(test.tolist())


def test_digits_upsampled_nearest(tmp_path, shards, reference):
    raw, _ = reference
    paths = ensure_dataset("digits", cache_dir=tmp_path, image_size=16)
    fields = next(iter(shards.read(paths.splits["train"]).values()))
    image = np.asarray(Image.open(io.BytesIO(fields["png"])))
    small = np.rint(raw[json.loads(fields["json"])["index"]] * 255 / 16).astype(np.uint8)
    np.testing.assert_array_equal(image, np.kron(small, np.ones((2, 2), dtype=np.uint8)))
