"""DeCLIP MLM masking and loss (card checklist h10)."""
import math

import numpy as np
import pytest
import torch

from contrastlab.methods.declip.heads import MLMHead
from contrastlab.methods.declip.loss import mlm_loss
from contrastlab.methods.declip.mlm import mask_tokens

PAD, MASK, SOT, EOT, VOCAB = 0, 49406, 49407, 49408, 49409
SPECIAL = (PAD, SOT, EOT)


def fake_ids(n, length=20, seed=0):
    """Tokenizer-shaped rows: SOT, 3..length-3 word ids, EOT, zero padding."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((n, length), dtype=np.int64)
    for r in range(n):
        k = int(rng.integers(3, length - 2))
        ids[r, 0] = SOT
        ids[r, 1 : k + 1] = rng.integers(1, 49405, k)
        ids[r, k + 1] = EOT
    return ids


def mask(ids, seed=0, **kw):
    return mask_tokens(ids, rng=np.random.default_rng(seed), mask_id=MASK, vocab_size=VOCAB, special_ids=SPECIAL, **kw)


def test_special_tokens_never_selected_and_labels_consistent():
    ids = fake_ids(500)
    masked, labels = mask(ids, select_prob=0.9)
    special = np.isin(ids, SPECIAL)
    assert (labels[special] == -100).all()
    assert (masked[special] == ids[special]).all()
    sel = labels != -100
    assert (labels[sel] == ids[sel]).all()
    assert (masked[~sel] == ids[~sel]).all()
    assert masked.dtype == np.int64 and labels.dtype == np.int64 and masked.shape == ids.shape


def test_selection_rate_and_80_10_10_split():
    ids = fake_ids(12_000, length=20, seed=1)
    words = ~np.isin(ids, SPECIAL)
    assert words.sum() > 100_000
    masked, labels = mask(ids, seed=2)
    sel = labels != -100
    rate = sel.sum() / words.sum()
    assert rate == pytest.approx(0.15, abs=0.005)
    n = sel.sum()
    to_mask = (masked[sel] == MASK).mean()
    unchanged = (masked[sel] == ids[sel]).mean()
    randomised = 1 - to_mask - unchanged
    assert to_mask == pytest.approx(0.8, abs=0.015)
    assert unchanged == pytest.approx(0.1 + 0.1 / VOCAB, abs=0.015)  # random can redraw the same id
    assert randomised == pytest.approx(0.1, abs=0.015)
    assert n > 10_000


def test_random_ids_cover_vocab_range_and_option_excludes_special():
    ids = fake_ids(2000, seed=3)
    masked, labels = mask(ids, seed=4, mask_prob=0.0, random_prob=1.0)
    sel = labels != -100
    assert masked[sel].min() >= 0 and masked[sel].max() < VOCAB
    masked2, labels2 = mask(ids, seed=4, mask_prob=0.0, random_prob=1.0, select_prob=1.0, random_excludes_special=True)
    sel2 = labels2 != -100
    assert not np.isin(masked2[sel2], SPECIAL).any()


def test_masking_is_deterministic_per_seed():
    ids = fake_ids(50)
    a, b = mask(ids, seed=7), mask(ids, seed=7)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_only_selected_positions_contribute():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 11, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.full((2, 6), -100)
    labels[0, 2], labels[1, 4], labels[1, 0] = 3, 7, 10
    loss = mlm_loss(logits, labels)
    pos = [(0, 2, 3), (1, 4, 7), (1, 0, 10)]
    manual = sum(-torch.log_softmax(logits[b, l], -1)[y] for b, l, y in pos) / 3
    assert loss.item() == pytest.approx(manual.item(), abs=1e-6)
    loss.backward()
    grad_norm = logits.grad.abs().sum(-1)
    selected = labels != -100
    assert (grad_norm[~selected] == 0).all() and (grad_norm[selected] > 0).all()
    # changing unselected logits leaves the loss unchanged
    other = logits.detach().clone()
    other[~selected] += 5.0
    assert mlm_loss(other, labels).item() == pytest.approx(loss.item(), abs=1e-12)


def test_zero_selected_gives_zero_not_nan_with_graph():
    logits = torch.randn(3, 5, 9, requires_grad=True)
    loss = mlm_loss(logits, torch.full((3, 5), -100))
    assert loss.item() == 0.0 and not math.isnan(loss.item())
    assert loss.requires_grad
    loss.backward()
    assert (logits.grad == 0).all()


def test_head_selected_logits_match_full_logits():
    head = MLMHead(8, 13)
    hidden = torch.randn(2, 5, 8)
    labels = torch.full((2, 5), -100)
    labels[0, 1], labels[1, 3] = 4, 12
    full = mlm_loss(head(hidden), labels)
    sel_logits, sel_labels = head.selected_logits(hidden, labels)
    assert sel_logits.shape == (2, 13)
    assert mlm_loss(sel_logits, sel_labels).item() == pytest.approx(full.item(), abs=1e-6)


def test_bf16_logits_computed_in_fp32():
    logits = torch.randn(4, 9).bfloat16()
    assert mlm_loss(logits, torch.tensor([1, -100, 2, 3])).dtype == torch.float32
