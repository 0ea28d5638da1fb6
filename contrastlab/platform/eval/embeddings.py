"""Embedding-projector export to TensorBoard."""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import torch

from ._arrays import to_numpy


def _thumbnails_nchw(thumbnails: Any, n: int) -> torch.Tensor:
    """(N, C, H, W) float in [0, 1], from float NCHW in [0, 1] or uint8 NHWC (or NHW grey)."""
    a = to_numpy(thumbnails)
    if len(a) != n:
        raise ValueError(f"{n} embeddings but {len(a)} thumbnails")
    if a.dtype == np.uint8:
        if a.ndim == 3:
            a = a[..., None]
        if a.ndim != 4:
            raise ValueError(f"uint8 thumbnails must be (N, H, W, C) or (N, H, W), got {a.shape}")
        a = a.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    else:
        if a.ndim != 4:
            raise ValueError(f"float thumbnails must be (N, C, H, W), got {a.shape}")
        a = np.clip(a.astype(np.float32), 0.0, 1.0)
    return torch.from_numpy(np.ascontiguousarray(a))


def export_embeddings(
    log_dir: str | os.PathLike,
    feats: Any,
    labels: Any = None,
    thumbnails: Any = None,
    tag: str = "embeddings",
    step: int = 0,
    class_names: Sequence[str] | None = None,
) -> str:
    """Write `feats` (N, D) for TensorBoard's embedding projector; returns the log dir.

    Uses `SummaryWriter.add_embedding`. Metadata: the labels, or with `class_names` two
    columns (label, class name). Thumbnails: float (N, C, H, W) in [0, 1] or uint8 (N, H, W, C);
    the projector tiles them into one sprite image (at most 8192 x 8192 pixels), so keep them
    small (e.g. 32 x 32 for up to 65,536 points).
    """
    from torch.utils.tensorboard import SummaryWriter  # imported here: tensorboard is only needed for this

    mat = torch.from_numpy(np.ascontiguousarray(to_numpy(feats), dtype=np.float32))
    if mat.ndim != 2:
        raise ValueError(f"feats must be (N, D), got {tuple(mat.shape)}")
    metadata, header = None, None
    if labels is not None:
        lab = to_numpy(labels).ravel()
        if len(lab) != len(mat):
            raise ValueError(f"{len(mat)} embeddings but {len(lab)} labels")
        if class_names is not None:
            metadata = [[str(int(y)), str(class_names[int(y)])] for y in lab]
            header = ["label", "class"]
        else:
            metadata = [str(y.item()) for y in lab]
    label_img = _thumbnails_nchw(thumbnails, len(mat)) if thumbnails is not None else None
    log_dir = os.fspath(log_dir)
    writer = SummaryWriter(log_dir=log_dir)
    try:
        writer.add_embedding(mat, metadata=metadata, label_img=label_img, global_step=step, tag=tag, metadata_header=header)
    finally:
        writer.close()
    return log_dir
