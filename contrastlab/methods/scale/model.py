"""SCALE's network (method card `scale.md`, section c): five single-modality encoders, poolers, the
fusion ("cross") encoder and the masked-task heads.

- text: BERT-style (word + position embeddings, LN, post-LN Transformer). The table stream reuses the
  text embeddings and layers when `share_table_text` (official quirk).
- image: LN(Lin(region) + Lin(box)) over grid regions with a prepended global token (mean of the
  regions, box [0, 0, 1, 1, 1]); video: LN(Lin(frame) + pos) with a prepended mean token, run through
  the image layers when `share_video_image` (official quirk); audio: LN(Lin(token) + pos) with a mean
  token, its own layers.
- poolers: first token -> Lin(H -> P) -> ReLU, one per modality (u_m of the contrastive term).
- fusion: `CrossModel` is missing from the official release (card a); a standard post-LN Transformer
  over [text, table, image, video, audio] with type ids 0 (text, table) / 1 (others) stands in.
- heads: MLM/MEM = BERT LM head (dense, GELU, LN, decoder tied to the word embeddings); image, video and
  audio = transform (dense, GELU, LN) + Lin to the target size, on positions 1: (global token dropped).

Missing modalities: in "zeros" mode (official) they enter as zeros and are attended to. In "mask" mode
(deviation) their fused tokens are removed from the fusion encoder's keys as well.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from contrastlab.methods.scale.config import SCALEConfig
from contrastlab.methods.scale.data import PAD

ORDER = ("text", "image", "table", "video", "audio")  # the graph's modality order (card b)


class Encoder(nn.Module):
    """A stack of post-LN Transformer layers (BERT layout) with a key padding mask."""

    def __init__(self, layers: int, hidden: int, heads: int, intermediate: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(hidden, heads, intermediate, dropout, activation="gelu", batch_first=True, norm_first=False)
            for _ in range(layers)
        )

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=pad)
        return x


class Transform(nn.Module):
    """dense -> GELU -> LN (BERT's prediction-head transform)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.dense, self.norm = nn.Linear(hidden, hidden), nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x):
        return self.norm(F.gelu(self.dense(x)))


class RegressionHead(nn.Module):
    def __init__(self, hidden: int, out_dim: int):
        super().__init__()
        self.transform, self.out = Transform(hidden), nn.Linear(hidden, out_dim)

    def forward(self, x):
        return self.out(self.transform(x))


class LMHead(nn.Module):
    """BERT LM head with the decoder tied to the word embeddings."""

    def __init__(self, embeddings: nn.Embedding):
        super().__init__()
        hidden, vocab = embeddings.embedding_dim, embeddings.num_embeddings
        self.transform, self.embeddings = Transform(hidden), embeddings
        self.bias = nn.Parameter(torch.zeros(vocab))

    def forward(self, x):
        return self.transform(x) @ self.embeddings.weight.T + self.bias


class TokenEmbeddings(nn.Module):
    def __init__(self, vocab: int, max_len: int, hidden: int, dropout: float):
        super().__init__()
        self.word, self.pos = nn.Embedding(vocab, hidden, padding_idx=PAD), nn.Embedding(max_len, hidden)
        self.norm, self.drop = nn.LayerNorm(hidden, eps=1e-12), nn.Dropout(dropout)

    def forward(self, ids):
        pos = torch.arange(ids.shape[1], device=ids.device)
        return self.drop(self.norm(self.word(ids) + self.pos(pos)[None]))


class FeatureEmbeddings(nn.Module):
    """LN(Lin(feature) + pos) over [mean token, features...] (video, audio)."""

    def __init__(self, in_dim: int, max_len: int, hidden: int, dropout: float):
        super().__init__()
        self.proj, self.pos = nn.Linear(in_dim, hidden), nn.Embedding(max_len, hidden)
        self.norm, self.drop = nn.LayerNorm(hidden, eps=1e-12), nn.Dropout(dropout)

    def forward(self, feats):
        x = torch.cat([feats.mean(dim=1, keepdim=True), feats], dim=1)
        pos = torch.arange(x.shape[1], device=x.device)
        return self.drop(self.norm(self.proj(x) + self.pos(pos)[None]))


class RegionEmbeddings(nn.Module):
    """LN(Lin(region) + Lin(box)) over [global token, regions...]; global = mean region, box [0,0,1,1,1]."""

    def __init__(self, in_dim: int, hidden: int, dropout: float):
        super().__init__()
        self.proj, self.box = nn.Linear(in_dim, hidden), nn.Linear(5, hidden)
        self.norm, self.drop = nn.LayerNorm(hidden, eps=1e-12), nn.Dropout(dropout)

    def forward(self, regions, boxes):
        glob_box = torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0], device=boxes.device, dtype=boxes.dtype).expand(len(boxes), 1, 5)
        x = torch.cat([regions.mean(dim=1, keepdim=True), regions], dim=1)
        b = torch.cat([glob_box, boxes], dim=1)
        return self.drop(self.norm(self.proj(x) + self.box(b)))


def _bert_init(module: nn.Module) -> None:
    """BERT's initialisation: N(0, 0.02) weights for linear layers and embeddings, zero biases.
    (PyTorch's N(0, 1) embeddings make the tied LM logits ~sqrt(H) times too large at the start.)"""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()


class SCALEModel(nn.Module):
    def __init__(self, cfg: SCALEConfig):
        super().__init__()
        self.cfg = cfg
        a = cfg.arch()
        h, d, L = a["hidden"], cfg.dropout, a["layers"]
        max_text = max(cfg.title_len, cfg.table_len)
        self.text_embed = TokenEmbeddings(cfg.vocab_size, max_text, h, d)
        self.text_encoder = Encoder(L, h, a["text_heads"], a["text_intermediate"], d)
        self.table_embed = self.text_embed if cfg.share_table_text else TokenEmbeddings(cfg.vocab_size, max_text, h, d)
        self.table_encoder = self.text_encoder if cfg.share_table_text else Encoder(L, h, a["text_heads"], a["text_intermediate"], d)
        self.image_embed = RegionEmbeddings(cfg.region_dim, h, d)
        self.image_encoder = Encoder(L, h, a["image_heads"], a["image_intermediate"], d)
        self.video_embed = FeatureEmbeddings(cfg.frame_dim, max(50, cfg.video_frames + 1), h, d)
        self.video_encoder = self.image_encoder if cfg.share_video_image else Encoder(L, h, a["image_heads"], a["image_intermediate"], d)
        a_tokens, a_dim = cfg.audio_shape
        self.audio_embed = FeatureEmbeddings(a_dim, a_tokens + 1, h, d)
        self.audio_encoder = Encoder(L, h, a["audio_heads"], a["audio_intermediate"], d)
        self.poolers = nn.ModuleDict({m: nn.Sequential(nn.Linear(h, a["pool_dim"]), nn.ReLU()) for m in ORDER})
        self.type_embed = nn.Embedding(2, h)
        self.fusion = Encoder(a["fusion_layers"], h, a["fusion_heads"], a["fusion_intermediate"], d)
        self.fusion_norm = nn.LayerNorm(h, eps=1e-12)
        self.lm_head = LMHead(self.text_embed.word)  # MLM and MEM (tied embeddings)
        self.image_head = RegressionHead(h, cfg.region_dim)
        self.video_head = RegressionHead(h, cfg.frame_dim)
        self.audio_head = RegressionHead(h, a_dim)
        self.apply(_bert_init)


    def forward(self, batch: dict) -> dict:
        """Returns u (M, B, P) pooled single-modality features, first (M, B, H) fused first tokens,
        seq {modality: fused sequence (B, L_m, H)}, present (B, M) bool (graph order)."""
        cfg = self.cfg
        present = batch["present"].bool()  # (B, 5) in ORDER
        text_ids, table_ids = batch["text_ids"], batch["table_ids"]
        # padding is masked for present text/table; a missing one is all [PAD] and attended (official zeros)
        text_pad = (text_ids == PAD) & present[:, 0:1]
        table_pad = (table_ids == PAD) & present[:, 2:3]
        text_pad[:, 0] = False
        table_pad[:, 0] = False
        t = self.text_encoder(self.text_embed(text_ids), text_pad)
        p = self.table_encoder(self.table_embed(table_ids), table_pad)
        i = self.image_encoder(self.image_embed(batch["image_feats"].float(), batch["image_boxes"].float()))
        v = self.video_encoder(self.video_embed(batch["video_feats"].float()))
        au = self.audio_encoder(self.audio_embed(batch["audio_feats"].float()))
        single = {"text": t, "image": i, "table": p, "video": v, "audio": au}
        u = torch.stack([self.poolers[m](single[m][:, 0]) for m in ORDER])

        # fusion over [text, table, image, video, audio], type 0 for text/table, 1 for the rest
        fusion_order = ("text", "table", "image", "video", "audio")
        seqs = [single[m] for m in fusion_order]
        lengths = [s.shape[1] for s in seqs]
        types = torch.cat([torch.full((n,), 0 if m in ("text", "table") else 1, dtype=torch.long, device=t.device)
                           for m, n in zip(fusion_order, lengths)])
        x = torch.cat(seqs, dim=1) + self.type_embed(types)[None]
        pads = [text_pad, table_pad] + [torch.zeros(s.shape[:2], dtype=torch.bool, device=t.device) for s in seqs[2:]]
        if cfg.missing == "mask":
            pads = [pad | ~present[:, ORDER.index(m)][:, None] for pad, m in zip(pads, fusion_order)]
        pad = torch.cat(pads, dim=1)
        pad = pad & ~pad.all(dim=1, keepdim=True)  # a sample with nothing present attends to its zeros
        fused = self.fusion(self.fusion_norm(x), pad)
        starts = torch.tensor([0, *lengths]).cumsum(0).tolist()
        seq = {m: fused[:, starts[k]:starts[k + 1]] for k, m in enumerate(fusion_order)}
        first = torch.stack([seq[m][:, 0] for m in ORDER])
        return {"u": u, "first": first, "seq": seq, "present": present}

    def product_embedding(self, out: dict, modalities: str = "tpiva") -> torch.Tensor:
        """Card f: the sum of the fused first tokens of the chosen modalities (t, p, i, v, a); in "mask"
        mode absent modalities are left out of the sum."""
        letter = {"t": "text", "p": "table", "i": "image", "v": "video", "a": "audio"}
        idx = [ORDER.index(letter[c]) for c in modalities]
        first = out["first"][idx]
        if self.cfg.missing == "mask":
            first = first * out["present"][:, idx].T[:, :, None].float()
        return first.sum(dim=0)
