"""Non-finite features must raise, not score: NaN similarities compare false, so before the check
all-NaN features gave a perfect zero-shot top-1/top-5 and retrieval recall, and one NaN training row
made every kNN vote NaN. Also: zero_shot_topk rejects k < 1 like retrieval_recall."""
import numpy as np
import pytest
import torch

from contrastlab.platform.eval import (
    cam_to_mask,
    knn_accuracy,
    linear_probe,
    reid_evaluate,
    retrieval_recall,
    sweep_background_threshold,
    zero_shot_topk,
)

CLASSES = np.eye(3, dtype=np.float32)
LABELS = np.array([0, 1, 2])


def test_zero_shot_all_nan_images_raise_naming_the_argument():
    img = np.full((3, 3), np.nan, dtype=np.float32)
    with pytest.raises(ValueError, match=r"image_feats has 3 non-finite rows \(NaN/inf\).*diverged"):
        zero_shot_topk(img, CLASSES, LABELS, ks=(1, 2))
    with pytest.raises(ValueError, match="image_feats has 3 non-finite"):
        zero_shot_topk(torch.from_numpy(img), CLASSES, LABELS, ks=(1, 2))  # tensors too


def test_zero_shot_inf_in_class_embeddings_raises():
    txt = CLASSES.copy()
    txt[1, 0] = np.inf
    with pytest.raises(ValueError, match="class_text_feats has 1 non-finite"):
        zero_shot_topk(CLASSES, txt, LABELS, ks=(1,))


def test_retrieval_nan_raises_for_images_and_captions():
    img = np.eye(3, dtype=np.float32)
    txt = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match="image_feats has 3 non-finite"):
        retrieval_recall(np.full_like(img, np.nan), txt, [0, 1, 2], ks=(1,))
    bad = txt.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="text_feats has 1 non-finite"):
        retrieval_recall(img, bad, [0, 1, 2], ks=(1,))


def test_knn_one_nan_training_row_raises():
    train = np.array([[1, 0], [0, 1], [1, 0.1], [0.1, 1]], dtype=np.float32)
    y = np.array([0, 1, 0, 1])
    assert knn_accuracy(train, y, train, y, k=2) == 1.0
    bad = train.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="train_feats has 1 non-finite"):
        knn_accuracy(bad, y, train, y, k=2)
    with pytest.raises(ValueError, match="test_feats has 1 non-finite"):
        knn_accuracy(train, y, bad, y, k=2)


def test_linear_probe_nan_raises_naming_the_argument():
    x = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    y = np.arange(20) % 2
    bad = x.copy()
    bad[[0, 5]] = np.inf
    with pytest.raises(ValueError, match="train_feats has 2 non-finite"):
        linear_probe(bad, y, x, y, grid=(1.0,))
    with pytest.raises(ValueError, match="test_feats has 2 non-finite"):
        linear_probe(x, y, bad, y, grid=(1.0,))


def test_reid_nan_distances_raise():
    # all-NaN distances sort by gallery index: here that would score a perfect mAP
    dist = np.full((1, 2), np.nan)
    with pytest.raises(ValueError, match="distmat has 1 non-finite"):
        reid_evaluate(dist, [0], [0, 1], [0], [1, 1])


def test_cam_nan_in_a_present_class_raises_absent_class_ignored():
    cams = np.full((2, 1, 2), 0.9)  # (C_fg=2, H=1, W=2)
    labels = np.array([1, 0])
    cams[1] = np.nan  # absent class: never chosen, ignored
    np.testing.assert_array_equal(cam_to_mask(cams, labels, 0.5), [[1, 1]])
    cams[0, 0, 1] = np.nan  # present class: NaN never beats the threshold -> silent background
    with pytest.raises(ValueError, match="non-finite"):
        cam_to_mask(cams, labels, 0.5)
    with pytest.raises(ValueError, match="non-finite"):
        sweep_background_threshold(cams[None], labels[None], np.ones((1, 1, 2), dtype=np.int64), num_classes=3)


@pytest.mark.parametrize("ks", [(0,), (1, -1), ()])
def test_zero_shot_rejects_non_positive_k(ks):
    with pytest.raises(ValueError, match="ks must be positive"):
        zero_shot_topk(CLASSES, CLASSES, LABELS, ks=ks)
