"""IFND losses against the card's checklist (h 1-5, 9) and hand-computed values."""
import math

import pytest
import torch
import torch.nn.functional as F

from contrastlab.methods.ifnd.loss import (
    contrastive_with_false_negatives,
    false_negative_mask,
    ifnd_inbatch_loss,
    ifnd_queue_loss,
    info_nce,
    lookup_labels,
    nt_xent,
)


def _hand_case():
    q = torch.tensor([[1.0, 0.0]], requires_grad=True)
    k = torch.tensor([[1.0, 0.0]])
    queue = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    a_lab, a_acc = torch.tensor([[3]]), torch.tensor([[True]])
    q_lab, q_acc = torch.tensor([[3, 3]]), torch.tensor([[True, False]])  # first entry FN only
    return q, k, queue, a_lab, a_acc, q_lab, q_acc


def test_hand_case_values():  # checklist 2
    q, k, queue, a_lab, a_acc, q_lab, q_acc = _hand_case()
    plain = ifnd_queue_loss(q, k, queue, temperature=1.0)
    elim = ifnd_queue_loss(q, k, queue, a_lab, a_acc, q_lab, q_acc, "elim", 1.0)
    attr = ifnd_queue_loss(q, k, queue, a_lab, a_acc, q_lab, q_acc, "attr", 1.0)
    assert plain.item() == pytest.approx(math.log(math.e + math.exp(0.6) + 1) - 1, abs=1e-6)
    assert plain.item() == pytest.approx(0.71207, abs=5e-6)
    assert elim.item() == pytest.approx(0.31326, abs=5e-6)
    assert elim.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    assert attr.item() == pytest.approx(0.91207, abs=5e-6)


def _random_batch(b=6, k=20, d=8, m=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(b, d, generator=g), dim=1).requires_grad_(True)
    kp = F.normalize(torch.randn(b, d, generator=g), dim=1)
    queue = F.normalize(torch.randn(k, d, generator=g), dim=1)
    a_lab = torch.randint(0, 3, (m, b), generator=g)
    q_lab = torch.randint(0, 3, (m, k), generator=g)
    return q, kp, queue, a_lab, q_lab


@pytest.mark.parametrize("strategy", ["elim", "attr"])
def test_acceptance_zero_is_plain_infonce(strategy):  # checklist 1 (queue)
    q, kp, queue, a_lab, q_lab = _random_batch()
    ref = info_nce(q, kp, queue, 0.2)
    none = torch.zeros_like(a_lab, dtype=torch.bool)
    got = ifnd_queue_loss(q, kp, queue, a_lab, none, q_lab, torch.zeros_like(q_lab, dtype=torch.bool), strategy, 0.2)
    assert torch.allclose(got, ref, rtol=1e-6, atol=0)
    # only one side accepted is still no FN
    got_one_side = ifnd_queue_loss(q, kp, queue, a_lab, ~none, q_lab, torch.zeros_like(q_lab, dtype=torch.bool), strategy, 0.2)
    assert torch.allclose(got_one_side, ref, rtol=1e-6, atol=0)


@pytest.mark.parametrize("strategy", ["elim", "attr"])
def test_acceptance_zero_is_plain_ntxent(strategy):  # checklist 1 (in-batch)
    g = torch.Generator().manual_seed(1)
    z = F.normalize(torch.randn(10, 8, generator=g), dim=1)
    labels = torch.zeros(2, 5, dtype=torch.long)  # everything in one cluster, but nothing accepted
    got = ifnd_inbatch_loss(z, labels, torch.zeros(2, 5, dtype=torch.bool), strategy, 0.2)
    assert torch.allclose(got, nt_xent(z, 0.2), rtol=1e-6, atol=0)
    assert torch.allclose(ifnd_inbatch_loss(z, temperature=0.2), nt_xent(z, 0.2), rtol=1e-6, atol=0)


def test_fn_embedding_does_not_affect_elim_loss_or_grad():  # checklist 3
    q, k, queue, a_lab, a_acc, q_lab, q_acc = _hand_case()

    def loss_and_grad(qu):
        qq = q.detach().clone().requires_grad_(True)
        loss = ifnd_queue_loss(qq, k, qu, a_lab, a_acc, q_lab, q_acc, "elim", 0.5)
        loss.backward()
        return loss.detach(), qq.grad

    base_l, base_g = loss_and_grad(queue)
    moved_fn = queue.clone()
    moved_fn[0] = torch.tensor([0.8, -0.6])
    l1, g1 = loss_and_grad(moved_fn)
    assert torch.equal(l1, base_l) and torch.equal(g1, base_g)
    moved_neg = queue.clone()
    moved_neg[1] = torch.tensor([0.8, -0.6])
    l2, g2 = loss_and_grad(moved_neg)
    assert not torch.allclose(l2, base_l) and not torch.allclose(g2, base_g)


def test_gradient_only_through_query():
    q, kp, queue, a_lab, q_lab = _random_batch()
    kp.requires_grad_(True)
    queue.requires_grad_(True)
    acc_a, acc_q = torch.ones_like(a_lab, dtype=torch.bool), torch.ones_like(q_lab, dtype=torch.bool)
    ifnd_queue_loss(q, kp, queue, a_lab, acc_a, q_lab, acc_q, "attr").backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert kp.grad is None and queue.grad is None


def test_fn_mask_needs_both_accepted_and_same_label():  # checklist 4
    a_lab, a_acc = torch.tensor([0, 0, 1]), torch.tensor([True, False, True])
    c_lab, c_acc = torch.tensor([0, 0, 1, 1]), torch.tensor([True, False, True, False])
    mask = false_negative_mask(a_lab, a_acc, c_lab, c_acc)
    expected = torch.tensor([[True, False, False, False], [False, False, False, False], [False, False, True, False]])
    assert torch.equal(mask, expected)


def test_inbatch_self_and_positive_never_fn():  # checklist 4 (in-batch layout)
    # All images in one accepted cluster: every candidate but the positive is an FN, so
    # elimination leaves only the positive -> loss exactly 0; the positive was never masked.
    g = torch.Generator().manual_seed(2)
    z = F.normalize(torch.randn(8, 5, generator=g), dim=1)
    lab, acc = torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 4, dtype=torch.bool)
    assert ifnd_inbatch_loss(z, lab, acc, "elim", 0.2).item() == 0.0
    # attraction: positive + 6 FN (2B - 2 = 6 others, self excluded) averaged with weight 1/7
    sim = (z @ z.T / 0.2).masked_fill(torch.eye(8, dtype=torch.bool), float("-inf"))
    logp = sim - torch.logsumexp(sim, 1, keepdim=True)
    off = ~torch.eye(8, dtype=torch.bool)
    ref = -(logp.masked_fill(~off, 0).sum(1) / 7).mean()
    assert torch.allclose(ifnd_inbatch_loss(z, lab, acc, "attr", 0.2), ref, rtol=1e-6)


def test_attraction_weights():  # checklist 5
    q, kp, queue, a_lab, q_lab = _random_batch(b=1, k=5, m=1)
    a_lab[:] = 7
    q_lab[:] = torch.tensor([[7, 7, 1, 2, 3]])
    acc_a, acc_q = torch.ones_like(a_lab, dtype=torch.bool), torch.ones_like(q_lab, dtype=torch.bool)
    got = ifnd_queue_loss(q, kp, queue, a_lab, acc_a, q_lab, acc_q, "attr", 0.5)
    logits = torch.cat([(q * kp).sum(1, keepdim=True), q @ queue.T], 1) / 0.5
    logp = logits - torch.logsumexp(logits, 1, keepdim=True)
    ref = -(logp[0, 0] + logp[0, 1] + logp[0, 2]) / 3
    assert torch.allclose(got, ref, rtol=1e-6)
    # no FN -> plain InfoNCE
    q_lab[:] = torch.tensor([[1, 1, 1, 2, 3]])
    got0 = ifnd_queue_loss(q, kp, queue, a_lab, acc_a, q_lab, acc_q, "attr", 0.5)
    assert torch.allclose(got0, info_nce(q, kp, queue, 0.5), rtol=1e-6)


def test_levels_are_averaged():
    q, kp, queue, a_lab, q_lab = _random_batch(m=2)
    acc_a, acc_q = torch.ones_like(a_lab, dtype=torch.bool), torch.ones_like(q_lab, dtype=torch.bool)
    both = ifnd_queue_loss(q, kp, queue, a_lab, acc_a, q_lab, acc_q, "elim")
    l0 = ifnd_queue_loss(q, kp, queue, a_lab[0], acc_a[0], q_lab[0], acc_q[0], "elim")
    l1 = ifnd_queue_loss(q, kp, queue, a_lab[1], acc_a[1], q_lab[1], acc_q[1], "elim")
    assert torch.allclose(both, (l0 + l1) / 2, rtol=1e-6)


def test_queue_lookup_uses_current_labels():  # checklist 9
    q, kp, queue, _, _ = _random_batch(b=2, k=4, m=1)
    stored = torch.tensor([10, 11, -1, 12])  # dataset ids stored with the queue keys; -1 empty slot
    batch_ids = torch.tensor([0, 1])
    old_lab = torch.zeros(1, 13, dtype=torch.long)
    old_acc = torch.ones(1, 13, dtype=torch.bool)
    new_lab = torch.arange(13).unsqueeze(0).clone()  # re-clustered: everyone alone ...
    new_lab[0, 11] = new_lab[0, 0]  # ... except id 11 now sits with image 0
    losses = []
    for lab_t, n_fn in [(old_lab, 3), (new_lab, 1)]:
        a_lab, a_acc = lookup_labels(batch_ids, lab_t, old_acc)
        q_lab, q_acc = lookup_labels(stored, lab_t, old_acc)
        assert not q_acc[0, 2] and q_lab[0, 2] == -1  # empty slot is never an FN
        fn = false_negative_mask(a_lab[0], a_acc[0], q_lab[0], q_acc[0])
        assert int(fn[0].sum()) == n_fn
        got = ifnd_queue_loss(q, kp, queue, a_lab, a_acc, q_lab, q_acc, "elim")
        logits = torch.cat([(q * kp).sum(1, keepdim=True), q @ queue.T], 1) / 0.2
        ref = contrastive_with_false_negatives(logits, torch.zeros(2, dtype=torch.long), torch.cat([torch.zeros(2, 1, dtype=torch.bool), fn], 1)).mean()
        assert torch.allclose(got, ref)
        losses.append(got)
    assert not torch.allclose(losses[0], losses[1])  # the same queue now gives the new clustering's loss


@pytest.mark.parametrize("strategy", ["elim", "attr"])
def test_inbatch_local_loss_matches_global_batch(strategy):
    """Two simulated ranks with gathered candidates average to the single-process loss."""
    g = torch.Generator().manual_seed(3)
    b, d = 3, 6
    v1, v2 = F.normalize(torch.randn(2 * b, d, generator=g), dim=1), F.normalize(torch.randn(2 * b, d, generator=g), dim=1)
    lab = torch.randint(0, 2, (2, 2 * b), generator=g)
    acc = torch.rand(2, 2 * b, generator=g) > 0.3
    full = ifnd_inbatch_loss(torch.cat([v1, v2]), lab, acc, strategy, 0.3)
    z_r = [torch.cat([v1[r * b : (r + 1) * b], v2[r * b : (r + 1) * b]]) for r in range(2)]

    def gather_z(x):  # what gather-with-grad returns on every rank: [z_rank0; z_rank1]
        return torch.cat(z_r)

    def gather_labels(x):  # this rank's (B, M) labels or flags -> all ranks' (2B, M), rank order
        src = lab if x.dtype == torch.long else acc
        return torch.cat([src[:, s * b : (s + 1) * b].T for s in range(2)])

    per_rank = [
        ifnd_inbatch_loss(z_r[r], lab[:, r * b : (r + 1) * b], acc[:, r * b : (r + 1) * b], strategy, 0.3, gather_z, gather_labels, r)
        for r in range(2)
    ]
    assert torch.allclose((per_rank[0] + per_rank[1]) / 2, full, rtol=1e-5)


def test_bad_strategy_rejected():
    q, kp, queue, a_lab, q_lab = _random_batch()
    with pytest.raises(ValueError, match="strategy"):
        ifnd_queue_loss(q, kp, queue, strategy="attract")
