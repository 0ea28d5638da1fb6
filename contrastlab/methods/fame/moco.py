"""MoCo pieces FAME builds on (card fame.md b): InfoNCE against a queue, the momentum update,
the key queue (a persistent buffer); shuffle-BN for the key encoder is re-exported from the shared
`contrastlab.methods.momentum`.

    logits = [q.k, q.Q_1, ..., q.Q_K] / T,   loss = CE(logits, 0)     (k and Q detached)
    theta_k <- m theta_k + (1 - m) theta_q                            (parameters only)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Shuffle-BN is shared with IFND's queue variant: it lives in contrastlab/methods/momentum.py and is
# re-exported here so `from contrastlab.methods.fame.moco import key_forward_split_bn` keeps working.
from contrastlab.methods.momentum import key_forward_shuffle_ddp, key_forward_split_bn, shuffled_key_forward  # noqa: F401


def moco_logits(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (B, 1+K), targets zeros (B,)): column 0 is the positive q.k, then q.Q_j; all / T.

    q, k: (B, D) L2-normalised; queue: (D, K) of L2-normalised columns. k and queue are detached.
    """
    pos = (q * k.detach()).sum(dim=1, keepdim=True)
    neg = q @ queue.detach()
    logits = torch.cat([pos, neg], dim=1).float() / temperature
    return logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device)


def moco_loss(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE: mean over the batch of -log softmax(logits)[0]."""
    logits, targets = moco_logits(q, k, queue, temperature)
    return F.cross_entropy(logits, targets)


@torch.no_grad()
def momentum_update_(target: nn.Module, source: nn.Module, m: float) -> None:
    """theta_t <- m theta_t + (1 - m) theta_s over parameters; buffers (BN statistics) are left alone."""
    for pt, ps in zip(target.parameters(), source.parameters()):
        pt.mul_(m).add_(ps.detach(), alpha=1 - m)


class KeyQueue(nn.Module):
    """Ring buffer of K past keys, (dim, K) columns, initialised with random unit vectors.

    Both buffers are persistent, so the queue is in `state_dict()` and in every checkpoint.
    `enqueue` writes the given (already all-gathered) keys at the pointer, wrapping modulo K
    (identical to the official pointer arithmetic whenever K is a multiple of the batch).
    """

    def __init__(self, dim: int, size: int, generator: torch.Generator | None = None):
        super().__init__()
        self.size = size
        self.register_buffer("queue", F.normalize(torch.randn(dim, size, generator=generator), dim=0))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        n = keys.shape[0]
        if n > self.size:
            raise ValueError(f"cannot enqueue {n} keys into a queue of {self.size}: raise method.queue_size")
        idx = (self.ptr + torch.arange(n, device=keys.device)) % self.size
        self.queue[:, idx] = keys.detach().to(self.queue.dtype).T
        self.ptr.copy_((self.ptr + n) % self.size)

