import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from contrastlab.platform.eval import ari, clustering_accuracy, nmi


def test_permuted_labelling_is_perfect():
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [2, 2, 0, 0, 1, 1]  # same partition, other names
    assert clustering_accuracy(y_true, y_pred) == 1.0
    assert nmi(y_true, y_pred) == pytest.approx(1.0)
    assert ari(y_true, y_pred) == pytest.approx(1.0)


def test_hand_worked_matching():
    # T = [[1, 3], [3, 1]] (class x cluster): best matching 0->1, 1->0 gives 3 + 3 of 8.
    y_true = [0, 0, 0, 0, 1, 1, 1, 1]
    y_pred = [1, 1, 1, 0, 0, 0, 0, 1]
    assert clustering_accuracy(y_true, y_pred) == pytest.approx(6 / 8)


def test_over_clustering_unmatched_cluster_is_wrong():
    # T = [[2, 1, 0], [0, 0, 3]]: one-to-one takes 0->cluster 0 (2) and 1->cluster 2 (3);
    # cluster 1's single sample has no class left: ACC = 5/6.
    y_true = [0, 0, 0, 1, 1, 1]
    y_pred = [0, 0, 1, 2, 2, 2]
    assert clustering_accuracy(y_true, y_pred) == pytest.approx(5 / 6)
    # C3-GAN protocol with 2 clusters per class: class 0 takes clusters 0 and 1 -> 6/6.
    assert clustering_accuracy(y_true, y_pred, clusters_per_class=2) == 1.0


def test_fewer_clusters_than_classes_and_arbitrary_ids():
    assert clustering_accuracy([0, 1, 2], [7, 7, 7]) == pytest.approx(1 / 3)
    assert clustering_accuracy([5, 5, 9, 9], [-1, -1, 40, 40]) == 1.0


def test_nmi_ari_match_sklearn_and_accept_torch():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 5, 300)
    y_pred = np.where(rng.random(300) < 0.7, y_true, rng.integers(0, 7, 300))
    assert nmi(y_true, y_pred) == pytest.approx(normalized_mutual_info_score(y_true, y_pred), abs=1e-12)
    assert nmi(y_true, y_pred, "max") == pytest.approx(normalized_mutual_info_score(y_true, y_pred, average_method="max"))
    assert ari(y_true, y_pred) == pytest.approx(adjusted_rand_score(y_true, y_pred), abs=1e-12)
    t, p = torch.from_numpy(y_true), torch.from_numpy(y_pred)
    assert nmi(t, p) == nmi(y_true, y_pred)
    assert ari(t, p) == ari(y_true, y_pred)
    assert clustering_accuracy(t, p) == clustering_accuracy(y_true, y_pred)
    assert isinstance(clustering_accuracy(t, p), float)


def test_brute_force_matching_agrees():
    from itertools import permutations

    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 3, 40)
    y_pred = rng.integers(0, 4, 40)
    best = max(np.sum(np.array(perm)[y_true] == y_pred) for perm in permutations(range(4), 3))
    assert clustering_accuracy(y_true, y_pred) == pytest.approx(best / 40)


def test_length_mismatch_raises():
    with pytest.raises(ValueError):
        clustering_accuracy([0, 1], [0])
