import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score

from contrastlab.platform.eval import average_prompt_embeddings, zero_shot_accuracy, zero_shot_topk


def test_average_prompt_embeddings_by_hand():
    # class 0 templates (2, 0), (0, 3) -> unit (1, 0), (0, 1) -> mean (.5, .5) -> (1/sqrt2, 1/sqrt2)
    # class 1 templates (0, -1), (0, -5) -> (0, -1), (0, -1) -> (0, -1)
    flat = np.array([[2, 0], [0, 3], [0, -1], [0, -5]], dtype=np.float32)  # class-major
    expected = np.array([[2**-0.5, 2**-0.5], [0, -1]])
    out = average_prompt_embeddings(flat, n_classes=2, n_templates=2)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    np.testing.assert_allclose(average_prompt_embeddings(flat.reshape(2, 2, 2), 2, 2), expected, atol=1e-6)
    out_t = average_prompt_embeddings(torch.from_numpy(flat), 2, 2)
    assert isinstance(out_t, torch.Tensor)
    np.testing.assert_allclose(out_t.numpy(), expected, atol=1e-6)
    with pytest.raises(ValueError):
        average_prompt_embeddings(flat, 3, 2)


CLASSES = np.array([[1, 0], [0, 1], [-1, 0]], dtype=np.float32)
IMAGES = np.array([[2, 0.1], [0.1, 3], [-1, -0.2], [1, 1]], dtype=np.float32)
# cosine arg-max: 0, 1, 2, and a tie between classes 0 and 1 for (1, 1) -> class 0 (smaller index)
LABELS = np.array([0, 1, 2, 1])


def test_zero_shot_accuracy_and_tie_by_hand():
    assert zero_shot_accuracy(IMAGES, CLASSES, LABELS) == pytest.approx(3 / 4)
    assert zero_shot_accuracy(IMAGES, CLASSES, [0, 1, 2, 0]) == 1.0


def test_topk_by_hand():
    # image 3's true class 1 has rank 1 (class 0 ties it with a smaller index): a top-2 hit.
    out = zero_shot_topk(IMAGES, CLASSES, LABELS, ks=(1, 2, 5))
    assert out == pytest.approx({"top1": 0.75, "top2": 1.0, "top5": 1.0})  # k=5 > 3 classes: always a hit


def test_agrees_with_argmax_and_sklearn_for_torch_and_numpy():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(200, 32)).astype(np.float32)
    txt = rng.normal(size=(10, 32)).astype(np.float32)
    y = rng.integers(0, 10, 200)
    pred = np.argmax((img / np.linalg.norm(img, axis=1, keepdims=True)) @ (txt / np.linalg.norm(txt, axis=1, keepdims=True)).T, axis=1)
    assert zero_shot_accuracy(img, txt, y) == pytest.approx(accuracy_score(y, pred))
    assert zero_shot_accuracy(torch.from_numpy(img), torch.from_numpy(txt), torch.from_numpy(y)) == zero_shot_accuracy(img, txt, y)
    top5 = np.argsort(-(img @ txt.T / np.linalg.norm(txt, axis=1)), axis=1)[:, :5]
    assert zero_shot_topk(img, txt, y, ks=(5,), chunk_size=7)["top5"] == pytest.approx(np.mean([yy in row for yy, row in zip(y, top5)]))
