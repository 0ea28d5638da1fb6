"""Video encoders for FAME: backbone (pooled clip feature) + MLP projection head, L2-normalised.

- "small": the card's CPU encoder (g): 3D CNN 3->16->32->64, 3x3x3 kernels, spatial stride 2 at
  each stage, BN + ReLU, global average pool -> 64-d.
- "r2plus1d_18" / "r3d_18": torchvision.models.video (weights=None, nothing is downloaded), fc
  removed -> 512-d pooled feature.
Head (card c): Linear(d, d) -> ReLU -> Linear(d, out_dim) (the official "mlp" is forced on for R(2+1)D).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BACKBONES = ("small", "r2plus1d_18", "r3d_18")


class Small3DCNN(nn.Module):
    def __init__(self, widths: tuple[int, ...] = (16, 32, 64)):
        super().__init__()
        layers, c_in = [], 3
        for c_out in widths:
            layers += [nn.Conv3d(c_in, c_out, 3, stride=(1, 2, 2), padding=1, bias=False), nn.BatchNorm3d(c_out), nn.ReLU(inplace=True)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.out_dim = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, T, H, W) -> (B, 64)
        return self.features(x).mean(dim=(2, 3, 4))


def build_backbone(name: str) -> nn.Module:
    if name == "small":
        return Small3DCNN()
    if name in ("r2plus1d_18", "r3d_18"):
        from torchvision.models import video

        net = getattr(video, name)(weights=None)
        net.out_dim = net.fc.in_features
        net.fc = nn.Identity()
        return net
    raise ValueError(f"unknown FAME backbone {name!r}: use one of {', '.join(BACKBONES)}")


class VideoEncoder(nn.Module):
    """backbone -> MLP head -> L2-normalised embedding; `features` gives the pooled backbone output."""

    def __init__(self, backbone: str = "small", out_dim: int = 32, hidden_dim: int | None = None):
        super().__init__()
        self.backbone = build_backbone(backbone)
        d = self.backbone.out_dim
        self.head = nn.Sequential(nn.Linear(d, hidden_dim or d), nn.ReLU(inplace=True), nn.Linear(hidden_dim or d, out_dim))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.backbone(x)), dim=1)
