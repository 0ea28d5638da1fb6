"""C3-GAN official ACC/NMI (checklist h 9), cluster usage, and the two real-image views."""
import numpy as np
import pytest

from contrastlab.methods.c3gan.augment import eval_view, resized_crop_params, small_two_views, two_views
from contrastlab.methods.c3gan.evaluation import clustering_report, cluster_usage, count_table, official_acc, official_nmi

TRUE = np.repeat(np.arange(4), 10)  # 4 balanced classes, 10 images each


def test_acc_permuted_labelling():
    perm = np.array([2, 0, 3, 1])
    assert official_acc(TRUE, perm[TRUE], 4, over=1) == 1.0


def test_acc_over_clustering_split():
    # each class split evenly over two clusters (class g -> clusters 2g, 2g+1), scrambled ids
    split = 2 * TRUE + np.tile([0, 1], 20)
    scramble = np.array([5, 1, 7, 0, 3, 6, 2, 4])
    pred = scramble[split]
    assert official_acc(TRUE, pred, 8, over=2) == 1.0
    assert official_acc(TRUE, pred, 8, over=1) == 0.5  # OVER=1 gives each class only one cluster
    # NMI official convention: MI = 2 bits, H_cluster = 3 bits -> 2/3 (eps-shifted).
    # The card writes "~0.673"; its own formula (2 bits / 3 bits) gives 0.6667.
    assert official_nmi(TRUE, pred, 8) == pytest.approx(2 / 3, abs=1e-4)


def test_acc_single_cluster():
    assert official_acc(TRUE, np.zeros_like(TRUE), 4, over=1) == 0.25


def test_nmi_perfect_is_just_below_one():
    nmi = official_nmi(TRUE, TRUE, 4)
    assert nmi == pytest.approx(0.99999, abs=5e-5) and nmi < 1.0


def test_count_table_keeps_empty_clusters():
    t = count_table([0, 0, 1], [0, 2, 2], n_clusters=5)
    assert t.shape == (2, 5) and t.tolist() == [[1, 0, 1, 0, 0], [0, 0, 1, 0, 0]]


def test_cluster_usage_and_report():
    u = cluster_usage(np.zeros(10, int), 4)
    assert u["clusters_used"] == 1 and u["clusters_empty"] == 3 and u["max_cluster_share"] == 1.0 and u["usage_entropy"] == 0.0
    u = cluster_usage(np.arange(8) % 4, 4)
    assert u["clusters_used"] == 4 and u["usage_entropy"] == pytest.approx(1.0)
    rep = clustering_report(TRUE, TRUE, 4)
    assert rep["acc"] == 1.0 and rep["nmi_sklearn"] == pytest.approx(1.0) and rep["ari"] == pytest.approx(1.0)


def test_two_views_full_recipe():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (3, 150, 200, 3), dtype=np.uint8)
    v1, v2 = two_views(imgs, np.random.default_rng(1), size=64)
    assert v1.shape == v2.shape == (3, 3, 64, 64) and v1.dtype == np.float32
    assert v1.min() >= -1 and v1.max() <= 1 and v2.min() >= -1 and v2.max() <= 1
    w1, w2 = two_views(imgs, np.random.default_rng(1), size=64)
    assert np.array_equal(v1, w1) and np.array_equal(v2, w2)
    # list of differently sized images and grey images work
    mixed = [imgs[0], imgs[1, :100, :120], rng.integers(0, 256, (80, 80), dtype=np.uint8)]
    a, b = two_views(mixed[:2], rng, size=32)
    assert a.shape == (2, 3, 32, 32)
    g1, g2 = two_views(mixed[2:], rng, size=32)
    assert g1.shape == g2.shape == (1, 1, 32, 32)
    ev = eval_view(imgs, size=64)
    assert ev.shape == (3, 3, 64, 64) and np.array_equal(ev, eval_view(imgs, size=64))


def test_resized_crop_params_in_range():
    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left, h, w = resized_crop_params(100, 140, rng)
        assert 0 <= top and top + h <= 100 and 0 <= left and left + w <= 140
        assert 0.2 * 100 * 140 * 0.9 <= h * w <= 100 * 140


def test_small_views_digits():
    imgs = (np.random.default_rng(0).random((5, 8, 8)) * 255).astype(np.uint8)
    v1, v2 = small_two_views(imgs, np.random.default_rng(0), size=32)
    assert v1.shape == v2.shape == (5, 1, 32, 32) and v1.min() >= -1 and v2.max() <= 1
    assert not np.array_equal(v1, v2)
