"""ReID encoder: backbone -> global average pooling -> BatchNorm1d neck (bias frozen at 0).

Train mode returns the BN-neck output WITHOUT L2 normalisation; eval mode returns it
L2-normalised (card b/c). `cnn-small` is the card's small-scale model (4 conv blocks
32-64-128-128, 128-d); `resnet50` is the official backbone (torchvision, last stride 1; random
init here: nothing may download ImageNet weights, load them yourself and pass a state dict).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BACKBONES = ("cnn-small", "resnet50")


def _block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
              nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def build_backbone(name: str) -> tuple[nn.Module, int]:
    if name == "cnn-small":
        widths = (32, 64, 128, 128)
        blocks, c_in = [], 3
        for i, w in enumerate(widths):
            blocks.append(_block(c_in, w, pool=i < len(widths) - 1))
            c_in = w
        return nn.Sequential(*blocks), widths[-1]
    if name == "resnet50":
        import torchvision

        net = torchvision.models.resnet50(weights=None)
        net.layer4[0].conv2.stride = (1, 1)  # last stride 1
        net.layer4[0].downsample[0].stride = (1, 1)
        return nn.Sequential(*list(net.children())[:-2]), 2048
    raise ValueError(f"backbone must be one of {BACKBONES}, got {name!r}")


class ReIDEncoder(nn.Module):
    def __init__(self, backbone: str = "cnn-small"):
        super().__init__()
        self.backbone, self.dim = build_backbone(backbone)
        self.neck = nn.BatchNorm1d(self.dim)
        self.neck.bias.requires_grad_(False)  # BNNeck: bias frozen at 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(self.backbone(x), 1).flatten(1)
        out = self.neck(pooled)
        return out if self.training else F.normalize(out, dim=1)
