"""CVP networks (card cvp.md §b, §c; all [R]: layouts reconstructed, see the card).

- CrossChannelPredictor (stage 1): patch of band group G (|G|, w, w) -> bottleneck view v in R^d ->
  prediction of the whole other-group patch (|G_other| * w * w values), split-brain style.
- ContrastiveNet (stage 2, COMPLETER layout): per view an encoder d -> hidden... -> K (softmax), a
  decoder K -> ... -> d (by default the mirror of the encoder, card §b; `decoder_hidden` sets it, e.g.
  the §g small-scale K -> 256 -> d), and dual predictors Q12, Q21: K -> hidden... -> K (softmax).
"""
from __future__ import annotations

import torch
from torch import nn


def parse_dims(spec: str) -> list[int]:
    """'1024,1024,1024' -> [1024, 1024, 1024]; '' -> []."""
    return [int(s) for s in str(spec).replace(" ", "").split(",") if s]


def conv2d_out_size(patch_size: int, padding: int) -> int:
    """Side of the stage-1 2-D map before pooling: the three 3x3 spatial kernels (unpadded) take w -> w-6,
    then the 3x3 Conv2d with `padding` takes it to w - 6 - 2 + 2*padding."""
    return patch_size - 6 - 2 + 2 * padding


class CrossChannelPredictor(nn.Module):
    """Conv3d(1->8,(7,3,3)) BN ReLU -> Conv3d(8->16,(5,3,3)) BN ReLU -> Conv3d(16->32,(3,3,3)) BN ReLU
    -> reshape (32*(|G|-12), w-6, w-6) -> Conv2d(->64, 3x3) BN ReLU -> AdaptiveAvgPool(4x4)
    -> 1024 -> Linear(->d) = view v -> ReLU -> Linear(d -> out_bands*w*w).

    conv2d_padding=0 (default) is the card's layout (§c: unpadded 3x3 Conv2d, (w-8)x(w-8) map, hence
    |G| >= 13 and w >= 9). conv2d_padding=1 is the previous layout of this code (padded, (w-6)x(w-6) map,
    w >= 7), still available via method.predictor_conv2d_padding=1."""

    def __init__(self, in_bands: int, out_bands: int, patch_size: int, view_dim: int = 128, conv2d_padding: int = 0):
        super().__init__()
        if in_bands < 13:
            raise ValueError(f"a cross-channel predictor needs >= 13 input bands (3-D kernels span 13), got {in_bands}")
        if conv2d_padding not in (0, 1):
            raise ValueError(f"conv2d_padding must be 0 (card layout) or 1 (previous padded layout), got {conv2d_padding}")
        if conv2d_out_size(patch_size, conv2d_padding) < 1:
            need = 8 - 2 * conv2d_padding + 1
            raise ValueError(f"patch_size={patch_size} leaves no 2-D map after the 3x3 Conv2d with padding {conv2d_padding}: "
                             f"patch_size must be >= {need} (>= 9 with padding 0, >= 7 with padding 1)")
        self.in_bands, self.out_bands, self.patch_size = in_bands, out_bands, patch_size
        self.conv2d_padding = conv2d_padding

        def c3(i, o, k):
            return [nn.Conv3d(i, o, k), nn.BatchNorm3d(o), nn.ReLU(inplace=True)]

        self.conv3d = nn.Sequential(*c3(1, 8, (7, 3, 3)), *c3(8, 16, (5, 3, 3)), *c3(16, 32, (3, 3, 3)))
        self.conv2d = nn.Sequential(nn.Conv2d(32 * (in_bands - 12), 64, 3, padding=conv2d_padding), nn.BatchNorm2d(64),
                                    nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(4))
        self.bottleneck = nn.Linear(64 * 16, view_dim)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(view_dim, out_bands * patch_size * patch_size))

    def view(self, x: torch.Tensor) -> torch.Tensor:
        """(N, |G|, w, w) -> (N, d) bottleneck features (the view)."""
        h = self.conv3d(x.unsqueeze(1))
        n, c, b, hh, ww = h.shape
        h = self.conv2d(h.reshape(n, c * b, hh, ww))
        return self.bottleneck(h.flatten(1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v = self.view(x)
        return v, self.head(v)


def mlp(dims: list[int], bn_relu_last: bool) -> nn.Sequential:
    """Linear layers through `dims`, BN+ReLU after each hidden linear (and after the last if asked)."""
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2 or bn_relu_last:
            layers += [nn.BatchNorm1d(dims[i + 1]), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class SoftEncoder(nn.Module):
    """d -> hidden... -> K with BN+ReLU between linears, softmax output.
    forward -> (hidden: penultimate activations after the last BN+ReLU, logits, z = softmax(logits))."""

    def __init__(self, in_dim: int, hidden: list[int], k: int):
        super().__init__()
        self.body = mlp([in_dim, *hidden], bn_relu_last=True) if hidden else nn.Identity()
        self.out = nn.Linear(hidden[-1] if hidden else in_dim, k)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.body(x)
        logits = self.out(h)
        return h, logits, torch.softmax(logits, dim=1)


class DualPredictor(nn.Module):
    """Q: K -> hidden... -> K, BN+ReLU after every hidden linear, softmax output."""

    def __init__(self, k: int, hidden: list[int]):
        super().__init__()
        self.net = mlp([k, *hidden, k], bn_relu_last=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(z), dim=1)


class ContrastiveNet(nn.Module):
    """decoder_hidden=None: each decoder mirrors the encoder, K -> reversed(encoder_hidden) -> d (card §b,
    the full-scale COMPLETER autoencoder); a list sets it explicitly, e.g. [256] for §g's K -> 256 -> d.
    Every decoder linear is followed by BN+ReLU, the last included (card §b)."""

    def __init__(self, view_dim: int, encoder_hidden: list[int], k: int, predictor_hidden: list[int],
                 decoder_hidden: list[int] | None = None):
        super().__init__()
        self.enc1, self.enc2 = SoftEncoder(view_dim, encoder_hidden, k), SoftEncoder(view_dim, encoder_hidden, k)
        hidden = list(reversed(encoder_hidden)) if decoder_hidden is None else list(decoder_hidden)
        dec = [k, *hidden, view_dim]
        self.dec1, self.dec2 = mlp(dec, bn_relu_last=True), mlp(dec, bn_relu_last=True)
        self.q12, self.q21 = DualPredictor(k, predictor_hidden), DualPredictor(k, predictor_hidden)
