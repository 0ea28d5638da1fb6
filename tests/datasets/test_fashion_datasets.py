import gzip
import json
import re
import struct

import numpy as np
import pytest
import simplejpeg

from contrastlab.platform.datasets import ensure_dataset
from contrastlab.platform.datasets import fashion_captions as fc
from contrastlab.platform.datasets import fashion_mnist as fm

have_fashion = pytest.mark.skipif(
    not (fm.fashion_mnist_dir() / "t10k-labels-idx1-ubyte.gz").is_file(),
    reason="Debian package dataset-fashion-mnist not installed (apt-get install dataset-fashion-mnist)",
)


def _write_idx(path, array: np.ndarray) -> None:
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_idx_reader_on_a_hand_made_file(tmp_path):
    images = np.arange(2 * 28 * 28, dtype=np.int64).reshape(2, 28, 28) % 256
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([9, 0]))
    got_images, got_labels = fm.load_fashion_mnist("test", root=tmp_path)
    assert got_images.dtype == np.uint8 and got_images.shape == (2, 28, 28)
    np.testing.assert_array_equal(got_images, images)
    assert got_labels.dtype == np.int64 and got_labels.tolist() == [9, 0]
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros(5))  # 1-D where 3-D is expected
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(5))
    with pytest.raises(ValueError, match="idx"):
        fm.load_fashion_mnist("train", root=tmp_path)


def test_missing_files_name_the_apt_package(tmp_path, monkeypatch):
    monkeypatch.delenv("CONTRASTLAB_FASHION_MNIST_DIR", raising=False)
    monkeypatch.setattr(fm, "FASHION_MNIST_DIR", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError) as err:
        fm.load_fashion_mnist("train")
    message = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in message and "train-images-idx3-ubyte.gz" in message
    for name in ("fashion-mnist", "fashion-captions"):
        with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
            ensure_dataset(name, cache_dir=tmp_path / "cache", n_train=5, n_test=5)
    # refused while computing the cache key (the files' digest), before anything is written
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


@have_fashion
def test_official_splits_load():
    images, labels = fm.load_fashion_mnist("test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [1000] * 10


@have_fashion
def test_fashion_mnist_labelled_shards(tmp_path, shards):
    paths = ensure_dataset("fashion-mnist", cache_dir=tmp_path, n_train=50, n_test=20)
    assert paths.meta["classes"][0] == "T-shirt/top" and len(paths.meta["classes"]) == 10
    ref_images, ref_labels = fm.load_fashion_mnist("test")
    samples = {s: shards.read(p) for s, p in paths.splits.items()}
    assert [len(samples["train"]), len(samples["test"])] == [50, 20]
    for fields in samples["test"].values():
        meta = json.loads(fields["json"])
        assert set(fields) == {"jpg", "json"} and meta["split"] == "test"
        i = meta["index"] - 60000
        assert 0 <= i < 20 and meta["label"] == ref_labels[i]
        image = simplejpeg.decode_jpeg(fields["jpg"], colorspace="GRAY")[:, :, 0]
        assert image.shape == (28, 28)
        assert np.abs(image.astype(int) - ref_images[i]).mean() < 4  # quality-95 JPEG of the real image
    assert sorted(json.loads(f["json"])["index"] for f in samples["train"].values()) == list(range(50))


@have_fashion
def test_fashion_captions(tmp_path, shards):
    paths = ensure_dataset("fashion-captions", cache_dir=tmp_path, n_train=30, n_test=20)
    _, train_labels = fm.load_fashion_mnist("train")
    task = paths.meta["zero_shot"]["class"]
    assert task["classnames"] == fc.CLASSNAMES and len(task["classnames"]) == 10 and task["label_field"] == "label"
    indices = []
    for split, paths_ in paths.splits.items():
        for fields in shards.read(paths_).values():
            meta, caption = json.loads(fields["json"]), fields["txt"].decode()
            indices.append(meta["index"])
            assert caption == meta["caption"] and meta["split"] == split
            if split == "train":
                assert meta["label"] == train_labels[meta["index"]]
            words = fc.SYNONYMS[fc.CLASSNAMES[meta["label"]]]
            assert any(re.search(rf"\b{re.escape(w)}\b", caption.lower()) for w in words), caption
            image = simplejpeg.decode_jpeg(fields["jpg"])
            assert image.shape == (32, 32, 3)
    assert sorted(indices) == list(range(30)) + list(range(60000, 60020))
    assert json.loads((paths.root / "test.manifest.json").read_text())["total"] == 20


@have_fashion
def test_fashion_captions_deterministic(tmp_path, shards):
    a = ensure_dataset("fashion-captions", seed=1, cache_dir=tmp_path / "a", n_train=10, n_test=5)
    b = ensure_dataset("fashion-captions", seed=1, cache_dir=tmp_path / "b", n_train=10, n_test=5)
    c = ensure_dataset("fashion-captions", seed=2, cache_dir=tmp_path / "c", n_train=10, n_test=5)
    assert shards.tree(a.root) == shards.tree(b.root)
    assert shards.tree(a.root)["train-00000.tar"] != shards.tree(c.root)["train-00000.tar"]  # captions differ


def test_zero_shot_prompts_use_the_right_article():
    prompts = fc.fill_prompts(fc.ZERO_SHOT_TEMPLATES, fc.CLASSNAMES)
    assert prompts[fc.CLASSNAMES.index("ankle boot")][0] == "a photo of an ankle boot."
    assert prompts[1][0] == "a photo of a pair of trousers."


def test_batch_resize_matches_pil_bilinear_and_nearest():
    from PIL import Image

    from contrastlab.platform.datasets._common import resize_batch

    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    pil = np.stack([np.asarray(Image.fromarray(a).resize((32, 32), Image.BILINEAR)) for a in images])
    assert np.abs(resize_batch(images, 32).astype(int) - pil).max() <= 1  # rounding only
    np.testing.assert_array_equal(resize_batch(images[:, :7, :7], 14, "nearest"), images[:, :7, :7].repeat(2, 1).repeat(2, 2))
