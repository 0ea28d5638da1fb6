"""Shuffle-BN for momentum (key) encoders, shared by the MoCo-style methods (FAME, IFND's queue variant).

MoCo's key encoder must not see the batch-norm statistics of the same set of samples the query
encoder saw, or the positive pair leaks through the statistics ("cheating", MoCo sec. 3.3). Modes
(`shuffled_key_forward`):

- "ddp": MoCo's gather-shuffle-scatter across DDP workers (`key_forward_shuffle_ddp`): the global
  batch is shuffled with a permutation broadcast from rank 0, each worker runs one slice, the keys
  are gathered and unshuffled back to the local rows.
- "split": the one-worker equivalent (`key_forward_split_bn`): shuffle the local batch and run the
  key encoder on `splits` sub-batches, each with its own BN statistics, then unshuffle. A shuffle
  alone would not change the statistics of one BN over the whole batch.
- "auto": "ddp" with more than one worker, else "split".
- "off": plain forward (under no_grad).
"""
from __future__ import annotations

import torch
from torch import nn

from contrastlab.platform import distributed as dist_utils

SHUFFLE_BN_MODES = ("auto", "split", "ddp", "off")


@torch.no_grad()
def key_forward_split_bn(encoder: nn.Module, x: torch.Tensor, splits: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """One-worker shuffle-BN equivalent: shuffle the batch, run the key encoder on `splits`
    sub-batches (each with its own BN statistics), unshuffle. The key's BN statistics then come
    from a random subset of samples rather than from the same set the query's BN saw, which is what
    multi-GPU shuffle-BN achieves. splits=1: plain forward.

    The permutation is drawn on the CPU from `generator` (the global CPU RNG when None); sub-batch
    j holds the shuffled rows `perm.chunk(splits)[j]`."""
    b = x.shape[0]
    if splits <= 1 or b < 2:
        return encoder(x)
    perm = torch.randperm(b, generator=generator, device="cpu").to(x.device)
    chunks = [encoder(c) for c in x[perm].chunk(splits) if len(c)]
    out = torch.cat(chunks)
    return out[torch.argsort(perm)]


@torch.no_grad()
def key_forward_shuffle_ddp(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """MoCo's shuffle-BN across DDP workers: gather the global batch, shuffle it with a permutation
    broadcast from rank 0, run this worker's slice, gather the keys and unshuffle to the local rows.
    Every worker must pass the same batch size. Plain forward on one worker."""
    world = dist_utils.world_size()
    if world <= 1:
        return encoder(x)
    import torch.distributed as dist

    b = x.shape[0]
    x_all = dist_utils.gather(x, grad=False)
    perm = torch.randperm(x_all.shape[0], device=x.device)
    dist.broadcast(perm, src=0)
    rank = dist_utils.rank()
    mine = perm[rank * b:(rank + 1) * b]
    k_all = dist_utils.gather(encoder(x_all[mine]), grad=False)  # rows in shuffled order
    unshuffled = torch.empty_like(k_all)
    unshuffled[perm] = k_all
    return unshuffled[rank * b:(rank + 1) * b]


def resolve_shuffle_bn(mode: str, world_size: int) -> str:
    """"auto" -> "ddp" with several workers, else "split"; other modes unchanged (validated)."""
    if mode not in SHUFFLE_BN_MODES:
        raise ValueError(f"shuffle_bn must be one of {SHUFFLE_BN_MODES}, got {mode!r}")
    if mode == "auto":
        return "ddp" if world_size > 1 else "split"
    return mode


@torch.no_grad()
def shuffled_key_forward(encoder: nn.Module, x: torch.Tensor, mode: str, world_size: int, splits: int,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """Key-encoder forward under no_grad with the shuffle-BN `mode` (see module doc)."""
    mode = resolve_shuffle_bn(mode, world_size)
    if mode == "ddp":
        return key_forward_shuffle_ddp(encoder, x)
    if mode == "split":
        return key_forward_split_bn(encoder, x, splits, generator)
    return encoder(x)
