"""UNIMO's unified Transformer (card c): one post-LN encoder over text tokens and image region tokens.

    text  [CLS] w1..wn [SEP]     = SOT ids EOT of the BPE tokenizer; h(W) = output at SOT
    image [IMG] v1..vR           region r: FC(feature_r) + FC(box_r), summed, LayerNorm, dropout;
                                 [IMG] = mean of the region features with box [0, 0, 1, 1, 1]; h(V) = output at [IMG]
    pair  [IMG] v.. [CLS] w.. [SEP]   full bidirectional attention (text sees image and back)

Regions are a conv stem's patch grid with its boxes (card i: substitute for Faster R-CNN features).
Heads: pooled text / pooled image FC+ReLU hidden->hidden (CMCL cosine on these), MLM tied to the
word embeddings, region regression FC -> region target.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from contrastlab.methods.unimo.config import UNIMOConfig
from contrastlab.methods.unimo.masking import region_boxes_grid
from contrastlab.platform.data.augment import normalize_batch
from contrastlab.platform.text import EOT_ID, VOCAB_SIZE

GLOBAL_BOX = (0.0, 0.0, 1.0, 1.0, 1.0)


def pooled_head(hidden: int, activation: str) -> nn.Module:
    return nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU()) if activation == "relu" else nn.Linear(hidden, hidden)


def text_padding_mask(ids: torch.Tensor) -> torch.Tensor:
    """True at positions after the first EOT ([SEP]); rows without EOT pad nothing."""
    is_eot = ids == EOT_ID
    seen = is_eot.long().cumsum(1)
    return (seen - is_eot.long()) > 0


class UnifiedTransformer(nn.Module):
    def __init__(self, cfg: UNIMOConfig):
        super().__init__()
        layers, hidden, heads, region_dim = cfg.dims()
        self.cfg, self.hidden, self.region_dim = cfg, hidden, region_dim
        grid = cfg.image_size // cfg.patch_size
        self.n_regions = grid * grid
        # text embeddings
        self.word_embedding = nn.Embedding(VOCAB_SIZE, hidden)
        self.text_position = nn.Parameter(torch.randn(cfg.context_length, hidden) * 0.02)
        self.type_embedding = nn.Embedding(2, hidden)  # 0 text, 1 image
        self.text_norm = nn.LayerNorm(hidden)
        # image "regions": conv stem -> patch grid features + box geometry
        self.stem = nn.Sequential(
            nn.Conv2d(3, cfg.stem_channels, 3, padding=1), nn.GELU(),
            nn.Conv2d(cfg.stem_channels, region_dim, cfg.patch_size, stride=cfg.patch_size),
        )
        self.region_fc = nn.Linear(region_dim, hidden)
        self.box_fc = nn.Linear(5, hidden)
        self.image_norm = nn.LayerNorm(hidden)
        self.register_buffer("boxes", torch.from_numpy(region_boxes_grid(grid)), persistent=False)
        self.dropout = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(hidden, heads, 4 * hidden, dropout=cfg.dropout, activation="gelu", batch_first=True,
                                           norm_first=cfg.norm_first)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        # heads
        self.pool_text = pooled_head(hidden, cfg.proj_activation)
        self.pool_image = pooled_head(hidden, cfg.proj_activation)
        self.mlm_transform = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden))
        self.mlm_bias = nn.Parameter(torch.zeros(VOCAB_SIZE))
        target_dim = 3 * cfg.patch_size ** 2 if cfg.region_target == "pixels" else region_dim
        self.region_head = nn.Linear(hidden, target_dim)
        # BERT-style init: the type embedding must be as small as the word embeddings, or (N(0,1)
        # default) it dominates every token after the LayerNorm and all inputs look alike.
        for emb in (self.word_embedding, self.type_embedding):
            nn.init.normal_(emb.weight, std=0.02)

    # ---- inputs
    def region_features(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) uint8 -> (N, R, region_dim) patch features, row-major grid."""
        return self.stem(normalize_batch(images_uint8)).flatten(2).transpose(1, 2)

    def image_inputs(self, feats: torch.Tensor, region_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Region features with [IMG] prepended: (N, 1+R, F) features and (N, 1+R, 5) boxes. Masked
        regions are zeroed first, and [IMG] is the mean of the (masked) region features, so a masked
        region cannot leak through the global token."""
        if region_mask is not None:
            feats = feats * (~region_mask.bool()).unsqueeze(-1).to(feats.dtype)
        n = feats.shape[0]
        glob = feats.mean(1, keepdim=True)
        boxes = torch.cat([feats.new_tensor(GLOBAL_BOX).expand(n, 1, 5), self.boxes.to(feats.dtype).expand(n, -1, -1)], 1)
        return torch.cat([glob, feats], 1), boxes

    def image_embeddings(self, feats: torch.Tensor, region_mask: torch.Tensor | None = None) -> torch.Tensor:
        x, boxes = self.image_inputs(feats, region_mask)
        emb = self.region_fc(x) + self.box_fc(boxes) + self.type_embedding.weight[1]
        return self.dropout(self.image_norm(emb))

    def text_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        n = ids.shape[1]
        emb = self.word_embedding(ids) + self.text_position[:n] + self.type_embedding.weight[0]
        return self.dropout(self.text_norm(emb))

    # ---- encoders
    def encode_image_hidden(self, images_uint8: torch.Tensor, region_mask: torch.Tensor | None = None):
        feats = self.region_features(images_uint8)
        return self.encoder(self.image_embeddings(feats, region_mask)), feats

    def encode_text_hidden(self, ids: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.text_embeddings(ids), src_key_padding_mask=text_padding_mask(ids))

    def encode_pair_hidden(self, images_uint8: torch.Tensor, ids: torch.Tensor, region_mask: torch.Tensor | None = None):
        """Joint [IMG] v.. [CLS] w.. [SEP] (card c) -> (image part, text part, region features)."""
        feats = self.region_features(images_uint8)
        img = self.image_embeddings(feats, region_mask)
        txt = self.text_embeddings(ids)
        pad = torch.cat([torch.zeros(img.shape[:2], dtype=torch.bool, device=ids.device), text_padding_mask(ids)], 1)
        h = self.encoder(torch.cat([img, txt], 1), src_key_padding_mask=pad)
        return h[:, : img.shape[1]], h[:, img.shape[1]:], feats

    def embed_image(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """g_v(h(V)): the [IMG] output (pooling "cls", card) or the mean of all image outputs ("mean");
        not normalised (the loss takes the cosine)."""
        h = self.encode_image_hidden(images_uint8)[0]
        return self.pool_image(h[:, 0] if self.cfg.pooling == "cls" else h.mean(1))

    def embed_text(self, ids: torch.Tensor) -> torch.Tensor:
        """g_t(h(W)): the [CLS] (SOT) output, or the mean over the non-padding outputs ("mean")."""
        h = self.encode_text_hidden(ids)
        if self.cfg.pooling == "cls":
            return self.pool_text(h[:, 0])
        keep = (~text_padding_mask(ids)).unsqueeze(-1).to(h.dtype)
        return self.pool_text((h * keep).sum(1) / keep.sum(1).clamp(min=1))

    # ---- heads
    def mlm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.mlm_transform(hidden) @ self.word_embedding.weight.T + self.mlm_bias

    def region_targets(self, images_uint8: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """Regression targets per region: the patch's normalised pixels (default) or the detached stem feature."""
        if self.cfg.region_target == "features":
            return feats.detach()
        p = self.cfg.patch_size
        x = normalize_batch(images_uint8)  # (N, 3, S, S)
        n, c, s, _ = x.shape
        x = x.reshape(n, c, s // p, p, s // p, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(n, (s // p) ** 2, c * p * p)


def count_parameters(module: nn.Module) -> int:
    return int(sum(np.prod(p.shape) for p in module.parameters()))


def normalize(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.float(), dim=-1)
