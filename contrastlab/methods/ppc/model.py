"""The CAM network of SEAM + PPC: backbone, CAM head, projection head and PCM (card, section c).

    feat = backbone(x)                               output stride 4 or 8, Dropout2d
    cam  = conv1x1(feat -> C), no bias               (background channel included)
    emb  = ReLU(conv1x1(feat -> proj_dim))           PPC's projection head (training only)
    cam_rv = PCM(cam, x, mid, late)                  pixel correlation module (SEAM)

PCM: cam~ = max-normalised detached CAM with bg = 1 - max fg and non-maximal fg channels zeroed;
f = [x resized to the grid, ReLU(conv1x1(mid.detach())), ReLU(conv1x1(late.detach()))] ->
conv1x1 (no bias) -> per-pixel L2 norm; Aff = ReLU(f^T f) normalised to sum 1 over the first
index; cam_rv = cam~ Aff. Gradient reaches only PCM's convs (through Aff).

Backbones: "cnn-small" (the card's small-scale version: 5 conv layers, stride 4, the last two
dilated, 128-d) or a randomly initialised torchvision ResNet ("resnet18", "resnet34", "resnet50")
whose later stages trade stride for dilation to reach the output stride. ImageNet weights are not
used (no network access); the card's ResNet-38 with mxnet weights is out of scope.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv_bn(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """5 conv layers, output stride 4, the last two dilated (2, 4); mid = layer 3, late = layer 5."""

    def __init__(self, width: int = 32, out_dim: int = 128):
        super().__init__()
        self.stem = nn.Sequential(_conv_bn(3, width), _conv_bn(width, 2 * width, stride=2))
        self.layer3 = _conv_bn(2 * width, out_dim, stride=2)
        self.layer4 = _conv_bn(out_dim, out_dim, dilation=2)
        self.layer5 = _conv_bn(out_dim, out_dim, dilation=4)
        self.mid_dim, self.out_dim = out_dim, out_dim

    def forward(self, x):
        mid = self.layer3(self.stem(x))
        late = self.layer5(self.layer4(mid))
        return mid, late


class ResNetBackbone(nn.Module):
    """torchvision ResNet (random init) at output stride 4, 8 or 16: later stages keep resolution
    and dilate their 3x3 convs instead. mid = layer3, late = layer4."""

    def __init__(self, name: str = "resnet18", output_stride: int = 8):
        super().__init__()
        import torchvision

        net = getattr(torchvision.models, name)(weights=None)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        stride, dilation = 4, 1
        for layer in (self.layer2, self.layer3, self.layer4):
            if stride < output_stride:
                stride *= 2
                _set_stride(layer, 2, dilation)
            else:
                _set_stride(layer, 1, dilation * 2)
                dilation *= 2
        self.mid_dim = net.layer3[-1].conv2.out_channels if name in ("resnet18", "resnet34") else net.layer3[-1].conv3.out_channels
        self.out_dim = net.fc.in_features

    def forward(self, x):
        x = self.layer2(self.layer1(self.stem(x)))
        mid = self.layer3(x)
        return mid, self.layer4(mid)


def _set_stride(layer: nn.Sequential, stride: int, dilation: int) -> None:
    """Make a ResNet stage downsample by `stride` (first block) and dilate every 3x3 conv by the
    stage's `dilation` (the first block keeps the previous stage's dilation, as DeepLab does)."""
    first = dilation if stride == 2 else max(1, dilation // 2)
    for i, block in enumerate(layer):
        d = first if i == 0 else dilation
        for conv in block.modules():
            if isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3):
                conv.dilation, conv.padding = (d, d), (d, d)
                if i == 0 and conv.stride == (2, 2):  # the stage's downsampling conv (conv1 or conv2 by block type)
                    conv.stride = (stride, stride)
        if i == 0 and block.downsample is not None:
            block.downsample[0].stride = (stride, stride)


def build_backbone(name: str, output_stride: int, cnn_width: int = 32, cnn_dim: int = 128) -> nn.Module:
    if name == "cnn-small":
        if output_stride != 4:
            raise ValueError("backbone cnn-small has output stride 4; set method.output_stride=4")
        return SmallCNN(cnn_width, cnn_dim)
    if name in ("resnet18", "resnet34", "resnet50"):
        return ResNetBackbone(name, output_stride)
    raise ValueError(f"unknown backbone {name!r}: use cnn-small, resnet18, resnet34 or resnet50")


def pcm_seed(cam: torch.Tensor, bg_index: int) -> torch.Tensor:
    """SEAM's detached input to PCM: max-normalised ReLU(cam), bg = 1 - max fg, non-maximal fg zeroed."""
    with torch.no_grad():
        n, c = cam.shape[:2]
        d = F.relu(cam.detach())
        peak = d.flatten(2).max(-1).values[..., None, None] + 1e-5
        d = F.relu(d - 1e-5) / peak
        fg = [i for i in range(c) if i != bg_index]
        f = d[:, fg]
        top = f.max(dim=1, keepdim=True).values
        d[:, bg_index] = 1 - top[:, 0]
        d[:, fg] = torch.where(f < top, torch.zeros_like(f), f)
        return d


class PCM(nn.Module):
    def __init__(self, mid_dim: int, late_dim: int, dim: int = 64):
        super().__init__()
        self.mid = nn.Conv2d(mid_dim, dim // 2, 1, bias=False)
        self.late = nn.Conv2d(late_dim, dim, 1, bias=False)
        self.f9 = nn.Conv2d(3 + dim // 2 + dim, dim, 1, bias=False)
        for conv in (self.mid, self.late):
            nn.init.kaiming_normal_(conv.weight)
        nn.init.xavier_uniform_(self.f9.weight, gain=4)  # SEAM's init of f9

    def forward(self, cam: torch.Tensor, image: torch.Tensor, mid: torch.Tensor, late: torch.Tensor, bg_index: int) -> torch.Tensor:
        n, c, h, w = cam.shape
        size = (h, w)

        def fit(t):
            return t if t.shape[-2:] == size else F.interpolate(t, size=size, mode="bilinear", align_corners=True)

        f = torch.cat([fit(image), F.relu(self.mid(fit(mid.detach()))), F.relu(self.late(fit(late.detach())))], dim=1)
        f = self.f9(f).flatten(2)
        f = f / (f.norm(dim=1, keepdim=True) + 1e-5)
        aff = F.relu(f.transpose(1, 2) @ f)
        aff = aff / (aff.sum(dim=1, keepdim=True) + 1e-5)
        return (pcm_seed(cam, bg_index).flatten(2) @ aff).reshape(n, c, h, w)


class CAMNet(nn.Module):
    def __init__(self, num_channels: int, backbone: str = "cnn-small", output_stride: int = 4, proj_dim: int = 32,
                 pcm_dim: int = 64, dropout: float = 0.0, bg_index: int = 0, use_pcm: bool = True, cnn_width: int = 32,
                 cnn_dim: int = 128):
        super().__init__()
        self.backbone = build_backbone(backbone, output_stride, cnn_width, cnn_dim)
        dim = self.backbone.out_dim
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.cam_head = nn.Conv2d(dim, num_channels, 1, bias=False)
        nn.init.xavier_uniform_(self.cam_head.weight)
        self.proj = nn.Conv2d(dim, proj_dim, 1)
        self.pcm = PCM(self.backbone.mid_dim, dim, pcm_dim) if use_pcm else None
        self.bg_index = bg_index

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        mid, late = self.backbone(x)
        cam = self.cam_head(self.dropout(late))
        emb = F.relu(self.proj(late))
        cam_rv = self.pcm(cam, x, mid, late, self.bg_index) if self.pcm is not None else cam
        return {"cam": cam, "cam_rv": cam_rv, "emb": emb, "feat": late}
