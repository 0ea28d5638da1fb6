import os

import numpy as np
import pytest
import torch

from contrastlab.platform.eval import export_embeddings


def _find(root, name):
    hits = [os.path.join(d, name) for d, _, files in os.walk(root) if name in files]
    assert len(hits) == 1, hits
    return hits[0]


def test_export_with_labels_names_and_uint8_thumbnails(tmp_path):
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(6, 4)).astype(np.float32)
    labels = np.array([0, 1, 2, 0, 1, 2])
    thumbs = rng.integers(0, 256, size=(6, 8, 8, 3), dtype=np.uint8)  # N, H, W, C
    out = export_embeddings(tmp_path / "tb", torch.from_numpy(feats), labels, thumbs, tag="val", step=3, class_names=["a", "b", "c"])
    assert out == str(tmp_path / "tb")
    assert os.path.exists(os.path.join(out, "projector_config.pbtxt"))
    tensors = np.loadtxt(_find(out, "tensors.tsv"), delimiter="\t")
    np.testing.assert_allclose(tensors, feats, rtol=1e-5)
    with open(_find(out, "metadata.tsv")) as f:
        lines = f.read().splitlines()
    assert lines[0] == "label\tclass" and lines[1:4] == ["0\ta", "1\tb", "2\tc"]
    assert os.path.getsize(_find(out, "sprite.png")) > 0


def test_export_plain_labels_and_float_thumbnails(tmp_path):
    feats = np.eye(3, dtype=np.float32)
    out = export_embeddings(str(tmp_path), feats, torch.tensor([5, 6, 7]), np.full((3, 1, 4, 4), 0.5, dtype=np.float32))
    with open(_find(out, "metadata.tsv")) as f:
        assert f.read().split() == ["5", "6", "7"]
    assert os.path.exists(_find(out, "sprite.png"))
    with pytest.raises(ValueError):
        export_embeddings(str(tmp_path / "x"), feats, [1, 2])
