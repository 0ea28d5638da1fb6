"""Image-text retrieval recall@k with several captions per image, in one chunked pass.

Scores are cosine similarities of L2-normalised features. Ties are broken by index order: in
an image's ranking of captions, caption j comes before caption j' (j < j') when their scores
are equal; in a caption's ranking of images, likewise by image index. So

    rank of caption j for image i = #{j': s_ij' > s_ij} + #{j' < j: s_ij' = s_ij}

(0-based) and similarly for images. The rule is deterministic and, up to float32 rounding, does
not depend on `chunk_size` (scores that are bitwise equal count as ties; another chunk size may
round a score differently in the matmul and so make or break a near-tie).

Algorithm (one pass over blocks of `chunk_size` images, the only O(N^2) work is the matmul):
- i2t: an image hits at k if its best caption (highest score, then lowest index) has rank < k.
  Its rank is read off the block row's top-(K+1) (K = max ks), falling back to counting over
  the full row when equal scores straddle the cut.
- t2i: a running top-(K+1) of image scores per caption (values and image indices) is merged
  block by block; the caption's own score is taken from the block holding its image. Captions
  whose score ties others across the cut are re-scored exactly in a final small pass.
Memory: the block (chunk_size, N_text) of float32 scores, plus N_text * (K+1) values and indices.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ._arrays import default_device, normalized_features, to_labels


def _rank_from_top(top_v, top_i, target_v, target_i, n_total, k_max):
    """0-based stable rank of each target, read off a (M, W) top-W list of its row, W = min(k_max + 1, n_total).

    Returns (rank, ambiguous). rank is exact where not ambiguous, and set to k_max when at least
    k_max entries score higher (a miss for every k <= k_max). The list is complete for a row when
    some stored score is below the target's (then every score >= the target's is stored) or when
    it holds the whole row. Otherwise, with fewer than k_max higher scores, at least two stored
    scores equal the target's and `topk` may have dropped further equal ones: those rows are
    ambiguous and the caller counts them exactly.
    """
    width = top_v.shape[1]
    greater = (top_v > target_v[:, None]).sum(dim=1)
    equal = top_v == target_v[:, None]
    ties_before = (equal & (top_i < target_i[:, None])).sum(dim=1)
    complete = (greater + equal.sum(dim=1) < width) | (width >= n_total)
    miss = greater >= k_max
    rank = torch.where(miss, torch.full_like(greater, k_max), greater + ties_before)
    return rank, ~complete & ~miss


def _exact_rank(scores, target_v, target_i, positions):
    """Stable rank by counting over full rows: scores (M, N), positions (N,) the index of each column."""
    before = (scores > target_v[:, None]) | ((scores == target_v[:, None]) & (positions[None, :] < target_i[:, None]))
    return before.sum(dim=1)


@torch.no_grad()
def retrieval_recall(
    image_feats: Any,
    text_feats: Any,
    text_to_image: Any,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 256,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Recall@k both ways: {"i2t_r{k}", "t2i_r{k}"} as fractions in [0, 1].

    `text_to_image[j]` is the index of caption j's image (any number of captions per image).
    i2t_r{k}: fraction of images with at least one of their captions among their k best-scored
    captions; images without any caption are left out of this average. t2i_r{k}: fraction of
    captions whose image is among their k best-scored images. Ties: see the module docstring.
    Non-finite (NaN/inf) features raise ValueError.
    """
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError("ks must be positive integers")
    device = torch.device(device) if device is not None else default_device(image_feats)
    img = normalized_features(image_feats, device, "image_feats")
    txt = normalized_features(text_feats, device, "text_feats")
    owner = to_labels(text_to_image, "text_to_image").astype(np.int64)
    n_img, n_txt = len(img), len(txt)
    if len(owner) != n_txt:
        raise ValueError(f"{n_txt} captions but {len(owner)} entries in text_to_image")
    if n_txt and (owner.min() < 0 or owner.max() >= n_img):
        raise ValueError(f"text_to_image must lie in [0, {n_img})")
    if n_img == 0 or n_txt == 0:
        raise ValueError("need at least one image and one caption")

    # Captions grouped by image: those of images [a, b) are by_image[starts[a]:starts[b]].
    by_image = np.argsort(owner, kind="stable")
    starts = np.searchsorted(owner[by_image], np.arange(n_img + 1))
    has_caption = torch.from_numpy(np.diff(starts) > 0).to(device)
    owner_t = torch.from_numpy(owner).to(device)
    txt_pos = torch.arange(n_txt, device=device)

    k_max = ks[-1]
    w_i2t, w_t2i = min(k_max + 1, n_txt), min(k_max + 1, n_img)  # one extra entry tells ties from cut-offs
    i2t_rank = torch.full((n_img,), n_txt, dtype=torch.int64, device=device)  # images without captions: never hit
    run_v = torch.full((n_txt, w_t2i), float("-inf"), device=device)  # running top-K image scores per caption
    run_i = torch.full((n_txt, w_t2i), -1, dtype=torch.int64, device=device)
    own_score = torch.empty(n_txt, device=device)  # s(caption j, its image)

    for a in range(0, n_img, chunk_size):
        b = min(a + chunk_size, n_img)
        s = img[a:b] @ txt.T  # (c, n_txt)

        # Own scores s(j, image of j) of this block's captions, for both directions.
        cols = torch.from_numpy(by_image[starts[a] : starts[b]]).to(device)
        rel = owner_t[cols] - a  # row of each caption's image in the block
        sc = s[rel, cols]
        own_score[cols] = sc

        # i2t: each image's best caption (highest score, then lowest index) and its rank.
        best_v = torch.full((b - a,), float("-inf"), device=device).scatter_reduce(0, rel, sc, "amax")
        is_best = sc == best_v[rel]
        best_j = torch.full((b - a,), n_txt, device=device).scatter_reduce(0, rel[is_best], cols[is_best], "amin")
        top_v, top_j = s.topk(w_i2t, dim=1)
        rank, amb = _rank_from_top(top_v, top_j, best_v, best_j, n_txt, k_max)
        amb &= has_caption[a:b]
        if amb.any():
            rows = amb.nonzero().squeeze(1)
            rank[rows] = _exact_rank(s[rows], best_v[rows], best_j[rows], txt_pos)
        i2t_rank[a:b] = torch.where(has_caption[a:b], rank, i2t_rank[a:b])

        # t2i: every caption merges this block into its running top-K.
        kk = min(w_t2i, b - a)
        blk_v, blk_i = s.topk(kk, dim=0)  # (kk, n_txt)
        cat_v = torch.cat([run_v, blk_v.T], dim=1)
        cat_i = torch.cat([run_i, blk_i.T + a], dim=1)
        run_v, pos = cat_v.topk(w_t2i, dim=1)
        run_i = cat_i.gather(1, pos)
        del s, blk_v, blk_i, cat_v, cat_i

    t2i_rank, amb = _rank_from_top(run_v, run_i, own_score, owner_t, n_img, k_max)
    amb_cols = amb.nonzero().squeeze(1)
    img_pos = torch.arange(n_img, device=device)
    for a in range(0, len(amb_cols), chunk_size):  # exact re-scoring of captions tied across the cut
        cols = amb_cols[a : a + chunk_size]
        s = (img @ txt[cols].T).T  # (m, n_img), one matmul so tied scores are computed alike
        target = owner_t[cols]
        t2i_rank[cols] = _exact_rank(s, s.gather(1, target[:, None]).squeeze(1), target, img_pos)

    i2t_rank = i2t_rank[has_caption].cpu().numpy()
    t2i_rank = t2i_rank.cpu().numpy()
    out = {}
    for k in ks:
        out[f"i2t_r{k}"] = float(np.mean(i2t_rank < k)) if len(i2t_rank) else float("nan")
    for k in ks:
        out[f"t2i_r{k}"] = float(np.mean(t2i_rank < k))
    return out
