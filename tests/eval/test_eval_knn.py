import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score

from contrastlab.platform.eval import knn_accuracy, knn_predict

# Query q = (1, 0). Cosine similarities to the train rows:
#   x0 = (5, 0)     label 1  sim  1.0   (length 5: only the direction counts)
#   x1 = (0.6, 0.8) label 0  sim  0.6
#   x2 = (0.6,-0.8) label 0  sim  0.6
#   x3 = (-1, 0)    label 1  sim -1.0   (not among the k = 3 nearest)
TRAIN = np.array([[5.0, 0.0], [0.6, 0.8], [0.6, -0.8], [-1.0, 0.0]], dtype=np.float32)
LABELS = np.array([1, 0, 0, 1])
QUERY = np.array([[1.0, 0.0]], dtype=np.float32)


def test_temperature_weighting_flips_the_vote():
    # temperature 0.1: label 1 gets e^(1/0.1) = e^10 = 22026.5, label 0 gets 2 e^6 = 806.9 -> 1
    assert math.exp(10) > 2 * math.exp(6)
    assert knn_predict(TRAIN, LABELS, QUERY, k=3, temperature=0.1)[0] == 1
    # temperature 10 (nearly unweighted): e^0.1 = 1.105 vs 2 e^0.06 = 2.124 -> label 0 (majority)
    assert 2 * math.exp(0.06) > math.exp(0.1)
    assert knn_predict(TRAIN, LABELS, QUERY, k=3, temperature=10.0)[0] == 0
    assert knn_accuracy(TRAIN, LABELS, QUERY, [1], k=3, temperature=0.1) == 1.0
    assert knn_accuracy(TRAIN, LABELS, QUERY, [1], k=3, temperature=10.0) == 0.0


def test_k_larger_than_train_set_is_clipped():
    # k = 4 at temperature 10: label 1 = e^0.1 + e^-0.1 = 2.010, label 0 = 2 e^0.06 = 2.124 -> 0
    assert knn_predict(TRAIN, LABELS, QUERY, k=1000, temperature=10.0)[0] == 0
    assert knn_predict(TRAIN, LABELS, QUERY, k=1000, temperature=0.1)[0] == 1


def test_tiny_temperature_does_not_overflow():
    # exp(1 / 1e-3) overflows float32; weights are taken relative to the best match -> 1-NN.
    assert knn_predict(TRAIN, LABELS, QUERY, k=4, temperature=1e-3)[0] == 1


def _reference(train, labels, test, k, temperature):
    tr = train / np.linalg.norm(train, axis=1, keepdims=True)
    te = test / np.linalg.norm(test, axis=1, keepdims=True)
    classes = np.unique(labels)
    out = []
    for q in te:
        sim = tr @ q
        nn = np.argsort(-sim)[:k]
        votes = {c: 0.0 for c in classes}
        for i in nn:
            votes[labels[i]] += np.exp(sim[i] / temperature)
        out.append(max(classes, key=lambda c: votes[c]))
    return np.array(out)


def test_matches_naive_reference_for_any_chunk_size_and_input_kind():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 16))
    labels = rng.integers(0, 4, 300) * 10 + 3  # non-contiguous label values
    train = (centers[(labels - 3) // 10] + 1.5 * rng.normal(size=(300, 16))).astype(np.float32)
    test_labels = rng.integers(0, 4, 57)
    test = (centers[test_labels] + 1.5 * rng.normal(size=(57, 16))).astype(np.float32)
    test_labels = test_labels * 10 + 3
    ref = _reference(train, labels, test, 20, 0.1)
    for chunk in (1, 7, 1000):
        np.testing.assert_array_equal(knn_predict(train, labels, test, k=20, chunk_size=chunk), ref)
    as_torch = knn_predict(torch.from_numpy(train), torch.from_numpy(labels), torch.from_numpy(test), k=20)
    np.testing.assert_array_equal(as_torch, ref)
    acc = knn_accuracy(train, labels, test, test_labels, k=20)
    assert acc == pytest.approx(accuracy_score(test_labels, ref))
    assert 0.5 < acc < 1.0  # a meaningful, not trivial case
    assert isinstance(acc, float)


def test_errors():
    with pytest.raises(ValueError):
        knn_predict(TRAIN, LABELS[:3], QUERY)
    with pytest.raises(ValueError):
        knn_predict(TRAIN, LABELS, np.ones((1, 3), dtype=np.float32))
