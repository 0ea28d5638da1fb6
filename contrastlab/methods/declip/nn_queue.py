"""DeCLIP's nearest-neighbour text queue (card b "NNS", quirk 3, checklist h7).

One FIFO queue of normalised, detached text embeddings per rank; it is never gathered (only the
retrieved neighbours are, inside the loss). The state (`bank`, `ptr`, `fill`, `ids`) is made of
persistent buffers, so it lands in `state_dict()` and survives checkpoint/restore (the official
code does not persist it; that is a deliberate improvement). Keep this module out of DDP (it has
no parameters): DDP's buffer broadcast would overwrite every rank's queue with rank 0's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

OVERFLOW_POLICIES = ("official", "ring")


class NNQueue(nn.Module):
    """K x D bank of unit rows, top-1 exact (brute-force) cosine retrieval.

    `overflow`:
      - "official" (default, quirk 3): when a batch does not fit before the end, fill to the end,
        reset the pointer to 0 and drop the rest of the batch (DeCLIP's `memory_bank.py`).
      - "ring": a true ring buffer that wraps the batch around to the start (a recorded deviation).
    The bank starts as random unit vectors from a generator seeded with `seed`, so queries before
    the queue has filled return random rows (card i "Queue warm-up"). `fill` counts real entries
    written (saturating at K); `ids` optionally records a caller-given id per row (-1 = initial
    random row), e.g. sample indexes for the "same class" hit rate.
    """

    def __init__(self, size: int, dim: int, seed: int = 0, overflow: str = "official"):
        super().__init__()
        if overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be one of {OVERFLOW_POLICIES}, got {overflow!r}")
        if size <= 0 or dim <= 0:
            raise ValueError(f"queue size and dim must be positive, got {size}, {dim}")
        self.size, self.dim, self.overflow = size, dim, overflow
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("bank", F.normalize(torch.randn(size, dim, generator=gen), dim=-1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("fill", torch.zeros((), dtype=torch.long))
        self.register_buffer("ids", torch.full((size,), -1, dtype=torch.long))

    def _apply(self, fn, recurse=True):
        # `.half()` / `.to(bfloat16)` on the enclosing method must not lower the queue's precision.
        super()._apply(fn, recurse)
        if self.bank.dtype != torch.float32:
            self.bank = self.bank.float()
        return self

    @torch.no_grad()
    def query(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Top-1 neighbour of each row of x by cosine: (rows re-normalised, their cosine, indices)."""
        sims = F.normalize(x.detach().float(), dim=-1) @ self.bank.T
        cosine, index = sims.max(dim=1)
        return F.normalize(self.bank[index], dim=-1), cosine, index

    @torch.no_grad()
    def enqueue(self, x: torch.Tensor, ids: torch.Tensor | None = None) -> int:
        """Write the (re-normalised, detached, fp32) rows of x at `ptr`; return how many were written."""
        x = F.normalize(x.detach().float(), dim=-1)
        ids = torch.full((x.shape[0],), -1, dtype=torch.long) if ids is None else ids.detach().long()
        ids = ids.to(self.ids.device)
        ptr, k, b = int(self.ptr), self.size, x.shape[0]
        if self.overflow == "official":
            written = min(b, k - ptr)
            self.bank[ptr : ptr + written] = x[:written]
            self.ids[ptr : ptr + written] = ids[:written]
            new_ptr = 0 if ptr + b >= k else ptr + b  # `>=` as in the official code
        else:
            if b > k:  # only the newest k rows can survive a single write
                x, ids, ptr, b = x[-k:], ids[-k:], (ptr + b - k) % k, k
            rows = (ptr + torch.arange(b, device=self.bank.device)) % k
            self.bank[rows] = x
            self.ids[rows] = ids
            written, new_ptr = b, (ptr + b) % k
        self.ptr.fill_(new_ptr)
        self.fill.fill_(min(k, int(self.fill) + written))
        return written

    @torch.no_grad()
    def query_and_update(
        self,
        t: torch.Tensor,
        ta: torch.Tensor,
        t_ids: torch.Tensor | None = None,
        ta_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """One training step of the queue, in the card's order.

        (1) n = NN(t), no update; (2) na = NN(ta) against the same old queue; (3) enqueue ta;
        (4) enqueue t. So a sample never retrieves itself, and (without overflow) rows
        ptr_before .. ptr_before+2B hold [ta; t]. Returns (n, na, stats); stats holds scalar
        tensors `nn_cosine`, `nn_cosine_aug`, `queue_fill` (fraction of real rows) and the
        retrieved rows' `nn_index`, `nn_index_aug`, `nn_ids`, `nn_ids_aug` (ids of the rows, -1
        for initial random rows), all detached.
        """
        n, cos_n, idx_n = self.query(t)
        na, cos_na, idx_na = self.query(ta)
        ids_n, ids_na = self.ids[idx_n].clone(), self.ids[idx_na].clone()
        self.enqueue(ta, ta_ids)
        self.enqueue(t, t_ids)
        stats = {
            "nn_cosine": cos_n.mean(),
            "nn_cosine_aug": cos_na.mean(),
            "queue_fill": self.fill.float() / self.size,
            "nn_index": idx_n,
            "nn_index_aug": idx_na,
            "nn_ids": ids_n,
            "nn_ids_aug": ids_na,
        }
        return n, na, stats

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}, overflow={self.overflow!r}"
