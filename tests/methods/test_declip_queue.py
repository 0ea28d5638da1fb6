"""DeCLIP's NN queue (card checklist h7)."""
import io

import pytest
import torch

from contrastlab.methods.clip.loss import normalize
from contrastlab.methods.declip.nn_queue import NNQueue


def unit(*shape, seed=0):
    return normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)))


def test_initial_bank_is_seeded_unit_vectors():
    a, b, c = NNQueue(32, 8, seed=1), NNQueue(32, 8, seed=1), NNQueue(32, 8, seed=2)
    assert a.bank.dtype == torch.float32
    torch.testing.assert_close(a.bank.norm(dim=1), torch.ones(32))
    assert torch.equal(a.bank, b.bank) and not torch.equal(a.bank, c.bank)
    assert int(a.ptr) == 0 and int(a.fill) == 0 and (a.ids == -1).all()


def test_query_equals_brute_force_argmax():
    q = NNQueue(50, 16, seed=0)
    x = torch.randn(7, 16, generator=torch.Generator().manual_seed(5)) * 3  # any norm
    n, cos, idx = q.query(x)
    for row in range(7):
        sims = torch.stack([torch.dot(x[row] / x[row].norm(), q.bank[k]) / q.bank[k].norm() for k in range(50)])
        k = int(sims.argmax())
        assert int(idx[row]) == k
        torch.testing.assert_close(n[row], q.bank[k] / q.bank[k].norm())
        assert cos[row].item() == pytest.approx(sims[k].item(), abs=1e-6)
    torch.testing.assert_close(n.norm(dim=1), torch.ones(7))


def test_query_before_enqueue_never_retrieves_itself():
    q = NNQueue(64, 16, seed=0)
    t = unit(4, 16, seed=1)
    n, na, stats = q.query_and_update(t, t.clone())  # ta == t: both queried against the old queue
    assert stats["nn_cosine"].item() < 0.99 and stats["nn_cosine_aug"].item() < 0.99
    assert (stats["nn_ids"] == -1).all()
    # the next step does find them
    n2, _, stats2 = q.query_and_update(t, t)
    torch.testing.assert_close(n2, t, atol=1e-6, rtol=0)
    assert stats2["nn_cosine"].item() == pytest.approx(1.0, abs=1e-6)


def test_rows_after_step_hold_ta_then_t():
    b = 3
    q = NNQueue(20, 8, seed=0)
    q.query_and_update(unit(b, 8, seed=9), unit(b, 8, seed=10))  # move ptr off 0
    ptr = int(q.ptr)
    assert ptr == 2 * b
    t, ta = unit(b, 8, seed=1), unit(b, 8, seed=2)
    q.query_and_update(t, ta, t_ids=torch.arange(b), ta_ids=torch.arange(b) + 100)
    torch.testing.assert_close(q.bank[ptr : ptr + 2 * b], torch.cat([ta, t]), atol=1e-6, rtol=0)
    assert q.ids[ptr : ptr + 2 * b].tolist() == [100, 101, 102, 0, 1, 2]
    assert int(q.ptr) == ptr + 2 * b and int(q.fill) == 4 * b
    assert q.query_and_update(t, ta)[2]["queue_fill"].item() == pytest.approx(18 / 20)
    assert q.query_and_update(t, ta)[2]["queue_fill"].item() == pytest.approx(1.0)  # saturates at K


def test_official_overflow_fills_to_end_and_drops_rest():
    q = NNQueue(10, 4, seed=0, overflow="official")
    first = unit(8, 4, seed=1)
    q.enqueue(first)
    old = q.bank.clone()
    x = unit(5, 4, seed=2)
    assert q.enqueue(x) == 2
    torch.testing.assert_close(q.bank[8:10], x[:2], atol=1e-6, rtol=0)
    assert torch.equal(q.bank[:8], old[:8])  # remainder dropped, nothing wrapped
    assert int(q.ptr) == 0 and int(q.fill) == 10
    q.enqueue(x[:3])
    torch.testing.assert_close(q.bank[:3], x[:3], atol=1e-6, rtol=0)
    assert int(q.ptr) == 3


def test_official_exact_fit_resets_pointer():
    q = NNQueue(6, 4, overflow="official")
    q.enqueue(unit(6, 4, seed=1))
    assert int(q.ptr) == 0 and int(q.fill) == 6


def test_ring_overflow_wraps_around():
    q = NNQueue(10, 4, seed=0, overflow="ring")
    q.enqueue(unit(8, 4, seed=1))
    x = unit(5, 4, seed=2)
    assert q.enqueue(x) == 5
    torch.testing.assert_close(q.bank[8:10], x[:2], atol=1e-6, rtol=0)
    torch.testing.assert_close(q.bank[0:3], x[2:], atol=1e-6, rtol=0)
    assert int(q.ptr) == 3 and int(q.fill) == 10


def test_ring_batch_larger_than_queue_keeps_newest():
    q = NNQueue(4, 3, overflow="ring")
    q.enqueue(unit(1, 3, seed=0))  # ptr 1
    x = unit(6, 3, seed=1)
    q.enqueue(x)  # rows j go to (1 + j) % 4; the newest 4 (j = 2..5) survive
    for j in range(2, 6):
        torch.testing.assert_close(q.bank[(1 + j) % 4], x[j], atol=1e-6, rtol=0)
    assert int(q.ptr) == (1 + 6) % 4


def test_state_dict_round_trip():
    q = NNQueue(16, 4, seed=0, overflow="ring")
    q.query_and_update(unit(3, 4, seed=1), unit(3, 4, seed=2), t_ids=torch.arange(3))
    assert {"bank", "ptr", "fill", "ids"} <= set(q.state_dict())
    buf = io.BytesIO()
    torch.save(q.state_dict(), buf)
    buf.seek(0)
    restored = NNQueue(16, 4, seed=123, overflow="ring")
    restored.load_state_dict(torch.load(buf))
    for name in ("bank", "ptr", "fill", "ids"):
        assert torch.equal(getattr(restored, name), getattr(q, name))
    t = unit(3, 4, seed=7)
    a, b = q.query_and_update(t, t)[0], restored.query_and_update(t, t)[0]
    assert torch.equal(a, b) and int(q.ptr) == int(restored.ptr)


def test_bank_stays_fp32_and_outputs_are_detached():
    q = NNQueue(8, 4).to(torch.bfloat16)
    assert q.bank.dtype == torch.float32
    x = torch.randn(2, 4, requires_grad=True)
    n, na, stats = q.query_and_update(x, x.bfloat16())
    assert not n.requires_grad and not na.requires_grad and n.dtype == torch.float32


def test_bad_policy_rejected():
    with pytest.raises(ValueError):
        NNQueue(8, 4, overflow="lifo")
