"""PPC losses against hand-computed values and the card's checklist (ppc.md, section h)."""
import math

import pytest
import torch
import torch.nn.functional as F

from contrastlab.methods.ppc.loss import (
    PPCLossConfig, cam_scores, class_prototypes, full_labels, hard_positions, intra_view_loss, max_onehot, normalize_cam,
    ppc_losses, prototype_ce, pseudo_labels, random_positions, semi_hard_pixel_losses, separation_from_sums, class_separation,
)

torch.set_num_threads(1)


def test_normalize_cam_official_formula():
    cam = torch.tensor([[[[-1.0, 0.0], [2.0, 4.0]]], [[[1.0, 2.0], [3.0, 5.0]]]])  # (2, 1, 2, 2)
    n = normalize_cam(cam)
    e = 1e-5
    # image 0: a = [0,0,2,4], m = 0, M = 4 -> (a - e) / (4 + e)
    assert torch.allclose(n[0, 0].flatten(), torch.tensor([-e, -e, 2 - e, 4 - e]) / (4 + e))
    # image 1 is all positive: its minimum pixel becomes strongly negative (kept, as in the official code)
    assert torch.allclose(n[1, 0].flatten(), torch.tensor([0 - 1 - e, 1 - e, 2 - e, 4 - e]) / (4 + e))
    assert n[1, 0, 0, 0] < -0.2


def test_pseudo_label_background_iff_all_present_below_t_and_absent_never_chosen():
    # checklist 1: scores over (bg, c1, c2, c3) at 4 pixels; class 3 is absent from the image
    t = 0.2
    fg = torch.tensor([[0.1, 0.9, 0.0, 0.95],   # c1 per pixel
                       [0.15, 0.3, 0.2, -0.5],  # c2
                       [0.99, 0.99, 0.99, 0.99]])  # c3 (absent, highest everywhere)
    cam_like = torch.cat([torch.zeros(1, 4), fg])[None, :, None, :]  # (1, 4, 1, 4)
    scores = cam_like.clone()
    scores[:, 0] = t
    labels = full_labels(torch.tensor([[1.0, 1.0, 0.0]]), 4, 0)
    assert labels.tolist() == [[1.0, 1.0, 1.0, 0.0]]
    y = pseudo_labels(scores, labels)[0, 0].tolist()
    assert y == [0, 1, 0, 1]  # pixel 2: c2 == t exactly -> tie goes to the background (first channel)
    assert 3 not in y
    # with t = 0 and negative present scores an absent class (score 0) would win the card's n * l; never here
    scores[:, 0] = -1.0
    assert 3 not in pseudo_labels(scores, labels).flatten().tolist()


def test_cam_scores_overwrite_background():
    s = cam_scores(torch.randn(2, 5, 3, 3), bg_index=4, bg_value=0.1)
    assert torch.all(s[:, 4] == 0.1)


def test_prototypes_are_weighted_means_of_topk_pixels():
    # hand-built map: 1 image, 2x2 grid, 2 channels, 2-d embeddings
    scores = torch.tensor([[[[0.9, 0.1], [0.5, 0.7]], [[0.2, 0.2], [0.2, 0.2]]]])
    emb = torch.tensor([[[[1.0, 0.0], [2.0, 3.0]], [[0.0, 4.0], [1.0, 1.0]]]])  # pixel embeddings (1,0),(0,4),(2,1),(3,1)
    p = class_prototypes(scores, emb, k=2)
    # class 0: top-2 pixels are 0 (0.9) and 3 (0.7): (0.9*(1,0) + 0.7*(3,1)) / 1.6, then unit norm
    v0 = (0.9 * torch.tensor([1.0, 0.0]) + 0.7 * torch.tensor([3.0, 1.0])) / 1.6
    assert torch.allclose(p[0], v0 / v0.norm(), atol=1e-6)
    # checklist 8b: a constant channel takes the first K pixels in raster order: pixels 0 and 1
    v1 = 0.2 * torch.tensor([1.0, 0.0]) + 0.2 * torch.tensor([0.0, 4.0])
    assert torch.allclose(p[1], v1 / v1.norm(), atol=1e-6)
    assert torch.allclose(p.norm(dim=1), torch.ones(2))  # checklist 2: unit norm


def test_background_prototype_spans_the_batch_in_raster_order():
    # checklist 8b over two images: K = 3 -> pixels (n=0, all 2) and (n=1, first)
    g = torch.Generator().manual_seed(0)
    emb = torch.rand(2, 4, 1, 2, generator=g)
    scores = torch.full((2, 1, 1, 2), 0.2)
    p = class_prototypes(scores, emb, k=3)
    flat = emb.permute(0, 2, 3, 1).reshape(4, 4)
    expected = F.normalize(flat[:3].mean(0), dim=0)
    assert torch.allclose(p[0], expected, atol=1e-6)


def test_prototype_zero_weight_sum_gives_no_nan():
    p = class_prototypes(torch.zeros(1, 1, 2, 2), torch.rand(1, 3, 2, 2), k=2)
    assert torch.isfinite(p).all()


def test_prototype_ce_hand_case_and_orthonormal_limit():
    e = torch.tensor([[1.0, 0.0]])
    protos = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    expected = -2.0 + math.log(math.exp(2.0) + 1.0 + math.exp(-2.0))  # logits (2, 0, -2) at tau 0.5
    assert prototype_ce(e, protos, torch.tensor([0]), 0.5).item() == pytest.approx(expected, rel=1e-6)
    # checklist 4: orthonormal prototypes (21), e^ = P_y exactly, tau = 0.1
    p = torch.eye(21, 32)
    y = torch.arange(21)
    assert prototype_ce(p[y], p, y, 0.1).item() == pytest.approx(math.log(1 + 20 * math.exp(-10)), rel=1e-4)
    assert math.log(1 + 20 * math.exp(-10)) == pytest.approx(9.08e-4, rel=1e-3)


def test_semi_hard_window_is_ranks_4_to_13():
    # checklist 5: one pixel, 21 prototypes with similarities 1.0, 0.95, ..., 0.0 (rank r has s = 1 - 0.05 (r-1))
    sims = torch.linspace(1.0, 0.0, 21)
    perm = torch.randperm(21, generator=torch.Generator().manual_seed(1))
    protos = torch.zeros(21, 22)
    # e^ = unit first axis; P_k = s_k * axis0 + sqrt(1 - s_k^2) * axis(k+1) gives e^ . P_k = s_k
    for k in range(21):
        s = sims[perm[k]]
        protos[k, 0] = s
        protos[k, k + 1] = math.sqrt(max(0.0, 1 - s.item() ** 2))
    e = torch.zeros(1, 22)
    e[0, 0] = 1.0
    y = int(torch.nonzero(perm == 15)[0])  # the positive has rank 16 (outside the window)
    loss, pos = semi_hard_pixel_losses(e, protos, torch.tensor([y]), 0.1, skip=3, count=10)
    window = sims[3:13]  # ranks 4..13
    assert len(window) == 10
    s_y = sims[15].item()
    expected = -s_y / 0.1 + math.log(math.exp(s_y / 0.1) + sum(math.exp(s.item() / 0.1) for s in window))
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert pos.item() == pytest.approx(s_y, abs=1e-6)
    # a positive inside the window (rank 5) is counted twice
    y_in = int(torch.nonzero(perm == 4)[0])
    loss_in, _ = semi_hard_pixel_losses(e, protos, torch.tensor([y_in]), 0.1, skip=3, count=10)
    s_in = sims[4].item()
    expected_in = -s_in / 0.1 + math.log(math.exp(s_in / 0.1) + sum(math.exp(s.item() / 0.1) for s in window))
    assert loss_in.item() == pytest.approx(expected_in, rel=1e-5)


def test_hard_pixels_and_random_half_for_l_10():
    # checklist 5: L = 10 -> 5 random + hard = 2nd ... 6th least similar
    pos_sim = torch.tensor([0.5, -0.9, 0.1, 0.8, -0.2, 0.3, 0.9, -0.5, 0.0, 0.6])
    order = torch.argsort(pos_sim)  # ascending: 1, 7, 4, 8, 2, 5, 0, 9, 3, 6
    assert hard_positions(pos_sim, 0.6).tolist() == order[1:6].tolist() == [7, 4, 8, 2, 5]
    rand = random_positions(10, torch.Generator().manual_seed(0), "cpu")
    assert len(rand) == 5 and len(set(rand.tolist())) == 5 and all(0 <= r < 10 for r in rand.tolist())
    assert hard_positions(pos_sim, 0.5).tolist() == order[0:5].tolist()
    assert hard_positions(torch.tensor([0.3, 0.1]), 0.6).tolist() == [1]  # L = 2: floor(1.2) - 1 = 0


def _intra_case():
    g = torch.Generator().manual_seed(3)
    e = F.normalize(torch.randn(13, 6, generator=g), dim=1)
    protos = F.normalize(torch.randn(5, 6, generator=g), dim=1)
    y = torch.tensor([0, 1, 1, 0, 2, 0, 1, 0, 3, 0, 1, 0, 0])  # class 0: 7 px, 1: 4 px, 2 and 3: singletons
    return e, protos, y


def test_intra_view_loss_by_hand_with_injected_picks_and_singletons():
    # checklists 6 and 9: C = 4 (singletons counted), singletons add 0; injected random halves
    e, protos, y = _intra_case()
    picks = {(0, 0): torch.tensor([6, 0, 2]), (0, 1): torch.tensor([3, 1])}
    loss = intra_view_loss(e, protos, y, 0.1, skip=1, count=2, hard_start=0.6, random_picks=picks)
    per_pixel, pos = semi_hard_pixel_losses(e, protos, y, 0.1, 1, 2)
    # reference with explicit loops
    total = 0.0
    for k in (0, 1):
        members = [i for i in range(13) if y[i] == k]
        length = len(members)
        ranked = sorted(range(length), key=lambda j: (pos[members[j]].item(), j))
        end = math.floor(0.6 * length)
        chosen = list(picks[(0, k)].tolist()) + ranked[end - length // 2:end]
        total += sum(per_pixel[members[j]].item() for j in chosen) / len(chosen)
    assert loss.item() == pytest.approx(total / 4, rel=1e-5)
    # the per-pixel loss by hand for pixel 0: positive + prototypes ranked 2 and 3
    s = (e[0] @ protos.t()).tolist()
    window = sorted(s, reverse=True)[1:3]
    by_hand = -s[0] / 0.1 + math.log(math.exp(s[0] / 0.1) + sum(math.exp(v / 0.1) for v in window))
    assert per_pixel[0].item() == pytest.approx(by_hand, rel=1e-5)


def test_intra_view_sampling_is_seeded_and_matches_generator_draws():
    e, protos, y = _intra_case()
    a = intra_view_loss(e, protos, y, 0.1, skip=1, count=2, hard_start=0.6, generator=torch.Generator().manual_seed(7))
    b = intra_view_loss(e, protos, y, 0.1, skip=1, count=2, hard_start=0.6, generator=torch.Generator().manual_seed(7))
    assert a.item() == b.item()
    g = torch.Generator().manual_seed(7)  # the documented draw order: one randperm(L) per class with L >= 2, ascending
    picks = {(0, 0): torch.randperm(7, generator=g)[:3], (0, 1): torch.randperm(4, generator=g)[:2]}
    c = intra_view_loss(e, protos, y, 0.1, skip=1, count=2, hard_start=0.6, random_picks=picks)
    assert a.item() == pytest.approx(c.item(), rel=1e-6)


def _random_batch(seed, n=2, c=21, d=128, relu=True):
    g = torch.Generator().manual_seed(seed)
    cam1, cam2 = torch.randn(n, c, 32, 32, generator=g), torch.randn(n, c, 16, 16, generator=g)
    e1, e2 = torch.randn(n, d, 32, 32, generator=g), torch.randn(n, d, 16, 16, generator=g)
    if relu:
        e1, e2 = e1.relu(), e2.relu()
    labels = (torch.rand(n, c - 1, generator=g) < 0.2).float()
    return cam1, cam2, e1, e2, labels, g


def test_random_inputs_give_about_0p3_log_21():
    # checklist 3: observed 0.85-0.93 on small random batches (ReLU embeddings, as the projection head's)
    for seed in range(3):
        cam1, cam2, e1, e2, labels, g = _random_batch(seed)
        out = ppc_losses(cam1, cam2, e1, e2, labels, g)
        assert 0.83 < out["loss_nce"].item() < 0.95
        assert out["loss_cp"].item() == pytest.approx(math.log(21), abs=0.1)


def test_ppc_losses_compose_the_terms_and_only_embeddings_get_gradient():
    cam1, cam2, e1, e2, labels, g = _random_batch(5, c=5, d=16)
    cam1.requires_grad_(True)
    cam2.requires_grad_(True)
    e1.requires_grad_(True)
    e2.requires_grad_(True)
    cfg = PPCLossConfig(semi_hard_skip=1, semi_hard_count=2, weight_cp=0.1, weight_cl=0.2, weight_intra=0.3)
    out = ppc_losses(cam1, cam2, e1, e2, labels, g, cfg)
    total = 0.1 * out["loss_cp"] + 0.2 * out["loss_cl"] + 0.3 * out["loss_intra"]
    assert out["loss_nce"].item() == pytest.approx(total.item(), rel=1e-6)
    out["loss_nce"].backward()
    assert cam1.grad is None and cam2.grad is None
    assert e1.grad.abs().sum() > 0 and e2.grad.abs().sum() > 0
    assert torch.allclose(out["protos1"].norm(dim=1), torch.ones(5)) and out["y1"].shape == (2, 16, 16)


def test_cross_terms_use_the_right_prototypes_and_labels():
    # same grid for both views, so the terms can be rebuilt by hand from the returned y / prototypes
    cam1, cam2, e1, e2, labels, g = _random_batch(6, c=5, d=8)
    cam1 = cam1[..., :16, :16]
    e1 = e1[..., :16, :16]
    out = ppc_losses(cam1, cam2, e1, e2, labels, g, PPCLossConfig(semi_hard_skip=1, semi_hard_count=2))
    f1 = F.normalize(e1.permute(0, 2, 3, 1).reshape(-1, 8), dim=1)
    f2 = F.normalize(e2.permute(0, 2, 3, 1).reshape(-1, 8), dim=1)
    y1, y2, p1, p2 = out["y1"].flatten(), out["y2"].flatten(), out["protos1"], out["protos2"]
    cp = 0.5 * (F.cross_entropy(f1 @ p2.t() / 0.1, y1) + F.cross_entropy(f2 @ p1.t() / 0.1, y2))
    cl = 0.5 * (F.cross_entropy(f1 @ p1.t() / 0.1, y2) + F.cross_entropy(f2 @ p2.t() / 0.1, y1))
    assert out["loss_cp"].item() == pytest.approx(cp.item(), rel=1e-5)
    assert out["loss_cl"].item() == pytest.approx(cl.item(), rel=1e-5)


def test_window_larger_than_prototypes_is_refused():
    cam1, cam2, e1, e2, labels, g = _random_batch(0, c=5, d=8)
    with pytest.raises(ValueError, match="semi-hard window"):
        ppc_losses(cam1, cam2, e1, e2, labels, g, PPCLossConfig(semi_hard_skip=3, semi_hard_count=10))


def test_max_onehot_keeps_background_and_foreground_max():
    x = torch.tensor([[0.5, 0.2, 0.7, 0.1]])[:, :, None, None]
    assert max_onehot(x, 0).flatten().tolist() == pytest.approx([0.5, 0.0, 0.7, 0.0])


def test_class_separation():
    emb = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])[None, :, None, :]  # pixels (1,0), (1,0), (0,1)
    target = torch.tensor([[[0, 0, 1]]])
    sums, counts = class_separation(emb, target, 2)
    assert separation_from_sums(sums, counts) == pytest.approx(1.0)  # intra 1, inter 0
