"""Masking for UNIMO's unimodal objectives and its attention masks (card b, c), numpy/torch.

- `span_mask_tokens`: span masking to `ratio` of the maskable tokens, span lengths geometric(p)
  (SpanBERT-style, card b (a), recalled), each masked token replaced 80/10/10 (mask/random/keep).
- `region_boxes_grid`: the 5-d boxes [x1/W, y1/H, x2/W, y2/H, area/(W H)] of a patch grid (our
  substitute for detector regions, card i).
- `mask_regions`: 15% of the regions plus every region whose IoU with a masked one exceeds
  `overlap_ratio` (card b: `vl_mask_ratio 0.15`, `overlap_ratio 0.4`).
- `seq2seq_attention_mask`, `pair_attention_mask`: UniLM-style masks (True = may attend). No
  training path uses them yet: card b's seq2seq language task (b) is not built (a recorded
  deviation, config.py), and pairs are encoded with full attention directly (model.py). They are
  kept, with their tests (card h.7), for when that task is added.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

IGNORE_INDEX = -100


def span_mask_tokens(ids: np.ndarray, *, rng: np.random.Generator, mask_id: int, vocab_size: int, special_ids: Iterable[int],
                     ratio: float = 0.15, geometric_p: float = 0.2, max_span: int = 10, mask_prob: float = 0.8,
                     random_prob: float = 0.1, ignore_index: int = IGNORE_INDEX) -> tuple[np.ndarray, np.ndarray]:
    """One sequence (L,) -> (masked ids, labels). Spans are drawn until max(1, round(ratio * n)) of the
    n maskable (non-special) tokens are selected; the last span is cut to that budget. Labels hold the
    original id at selected positions and `ignore_index` elsewhere. A sequence without maskable
    tokens (e.g. an all-padding dummy) is returned unchanged with no label."""
    ids = np.asarray(ids, dtype=np.int64)
    maskable = ~np.isin(ids, np.asarray(list(special_ids), dtype=np.int64))
    positions = np.flatnonzero(maskable)
    selected = np.zeros(ids.shape, dtype=bool)
    if positions.size:
        budget = max(1, int(round(ratio * positions.size)))
        while selected.sum() < budget:
            length = min(int(rng.geometric(geometric_p)), max_span, budget - int(selected.sum()))
            start = int(rng.integers(positions.size))
            for pos in positions[start:start + length]:  # contiguous among maskable tokens
                selected[pos] = True
    action = rng.random(ids.shape)
    masked = ids.copy()
    masked[selected & (action < mask_prob)] = mask_id
    to_random = selected & (action >= mask_prob) & (action < mask_prob + random_prob)
    masked[to_random] = rng.integers(0, vocab_size, int(to_random.sum()))
    return masked, np.where(selected, ids, np.int64(ignore_index))


def region_boxes_grid(grid: int) -> np.ndarray:
    """(grid*grid, 5) boxes of a row-major patch grid, normalised to the image."""
    step = 1.0 / grid
    ys, xs = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    x1, y1 = xs.ravel() * step, ys.ravel() * step
    return np.stack([x1, y1, x1 + step, y1 + step, np.full(x1.shape, step * step)], 1).astype(np.float32)


def box_iou(boxes: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes (R, >=4) given as [x1, y1, x2, y2, ...]."""
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    area = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    iw = np.clip(np.minimum(x2[:, None], x2[None]) - np.maximum(x1[:, None], x1[None]), 0, None)
    ih = np.clip(np.minimum(y2[:, None], y2[None]) - np.maximum(y1[:, None], y1[None]), 0, None)
    inter = iw * ih
    union = area[:, None] + area[None] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def mask_regions(boxes: np.ndarray, rng: np.random.Generator, ratio: float = 0.15, overlap_ratio: float = 0.4) -> np.ndarray:
    """Bool (R,): max(1, round(ratio * R)) regions drawn without replacement, plus every region whose
    IoU with a drawn one is above `overlap_ratio` (so the masked content cannot leak from a near-copy)."""
    r = len(boxes)
    mask = np.zeros(r, dtype=bool)
    mask[rng.choice(r, size=min(r, max(1, int(round(ratio * r)))), replace=False)] = True
    iou = box_iou(boxes)
    return mask | (iou[mask] > overlap_ratio).any(0)


def seq2seq_attention_mask(n_src: int, n_tgt: int) -> torch.Tensor:
    """(n, n) bool, True = row may attend column: the source is bidirectional and never sees the
    target; target token t sees the whole source and targets <= t (left to right). Not used by any
    training path yet (the seq2seq task is not built)."""
    n = n_src + n_tgt
    allowed = torch.zeros(n, n, dtype=torch.bool)
    allowed[:, :n_src] = True
    allowed[n_src:, n_src:] = torch.ones(n_tgt, n_tgt, dtype=torch.bool).tril()
    return allowed


def pair_attention_mask(n_img: int, n_txt: int) -> torch.Tensor:
    """[IMG] v.. [CLS] w.. [SEP]: full bidirectional attention, so text sees the image tokens and back."""
    return torch.ones(n_img + n_txt, n_img + n_txt, dtype=torch.bool)
