"""Image and text towers for the image-text methods (CLIP baseline, DeCLIP, UNIMO).

Real-run towers are CLIP's own (open_clip's ModifiedResNet-50 and ViT-B/32, randomly initialised,
never downloaded); small towers make the embedded-data runs fit 2 CPU cores in minutes.
The text tower keeps CLIP's causal mask and pools at the EOT token (argmax of the ids: EOT has the
largest id), and returns per-token hidden states too, for masked language modelling.
"""
from __future__ import annotations

import torch
from torch import nn

from contrastlab.platform.text import VOCAB_SIZE


class SmallCNN(nn.Module):
    """4 conv blocks (32-64-64-128, stride 2 from the second), BN, ReLU, global pool, linear out."""

    def __init__(self, out_dim: int = 64, channels=(32, 64, 64, 128), in_channels: int = 3):
        super().__init__()
        layers, c_in = [], in_channels
        for i, c in enumerate(channels):
            layers += [nn.Conv2d(c_in, c, 3, stride=1 if i == 0 else 2, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            c_in = c
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.width = c_in
        self.proj = nn.Linear(c_in, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.features(x))


def build_image_tower(kind: str, embed_dim: int, image_size: int) -> nn.Module:
    if kind == "cnn-small":
        return SmallCNN(embed_dim)
    if kind == "vit-small":
        from open_clip.transformer import VisionTransformer

        return VisionTransformer(image_size=image_size, patch_size=8, width=64, layers=2, heads=4, mlp_ratio=4.0, output_dim=embed_dim)
    if kind == "RN50":
        from open_clip.modified_resnet import ModifiedResNet

        return ModifiedResNet(layers=[3, 4, 6, 3], output_dim=embed_dim, heads=32, image_size=image_size, width=64)
    if kind == "ViT-B-32":
        from open_clip.transformer import VisionTransformer

        return VisionTransformer(image_size=image_size, patch_size=32, width=768, layers=12, heads=12, mlp_ratio=4.0, output_dim=embed_dim)
    raise ValueError(f"unknown image tower {kind!r}: use cnn-small, vit-small, RN50 or ViT-B-32")


class TextTransformer(nn.Module):
    """CLIP-style text encoder: token + position embeddings, pre-LN transformer (causal), ln_final,
    EOT pooling, linear projection. `forward(ids) -> (pooled embedding, hidden states)`."""

    def __init__(self, embed_dim: int, width: int = 512, layers: int = 12, heads: int = 8, context_length: int = 77,
                 vocab_size: int = VOCAB_SIZE, causal: bool = True):
        super().__init__()
        self.context_length, self.causal = context_length, causal
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.randn(context_length, width) * 0.01)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Linear(width, embed_dim, bias=False)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        mask = torch.full((context_length, context_length), float("-inf")).triu(1)
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = ids.shape[1]
        x = self.token_embedding(ids) + self.positional_embedding[:n]
        x = self.transformer(x, mask=self.attn_mask[:n, :n] if self.causal else None, is_causal=self.causal)
        hidden = self.ln_final(x)
        pooled = hidden[torch.arange(ids.shape[0], device=ids.device), ids.argmax(dim=-1)]
        return self.text_projection(pooled), hidden


TEXT_PRESETS = {
    "small": dict(width=64, layers=2, heads=4, context_length=16),
    "clip": dict(width=512, layers=12, heads=8, context_length=77),
}


def build_text_tower(kind: str, embed_dim: int, context_length: int | None = None, causal: bool = True) -> TextTransformer:
    if kind not in TEXT_PRESETS:
        raise ValueError(f"unknown text tower {kind!r}: use {sorted(TEXT_PRESETS)}")
    args = dict(TEXT_PRESETS[kind])
    if context_length:
        args["context_length"] = context_length
    return TextTransformer(embed_dim, causal=causal, **args)
