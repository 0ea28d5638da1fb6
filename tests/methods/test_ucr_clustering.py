"""UCR clustering: Jaccard distance, DBSCAN, centroids, proxies, buffer selection (card h.7-h.9)."""
import math

import numpy as np
import pytest

from contrastlab.methods.ucr.clustering import (camera_proxies, centroid_scores, cluster_centroids, dbscan_labels,
                                                jaccard_distance, select_buffer)

H = math.sqrt(0.75)
# two tight pairs (cosine 0.5 inside a pair, <= -0.5 across)
PAIRS = np.array([[1.0, 0.0], [0.5, H], [-1.0, 0.0], [-0.5, -H]], dtype=np.float32)


def test_jaccard_hand_built_neighbourhood():
    # k1 = 2: R(i) = {i, partner}; V_i = softmax(0, -(2 - 2*0.5)) = (1, e^-1)/(1 + e^-1) on {i, partner};
    # overlap = 2 e^-1/(1 + e^-1) -> d = 1 - overlap/(2 - overlap) = 1 - e^-1 inside a pair, 1 across.
    d = jaccard_distance(PAIRS, k1=2, k2=1)
    inside = 1 - math.exp(-1)
    expected = np.array([[0, inside, 1, 1], [inside, 0, 1, 1], [1, 1, 0, inside], [1, 1, inside, 0]])
    np.testing.assert_allclose(d, expected, atol=1e-5)
    # query expansion over 2 neighbours makes a pair's rows identical -> distance 0 inside a pair
    d2 = jaccard_distance(PAIRS, k1=2, k2=2)
    np.testing.assert_allclose(d2, np.array([[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0.0]]), atol=1e-5)


def _blobs(seed=0):
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((8, 32))
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    y = np.repeat(np.arange(8), 30)
    x = c[y] + 0.15 * rng.standard_normal((240, 32))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), y


def test_jaccard_properties_and_dbscan_recovers_clusters():
    from sklearn.metrics import adjusted_rand_score

    x, y = _blobs()
    d = jaccard_distance(x, k1=30, k2=6)
    assert np.array_equal(d, d.T) and np.all(np.diag(d) == 0)
    assert d.min() >= 0 and d.max() <= 1
    labels = dbscan_labels(d, eps=0.55, min_samples=4)
    assert adjusted_rand_score(y, labels) == 1.0 and (labels >= 0).all()


def test_dbscan_constructed_case():
    # 0-1-2 chained within eps, 3-4-5 too, 6 far from everything -> two clusters and an outlier
    pos = np.array([0.0, 0.1, 0.2, 5.0, 5.1, 5.2, 10.0])
    d = np.abs(pos[:, None] - pos[None, :])
    np.testing.assert_array_equal(dbscan_labels(d, eps=0.15, min_samples=2), [0, 0, 0, 1, 1, 1, -1])
    np.testing.assert_array_equal(dbscan_labels(d, eps=0.15, min_samples=4), [-1] * 7)


def test_centroids_ignore_outliers_and_are_means_of_unit_vectors():
    x, _ = _blobs(1)
    labels = np.repeat(np.arange(8), 30)
    labels[::7] = -1
    c1 = cluster_centroids(x, labels)
    x2 = x.copy()
    x2[labels == -1] = np.random.default_rng(2).standard_normal(((labels == -1).sum(), 32))
    np.testing.assert_array_equal(c1, cluster_centroids(x2, labels))
    assert np.all(np.linalg.norm(c1, axis=1) <= 1 + 1e-6)
    np.testing.assert_allclose(c1[0], x[(labels == 0)].mean(0), atol=1e-6)


def test_camera_proxies():
    f = np.array([[1, 0], [3, 0], [0, 2], [5, 5], [9, 9]], dtype=np.float32)
    labels = np.array([0, 0, 0, 1, -1])
    cams = np.array([0, 0, 2, 1, 1])
    proxies, owner, cam = camera_proxies(f, labels, cams)
    np.testing.assert_allclose(proxies, [[2, 0], [0, 2], [5, 5]])
    np.testing.assert_array_equal(owner, [0, 0, 1])
    np.testing.assert_array_equal(cam, [0, 2, 1])


def test_buffer_keeps_the_closest_to_each_centre():
    f = np.array([[1, 0], [0.9, 0.1], [0.5, 0.5], [0.99, 0.01], [0, 1], [0.2, 1], [1, 1], [0, 1]], dtype=np.float32)
    labels = np.array([0, 0, 0, 0, 1, 1, -1, 2])
    cents = cluster_centroids(f, labels)
    scores = centroid_scores(f, labels, cents)
    chosen = select_buffer(labels, scores, mem_samples=2)
    # cluster 0: centroid ~(0.85, 0.15); closest by cosine are rows 1 and 3 (then 0, then 2)
    cos = lambda a, b: a @ b / np.linalg.norm(a) / np.linalg.norm(b)  # noqa: E731
    best0 = sorted([0, 1, 2, 3], key=lambda i: -cos(f[i], cents[0]))[:2]
    assert sorted(chosen[:2].tolist()) == sorted(best0)
    assert sorted(chosen[2:4].tolist()) == [4, 5]  # cluster 1 has exactly two
    assert chosen[4:].tolist() == [7]  # a cluster of one keeps one
    assert 6 not in chosen  # outliers never stored
    assert len(select_buffer(labels, scores, mem_samples=1)) == 3
