"""SCALE losses against the method card's checklist (scale.md, section h) and hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from contrastlab.methods.scale.loss import (
    PAIRS, clr_loss, cosine_matrix, mean_off_diagonal, modality_graph, pair_logits, self_weights, weighted_masked_ce,
    weighted_masked_mse, weighted_nt_xent,
)
from contrastlab.methods.scale.metrics import average_precision, average_precision_at_k, retrieval_map

torch.set_num_threads(1)
M = 5


def orthogonal_features(b: int) -> torch.Tensor:
    """u_m[b] = e_m: the five modalities of every sample are mutually orthogonal (S = I)."""
    return torch.eye(M, dtype=torch.float64)[:, None, :].expand(M, b, M).clone()


def test_orthogonal_features_give_identity_graph_and_log_2b_minus_1():
    u = orthogonal_features(4)
    s = cosine_matrix(u)
    assert torch.allclose(s, torch.eye(M, dtype=torch.float64).expand(4, M, M), atol=1e-12)
    g = modality_graph(u)
    assert torch.allclose(g, torch.eye(M, dtype=torch.float64).expand(4, M, M), atol=1e-12)
    loss, _ = clr_loss(u, g, 0.07)
    assert loss.item() == pytest.approx(1.945910, abs=1e-6)
    assert loss.item() == pytest.approx(math.log(7), abs=1e-12)
    assert torch.allclose(self_weights(g), torch.ones(4, M, dtype=torch.float64))


def test_identical_features_give_uniform_graph():
    u = torch.randn(1, 3, 8, dtype=torch.float64).expand(M, 3, 8)
    g = modality_graph(u)
    assert torch.allclose(g, torch.full((3, M, M), 1 / math.sqrt(5), dtype=torch.float64), atol=1e-12)
    assert g[0, 0, 1].item() == pytest.approx(0.447214, abs=1e-6)


def test_graph_matches_formula_on_hand_built_case():
    # one sample, five hand-picked 3-d vectors; the card's formula written out in numpy float64
    vecs = np.array([[1.0, 0, 0], [1, 1, 0], [0, 1, 0], [1, 2, 3], [-1, 0, 1]])
    u = torch.tensor(vecs)[:, None, :]
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    s = unit @ unit.T
    soft = np.exp(s) / np.exp(s).sum(axis=1, keepdims=True)
    r = s * soft
    expected = r / np.linalg.norm(r, axis=1, keepdims=True)
    g = modality_graph(u)[0].numpy()
    np.testing.assert_allclose(g, expected, atol=1e-12)
    # e.g. S[0,1] = 1/sqrt(2): check one entry by hand too
    assert s[0, 1] == pytest.approx(1 / math.sqrt(2))


def test_graph_properties_rows_unit_diag_one_not_symmetric():
    torch.manual_seed(0)
    u = torch.relu(torch.randn(M, 6, 16, dtype=torch.float64)) + 0.01
    s = cosine_matrix(u)
    assert torch.allclose(torch.diagonal(s, dim1=1, dim2=2), torch.ones(6, M, dtype=torch.float64))
    g = modality_graph(u)
    assert torch.allclose(g.norm(dim=-1), torch.ones(6, M, dtype=torch.float64), atol=1e-12)
    assert not torch.allclose(g, g.transpose(1, 2))


def test_all_zero_feature_gives_zero_cosine():
    u = torch.randn(M, 2, 4, dtype=torch.float64)
    u[3, 0] = 0.0
    s = cosine_matrix(u)
    assert torch.all(s[0, 3] == 0) and torch.all(s[0, :, 3] == 0)
    assert torch.isfinite(modality_graph(u)).all()


def test_clr_uses_only_upper_triangle():
    torch.manual_seed(1)
    u = torch.randn(M, 4, 8, dtype=torch.float64)
    g = modality_graph(u)
    lower = g.clone()
    for i, j in PAIRS:
        lower[:, j, i] = torch.rand(4, dtype=torch.float64)  # change only entries [j, i], j > i
    assert clr_loss(u, g, 0.07)[0].item() == pytest.approx(clr_loss(u, lower, 0.07)[0].item(), abs=1e-12)
    upper = g.clone()
    upper[:, 0, 1] += 0.3
    assert clr_loss(u, upper, 0.07)[0].item() != pytest.approx(clr_loss(u, g, 0.07)[0].item(), abs=1e-6)


def test_pair_logits_layout_and_identical_features():
    torch.manual_seed(2)
    b, tau = 4, 0.07
    zi, zj = torch.randn(b, 6, dtype=torch.float64), torch.randn(b, 6, dtype=torch.float64)
    logits = pair_logits(zi, zj, tau)
    assert logits.shape == (2 * b, 2 * b - 1)
    z = F.normalize(torch.cat([zi, zj]), dim=-1)
    for a in range(2 * b):
        assert logits[a, 0].item() == pytest.approx((z[a] @ z[(a + b) % (2 * b)]).item() / tau, abs=1e-12)
    same = torch.ones(b, 6, dtype=torch.float64)
    loss, _ = weighted_nt_xent(same, same, None, tau)
    assert loss.item() == pytest.approx(math.log(2 * b - 1), abs=1e-12)


def plain_nt_xent(zi, zj, tau):
    """SimCLR NT-Xent over 2B views written independently: full similarity matrix, self masked out."""
    z = F.normalize(torch.cat([zi, zj]), dim=-1)
    n = len(z)
    sim = z @ z.T / tau
    sim = sim.masked_fill(torch.eye(n, dtype=torch.bool), float("-inf"))
    target = (torch.arange(n) + n // 2) % n
    return F.cross_entropy(sim, target)


def test_unit_weights_reproduce_plain_nt_xent_and_scaling_w_equals_dividing_tau():
    torch.manual_seed(3)
    b = 5
    zi, zj = torch.randn(b, 7, dtype=torch.float64), torch.randn(b, 7, dtype=torch.float64)
    ones = torch.ones(b, dtype=torch.float64)
    assert weighted_nt_xent(zi, zj, ones, 0.07)[0].item() == pytest.approx(plain_nt_xent(zi, zj, 0.07).item(), abs=1e-10)
    c = 0.6
    scaled = weighted_nt_xent(zi, zj, ones * c, 0.07)[0]
    assert scaled.item() == pytest.approx(plain_nt_xent(zi, zj, 0.07 / c).item(), abs=1e-10)


def test_weight_zero_gives_uniform_row_and_no_logit_gradient():
    zi = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    zj = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    loss, _ = weighted_nt_xent(zi, zj, w, 0.07)
    loss.backward()
    assert loss.item() == pytest.approx(math.log(5), abs=1e-12)
    assert torch.all(zi.grad == 0) and torch.all(zj.grad == 0)
    assert w.grad.abs().sum() > 0  # only w receives a gradient


def test_gradient_flows_through_the_graph():
    torch.manual_seed(4)
    base = torch.relu(torch.randn(M, 4, 8, dtype=torch.float64)) + 0.05
    grads = {}
    for detach in (False, True):
        u = base.clone().requires_grad_(True)
        loss, _ = clr_loss(u, modality_graph(u, detach=detach), 0.07)
        loss.backward()
        grads[detach] = u.grad.clone()
    assert grads[False].abs().sum() > 0 and grads[True].abs().sum() > 0
    assert (grads[False] - grads[True]).abs().max() > 1e-6  # the part that flows through G


def test_missing_modality_contributes_no_clr_loss_and_no_gradient():
    torch.manual_seed(5)
    b = 4
    present = torch.ones(b, M, dtype=torch.bool)
    present[1, 4] = False  # sample 1 has no audio
    present[2, 3] = False  # sample 2 has no video
    u = torch.randn(M, b, 8, dtype=torch.float64, requires_grad=True)
    g = modality_graph(u, present)
    loss, _ = clr_loss(u, g, 0.07, present)
    loss.backward()
    assert torch.all(u.grad[4, 1] == 0) and torch.all(u.grad[3, 2] == 0)
    assert torch.all(g[1, 4] == 0) and torch.all(g[1, :, 4] == 0)
    assert torch.allclose(g.norm(dim=-1)[present], torch.ones(int(present.sum()), dtype=torch.float64))
    # changing the missing features changes nothing
    u2 = u.detach().clone()
    u2[4, 1] = torch.randn(8, dtype=torch.float64) * 10
    loss2, _ = clr_loss(u2, modality_graph(u2, present), 0.07, present)
    assert loss2.item() == pytest.approx(loss.item(), abs=1e-12)


def test_weighted_masked_ce_hand_computed():
    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]], [[1.0, 3.0, 0.0], [0.0, 0.0, 0.0]]], dtype=torch.float64)
    labels = torch.tensor([[0, -1], [1, 2]])
    omega = torch.tensor([0.5, 2.0], dtype=torch.float64)

    def ce(row, y):
        return -(row[y] - math.log(sum(math.exp(v) for v in row)))

    expected = (ce([1.0, 0.0, -0.5], 0) + ce([2.0, 6.0, 0.0], 1) + ce([0.0, 0.0, 0.0], 2)) / 3
    assert weighted_masked_ce(logits, labels, omega).item() == pytest.approx(expected, abs=1e-12)
    # the labelled rows only, with per-position weights, give the same value
    sel = labels != -1
    per_pos = omega[:, None].expand(2, 2)[sel]
    assert weighted_masked_ce(logits[sel], labels[sel], per_pos).item() == pytest.approx(expected, abs=1e-12)
    assert weighted_masked_ce(logits, torch.full_like(labels, -1), omega).item() == 0.0


def test_weighted_masked_mse_hand_computed():
    pred = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.5, -1.0], [2.0, 2.0]]], dtype=torch.float64)
    target = torch.tensor([[[0.0, 1.0], [0.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]]], dtype=torch.float64)
    mask = torch.tensor([[True, False], [True, True]])
    omega = torch.tensor([0.5, 2.0], dtype=torch.float64)
    # sample 0 pos 0: 0.5*[1,2]-[0,1] = [0.5, 0]; sample 1 pos 0: 2*[0.5,-1]-[1,1] = [0,-3]; pos 1: [4, 4]
    expected = (0.25 + 0 + 0 + 9 + 16 + 16) / (3 * 2)
    assert weighted_masked_mse(pred, target, mask, omega).item() == pytest.approx(expected, abs=1e-12)
    assert weighted_masked_mse(pred, target, torch.zeros_like(mask), omega).item() == 0.0


def test_mean_off_diagonal():
    g = torch.eye(M, dtype=torch.float64)[None].repeat(2, 1, 1)
    g[0, 0, 1] = 1.0
    assert mean_off_diagonal(g).item() == pytest.approx(1.0 / 40)


def test_average_precision_card_example():
    # card h.9: ranked [a, d, b, c], positives {b, c}: the sum of precision at hits / #hits
    assert average_precision([False, False, True, True]) == pytest.approx(0.416667, abs=1e-6)
    assert average_precision([False, False, True, True]) == pytest.approx((1 / 3 + 2 / 4) / 2, abs=1e-12)
    assert average_precision([False, False]) == 0.0
    # the min(k, |pos|) reading divides the same sum by k_eff = min(4, 2) = 2: equal here
    assert average_precision_at_k([False, False, True, True], 4, 2, "min_k_pos") == pytest.approx(0.416667, abs=1e-6)
    # official: the list is cut at k_eff = min(k, |pos|, |list|) = 2 first, and neither of those is a hit
    assert average_precision_at_k([False, False, True, True], 4, 2) == 0.0


def test_average_precision_at_k_official_divides_by_hits_in_the_cut_list():
    # [F, T, T], k = 2, 5 positives: cut at 2 -> one hit at rank 2 -> (1/2) / 1
    assert average_precision_at_k([False, True, True], 2, 5) == pytest.approx(0.5)
    assert average_precision_at_k([False, True, True], 2, 5, "min_k_pos") == pytest.approx(0.25)
    # hits at ranks 1 and 3 of 10, many positives: (1 + 2/3) / 2
    ranked = [True, False, True] + [False] * 7
    assert average_precision_at_k(ranked, 10, 50) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision_at_k(ranked, 10, 50, "min_k_pos") == pytest.approx((1 + 2 / 3) / 10)
    # 3 positives, hits at ranks 5 and 8 of 10: the cut list (top 3) holds none
    ranked = [False] * 4 + [True, False, False, True, False, False]
    assert average_precision_at_k(ranked, 10, 3) == 0.0
    assert average_precision_at_k(ranked, 10, 3, "min_k_pos") == pytest.approx((1 / 5 + 2 / 8) / 3)
    assert np.isnan(average_precision_at_k([], 10, 3))
    with pytest.raises(ValueError, match="min_k_pos"):
        average_precision_at_k([True], 1, 1, "bogus")


def test_retrieval_map_leave_one_out():
    # 1-d features; every item queries the other three by dot product
    x = np.array([[1.0], [0.8], [0.1], [0.9]])
    y = np.array([0, 0, 0, 1])
    # q0: gallery scores 0.8, 0.1, 0.9 -> ranked [3, 1, 2] rel [F, T, T]
    # q1: scores 0.8, 0.08, 0.72 -> ranked [0, 3, 2] rel [T, F, T]
    # q2: scores 0.1, 0.08, 0.09 -> ranked [0, 3, 1] rel [T, F, T]
    # q3 has no positive: left out. Each of q0-q2 has 2 positives, so k = 3 is cut at k_eff = 2.
    out = retrieval_map(x, y, ks=(1, 3))
    assert out["map_at_3"] == pytest.approx((1 / 2 + 1 + 1) / 3)  # q0: one hit at rank 2 -> (1/2)/1
    assert out["prec_at_3"] == pytest.approx((1 / 2 + 1 / 2 + 1 / 2) / 3)  # one hit in each cut list of 2
    assert out["map_at_1"] == out["prec_at_1"] == pytest.approx(2 / 3)
    assert out["hit_at_3"] == pytest.approx(1.0)
    assert out["map_avg"] == pytest.approx((out["map_at_1"] + out["map_at_3"]) / 2)
    # the min(k, |pos|) reading scans the top 3 and divides by 2
    old = retrieval_map(x, y, ks=(1, 3), formula="min_k_pos")
    assert old["map_at_3"] == pytest.approx(((1 / 2 + 2 / 3) / 2 + 2 * (1 + 2 / 3) / 2) / 3)
    assert old["prec_at_3"] == pytest.approx(2 / 3)
    assert old["prec_at_1"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="official"):
        retrieval_map(x, y, formula="bogus")
