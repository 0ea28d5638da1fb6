"""UNIMO's losses as pure functions of tensors (card `unimo.md`, section b).

CMCL (the paper's formula; the pretraining code was never released, so every choice here is a
reconstruction [R], named by a config option in `config.py`). For anchor pair i = (V_i, W_i):

    L_i    = -log( sum_{(V,W) in P_i} exp(d(V,W)/tau) / sum_{(V,W) in P_i u N_i} exp(d(V,W)/tau) )
    L_CMCL = mean over valid anchors i of L_i

    P_i: (V_i, W_i), paraphrases (V_i, W_i^bt_k), retrieved texts (V_i, W_i^ret_m),
         retrieved images (V_i^ret_m, W_i)
    N_i: rewritten captions (V_i, W_i^neg_k), and with `in_batch` also (V_i, W_j), (V_j, W_i), j != i
    d:   cosine similarity [R] (UNIMO-2 code), so every embedding is L2-normalised here.

Padded candidates carry mask False and contribute nothing (their logits become -inf before the
log-sum-exp, whatever garbage they hold). The log-sum-exp runs in fp32.

UNIMO-2's released in-batch variant (`unimo2_inbatch_loss`) is kept as an alternative.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

Gather = Callable[[torch.Tensor], torch.Tensor]


def identity_gather(x: torch.Tensor) -> torch.Tensor:
    return x


def _fp32(x: torch.Tensor) -> torch.Tensor:
    """At least fp32 (half/bf16 -> fp32, fp64 stays fp64 for reference checks)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def multi_positive_infonce(pos_logits: torch.Tensor, pos_mask: torch.Tensor, neg_logits: torch.Tensor, neg_mask: torch.Tensor,
                           row_mask: torch.Tensor | None = None) -> torch.Tensor:
    """L = mean_i [ logsumexp_{valid pos u neg} s - logsumexp_{valid pos} s ].

    pos_logits/pos_mask: (N, P); neg_logits/neg_mask: (N, Q) (Q may be 0); logits are already d/tau.
    Rows without any valid positive, or with `row_mask` False, are left out of the mean. Returns 0
    (with a graph) when no row is valid.
    """
    pos = _fp32(pos_logits).masked_fill(~pos_mask.bool(), float("-inf"))
    neg = _fp32(neg_logits).masked_fill(~neg_mask.bool(), float("-inf"))
    log_num = torch.logsumexp(pos, dim=1)
    log_den = torch.logsumexp(torch.cat([pos, neg], dim=1), dim=1)
    valid = pos_mask.bool().any(dim=1)
    if row_mask is not None:
        valid = valid & row_mask.bool()
    per_row = torch.where(valid, log_den - log_num, torch.zeros_like(log_den))
    return per_row.sum() / valid.sum().clamp(min=1)


def _cos_rows(anchor: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
    """anchor (N, D), cands (N, K, D) -> (N, K) cosine similarities (both normalised here)."""
    return torch.einsum("nd,nkd->nk", F.normalize(_fp32(anchor), dim=-1), F.normalize(_fp32(cands), dim=-1))


def cmcl_logits(
    image: torch.Tensor,
    text: torch.Tensor,
    temperature: torch.Tensor | float,
    *,
    pos_text: torch.Tensor | None = None,
    pos_text_mask: torch.Tensor | None = None,
    pos_image: torch.Tensor | None = None,
    pos_image_mask: torch.Tensor | None = None,
    neg_text: torch.Tensor | None = None,
    neg_text_mask: torch.Tensor | None = None,
    in_batch: bool = True,
    row_mask: torch.Tensor | None = None,
    gather: Gather = identity_gather,
    rank: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-anchor candidate logits d/tau and masks: (pos_logits, pos_mask, neg_logits, neg_mask).

    image, text: (N, D) local anchors (V_i, W_i). pos_text (N, Kt, D): paraphrases and retrieved
    texts, scored against V_i. pos_image (N, Ki, D): retrieved images, scored against W_i.
    neg_text (N, Kn, D): rewrites, scored against V_i. In-batch negatives use the gathered anchors
    (gather with gradient), excluding the anchor's own column and columns whose `row_mask` is False
    (rows that are not image-text pairs). Per-anchor candidate lists stay local (card i).
    """
    n, dev = image.shape[0], image.device
    img, txt = F.normalize(_fp32(image), dim=-1), F.normalize(_fp32(text), dim=-1)
    row_mask = torch.ones(n, dtype=torch.bool, device=dev) if row_mask is None else row_mask.bool()
    pos = [(img * txt).sum(-1, keepdim=True)]
    pos_m = [torch.ones(n, 1, dtype=torch.bool, device=dev)]
    if pos_text is not None and pos_text.shape[1]:
        pos.append(_cos_rows(img, pos_text))
        pos_m.append(pos_text_mask.bool())
    if pos_image is not None and pos_image.shape[1]:
        pos.append(_cos_rows(txt, pos_image))
        pos_m.append(pos_image_mask.bool())
    neg, neg_m = [img.new_zeros(n, 0)], [torch.zeros(n, 0, dtype=torch.bool, device=dev)]
    if neg_text is not None and neg_text.shape[1]:
        neg.append(_cos_rows(img, neg_text))
        neg_m.append(neg_text_mask.bool())
    if in_batch:
        all_txt, all_img = gather(txt), gather(img)
        cols = gather(row_mask.to(img.dtype)).bool()
        own = torch.zeros(n, all_txt.shape[0], dtype=torch.bool, device=dev)
        own[torch.arange(n, device=dev), torch.arange(n, device=dev) + rank * n] = True
        col_ok = cols[None, :] & ~own
        neg += [img @ all_txt.T, txt @ all_img.T]  # (V_i, W_j) and (V_j, W_i)
        neg_m += [col_ok, col_ok]
    inv_t = 1.0 / temperature
    return torch.cat(pos, 1) * inv_t, torch.cat(pos_m, 1), torch.cat(neg, 1) * inv_t, torch.cat(neg_m, 1)


def cmcl_loss(image: torch.Tensor, text: torch.Tensor, temperature: torch.Tensor | float, *, row_mask: torch.Tensor | None = None,
              **candidates) -> torch.Tensor:
    """L_CMCL = mean over valid anchors of the multi-positive InfoNCE (see module docstring).

    With no extra candidates and `in_batch=True`, each anchor is a one-directional InfoNCE over
    1 positive and 2(N-1) negatives; identical embeddings give log(2N - 1).
    """
    pl, pm, nl, nm = cmcl_logits(image, text, temperature, row_mask=row_mask, **candidates)
    return multi_positive_infonce(pl, pm, nl, nm, row_mask)


def unimo2_inbatch_loss(image: torch.Tensor, text: torch.Tensor, temperature: torch.Tensor | float, valid: torch.Tensor | None = None,
                        normalize_text: bool = True) -> torch.Tensor:
    """UNIMO-2's released variant: 1/2 [CE_row(S) + CE_col(S)] per row, S = cos/tau (B x B), times
    the per-row validity mask, then the mean over ALL B rows (masked rows count as 0; not divided by
    the valid count). Quirk kept: the text is L2-normalised only when its projection is on
    (`normalize_text`); the image always is."""
    img = F.normalize(_fp32(image), dim=-1)
    txt = F.normalize(_fp32(text), dim=-1) if normalize_text else _fp32(text)
    s = img @ txt.T / temperature
    labels = torch.arange(s.shape[0], device=s.device)
    per_row = 0.5 * (F.cross_entropy(s, labels, reduction="none") + F.cross_entropy(s.T, labels, reduction="none"))
    if valid is not None:
        per_row = per_row * valid.to(per_row.dtype)
    return per_row.mean()


def masked_region_loss(pred: torch.Tensor, target: torch.Tensor, region_mask: torch.Tensor) -> torch.Tensor:
    """Feature regression of masked regions: mean over masked regions of the per-region mean squared
    error ||pred - target||^2 / dim (card b "visual learning", L2 to the region target).
    pred/target (N, R, F), region_mask (N, R); unmasked regions do not count. 0 when none is masked."""
    m = region_mask.bool()
    err = ((_fp32(pred) - _fp32(target)) ** 2).mean(-1)
    return (err * m).sum() / m.sum().clamp(min=1)


def mlm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """CE over the selected (masked) tokens only; 0 when none is selected."""
    if targets.numel() == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(_fp32(logits), targets)


def clamp_temperature_(temperature: torch.nn.Parameter, low: float = 0.001, high: float = 0.5) -> None:
    """In place: tau <- clip(tau, low, high) (card b: learnable tau, init 0.07, clipped to [0.001, 0.5])."""
    with torch.no_grad():
        temperature.clamp_(low, high)
