"""The four cross-channel-prediction view constructions: band partitions G1, G2 (card cvp.md §b).

[R] The paper names "four cross-channel-prediction augmentations" without defining them; this is
the card's concrete reading. Every scheme returns two disjoint sorted index arrays covering 0..b-1.
"""
from __future__ import annotations

import numpy as np

SCHEMES = ("halves", "interleave", "blocks4", "random")


def split_bands(n_bands: int, scheme: str = "halves", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(G1, G2) for `n_bands` bands.

    halves:     G1 = first floor(b/2) bands, G2 = the rest
    interleave: G1 = even indices, G2 = odd indices (6 bands -> {0,2,4}, {1,3,5})
    blocks4:    bands cut into 4 contiguous blocks (np.array_split sizes); G1 = blocks 1,3, G2 = blocks 2,4
    random:     a seeded random half/half partition (floor(b/2) in G1), fixed for the run
    """
    if n_bands < 2:
        raise ValueError(f"need at least 2 bands to split, got {n_bands}")
    idx = np.arange(n_bands)
    if scheme == "halves":
        g1 = idx[: n_bands // 2]
    elif scheme == "interleave":
        g1 = idx[0::2]
    elif scheme == "blocks4":
        if n_bands < 4:
            raise ValueError(f"blocks4 needs at least 4 bands, got {n_bands}")
        blocks = np.array_split(idx, 4)
        g1 = np.concatenate([blocks[0], blocks[2]])
    elif scheme == "random":
        g1 = np.sort(np.random.default_rng(seed).permutation(n_bands)[: n_bands // 2])
    else:
        raise ValueError(f"unknown band split scheme {scheme!r}: use one of {', '.join(SCHEMES)}")
    g2 = np.setdiff1d(idx, g1)
    return g1.astype(np.int64), g2.astype(np.int64)
