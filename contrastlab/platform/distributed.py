"""Rank helpers and gather-with-gradient.

Contrastive losses need the other workers' embeddings as negatives. A plain
`torch.distributed.all_gather` returns tensors with no autograd history, so the gradient that
should flow back through the negatives into the other ranks' encoders is silently lost.
`torch.distributed.nn.functional.all_gather` has a backward (reduce-scatter of the incoming
gradients), which is what every multi-node CLIP recipe relies on.
"""
from __future__ import annotations

import numpy as np
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
    """All-gather arbitrary picklable objects: metadata and small arrays (pickled and padded to the
    largest rank's bytes, several copies per rank); feature banks: gather_arrays."""
    if not is_distributed():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def _collective_device() -> torch.device:
    """NCCL moves CUDA tensors only; gloo (and the others) CPU tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_arrays(arrays: dict[str, np.ndarray], chunk_bytes: int = 64 << 20) -> list[dict[str, np.ndarray]]:
    """All-gather each rank's {name: array} (rows along dim 0, any row count, 0 included), in rank order.

    Numeric arrays travel as raw bytes through tensor all-gathers, in chunks of at most `chunk_bytes`
    per rank, so a feature bank costs one copy of itself per rank, not the several (pickle, byte
    tensor, padding to the largest rank, unpickle) of `all_gather_object`, and the collective's
    device memory stays bounded. Other arrays (strings of any width, objects, records) go through
    gather_objects. A name may be missing on a rank that has no rows (it gets 0 rows of the others'
    dtype and row shape); ranks that hold the same name must agree on its row shape and, for numeric
    arrays, its dtype (else ValueError on every rank).
    """
    for k, v in arrays.items():
        if np.ndim(v) == 0:
            raise ValueError(f"gather_arrays: {k!r} is a scalar; pass arrays with rows along dim 0")
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    if not is_distributed():
        return [arrays]
    metas = gather_objects({k: (v.dtype, v.shape) for k, v in arrays.items()})
    out: list[dict[str, np.ndarray]] = [{} for _ in metas]
    device = _collective_device()
    for name in sorted({k for m in metas for k in m}):
        held_by = [m[name] for m in metas if name in m]  # (dtype, shape) of the ranks that hold it
        numeric = all(d.kind in "biufc" for d, _ in held_by)
        # strings differ in width per rank ('<U4', '<U5'): only their kind must agree; they are pickled
        held = {(d.str if numeric else d.kind, tuple(shape[1:])) for d, shape in held_by}
        if len(held) > 1:
            raise ValueError(f"gather_arrays: ranks disagree on {name!r}'s dtype and row shape: {sorted(held)}")
        dtype, row_shape = held_by[0][0], tuple(held_by[0][1][1:])
        rows = [m[name][1][0] if name in m else 0 for m in metas]
        local = arrays.get(name, np.zeros((0, *row_shape), dtype))
        if not numeric:  # strings, objects, records: pickled
            for r, part in enumerate(gather_objects(local)):
                out[r][name] = part
            continue
        row_bytes = dtype.itemsize * int(np.prod(row_shape, dtype=np.int64))
        if not row_bytes:  # (n, 0)-shaped: nothing to move
            for r, n in enumerate(rows):
                out[r][name] = np.zeros((n, *row_shape), dtype)
            continue
        flat = local.reshape(-1).view(np.uint8).reshape(len(local), row_bytes)
        received = [np.empty((n, row_bytes), np.uint8) for n in rows]
        step = max(1, chunk_bytes // row_bytes)
        for start in range(0, max(rows), step):
            n = min(step, max(rows) - start)
            mine = np.zeros((n, row_bytes), np.uint8)
            have = max(0, min(n, len(local) - start))
            mine[:have] = flat[start:start + have]
            parts = [torch.empty((n, row_bytes), dtype=torch.uint8, device=device) for _ in metas]
            dist.all_gather(parts, torch.from_numpy(mine).to(device))
            for r, part in enumerate(parts):
                take = max(0, min(n, rows[r] - start))
                if take:
                    received[r][start:start + take] = part[:take].cpu().numpy()
        for r, buf in enumerate(received):
            out[r][name] = buf.view(dtype).reshape(rows[r], *row_shape)
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
