"""UNIMO masks (card h.7-8): seq2seq/pair attention, span masking, region masking with overlap."""
import numpy as np
import torch

from contrastlab.methods.unimo.masking import (IGNORE_INDEX, box_iou, mask_regions, pair_attention_mask, region_boxes_grid,
                                              seq2seq_attention_mask, span_mask_tokens)

torch.set_num_threads(1)


def test_seq2seq_mask_targets_see_no_future_and_source_never_sees_target():
    m = seq2seq_attention_mask(3, 4)
    assert m[:3, :3].all() and not m[:3, 3:].any()  # source bidirectional, blind to the target
    tgt = m[3:, 3:]
    assert torch.equal(tgt, torch.ones(4, 4, dtype=torch.bool).tril())  # no future targets, itself allowed
    assert m[3:, :3].all()  # targets see the whole source


def test_pair_mask_text_sees_image():
    m = pair_attention_mask(5, 7)
    assert m[5:, :5].all() and m[:5, 5:].all()


def test_region_masking_adds_overlapping_regions():
    boxes = np.array([[0, 0, 1, 1, 1], [0, 0, 0.9, 1, 0.9], [0.5, 0.5, 1, 1, 0.25], [0, 0, 0.3, 0.3, 0.09]], np.float32)
    iou = box_iou(boxes)
    assert iou[0, 1] > 0.4 and iou[0, 3] < 0.4
    for seed in range(20):
        m = mask_regions(boxes, np.random.default_rng(seed), ratio=0.25, overlap_ratio=0.4)  # draws exactly 1
        assert 1 <= m.sum() <= 2
        if m[0] or m[1]:
            assert m[0] and m[1] and not m[2] and not m[3]  # 0 and 1 overlap above 0.4: one drawn masks both
        else:
            assert m.sum() == 1
    grid = region_boxes_grid(4)
    m = mask_regions(grid, np.random.default_rng(0), 0.15, 0.4)
    assert m.sum() == 2  # non-overlapping patch grid: round(0.15 * 16) = 2, nothing added


def test_span_masking_budget_and_labels():
    ids = np.array([49407, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 49408, 0, 0])
    for seed in range(20):
        masked, labels = span_mask_tokens(ids, rng=np.random.default_rng(seed), mask_id=49406, vocab_size=49409,
                                          special_ids=(0, 49407, 49408), ratio=0.3)
        sel = labels != IGNORE_INDEX
        assert sel.sum() == 3  # round(0.3 * 10)
        assert not sel[[0, 11, 12, 13]].any()
        assert (labels[sel] == ids[sel]).all() and (masked[~sel] == ids[~sel]).all()
    dummy = np.zeros(8, np.int64)
    masked, labels = span_mask_tokens(dummy, rng=np.random.default_rng(0), mask_id=1, vocab_size=5, special_ids=(0,))
    assert (labels == IGNORE_INDEX).all() and (masked == 0).all()
