"""Conversions shared by the metrics: every public function accepts numpy arrays or torch tensors."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def to_numpy(x: Any) -> np.ndarray:
    """A numpy view/copy of `x` (torch tensors are detached and moved to the CPU)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def to_labels(x: Any, name: str = "labels") -> np.ndarray:
    """A 1-D integer numpy array."""
    a = to_numpy(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if not np.all(np.equal(np.mod(a, 1), 0)):
            raise ValueError(f"{name} must hold integers")
        a = a.astype(np.int64)
    return a


def to_tensor(x: Any, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A torch tensor of `dtype` on `device` (default: the tensor's own device, CPU for numpy).

    A float32 numpy array is wrapped without a copy.
    """
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        a = np.asarray(x)
        if dtype.is_floating_point:
            a = np.ascontiguousarray(a, dtype=np.float32)
        t = torch.from_numpy(np.ascontiguousarray(a))
    return t.to(device=device if device is not None else t.device, dtype=dtype)


def nonfinite_rows(x: Any) -> int:
    """Number of rows (entries along axis 0) holding a NaN or inf; 0 for integer/bool arrays."""
    if isinstance(x, torch.Tensor):
        if not (x.is_floating_point() or x.is_complex()) or x.numel() == 0:
            return 0
        bad = ~torch.isfinite(x.detach())
        return int(bad.reshape(bad.shape[0], -1).any(dim=1).sum()) if bad.ndim > 1 else int(bad.sum())
    a = np.asarray(x)
    if not np.issubdtype(a.dtype, np.inexact) or a.size == 0:
        return 0
    bad = ~np.isfinite(a)
    return int(bad.reshape(bad.shape[0], -1).any(axis=1).sum()) if bad.ndim > 1 else int(bad.sum())


def check_finite(x: Any, name: str) -> None:
    """Raise ValueError when `x` holds NaN or inf.

    A metric fed non-finite features does not fail by itself: NaN similarities compare false, so
    every rank/vote collapses to a tie broken by index and e.g. all-NaN features score a perfect
    recall. Raising names the culprit instead of reporting a wrong but plausible number.
    """
    n = nonfinite_rows(x)
    if n:
        raise ValueError(
            f"{name} has {n} non-finite rows (NaN/inf) out of {len(x)}: the model diverged or overflowed in "
            f"evaluation; check the training loss, lower the learning rate, or evaluate in fp32/bf16 instead of fp16"
        )


def normalized_features(x: Any, device: torch.device | str | None = None, name: str = "features") -> torch.Tensor:
    """Rows L2-normalised, float32, 2-D (N, D). Zero rows stay zero. NaN/inf entries raise ValueError."""
    t = to_tensor(x, device)
    if t.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, D), got shape {tuple(t.shape)}")
    check_finite(t, name)
    return F.normalize(t, dim=1)


def default_device(x: Any) -> torch.device:
    return x.device if isinstance(x, torch.Tensor) else torch.device("cpu")
