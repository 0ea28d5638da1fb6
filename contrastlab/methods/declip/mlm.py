"""BERT-style token masking for DeCLIP's MLM term (card b "MLM"), in numpy for Ray Data CPU workers.

Each non-special token is selected independently with probability `select_prob` (15%). A selected
token becomes `mask_id` with probability `mask_prob` (80%), a random id drawn uniformly from
[0, vocab_size) with probability `random_prob` (10%), and stays unchanged otherwise (10%).
Labels hold the original id at selected positions and `ignore_index` (-100) elsewhere.
Special tokens (pad, SOT, EOT) are never selected.

The card's random ids come from the whole vocabulary [0, vocab), which includes pad/SOT/EOT/mask.
A random EOT before the real one would move the argmax-EOT pooling position (about 6e-7 per
token); `random_excludes_special=True` draws random ids outside `special_ids` instead (a deviation,
off by default).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

IGNORE_INDEX = -100


def mask_tokens(
    ids: np.ndarray,
    *,
    rng: np.random.Generator,
    mask_id: int,
    vocab_size: int,
    special_ids: Iterable[int],
    select_prob: float = 0.15,
    mask_prob: float = 0.8,
    random_prob: float = 0.1,
    ignore_index: int = IGNORE_INDEX,
    random_excludes_special: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Return `(masked_ids, labels)`, both int64 with the shape of `ids` (any shape, e.g. (N, 77))."""
    if not (0.0 <= select_prob <= 1.0 and mask_prob >= 0 and random_prob >= 0 and mask_prob + random_prob <= 1.0):
        raise ValueError(f"bad MLM probabilities: select={select_prob}, mask={mask_prob}, random={random_prob}")
    ids = np.asarray(ids, dtype=np.int64)
    special = np.asarray(sorted(set(int(s) for s in special_ids)), dtype=np.int64)
    selected = (rng.random(ids.shape) < select_prob) & ~np.isin(ids, special)
    action = rng.random(ids.shape)
    to_mask = selected & (action < mask_prob)
    to_random = selected & (action >= mask_prob) & (action < mask_prob + random_prob)

    masked = ids.copy()
    masked[to_mask] = mask_id
    n_random = int(to_random.sum())
    if n_random:
        if random_excludes_special:
            allowed = np.setdiff1d(np.arange(vocab_size, dtype=np.int64), special)
            masked[to_random] = allowed[rng.integers(0, allowed.size, n_random)]
        else:
            masked[to_random] = rng.integers(0, vocab_size, n_random)
    labels = np.where(selected, ids, np.int64(ignore_index))
    return masked, labels
