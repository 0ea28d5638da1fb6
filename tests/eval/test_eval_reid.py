import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from contrastlab.platform.eval import reid_evaluate


def test_perfect_ranking():
    # two identities on two cameras; every query's true matches (other camera) come first
    q_pids, q_cams = np.array([0, 1]), np.array([0, 0])
    g_pids, g_cams = np.array([0, 0, 1, 1]), np.array([1, 1, 1, 1])
    dist = np.array([[0.1, 0.2, 0.8, 0.9], [0.7, 0.8, 0.1, 0.3]])
    out = reid_evaluate(dist, q_pids, g_pids, q_cams, g_cams, max_rank=4)
    assert out["mAP"] == 1.0
    np.testing.assert_array_equal(out["cmc"], np.ones(4))
    assert out["rank1"] == 1.0 and out["num_valid_queries"] == 2 and out["num_skipped_queries"] == 0


# Shared gallery:      g0        g1        g2        g3        g4        g5
G_PIDS = np.array([0, 2, 0, 0, 1, 7])
G_CAMS = np.array([1, 1, 2, 0, 1, 3])


def test_hand_worked_queries_with_removal_and_skip():
    # q0 = id0/cam0: g3 (id0, cam0) is removed although closest. Kept order by distance:
    #   g0 id0 (hit), g1 id2, g2 id0 (hit), g4, g5 -> hits at ranks 1 and 3: AP = (1/1 + 2/3)/2 = 5/6
    # q1 = id0/cam0 (the UCR card's case): g3 removed; order g4 id1 (0.3), g0 id0 (0.5), g2 id0 (0.7), ...
    #   hits at ranks 2 and 3: AP = (1/2 + 2/3)/2 = 7/12 = 0.58333, R1 = 0, R2 = 1
    # q2 = id7/cam3: its only identity match g5 is on the same camera -> removed -> skipped
    # mAP = (5/6 + 7/12)/2 = 17/24; CMC = [1/2, 1, 1, ...]
    q_pids, q_cams = np.array([0, 0, 7]), np.array([0, 0, 3])
    dist = np.array(
        [
            [0.1, 0.2, 0.3, 0.05, 0.4, 0.5],
            [0.5, 0.9, 0.7, 0.0, 0.3, 1.0],
            [0.5, 0.4, 0.3, 0.2, 0.1, 0.0],
        ]
    )
    out = reid_evaluate(dist, q_pids, G_PIDS, q_cams, G_CAMS, max_rank=5)
    assert out["mAP"] == pytest.approx(17 / 24)
    np.testing.assert_allclose(out["cmc"], [0.5, 1, 1, 1, 1])
    assert out["num_valid_queries"] == 2 and out["num_skipped_queries"] == 1
    assert reid_evaluate(dist[1:2], q_pids[1:2], G_PIDS, q_cams[1:2], G_CAMS)["mAP"] == pytest.approx(0.58333, abs=1e-5)
    # max_rank longer than the gallery: CMC stays 1 after the first hit
    assert len(reid_evaluate(dist, q_pids, G_PIDS, q_cams, G_CAMS)["cmc"]) == 50


def test_same_camera_other_identity_is_kept():
    # UCR card: query id0/cam0, gallery (id5, cam0, 0.1) (id0, cam1, 0.2) (id0, cam1, 0.3) -> AP 0.58333
    out = reid_evaluate([[0.1, 0.2, 0.3]], [0], [5, 0, 0], [0], [0, 1, 1], max_rank=3)
    assert out["mAP"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    np.testing.assert_array_equal(out["cmc"], [0, 1, 1])


def test_equal_distances_keep_gallery_order():
    # g0 (id1) and g1 (id0) at the same distance: g0 comes first, the hit is at rank 2 -> AP 1/2
    out = reid_evaluate([[0.5, 0.5]], [0], [1, 0], [0], [1, 1], max_rank=2)
    assert out["mAP"] == 0.5 and out["rank1"] == 0.0


def test_matches_sklearn_average_precision_and_accepts_torch():
    rng = np.random.default_rng(0)
    q_pids, q_cams = rng.integers(0, 8, 20), rng.integers(0, 3, 20)
    g_pids, g_cams = rng.integers(0, 8, 120), rng.integers(0, 3, 120)
    dist = rng.random((20, 120))
    aps = []
    for q in range(20):
        keep = ~((g_pids == q_pids[q]) & (g_cams == q_cams[q]))
        y = g_pids[keep] == q_pids[q]
        if y.any():
            aps.append(average_precision_score(y, -dist[q][keep]))
    out = reid_evaluate(torch.from_numpy(dist), torch.from_numpy(q_pids), g_pids, torch.from_numpy(q_cams), g_cams, max_rank=10)
    assert out["mAP"] == pytest.approx(np.mean(aps))
    assert out["num_valid_queries"] == len(aps)


def test_all_queries_skipped_raises():
    with pytest.raises(ValueError):
        reid_evaluate([[0.1]], [0], [0], [0], [0])
