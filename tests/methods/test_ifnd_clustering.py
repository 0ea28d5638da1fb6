"""IFND clustering pass: checklist h 6-8, 10, FN precision, k-means behaviour."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from contrastlab.methods.ifnd.clustering import (
    accept,
    acceptance_rate,
    cluster_pass,
    confidence,
    dedupe_by_index,
    fn_precision,
    fn_precision_recall,
    hierarchical_pseudo_labels,
    label_tables,
    labels_digest,
    spherical_kmeans,
)


def _blobs(n_per=30, centers=6, d=16, noise=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = F.normalize(torch.randn(centers, d, generator=g), dim=1)
    y = torch.arange(centers).repeat_interleave(n_per)
    x = F.normalize(c[y] + noise * torch.randn(len(y), d, generator=g), dim=1)
    return x, y


def test_kmeans_recovers_separated_clusters():
    x, y = _blobs()
    res = spherical_kmeans(x, 6, seed=0)
    assert fn_precision(res.labels, torch.ones_like(y, dtype=torch.bool), y) == 1.0
    assert torch.allclose(res.centroids.norm(dim=1), torch.ones(6))


def test_kmeans_rejects_k_above_n():
    x, _ = _blobs(n_per=2, centers=3)
    with pytest.raises(ValueError, match=r"k=7.*N=6"):
        spherical_kmeans(x, 7)
    with pytest.raises(ValueError, match=r"k=7.*N=6"):
        hierarchical_pseudo_labels(x, (7, 3), "independent")


@pytest.mark.parametrize("rate", [0.0, 0.29, 0.5, 0.7, 1.0])
def test_accept_exact_count_highest_confidence(rate):  # checklist 6
    g = torch.Generator().manual_seed(0)
    conf = torch.rand(100, generator=g)
    mask = accept(conf, rate)
    n = math.floor(rate * 100 + 1e-9)
    assert int(mask.sum()) == n
    if 0 < n < 100:
        assert conf[mask].min() > conf[~mask].max()
    assert bool(mask.all()) == (rate == 1.0)


def test_accept_per_cluster_and_levels():
    conf = torch.tensor([[0.9, 0.1, 0.5, 0.8, 0.2, 0.3]])
    labels = torch.tensor([[0, 0, 0, 1, 1, 1]])
    per = accept(conf, 0.5, "per_cluster", labels)  # floor(1.5) = 1 per cluster
    assert per.tolist() == [[True, False, False, True, False, False]]
    glob = accept(conf, 0.5)
    assert glob.tolist() == [[True, False, True, True, False, False]]


def test_schedule_values():  # checklist 7
    E, ew = 60, 12
    rates = [acceptance_rate(e, E, ew) for e in range(E)]
    assert all(r == 0.0 for r in rates[:ew])
    assert rates[ew] == pytest.approx(1 / (E - ew))
    assert rates[-1] == 1.0
    assert all(b >= a for a, b in zip(rates, rates[1:]))
    step = [acceptance_rate(e, E, ew, "step") for e in range(E)]
    assert step[ew - 1] == 0.0 and step[ew] == pytest.approx(0.1) and step[-1] == 1.0
    assert all(b >= a for a, b in zip(step, step[1:]))
    assert len(set(step[ew:])) == 10
    const = [acceptance_rate(e, E, ew, "constant") for e in range(E)]
    assert const[ew - 1] == 0.0 and set(const[ew:]) == {1.0}


def test_nested_hierarchy_is_consistent():  # checklist 8
    x, _ = _blobs(n_per=10, centers=8)
    labels, cents = hierarchical_pseudo_labels(x, (12, 5, 2), "nested", seed=1)
    assert labels.shape == (3, 80) and [c.shape[0] for c in cents] == [12, 5, 2]
    for fine in range(3):
        for coarse in range(fine + 1, 3):
            for c in labels[fine].unique():
                assert len(labels[coarse][labels[fine] == c].unique()) == 1
    with pytest.raises(ValueError, match="non-increasing"):
        hierarchical_pseudo_labels(x, (5, 12), "nested")


def test_confidence_is_cosine_to_own_centroid():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    cents = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    conf = confidence(x, torch.tensor([0, 1]), cents)
    assert torch.allclose(conf, torch.tensor([1 / math.sqrt(2), 1.0]))


def test_fn_precision_hand_case():
    # cluster 0 accepted: true labels [a, a, b] -> 6 ordered pairs, 2 correct; cluster 1: [c, c] -> 2/2
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    accepted = torch.tensor([True, True, True, True, True, False])
    true = torch.tensor([0, 0, 1, 2, 2, 2])
    p, r = fn_precision_recall(labels, accepted, true)
    assert p == pytest.approx(4 / 8)
    # same-class ordered pairs overall: class0 2, class1 0, class2 6 -> 8; detected correct 4
    assert r == pytest.approx(4 / 8)
    assert math.isnan(fn_precision(labels, torch.zeros(6, dtype=torch.bool), true))


def test_digest_identical_for_identical_features():  # checklist 10
    x, _ = _blobs(n_per=15, centers=5)
    idx = torch.arange(len(x))
    # "two ranks": same gathered features, arriving in a different order and with a padded duplicate
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(9))
    idx_b, x_b = torch.cat([idx[perm], idx[:1]]), torch.cat([x[perm], x[:1]])
    digests = []
    for ids, feats in [(idx, x), (idx_b, x_b)]:
        ids, feats = dedupe_by_index(ids, feats)
        pl = cluster_pass(feats, (8, 4), rate=0.5, seed=0)
        lab_t, acc_t = label_tables(ids, pl.labels, pl.accepted)
        digests.append(labels_digest(lab_t, acc_t))
    assert digests[0] == digests[1]
    other = cluster_pass(x, (8, 4), rate=0.6, seed=0)
    assert labels_digest(other.labels, other.accepted) != digests[0]


def test_cluster_pass_acceptance_and_tables():
    x, y = _blobs(n_per=20, centers=4)
    pl = cluster_pass(x, (6, 4), rate=0.3, hierarchy="independent", seed=0)
    assert pl.accepted.shape == (2, 80) and pl.accepted.sum(1).tolist() == [24, 24]
    ids = torch.arange(80) * 2  # sparse dataset ids
    lab_t, acc_t = label_tables(ids, pl.labels, pl.accepted)
    assert lab_t.shape == (2, 159) and (lab_t[:, 1::2] == -1).all() and not acc_t[:, 1::2].any()
    assert np.isfinite(pl.confidence.numpy()).all()
