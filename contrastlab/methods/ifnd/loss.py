"""IFND losses: InfoNCE / NT-Xent with false-negative elimination or attraction (card b).

Pure functions of tensors. Pseudo-labels come as label vectors, never as stored masks:
`labels` (M, n) int64 cluster ids for M hierarchy levels and `accepted` (M, n) bool flags.
A candidate j is a false negative (FN) of anchor i at level m iff

    accepted[m, i] and accepted[m, j] and labels[m, i] == labels[m, j]

and j is neither the anchor itself nor its positive. The (rows x candidates) FN mask is built
on the fly per level (B x K booleans) and dropped after use.

Per anchor i with positive p, candidate logits s_ij = <q_i, n_j> / tau and FN set F_i^m:

- elimination ("elim"):  l_i = -log( e^{s_ip} / (e^{s_ip} + sum_{j not in F_i^m} e^{s_ij}) )
  (FN logits are set to -inf; the positive is never masked, so a row never loses it)
- attraction ("attr"):   l_i = -1/(1+|F_i^m|) * sum_{p' in {p} u F_i^m} log( e^{s_ip'} / sum_all e^{s_ij} )
  (FN stay in the denominator and are pulled as extra positives, SupCon style)

L = (1/M) sum_m mean_i l_i^m   [R: average over hierarchy levels, as PCL does].
With nothing accepted (no FN anywhere) L is the plain InfoNCE / NT-Xent value bit for bit: the
same cross-entropy computation the base method (no labels) runs, not a level average of it.
All maths in fp32.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

STRATEGIES = ("elim", "attr")
Gather = Callable[[torch.Tensor], torch.Tensor]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _as_levels(labels: torch.Tensor | None, accepted: torch.Tensor | None, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalise label inputs to (M, n) int64 / bool. None means one level with nothing accepted."""
    if labels is None:
        return (torch.full((1, n), -1, dtype=torch.long, device=device), torch.zeros((1, n), dtype=torch.bool, device=device))
    if labels.dim() == 1:
        labels = labels.unsqueeze(0)
    if accepted is None:
        raise ValueError("accepted flags are required when labels are given")
    if accepted.dim() == 1:
        accepted = accepted.unsqueeze(0)
    if labels.shape != accepted.shape or labels.shape[1] != n:
        raise ValueError(f"labels {tuple(labels.shape)} and accepted {tuple(accepted.shape)} must both be (M, {n})")
    return labels.to(device=device, dtype=torch.long), accepted.to(device=device, dtype=torch.bool)


def _select_plain_if_no_fn(masks: list[torch.Tensor], per_level: list[torch.Tensor], plain: torch.Tensor) -> torch.Tensor:
    """Mean over levels, or exactly the plain loss when no level has a single FN.

    Averaging M equal level losses, or the attraction formula with |F| = 0, can differ from the
    plain loss in the last bit; the base method must be reproduced exactly (card b: acceptance 0
    equals plain InfoNCE), so the no-FN case returns the plain value itself. torch.where keeps
    this free of a host sync, and routes the gradient only through the selected branch.
    """
    any_fn = torch.stack([fn.any() for fn in masks]).any()
    return torch.where(any_fn, torch.stack(per_level).mean(), plain)


def lookup_labels(indices: torch.Tensor, labels_table: torch.Tensor, accepted_table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pseudo-labels and flags of the samples with dataset ids `indices` (n,) from the current tables.

    `labels_table` (M, N) int64 and `accepted_table` (M, N) bool are indexed by dataset index.
    Negative indices (empty queue slots) come back as label -1, not accepted, so they are never FN.
    Returns (labels (M, n), accepted (M, n)) on the tables' device.
    """
    if labels_table.dim() == 1:
        labels_table, accepted_table = labels_table.unsqueeze(0), accepted_table.unsqueeze(0)
    idx = indices.to(device=labels_table.device, dtype=torch.long)
    valid = idx >= 0
    safe = idx.clamp(min=0)
    labels = torch.where(valid, labels_table[:, safe], torch.full_like(labels_table[:, safe], -1))
    accepted = accepted_table[:, safe] & valid
    return labels, accepted


def false_negative_mask(
    anchor_labels: torch.Tensor, anchor_accepted: torch.Tensor, cand_labels: torch.Tensor, cand_accepted: torch.Tensor
) -> torch.Tensor:
    """(n_anchor, n_cand) bool: both accepted and same label (one hierarchy level).

    Excluding the anchor itself and its positive is the caller's job (they depend on layout).
    """
    same = anchor_labels[:, None] == cand_labels[None, :]
    return same & anchor_accepted[:, None] & cand_accepted[None, :]


def contrastive_with_false_negatives(
    logits: torch.Tensor, positive: torch.Tensor, fn_mask: torch.Tensor, strategy: str = "elim", invalid: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-row loss (n,) for one level, given full candidate logits (n, C) already divided by tau.

    `positive` (n,) column of each row's positive; `fn_mask` (n, C) FN columns (must not contain
    the positive or an invalid column); `invalid` (n, C) columns that are not candidates at all
    (e.g. the anchor itself in NT-Xent), removed from every denominator.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    logits = logits.float()
    if invalid is not None:
        logits = logits.masked_fill(invalid, float("-inf"))
    rows = torch.arange(logits.shape[0], device=logits.device)
    if strategy == "elim":
        # FN removed from the denominator exactly; masked_fill also stops their gradient.
        return F.cross_entropy(logits.masked_fill(fn_mask, float("-inf")), positive, reduction="none")
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    fn = fn_mask.to(log_prob.dtype)
    # where() instead of multiply so -inf log-probs of invalid columns never meet a zero weight.
    fn_sum = torch.where(fn_mask, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
    return -(log_prob[rows, positive] + fn_sum) / (1.0 + fn.sum(dim=1))


def ifnd_queue_loss(
    q: torch.Tensor,
    k_pos: torch.Tensor,
    queue: torch.Tensor,
    anchor_labels: torch.Tensor | None = None,
    anchor_accepted: torch.Tensor | None = None,
    queue_labels: torch.Tensor | None = None,
    queue_accepted: torch.Tensor | None = None,
    strategy: str = "elim",
    temperature: float = 0.2,
) -> torch.Tensor:
    """MoCo-style IFND loss (card b), mean over anchors and levels.

    q (B, D) normalised queries (gradient flows), k_pos (B, D) normalised keys of the other view,
    queue (K, D) normalised negatives; keys and queue are detached here. anchor_labels/accepted
    (M, B) are the pseudo-labels of the batch's images; queue_labels/accepted (M, K) those of the
    queue entries, looked up by their stored dataset index (`lookup_labels`) so they are always the
    newest clustering. The positive sits in column 0 of the (B, 1+K) logits and is never masked.
    With all labels None (or nothing accepted) this is plain InfoNCE.
    """
    q = q.float()
    k_pos, queue = k_pos.detach().float(), queue.detach().float()
    b, k = q.shape[0], queue.shape[0]
    a_lab, a_acc = _as_levels(anchor_labels, anchor_accepted, b, q.device)
    q_lab, q_acc = _as_levels(queue_labels, queue_accepted, k, q.device)
    if a_lab.shape[0] != q_lab.shape[0]:
        raise ValueError(f"anchor has {a_lab.shape[0]} levels, queue has {q_lab.shape[0]}")
    pos = (q * k_pos).sum(dim=1, keepdim=True)
    logits = torch.cat([pos, q @ queue.T], dim=1) / temperature
    target = torch.zeros(b, dtype=torch.long, device=q.device)
    no_fn_col = torch.zeros((b, 1), dtype=torch.bool, device=q.device)
    plain = contrastive_with_false_negatives(logits, target, torch.zeros_like(logits, dtype=torch.bool), "elim").mean()
    per_level, masks = [], []
    for m in range(a_lab.shape[0]):
        fn = torch.cat([no_fn_col, false_negative_mask(a_lab[m], a_acc[m], q_lab[m], q_acc[m])], dim=1)
        masks.append(fn)
        per_level.append(contrastive_with_false_negatives(logits, target, fn, strategy).mean())
    return _select_plain_if_no_fn(masks, per_level, plain)


def ifnd_inbatch_loss(
    z: torch.Tensor,
    labels: torch.Tensor | None = None,
    accepted: torch.Tensor | None = None,
    strategy: str = "elim",
    temperature: float = 0.2,
    gather: Gather = _identity,
    gather_labels: Gather | None = None,
    rank: int = 0,
) -> torch.Tensor:
    """SimCLR/NT-Xent IFND loss (card b, in-batch variant), mean over local anchors and levels.

    z (2B, D) normalised embeddings of this worker, rows i and i+B the two views of image i;
    labels/accepted (M, B) the images' pseudo-labels (both views carry them). For anchor a the
    candidates are all rows != a, the positive is its other view, FN are accepted same-label rows
    other than a and its positive. Gradient flows through every row.

    Multi-worker (local-loss form, as clip_loss): `gather` concatenates z from every rank with
    gradient (layout [z_rank0; z_rank1; ...]), `gather_labels` does the same for the (B, M)
    transposed labels/flags without gradient (defaults to `gather`); anchors are the local rows,
    candidates all gathered rows. Averaged over ranks by DDP this is the global-batch loss.
    With identity gathers it is the plain single-process loss.
    """
    z = z.float()
    n_local = z.shape[0]
    if n_local % 2:
        raise ValueError(f"z must have 2B rows (two views), got {n_local}")
    b = n_local // 2
    lab, acc = _as_levels(labels, accepted, b, z.device)
    gl = gather_labels or gather
    all_z = gather(z)
    all_lab, all_acc = gl(lab.T.contiguous()).T, gl(acc.T.contiguous()).T  # (M, W*B)
    world = all_z.shape[0] // n_local
    if all_z.shape[0] != world * n_local or all_lab.shape[1] != world * b:
        raise ValueError("gathered embeddings and labels disagree on the number of ranks")
    logits = z @ all_z.T / temperature  # (2B, W*2B)
    rows = torch.arange(n_local, device=z.device)
    self_col = rank * n_local + rows
    pos_col = rank * n_local + (rows + b) % n_local
    invalid = torch.zeros_like(logits, dtype=torch.bool)
    invalid[rows, self_col] = True
    # Pseudo-label of every gathered row: row g belongs to rank g // 2B, image (g % 2B) % B.
    g = torch.arange(all_z.shape[0], device=z.device)
    img_of_col = (g // n_local) * b + (g % n_local) % b
    img_of_row = rank * b + rows % b
    plain = contrastive_with_false_negatives(logits, pos_col, torch.zeros_like(invalid), "elim", invalid).mean()
    per_level, masks = [], []
    for m in range(lab.shape[0]):
        fn = false_negative_mask(all_lab[m, img_of_row], all_acc[m, img_of_row], all_lab[m, img_of_col], all_acc[m, img_of_col])
        fn[rows, self_col] = False
        fn[rows, pos_col] = False
        masks.append(fn)
        per_level.append(contrastive_with_false_negatives(logits, pos_col, fn, strategy, invalid).mean())
    return _select_plain_if_no_fn(masks, per_level, plain)


def info_nce(q: torch.Tensor, k_pos: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """Plain MoCo InfoNCE, written independently as the reference for the acceptance-0 case."""
    q, k_pos, queue = q.float(), k_pos.detach().float(), queue.detach().float()
    pos = (q * k_pos).sum(1, keepdim=True) / temperature
    neg = q @ queue.T / temperature
    return (torch.logsumexp(torch.cat([pos, neg], 1), 1) - pos.squeeze(1)).mean()


def nt_xent(z: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """Plain SimCLR NT-Xent over 2B normalised rows (views i and i+B), the acceptance-0 reference."""
    z = z.float()
    n = z.shape[0]
    sim = (z @ z.T / temperature).masked_fill(torch.eye(n, dtype=torch.bool, device=z.device), float("-inf"))
    pos = (torch.arange(n, device=z.device) + n // 2) % n
    return F.cross_entropy(sim, pos)
