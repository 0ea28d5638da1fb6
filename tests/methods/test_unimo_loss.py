"""UNIMO's CMCL and masked-modelling losses against the card's checklist (h.1-4, 6, 8)."""
import math

import numpy as np
import pytest
import torch

from contrastlab.methods.unimo.loss import (clamp_temperature_, cmcl_loss, masked_region_loss, multi_positive_infonce,
                                            unimo2_inbatch_loss)

torch.set_num_threads(1)
D = 8


def unit(i, d=D):
    v = torch.zeros(d, dtype=torch.float64)
    v[i] = 1.0
    return v


@pytest.mark.parametrize("n", [2, 5, 7])
def test_identical_embeddings_give_log_2n_minus_1(n):
    e = torch.ones(n, D, dtype=torch.float64)
    loss = cmcl_loss(e, e.clone(), 0.07, in_batch=True)
    assert loss.item() == pytest.approx(math.log(2 * n - 1), abs=1e-8)
    if n == 5:
        assert loss.item() == pytest.approx(2.197225, abs=1e-6)


def test_hand_case_one_positive_one_negative():
    img, txt = unit(0)[None], unit(0)[None]
    neg = unit(1)[None, None]
    loss = cmcl_loss(img, txt, 1.0, neg_text=neg, neg_text_mask=torch.ones(1, 1, dtype=torch.bool), in_batch=False)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-8)
    assert loss.item() == pytest.approx(0.313262, abs=1e-6)


def test_hand_case_two_positives_one_negative():
    img, txt = unit(0)[None], unit(0)[None]
    loss = cmcl_loss(img, txt, 1.0, pos_text=unit(0)[None, None], pos_text_mask=torch.ones(1, 1, dtype=torch.bool),
                     neg_text=unit(1)[None, None], neg_text_mask=torch.ones(1, 1, dtype=torch.bool), in_batch=False)
    assert loss.item() == pytest.approx(math.log(1 + 1 / (2 * math.e)), abs=1e-8)
    assert loss.item() == pytest.approx(0.168848, abs=1e-6)


def test_multi_positive_infonce_reference():
    g = torch.Generator().manual_seed(0)
    pl, nl = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 5, generator=g, dtype=torch.float64)
    pm, nm = torch.rand(4, 3, generator=g) > 0.3, torch.rand(4, 5, generator=g) > 0.3
    pm[:, 0] = True
    ref = []
    for i in range(4):
        num = sum(math.exp(pl[i, j]) for j in range(3) if pm[i, j])
        den = num + sum(math.exp(nl[i, j]) for j in range(5) if nm[i, j])
        ref.append(-math.log(num / den))
    assert multi_positive_infonce(pl, pm, nl, nm).item() == pytest.approx(np.mean(ref), abs=1e-10)


def _random_case(seed=0, n=4, kt=2, ki=2, kn=3):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    return dict(image=r(n, D), text=r(n, D), pos_text=r(n, kt, D), pos_image=r(n, ki, D), neg_text=r(n, kn, D),
                pos_text_mask=torch.tensor([[1, 0], [1, 1], [0, 0], [1, 0]], dtype=torch.bool),
                pos_image_mask=torch.tensor([[0, 1], [1, 0], [0, 0], [1, 1]], dtype=torch.bool),
                neg_text_mask=torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0], [1, 1, 1]], dtype=torch.bool))


def test_extra_positive_equal_to_pair_lowers_loss_and_hard_negative_raises_it():
    c = _random_case()
    base = cmcl_loss(c["image"], c["text"], 0.1, in_batch=True)
    more_pos = cmcl_loss(c["image"], c["text"], 0.1, pos_text=c["text"][:, None], pos_text_mask=torch.ones(4, 1, dtype=torch.bool))
    more_neg = cmcl_loss(c["image"], c["text"], 0.1, neg_text=c["text"][:, None], neg_text_mask=torch.ones(4, 1, dtype=torch.bool))
    assert more_pos < base < more_neg


def test_masked_candidates_and_rescaling_do_not_change_the_loss():
    c = _random_case()
    tau = 0.2
    ref = cmcl_loss(temperature=tau, **c)
    garbage = {k: v.clone() for k, v in c.items()}
    g = torch.Generator().manual_seed(5)
    for name in ("pos_text", "pos_image", "neg_text"):
        m = c[name + "_mask"]
        garbage[name][~m] = torch.randn(int((~m).sum()), D, generator=g, dtype=torch.float64) * 1e3
    assert cmcl_loss(temperature=tau, **garbage).item() == pytest.approx(ref.item(), abs=1e-10)
    rescaled = {k: v.clone() for k, v in c.items()}
    rescaled["neg_text"][0, 1] *= 7.5
    rescaled["image"][2] *= 0.01
    rescaled["pos_image"][3, 0] *= 42
    assert cmcl_loss(temperature=tau, **rescaled).item() == pytest.approx(ref.item(), abs=1e-10)


def test_invalid_rows_are_neither_anchors_nor_in_batch_negatives():
    c = _random_case()
    keep = torch.tensor([True, True, False, True])
    full = cmcl_loss(c["image"], c["text"], 0.1, row_mask=keep)
    sub = cmcl_loss(c["image"][keep], c["text"][keep], 0.1)
    assert full.item() == pytest.approx(sub.item(), abs=1e-10)
    garbage = c["image"].clone()
    garbage[2] = 1e3 * torch.randn(D, dtype=torch.float64)
    assert cmcl_loss(garbage, c["text"], 0.1, row_mask=keep).item() == pytest.approx(full.item(), abs=1e-10)


def test_gathered_in_batch_negatives_match_the_global_batch():
    """Two ranks of 3 rows each, with a fake gather returning the global (normalised) columns:
    the mean of the two local losses equals the global-batch loss (equal rows per rank)."""
    c = _random_case(n=6)
    img, txt = c["image"], c["text"]
    nt, ni = torch.nn.functional.normalize(txt, dim=-1), torch.nn.functional.normalize(img, dim=-1)
    full = cmcl_loss(img, txt, 0.1)
    parts = []
    for rank in (0, 1):
        sl = slice(3 * rank, 3 * rank + 3)
        answers = iter([nt, ni, torch.ones(6, dtype=torch.float64)])  # call order: text, image, row mask

        def gather(x, sl=sl, answers=answers):
            out = next(answers).clone()
            out[sl] = x  # the local part keeps its graph
            return out

        parts.append(cmcl_loss(img[sl], txt[sl], 0.1, gather=gather, rank=rank))
    assert (0.5 * (parts[0] + parts[1])).item() == pytest.approx(full.item(), abs=1e-10)


def test_unimo2_variant_matches_a_loop_and_divides_by_all_rows():
    g = torch.Generator().manual_seed(1)
    img, txt = torch.randn(4, D, generator=g, dtype=torch.float64), torch.randn(4, D, generator=g, dtype=torch.float64)
    valid = torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    s = torch.nn.functional.normalize(img, dim=-1) @ torch.nn.functional.normalize(txt, dim=-1).T / 0.5
    ref = 0.0
    for i in range(4):
        row = -s[i, i] + torch.logsumexp(s[i], 0)
        col = -s[i, i] + torch.logsumexp(s[:, i], 0)
        ref += 0.5 * (row + col) * valid[i]
    assert unimo2_inbatch_loss(img, txt, 0.5, valid).item() == pytest.approx(ref.item() / 4, abs=1e-10)
    # quirk: without the text projection the text is not normalised
    raw = unimo2_inbatch_loss(img, 3 * txt, 0.5, normalize_text=False)
    assert raw.item() != pytest.approx(unimo2_inbatch_loss(img, 3 * txt, 0.5).item(), abs=1e-6)


def test_temperature_clamp():
    t = torch.nn.Parameter(torch.tensor([0.0001, 0.07, 3.0]))
    clamp_temperature_(t)
    assert t.tolist() == pytest.approx([0.001, 0.07, 0.5])


def test_masked_region_loss_counts_masked_regions_only():
    pred = torch.zeros(1, 3, 2, dtype=torch.float64)
    target = torch.tensor([[[1.0, 1.0], [2.0, 0.0], [100.0, 100.0]]], dtype=torch.float64)
    mask = torch.tensor([[True, True, False]])
    # region 0: (1+1)/2 = 1; region 1: (4+0)/2 = 2; mean over the 2 masked regions = 1.5
    assert masked_region_loss(pred, target, mask).item() == pytest.approx(1.5)
