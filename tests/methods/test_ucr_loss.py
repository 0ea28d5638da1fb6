"""UCR loss terms against hand-computed values (card h.5, h.6, h.10, h.11)."""
import math

import pytest
import torch

from contrastlab.methods.ucr.loss import (camera_proxy_contrast, centroid_contrast, ema_update, label_smoothed_ce,
                                          normalize_proxies, similarity_kl)

torch.set_num_threads(1)


def test_ls_ce_card_values():
    zeros, y = torch.zeros(1, 4), torch.tensor([2])
    assert label_smoothed_ce(zeros, y, 4, 0.1).item() == pytest.approx(math.log(4), abs=1e-5)  # 1.3863
    assert label_smoothed_ce(zeros, y, 8, 0.1).item() == pytest.approx(0.95 * math.log(4), abs=1e-5)  # 1.3170


def test_centroid_contrast_hand_case():
    # f = (2, 0), C = I, tau = 0.5 -> logits (4, 0); target (0.95, 0.05)
    loss = centroid_contrast(torch.tensor([[2.0, 0.0]]), torch.eye(2), torch.tensor([0]), tau=0.5, epsilon=0.1)
    lp0, lp1 = -math.log(1 + math.exp(-4)), -4 - math.log(1 + math.exp(-4))
    assert loss.item() == pytest.approx(-(0.95 * lp0 + 0.05 * lp1), abs=1e-5)  # 0.21815


def _cam_case():
    feats = torch.tensor([[3.0, 0.0], [0.0, 2.0]])  # unnormalised: the loss normalises them
    labels = torch.tensor([0, 1])
    proxies = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    owner = torch.tensor([0, 0, 1])
    return feats, labels, proxies, owner


def test_camera_proxy_contrast_row_norm_hand_case():
    feats, labels, proxies, owner = _cam_case()
    r = 1 / math.sqrt(2)
    log_z = math.log(math.e + 1 + math.exp(r))  # both samples: all three proxies in P u N
    l1 = log_z - 0.5 * (1 + 0)  # positives p0 (s=1), p1 (s=0)
    l2 = log_z - r  # positive p2
    diff_cams = camera_proxy_contrast(feats, labels, torch.tensor([0, 1]), proxies, owner, beta=1.0, proxy_norm="row")
    assert diff_cams.item() == pytest.approx(0.5 * l1 + 0.5 * l2, abs=1e-5)  # sum over cameras
    same_cam = camera_proxy_contrast(feats, labels, torch.tensor([0, 0]), proxies, owner, beta=1.0, proxy_norm="row")
    assert same_cam.item() == pytest.approx(0.5 * (l1 + l2) / 2, abs=1e-5)
    # one hardest negative: sample 2 keeps p1 (s=1) and drops p0 (s=0)
    hard = camera_proxy_contrast(feats[1:], labels[1:], torch.tensor([0]), proxies, owner, beta=1.0, num_negatives=1, proxy_norm="row")
    assert hard.item() == pytest.approx(0.5 * (math.log(math.e + math.exp(r)) - r), abs=1e-5)


def test_camera_proxy_contrast_column_norm_and_temperature():
    feats, labels, proxies, owner = _cam_case()
    # column norm: each dimension's norm over the 3 proxies is sqrt(2) -> v / sqrt(2)
    assert torch.allclose(normalize_proxies(proxies, "column"), proxies / math.sqrt(2))
    beta = 0.07
    s1 = [x / math.sqrt(2) / beta for x in (1, 0, 1)]
    s2 = [x / math.sqrt(2) / beta for x in (0, 1, 1)]
    lse = lambda v: math.log(sum(math.exp(t) for t in v))  # noqa: E731
    l1 = lse(s1) - 0.5 * (s1[0] + s1[1])
    l2 = lse(s2) - s2[2]
    got = camera_proxy_contrast(feats, labels, torch.tensor([0, 1]), proxies, owner, beta=beta, proxy_norm="column")
    assert got.item() == pytest.approx(0.5 * l1 + 0.5 * l2, rel=1e-5)


def test_similarity_kl_hand_case_zero_and_nonnegative():
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    old = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # P_old uniform
    p = math.e / (1 + math.e)
    kl_row = 0.5 * (math.log(0.5) - math.log(p)) + 0.5 * (math.log(0.5) - math.log(1 - p))
    assert similarity_kl(f, f, old, tau=1.0, weight=1.0).item() == pytest.approx(kl_row, abs=1e-5)  # 0.120115
    assert similarity_kl(f, f, old, tau=1.0, weight=20.0).item() == pytest.approx(20 * kl_row, abs=1e-4)
    x = torch.randn(8, 16)
    assert similarity_kl(x, x, x, tau=0.2, weight=20.0).item() == pytest.approx(0.0, abs=1e-5)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        a, b, c = (torch.randn(6, 4, generator=g) for _ in range(3))
        assert similarity_kl(a, b, c, 0.2, 20.0).item() >= -1e-6


def test_similarity_kl_gradient_only_through_new_features():
    a = torch.randn(4, 8, requires_grad=True)
    b = torch.randn(4, 8, requires_grad=True)
    c = torch.randn(4, 8, requires_grad=True)
    similarity_kl(a, b, c).backward()
    assert a.grad is not None and b.grad is None and c.grad is None


def test_ema_update_card_value():
    ema, online = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    for p in ema.parameters():
        p.data.zero_()
    for p in online.parameters():
        p.data.fill_(1.0)
    ema_update(ema, online, 0.999)
    for p in ema.parameters():
        assert torch.allclose(p, torch.full_like(p, 0.001))
