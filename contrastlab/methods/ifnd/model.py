"""IFND networks (card c and g): encoders with projection heads, momentum copy, key queue.

- `small_encoder`: the card-g CNN (in_channels -> 32 -> 64 -> 128, stride 2 twice, BN, ReLU,
  global average pool) with head 128 -> 128 -> 64.
- `resnet50_encoder`: torchvision ResNet-50, randomly initialised (weights=None, nothing is
  downloaded), fc removed, MLP head 2048 -> 2048 -> 128 (ReLU, no BN) [R: MoCo v2].
- `MomentumEncoder`: EMA copy of an encoder, theta_k <- m theta_k + (1 - m) theta_q. Its plain
  forward has no shuffle-BN; the method's key forward runs `.encoder` through the shared
  `contrastlab.methods.momentum.shuffled_key_forward` (card c: ShuffleBN in the key encoder).
- `KeyQueue`: MoCo queue of keys with their int64 dataset indices, as persistent buffers so it
  survives checkpoints (indices -1 = slot never filled; such entries are never false negatives).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


def mlp_head(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """Linear -> ReLU -> Linear (no BN), the MoCo-v2 / SimCLR projection head."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))


class SmallCNN(nn.Module):
    """3 conv layers (3x3; strides 1, 2, 2) with BN + ReLU, then global average pool."""

    def __init__(self, in_channels: int = 1, widths: tuple[int, int, int] = (32, 64, 128)):
        super().__init__()
        layers, c_in = [], in_channels
        for width, stride in zip(widths, (1, 2, 2)):
            layers += [nn.Conv2d(c_in, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            c_in = width
        self.body = nn.Sequential(*layers)
        self.out_dim = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))


class ContrastiveEncoder(nn.Module):
    """backbone -> features (what probes and kNN use); head -> projection (what the loss uses)."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        z = self.head(self.backbone(x))
        return F.normalize(z, dim=1) if normalize else z


def small_encoder(in_channels: int = 1, widths: tuple[int, int, int] = (32, 64, 128), hidden_dim: int = 128, proj_dim: int = 64) -> ContrastiveEncoder:
    backbone = SmallCNN(in_channels, widths)
    return ContrastiveEncoder(backbone, mlp_head(backbone.out_dim, hidden_dim, proj_dim))


def resnet50_encoder(hidden_dim: int = 2048, proj_dim: int = 128) -> ContrastiveEncoder:
    from torchvision.models import resnet50

    backbone = resnet50(weights=None)
    feat_dim = backbone.fc.in_features
    backbone.fc = nn.Identity()
    return ContrastiveEncoder(backbone, mlp_head(feat_dim, hidden_dim, proj_dim))


class MomentumEncoder(nn.Module):
    """A frozen copy of `online`, updated by EMA of its parameters (buffers are its own, as MoCo).

    Keep it out of `trainable()` so DDP never wraps it. `sync_buffers=True` copies BN statistics
    from the online encoder at every update instead.
    """

    def __init__(self, online: nn.Module, momentum: float = 0.999, sync_buffers: bool = False):
        super().__init__()
        self.encoder = copy.deepcopy(online)
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.momentum = momentum
        self.sync_buffers = sync_buffers

    @torch.no_grad()
    def update(self, online: nn.Module, momentum: float | None = None) -> None:
        m = self.momentum if momentum is None else momentum
        for pk, pq in zip(self.encoder.parameters(), online.parameters()):
            pk.mul_(m).add_(pq.detach(), alpha=1.0 - m)
        if self.sync_buffers:
            for bk, bq in zip(self.encoder.buffers(), online.buffers()):
                bk.copy_(bq)

    def forward(self, *args, **kwargs):
        with torch.no_grad():
            return self.encoder(*args, **kwargs)


class KeyQueue(nn.Module):
    """FIFO of K normalised keys (K, D) plus the dataset index of each (K,), int64.

    Initialised with random unit vectors (MoCo) and index -1. `enqueue` takes the keys of the
    whole global batch (gather them across ranks first) and overwrites the oldest entries,
    wrapping around the end.
    """

    def __init__(self, size: int, dim: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("keys", F.normalize(torch.randn(size, dim, generator=g), dim=1))
        self.register_buffer("indices", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, indices: torch.Tensor) -> None:
        n = keys.shape[0]
        if n > self.size:  # keep only the newest K
            keys, indices, n = keys[-self.size :], indices[-self.size :], self.size
        slots = (int(self.ptr) + torch.arange(n, device=self.keys.device)) % self.size
        self.keys[slots] = keys.detach().to(self.keys)
        self.indices[slots] = indices.to(self.indices)
        self.ptr.fill_((int(self.ptr) + n) % self.size)
