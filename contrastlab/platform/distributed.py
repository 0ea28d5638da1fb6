"""Rank helpers and gather-with-gradient.

Contrastive losses need the other workers' embeddings as negatives. A plain
`torch.distributed.all_gather` returns tensors with no autograd history, so the gradient that
should flow back through the negatives into the other ranks' encoders is silently lost.
`torch.distributed.nn.functional.all_gather` has a backward (reduce-scatter of the incoming
gradients), which is what every multi-node CLIP recipe relies on.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def gather(x: torch.Tensor, grad: bool = True) -> torch.Tensor:
    """Concatenate `x` from every rank along dim 0, in rank order.

    With `grad=True` the result keeps the autograd graph: the local slice is `x` itself and the
    backward of the remote slices is routed to their owners. Every rank must pass the same shape.
    """
    if not is_distributed():
        return x
    if grad:
        import torch.distributed.nn.functional as dist_fn

        return torch.cat(dist_fn.all_gather(x), dim=0)
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    return torch.cat(parts, dim=0)


def gather_objects(obj):
    """All-gather arbitrary picklable objects (small metadata only: ids, counts)."""
    if not is_distributed():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    if is_distributed():
        x = x.clone()
        dist.all_reduce(x)
    return x


def barrier() -> None:
    if is_distributed():
        dist.barrier()
