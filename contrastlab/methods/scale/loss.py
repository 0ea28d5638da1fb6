"""SCALE's losses as pure functions of tensors (method card `scale.md`, section b).

Modalities are ordered M = [text, image, table, video, audio] (the official order of the pooled
features `U`). Everything here runs in fp32 (card i: the graph and its softmax in fp32).

Modality graph, per sample b, from the M pooled vectors u_m[b]:
    S_b[m, n] = cos(u_m[b], u_n[b])                 (cos = 0 when a vector is all-zero)
    R_b       = S_b * softmax_row(S_b)              (element-wise)
    G_b       = R_b / ||R_b||_row                   (unit-L2 rows; generally not symmetric)

Pair contrastive term (i < j), SimCLR NT-Xent over the 2B views Z = normalize(cat[u_i, u_j]):
    logits_a = [Z_a . Z_partner(a), Z_a . Z_c for c != a, partner(a)] / tau     (positive in column 0)
    L_ij     = mean_a CE(w_a * logits_a, 0),  w_a = G_{a mod B}[i, j]
    L_CLR    = mean over the 10 pairs of L_ij

Masked tasks, per-sample weight omega_b[m] = G'_b[m, m] (G' from the fused first tokens):
    CE(omega * logits, labels)                     ignore index -1, mean over labelled positions
    sum_{masked, dims} (omega * pred - target)^2 / max(#masked * dims, 1)

Missing modalities (`present`, (B, M) bool): None = the official handling (missing inputs are zeros
and take part like any other). Given, the deviation "masked": a missing modality's entries of S are
dropped from the softmax, its row and column of G are 0, and a pair term skips samples missing
either modality; the missing modality then contributes no loss and no gradient.
"""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

MODALITIES = ("text", "image", "table", "video", "audio")
PAIRS = tuple(itertools.combinations(range(len(MODALITIES)), 2))  # the 10 (i, j), i < j
IGNORE_INDEX = -1
COS_EPS = 1e-8  # F.cosine_similarity's eps, as in the official code
_NEG = -1e9  # softmax fill for absent modalities (finite, so an all-absent row stays NaN-free)


def _fp32(x: torch.Tensor) -> torch.Tensor:
    """At least fp32 (half/bfloat16 are promoted; float64 stays float64, for exact checks)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def cosine_matrix(u: torch.Tensor, eps: float = COS_EPS) -> torch.Tensor:
    """u: (M, B, D) -> S: (B, M, M) with S_b[m, n] = u_m[b].u_n[b] / (max(|u_m[b]|, eps) max(|u_n[b]|, eps))."""
    u = _fp32(u).transpose(0, 1)  # (B, M, D)
    un = u / u.norm(dim=-1, keepdim=True).clamp_min(eps)
    return un @ un.transpose(1, 2)


def modality_graph(u: torch.Tensor, present: torch.Tensor | None = None, detach: bool = False) -> torch.Tensor:
    """G: (B, M, M) from the pooled features u (M, B, D); see the module docstring.

    `present` (B, M) bool masks absent modalities (deviation, see the module docstring).
    `detach` stops the gradient through the graph (the card's sanctioned ablation)."""
    s = cosine_matrix(u.detach() if detach else u)
    if present is None:
        r = s * torch.softmax(s, dim=-1)
    else:
        p = present.bool()
        both = p[:, :, None] & p[:, None, :]
        s = torch.where(both, s, torch.zeros_like(s))
        soft = torch.softmax(s.masked_fill(~p[:, None, :], _NEG), dim=-1)
        r = s * soft
    return F.normalize(r, dim=-1)  # eps 1e-12: an all-zero row stays 0


def pair_logits(zi: torch.Tensor, zj: torch.Tensor, tau: float) -> torch.Tensor:
    """(2B, 2B-1) NT-Xent logits of the views cat[zi, zj] (L2-normalised here), positive in column 0."""
    z = F.normalize(_fp32(torch.cat([zi, zj])), dim=-1)
    n = z.shape[0]
    b = n // 2
    sim = z @ z.T / tau
    rows = torch.arange(n, device=z.device)
    partner = (rows + b) % n
    positive = sim[rows, partner]
    keep = torch.ones(n, n, dtype=torch.bool, device=z.device)
    keep[rows, rows] = False
    keep[rows, partner] = False
    negatives = sim[keep].view(n, n - 2)
    return torch.cat([positive[:, None], negatives], dim=1)


def weighted_nt_xent(zi: torch.Tensor, zj: torch.Tensor, w: torch.Tensor | None, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """mean_a CE(w_a logits_a, 0) over the 2B views, w (B,) per sample (None = 1). Returns (loss, accuracy)."""
    logits = pair_logits(zi, zj, tau)
    if w is not None:
        logits = logits * _fp32(torch.cat([w, w])).to(logits.dtype)[:, None]
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    loss = F.cross_entropy(logits, target)
    acc = (logits.detach().argmax(dim=1) == 0).float().mean()
    return loss, acc


def clr_loss(u: torch.Tensor, graph: torch.Tensor | None, tau: float, present: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L_CLR = mean over the 10 pairs (i < j) of weighted NT-Xent with w_b = G_b[i, j].

    u: (M, B, D) pooled features; graph: (B, M, M) or None (weighting off, w = 1).
    With `present`, a pair uses only the samples holding both modalities and pairs with fewer than
    two such samples are left out of the mean. Returns (loss, {"acc_i_j": accuracy per pair})."""
    terms, stats = [], {}
    for i, j in PAIRS:
        ui, uj = u[i], u[j]
        w = graph[:, i, j] if graph is not None else None
        if present is not None:
            keep = present[:, i].bool() & present[:, j].bool()
            if int(keep.sum()) < 2:
                continue
            ui, uj = ui[keep], uj[keep]
            w = w[keep] if w is not None else None
        loss, acc = weighted_nt_xent(ui, uj, w, tau)
        terms.append(loss)
        stats[f"acc_{MODALITIES[i]}_{MODALITIES[j]}"] = acc
    if not terms:
        return u.sum() * 0.0, stats
    return torch.stack(terms).mean(), stats


def _per_position(omega: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Broadcast a per-sample weight (B,) to a label shape (B, ...); a full-shape weight passes through."""
    omega = _fp32(omega)
    if omega.shape == shape:
        return omega
    return omega.view(-1, *([1] * (len(shape) - 1))).expand(shape)


def weighted_masked_ce(logits: torch.Tensor, labels: torch.Tensor, omega: torch.Tensor | None) -> torch.Tensor:
    """CE(omega_b * logits, labels), ignore index -1, mean over labelled positions (0 when none).

    logits (B, L, V) with labels (B, L), or the labelled rows only: logits (N, V), labels (N,);
    omega: per sample (B,), per position (labels' shape), or None (= 1)."""
    if omega is not None:
        logits = logits * _per_position(omega, labels.shape)[..., None]
    labels = labels.long()
    if not bool((labels != IGNORE_INDEX).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(_fp32(logits).reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX)


def weighted_masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, omega: torch.Tensor | None) -> torch.Tensor:
    """sum over masked positions and dims of (omega_b pred - target)^2 / max(#masked * dims, 1).

    pred, target (B, L, D), mask (B, L) bool (the masked positions), omega (B,) or None (= 1)."""
    if omega is not None:
        pred = pred * _fp32(omega)[:, None, None]
    m = mask.to(_fp32(pred).dtype)[:, :, None]
    sq = ((_fp32(pred) - _fp32(target)) ** 2) * m
    count = m.sum() * pred.shape[-1]
    return sq.sum() / count.clamp_min(1.0)


def self_weights(graph: torch.Tensor) -> torch.Tensor:
    """omega (B, M) = the diagonal of G' (B, M, M)."""
    return torch.diagonal(graph, dim1=1, dim2=2)


def mean_off_diagonal(graph: torch.Tensor) -> torch.Tensor:
    """Mean of the off-diagonal entries of G (B, M, M): the collapse monitor of card i."""
    m = graph.shape[-1]
    off = ~torch.eye(m, dtype=torch.bool, device=graph.device)
    return graph[:, off].mean()
