"""FAME's MoCo backbone: card checklist items 7-9 and 11, plus enqueue of gathered keys (fame.md h)."""
import contextlib
import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from contrastlab.methods.fame.augment import normalize_clips
from contrastlab.methods.fame.method import FAME, FAMEConfig
from contrastlab.methods.fame.moco import KeyQueue, key_forward_split_bn, moco_logits, moco_loss, momentum_update_

torch.set_num_threads(1)


class FakeCtx:
    """The parts of StepContext that FAME uses; `other_worker` simulates a second rank in gather."""

    def __init__(self, method, lr=0.1, other_worker=False):
        self.method, self.world_size, self.rank, self.is_main, self.step = method, 1, 0, True, 0
        self.opt = torch.optim.SGD(method.encoder_q.parameters(), lr=lr)
        self.other_worker = other_worker
        self.gathered = []
        self.grads_seen = None
        self.images = []

    def autocast(self):
        return contextlib.nullcontext()

    def gather(self, x, grad=True):
        assert not grad, "keys are gathered without gradient"
        out = torch.cat([x, -x]) if self.other_worker else x  # rank 1 sends -x: distinguishable
        self.gathered.append(out.clone())
        return out

    def optimize(self, loss, name):
        loss.backward()
        self.grads_seen = {"q": [p.grad is not None for p in self.method.encoder_q.parameters()],
                           "k": [p.grad is not None for p in self.method.encoder_k.parameters()]}
        self.opt.step()
        self.opt.zero_grad()
        self.method.after_optimizer_step(name, self)

    def log_images(self, tag, images):
        self.images.append((tag, images))


def tiny_method(**kw):
    kw = {"queue_size": 64, **kw}
    cfg = FAMEConfig(embed_dim=16, colour_aug=False, clip_len=4, crop_size=16, **kw)
    torch.manual_seed(0)
    return FAME(cfg)


def tiny_batch(b=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"clip_q": torch.randint(0, 256, (b, 3, 4, 16, 16), generator=g, dtype=torch.uint8),
            "clip_k": torch.randint(0, 256, (b, 3, 4, 16, 16), generator=g, dtype=torch.uint8)}


# 7. logits shape, positive at column 0, initial CE ~ log(1 + K) + sigma^2 / 2
def test_logits_shape_and_positive_column():
    q = nn.functional.normalize(torch.randn(5, 8), dim=1)
    k = nn.functional.normalize(torch.randn(5, 8), dim=1)
    queue = nn.functional.normalize(torch.randn(8, 11), dim=0)
    logits, targets = moco_logits(q, k, queue, 0.1)
    assert logits.shape == (5, 12) and (targets == 0).all()
    torch.testing.assert_close(logits[:, 0], (q * k).sum(1) / 0.1)
    torch.testing.assert_close(logits[:, 1:], q @ queue / 0.1)


def test_initial_loss_matches_random_unit_vector_value():
    g = torch.Generator().manual_seed(0)
    q = nn.functional.normalize(torch.randn(4096, 128, generator=g), dim=1)
    k = nn.functional.normalize(torch.randn(4096, 128, generator=g), dim=1)
    queue = KeyQueue(128, 1024, generator=g).queue
    loss = moco_loss(q, k, queue, 0.1).item()
    sigma = 1 / (0.1 * math.sqrt(128))
    expected = math.log(1025) + sigma**2 / 2
    assert abs(expected - 7.32) < 0.01
    assert abs(loss - expected) < 0.1, (loss, expected)


def test_loss_detaches_key_and_queue():
    q = nn.functional.normalize(torch.randn(4, 8), dim=1).requires_grad_()
    k = torch.randn(4, 8, requires_grad=True)
    queue = torch.randn(8, 6, requires_grad=True)
    moco_loss(q, k, queue, 0.2).backward()
    assert q.grad is not None and k.grad is None and queue.grad is None


# 8. queue pointer and unit-norm keys
def test_queue_init_unit_norm_and_wraparound():
    q = KeyQueue(16, 10)
    torch.testing.assert_close(q.queue.norm(dim=0), torch.ones(10))
    keys = nn.functional.normalize(torch.randn(4, 16), dim=1)
    for _ in range(3):
        q.enqueue(keys)
    assert q.ptr.item() == 12 % 10
    torch.testing.assert_close(q.queue[:, :2].T, keys[2:])  # third push wrapped to columns 8, 9, 0, 1
    assert set(dict(q.state_dict())) == {"queue", "ptr"}


def test_step_advances_pointer_by_two_global_batches_and_keys_unit_norm():
    method = tiny_method()
    ctx = FakeCtx(method)
    method.train_step(tiny_batch(8), ctx)
    assert method.queue.ptr.item() == (2 * 8) % 64
    torch.testing.assert_close(method.queue.queue.norm(dim=0), torch.ones(64))


def test_gathered_keys_enqueued_once():
    method = tiny_method(use_fame=False, shuffle_bn="off")
    ctx = FakeCtx(method, other_worker=True)
    batch = tiny_batch(8)
    enc_k = copy.deepcopy(method.encoder_k)
    with torch.no_grad():
        k1 = enc_k(normalize_clips(batch["clip_k"].float() / 255))  # term 1 keys: the raw clip
        k2 = enc_k(normalize_clips(batch["clip_q"].float() / 255))  # term 2 keys: the (here unmerged) query clip
    method.train_step(batch, ctx)
    assert len(ctx.gathered) == 2  # one gather per term, nothing else
    assert method.queue.ptr.item() == 2 * 16  # 2 terms x global batch 16
    q = method.queue.queue.T
    torch.testing.assert_close(q[:8], k1, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(q[8:16], -k1, atol=1e-5, rtol=1e-5)  # the other worker's keys, once
    torch.testing.assert_close(q[16:24], k2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(q[24:32], -k2, atol=1e-5, rtol=1e-5)


# 9. momentum update
def test_momentum_formula_one_parameter():
    target, source = nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        target.weight.fill_(0.0)
        source.weight.fill_(1.0)
    momentum_update_(target, source, 0.999)
    assert abs(target.weight.item() - 0.001) < 1e-9


def test_momentum_update_skips_buffers():
    target, source = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    source.running_mean.fill_(5.0)
    momentum_update_(target, source, 0.5)
    assert (target.running_mean == 0).all()


def test_one_momentum_update_per_step():
    """The second symmetric term does not move theta_k: after a step theta_k = m theta_k0 + (1-m) theta_q1, once."""
    method = tiny_method(momentum=0.9)
    ctx = FakeCtx(method, lr=0.5)
    with torch.no_grad():  # make f_q differ from f_k so the update is visible
        for p in method.encoder_q.parameters():
            p.add_(0.01)
    k0 = [p.detach().clone() for p in method.encoder_k.parameters()]
    method.train_step(tiny_batch(8), ctx)
    for pk, pq, p0 in zip(method.encoder_k.parameters(), method.encoder_q.parameters(), k0):
        torch.testing.assert_close(pk, 0.9 * p0 + 0.1 * pq, rtol=1e-6, atol=1e-7)


# 11. gradient only into f_q
def test_gradient_only_into_query_encoder():
    method = tiny_method()
    assert all(not p.requires_grad for p in method.encoder_k.parameters())
    assert set(method.trainable()) == {"encoder"} and method.trainable()["encoder"] is method.encoder_q
    ctx = FakeCtx(method)
    method.train_step(tiny_batch(8), ctx)
    assert all(ctx.grads_seen["q"]) and not any(ctx.grads_seen["k"])


def test_state_dict_holds_queue_and_key_encoder():
    keys = set(tiny_method().state_dict())
    assert {"queue.queue", "queue.ptr"} <= keys
    assert any(k.startswith("encoder_k.") for k in keys)


def test_split_bn_key_forward_is_a_permutation_equivariant_map():
    """Shuffle + per-sub-batch BN + unshuffle: row i of the output belongs to input row i."""
    enc = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    x = torch.randn(8, 3)
    out = key_forward_split_bn(enc, x, splits=1)
    torch.testing.assert_close(out, enc(x))
    enc.eval()  # without batch statistics the split forward must equal the plain one row by row
    torch.testing.assert_close(key_forward_split_bn(enc, x, splits=4, generator=torch.Generator().manual_seed(0)), enc(x))


def test_image_strip_logged_every_epoch():
    method = tiny_method()
    ctx = FakeCtx(method)
    for _ in range(2):
        method.on_epoch_start(ctx)
        method.train_step(tiny_batch(8), ctx)
        method.train_step(tiny_batch(8, seed=1), ctx)
        method.on_epoch_end(ctx)
    assert len(ctx.images) == 2
    tag, img = ctx.images[0]
    assert tag == "fame/clip_mask_merged" and img.dtype == np.uint8 and img.shape == (4, 16, 48, 3)
    # the middle third is the binary mask: only 0 and 255, and floor(0.5 * 16 * 16) white pixels per clip
    mask = img[:, :, 16:32, 0]
    assert set(np.unique(mask)) <= {0, 255} and ((mask == 255).sum(axis=(1, 2)) == 128).all()


# card b: both terms enqueue; official order = term 1 enqueues before term 2 forms its logits
def _record_queues(monkeypatch):
    """Spy on the queue snapshot each symmetric term is scored against."""
    import contrastlab.methods.fame.method as fame_method

    seen = []
    real = fame_method.moco_loss

    def spy(q, k, queue, temperature):
        seen.append(queue.detach().clone())
        return real(q, k, queue, temperature)

    monkeypatch.setattr(fame_method, "moco_loss", spy)
    return seen


def _keys_of(method, batch):
    enc_k = copy.deepcopy(method.encoder_k)
    with torch.no_grad():  # shuffle_bn="off", use_fame=False: term 1 keys f_k(x_k), term 2 keys f_k(x_q)
        return enc_k(normalize_clips(batch["clip_k"].float() / 255)), enc_k(normalize_clips(batch["clip_q"].float() / 255))


def test_default_enqueue_order_is_official():
    assert FAMEConfig().enqueue_order == "per_term"


@pytest.mark.parametrize("other_worker", [False, True])
@pytest.mark.parametrize("order", ["per_term", "after_both"])
def test_term2_negatives_hold_term1_keys_only_in_official_order(monkeypatch, order, other_worker):
    seen = _record_queues(monkeypatch)
    method = tiny_method(use_fame=False, shuffle_bn="off", enqueue_order=order)
    ctx = FakeCtx(method, other_worker=other_worker)
    batch = tiny_batch(8)
    k1, k2 = _keys_of(method, batch)
    queue0 = method.queue.queue.clone()
    method.train_step(batch, ctx)
    assert len(seen) == 2 and len(ctx.gathered) == 2  # one gather (no grad) per term
    term1, term2 = seen[0].T, seen[1].T  # (K, D) rows = queue columns
    torch.testing.assert_close(term1, queue0.T)  # term 1 always sees the queue as the step found it
    g1 = torch.cat([k1, -k1]) if other_worker else k1  # the all-gathered term-1 keys (rank 1 sends -k)
    n = g1.shape[0]
    if order == "per_term":
        torch.testing.assert_close(term2[:n], g1, atol=1e-5, rtol=1e-5)  # every worker's term-1 keys are negatives
        torch.testing.assert_close(term2[n:], queue0.T[n:])
        # ...including the key of the query's own clip: q2 = f_q(x_k) meets k1 = f_k(x_k) as a negative
        assert ((term2 @ k1.T).diagonal()[:8] > 0.999).all()
    else:
        torch.testing.assert_close(term2, queue0.T)  # the same snapshot: no term-1 key among term 2's negatives
        assert not (term2 @ k1.T > 0.999).any()
    # both orders end the step with the same queue: [k1 of all workers, k2 of all workers], pointer +2 B_global
    g2 = torch.cat([k2, -k2]) if other_worker else k2
    q = method.queue.queue.T
    assert method.queue.ptr.item() == 2 * n
    torch.testing.assert_close(q[:n], g1, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(q[n:2 * n], g2, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("order", ["per_term", "after_both"])
def test_enqueue_orders_wrap_the_pointer_alike(monkeypatch, order):
    """K = 24 is not a multiple of the global batch 16: the second push wraps to the front (ptr 32 % 24 = 8)."""
    seen = _record_queues(monkeypatch)
    method = tiny_method(use_fame=False, shuffle_bn="off", enqueue_order=order, queue_size=24)
    ctx = FakeCtx(method, other_worker=True)
    batch = tiny_batch(8)
    k1, k2 = _keys_of(method, batch)
    queue0 = method.queue.queue.clone()
    method.train_step(batch, ctx)
    g1, g2 = torch.cat([k1, -k1]), torch.cat([k2, -k2])
    assert method.queue.ptr.item() == 32 % 24
    q = method.queue.queue.T
    torch.testing.assert_close(q[:8], g2[8:], atol=1e-5, rtol=1e-5)  # wrapped tail of the term-2 push
    torch.testing.assert_close(q[8:16], g1[8:], atol=1e-5, rtol=1e-5)  # survivors of the term-1 push
    torch.testing.assert_close(q[16:24], g2[:8], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(method.queue.queue.norm(dim=0), torch.ones(24))
    expected_term2 = torch.cat([g1, queue0.T[16:]]) if order == "per_term" else queue0.T
    torch.testing.assert_close(seen[1].T, expected_term2, atol=1e-5, rtol=1e-5)


def test_enqueue_order_validated():
    with pytest.raises(ValueError, match="method.enqueue_order"):
        FAMEConfig(enqueue_order="official").validate()
