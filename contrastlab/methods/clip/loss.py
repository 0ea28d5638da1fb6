"""CLIP's symmetric InfoNCE, as a pure function of tensors.

Local-loss formulation (open_clip): each rank scores its B local rows against the gathered
W*B columns of the other modality, labels `rank*B + arange(B)`. With gather-with-gradient and
DDP gradient averaging this gives exactly the gradient of the global-batch loss.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

Gather = Callable[[torch.Tensor], torch.Tensor]


def identity_gather(x: torch.Tensor) -> torch.Tensor:
    return x


def logit_scale_value(log_scale: torch.Tensor, max_scale: float = 100.0) -> torch.Tensor:
    """s = min(exp(theta), max_scale), computed in fp32 (clamped in the forward pass only)."""
    return log_scale.float().exp().clamp(max=max_scale)


def clip_loss(
    image: torch.Tensor,
    text: torch.Tensor,
    scale: torch.Tensor | float,
    gather: Gather = identity_gather,
    rank: int = 0,
) -> torch.Tensor:
    """C(i, t) = 1/2 [CE(s i_loc gather(t)^T, y) + CE(s t_loc gather(i)^T, y)], y = rank*B + arange(B).

    `image` and `text` are the local, already L2-normalised embeddings (B, D). Computed in fp32.
    """
    image, text = image.float(), text.float()
    b = image.shape[0]
    labels = torch.arange(b, device=image.device) + rank * b
    all_text, all_image = gather(text), gather(image)
    logits_i = scale * image @ all_text.T
    logits_t = scale * text @ all_image.T
    return 0.5 * (F.cross_entropy(logits_i, labels) + F.cross_entropy(logits_t, labels))


def normalize(x: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """L2-normalise rows in fp32; `eps` is added to the norm (DeCLIP uses 1e-10 on the text side)."""
    x = x.float()
    if eps:
        return x / (x.norm(dim=-1, keepdim=True) + eps)
    return F.normalize(x, dim=-1)


INIT_LOG_SCALE = math.log(1 / 0.07)
