"""C3-GAN loss terms on the card's hand cases (checklist h 1-5, 8)."""
import math

import pytest
import torch
import torch.nn.functional as F

from contrastlab.methods.c3gan.loss import (
    adversarial_g,
    cosine_logits,
    d_loss,
    entropy_terms,
    g_loss,
    hinge_d,
    info_loss,
    mask_regulariser,
    nt_xent,
    sample_codes,
    sample_inputs,
)


def test_info_loss_hand_case():  # 1
    cents = torch.eye(4, dtype=torch.float64) * 3.0  # orthogonal centroids (norm does not matter: cosine)
    h = cents[[2]].clone()  # h = L_y exactly, y = 2
    got = info_loss(h, cents, torch.tensor([2]), 0.1)
    assert got.item() == pytest.approx(math.log(1 + 3 * math.exp(-10)), rel=1e-9)
    assert got.item() == pytest.approx(1.362e-4, rel=1e-3)
    # fp32 (training precision): exact up to the float32 ulp of the logit 10 (~1e-6)
    assert info_loss(h.float(), cents.float(), torch.tensor([2]), 0.1).item() == pytest.approx(1.362e-4, abs=2e-6)


def test_nt_xent_hand_case():  # 2
    e = torch.eye(2, dtype=torch.float64)
    assert nt_xent(e, e.clone(), 0.1).item() == pytest.approx(math.log(1 + 2 * math.exp(-10)), rel=1e-9)
    assert nt_xent(e, e.clone(), 0.1).item() == pytest.approx(9.08e-5, rel=1e-3)
    assert nt_xent(e.float(), e.float(), 0.1).item() == pytest.approx(9.08e-5, abs=2e-6)


def test_hinge_and_adversarial():  # 3
    assert hinge_d(torch.ones(5), -torch.ones(5)).item() == 0.0
    assert hinge_d(torch.zeros(5), torch.zeros(5)).item() == 2.0
    assert adversarial_g(torch.full((5,), 0.7)).item() == pytest.approx(-0.7)


def test_entropy_terms():  # 4
    y = 5
    each, mean = entropy_terms(torch.zeros(7, y))  # uniform p_i
    assert 0.1 * each.item() == pytest.approx(0.1 * math.log(y)) and -0.1 * mean.item() == pytest.approx(-0.1 * math.log(y))
    onehot_logits = torch.full((2 * y, y), -1e4)
    onehot_logits[torch.arange(2 * y), torch.arange(2 * y) % y] = 0.0  # one-hot, evenly spread
    each, mean = entropy_terms(onehot_logits)
    assert each.item() == pytest.approx(0.0, abs=1e-6)
    assert -0.1 * mean.item() == pytest.approx(-0.1 * math.log(y))


def test_mask_regulariser():  # 5
    assert mask_regulariser(torch.full((2, 1, 4, 4), 0.5)).item() == pytest.approx(1.0, abs=1e-5)
    assert mask_regulariser(torch.zeros(2, 1, 4, 4)).item() == pytest.approx(0.1, abs=1e-5)
    assert mask_regulariser(torch.ones(2, 1, 4, 4)).item() == pytest.approx(0.1, abs=1e-5)


def test_d_and_g_totals_are_weighted_sums():
    g = torch.Generator().manual_seed(0)
    b, e, y = 4, 6, 5
    r_real, r_fake = torch.randn(b, generator=g), torch.randn(b, generator=g)
    hf, hm, hr, ha = (torch.randn(b, e, generator=g) for _ in range(4))
    cents, codes = torch.randn(y, e, generator=g), torch.tensor([0, 3, 1, 4])
    total, t = d_loss(r_real, r_fake, hf, hm, hr, ha, cents, codes, 0.1)
    each, mean = entropy_terms(cosine_logits(hr, cents, 0.1))
    ref = hinge_d(r_real, r_fake) + 5 * info_loss(hf, cents, codes, 0.1) + info_loss(hm, cents, codes, 0.1) + nt_xent(hr, ha, 0.1) + 0.1 * each - 0.1 * mean
    assert torch.allclose(total, ref, rtol=1e-6)
    assert set(t) == {"d_hinge", "d_info", "d_info_masked", "d_simclr", "d_entropy_each", "d_entropy_mean"}
    mask = torch.rand(b, 1, 3, 3, generator=g)
    gt, gterms = g_loss(r_fake, hf, hm, cents, codes, mask, 0.1)
    gref = -r_fake.mean() + 5 * info_loss(hf, cents, codes, 0.1) + info_loss(hm, cents, codes, 0.1) + mask_regulariser(mask)
    assert torch.allclose(gt, gref, rtol=1e-6) and set(gterms) == {"g_adv", "g_info", "g_info_masked", "g_mask"}


def test_info_weight_is_five_in_total():  # 1, "times 5 in the total"
    cents = torch.eye(4)
    args = dict(r_real=torch.ones(1), r_fake=-torch.ones(1), h_masked=cents[[1]], h_real=torch.eye(4)[:2], h_aug=torch.eye(4)[:2], centroids=cents, codes=torch.tensor([1]))
    total_hit, t1 = d_loss(h_fake=cents[[1]], **args)
    total_miss, t2 = d_loss(h_fake=cents[[0]], **args)
    assert torch.allclose(total_miss - total_hit, 5 * (t2["d_info"] - t1["d_info"]))


def test_sample_codes():  # 8
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        c = sample_codes(64, 200, g)
        assert len(c.unique()) == 64 and c.min() >= 0 and c.max() < 200
    c = sample_codes(64, 10, g)  # Y < B: with replacement, every id valid, not all cluster 0
    assert c.shape == (64,) and c.min() >= 0 and c.max() < 10 and len(c.unique()) > 1
    inp = sample_inputs(8, 20, torch.Generator().manual_seed(1))
    assert inp["z"].shape == (8, 64) and inp["cz"].shape == (8, 8)
    assert torch.equal(inp["onehot"].argmax(1), inp["codes"]) and torch.equal(inp["onehot"], F.one_hot(inp["codes"], 20).float())
