"""UNIMO's hyperparameters (card `unimo.md`); defaults = card g's small-scale version.

Every reconstructed choice of the card (pretraining/CMCL code was never released) is a named
option here, marked [R] (reconstructed) or [U2] (taken from UNIMO-2's code):
- `similarity` "cosine" [U2] on the pooled heads `proj_activation` FC+ReLU [U2]. Cosine is the
  only d(V, W) built: the field names the choice and rejects any other value;
- `in_batch` negatives on [R] (not in the paper's set notation; UNIMO-2 uses only them);
- `cmcl_variant` "card" (the paper's multi-positive InfoNCE) or "unimo2" (UNIMO-2's released
  symmetric in-batch CE over the local pair rows, `unimo2_normalize_text` quirk);
- temperature learnable, init 0.07, clipped to [0.001, 0.5] [U2];
- loss weights `weight_cmcl = weight_visual = weight_language = 1` (recalled);
- `stream_mix` pair:text:image: the card's batch proportions, applied here as per-stream loss
  weights relative to the pair stream (the dataset sets the sample proportions; see method.py);
- `mlm_masking` "span" (geometric p=0.2, recalled) or "token"; 80/10/10 replacement;
- image regions (no option): a conv stem's patch grid with box geometry stands in for Faster R-CNN
  regions (card i); `region_target` "pixels" (the patch's normalised pixels) stands in for the
  detector's 2048-d ROI feature ("features" regresses the stem's own detached features instead);
  the detector's 1,601-class soft-label region classification has no counterpart and is not built.
- optimiser: AdamW, lr 1e-4 (card e; card g says 3e-4), wd 0.01, 5% warm-up then linear decay to 0
  (card e; `lr_schedule` "linear" = the platform's poly schedule with power 1; "cosine" selectable).
- `dropout` 0 for the small from-scratch model (card c's 0.1 is for a RoBERTa-initialised backbone;
  with 0.1 the small model stayed at chance for 100+ steps); `norm_first` False = card's post-LN;
  `pooling` "cls" = the card's [CLS]/[IMG] outputs ("mean" is an alternative).

Deviation: the language objective is only card b's task (a), bidirectional span/token MLM. Task
(b), seq2seq LM (UniLM masks, ~25% target fragments; captioning on pairs), is not built: no
option selects it, and `masking.seq2seq_attention_mask` is not used by any training path.
"""
from __future__ import annotations

from dataclasses import dataclass

SIZE_PRESETS = {  # layers, hidden, heads, region feature dim
    "small": (3, 96, 4, 96),  # card g
    "base": (12, 768, 12, 2048),  # card c (RoBERTa-base sized; random init, no download)
    "large": (24, 1024, 16, 2048),
}
REWRITE_LEVELS = ("sent", "phrase", "word")


def parse_stream_mix(mix: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(x) for x in str(mix).split(":"))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) < 0 or parts[0] <= 0:
        raise ValueError(f"method.stream_mix must be 'pair:text:image' with pair > 0 and no negative part, got {mix!r}")
    return parts


@dataclass
class UNIMOConfig:
    # ---- backbone (card c: post-LN, GELU, dropout 0.1; card g small: 3 layers, 96 hidden, 4 heads)
    size: str = "small"  # small | base | large
    layers: int = 0  # 0 = from the size preset
    hidden: int = 0
    heads: int = 0
    region_dim: int = 0  # per-region feature size before FC->hidden (2048 for detector features)
    dropout: float = 0.0  # card c: 0.1 for the RoBERTa-initialised backbone; 0 here (from scratch, 0.1 collapsed small runs)
    context_length: int = 24  # card g text length; real runs 77 (BPE tokenizer limit of this platform)
    image_size: int = 48
    patch_size: int = 12  # 48/12 -> 16 regions (+ [IMG]); real runs 224/16 -> 196
    stem_channels: int = 32
    norm_first: bool = False  # card c: post-LN (RoBERTa); True = pre-LN (deviation, easier from scratch)
    pooling: str = "cls"  # card: h = [CLS] / [IMG] output; "mean" = mean of the outputs (deviation)
    proj_activation: str = "relu"  # [U2] pooled heads FC+ReLU; "none" = plain linear
    similarity: str = "cosine"  # [U2]; fixed: cosine is the only d(V, W) built, other values are rejected

    # ---- CMCL
    cmcl_variant: str = "card"  # card | unimo2
    in_batch: bool = True  # [R]
    unimo2_normalize_text: bool = True  # UNIMO-2 quirk: text normalised only with its projection
    n_paraphrases: int = 2  # back-translation stand-ins used as positives (<= dataset n_paraphrases)
    n_ret_texts: int = 1  # retrieved texts used as positives
    n_ret_images: int = 1  # retrieved images used as positives (<= dataset n_ret_images)
    hard_negatives: int = 8  # rewritten negatives per anchor (K), drawn each epoch from the mined ones
    rewrite_levels: str = "sent,phrase,word"  # which rewrite levels may be drawn
    init_temperature: float = 0.07
    learn_temperature: bool = True
    temperature_min: float = 0.001
    temperature_max: float = 0.5

    # ---- unimodal streams and loss weights
    stream_mix: str = "1:1:1"  # pair:text:image loss weights relative to the pair stream ("1:0:0": no unimodal)
    pair_masked_modelling: bool = True  # MLM + masked regions on pairs too (text conditioned on image and back)
    weight_cmcl: float = 1.0
    weight_visual: float = 1.0
    weight_language: float = 1.0
    mlm_masking: str = "span"  # span | token
    txt_mask_ratio: float = 0.15
    span_geometric_p: float = 0.2
    mlm_mask_prob: float = 0.8
    mlm_random_prob: float = 0.1
    vl_mask_ratio: float = 0.15
    overlap_ratio: float = 0.4
    region_target: str = "pixels"  # pixels | features

    # ---- optimiser
    lr: float = 1e-4  # card e "our defaults" (card g says 3e-4; 1e-4 left chance sooner in our 100-step check)
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup_fraction: float = 0.05
    lr_schedule: str = "linear"  # card e: linear decay after warm-up (platform "poly", power 1) | cosine

    # ------------------------------------------------------------------ derived
    def dims(self) -> tuple[int, int, int, int]:
        layers, hidden, heads, region = SIZE_PRESETS[self.size]
        return self.layers or layers, self.hidden or hidden, self.heads or heads, self.region_dim or region

    @property
    def n_regions(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def mix(self) -> tuple[float, float, float]:
        p, t, i = parse_stream_mix(self.stream_mix)
        return 1.0, t / p, i / p

    @property
    def levels(self) -> tuple[str, ...]:
        return tuple(x.strip() for x in self.rewrite_levels.split(",") if x.strip())

    def validate(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(f"method.{msg}")

        need(self.size in SIZE_PRESETS, f"size must be one of {sorted(SIZE_PRESETS)}, got {self.size!r}")
        layers, hidden, heads, region = self.dims()
        need(min(layers, hidden, heads, region) >= 1 and hidden % heads == 0, f"hidden {hidden} must be a positive multiple of heads {heads}")
        need(self.image_size % self.patch_size == 0, f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}")
        need(self.context_length >= 3, f"context_length must be >= 3, got {self.context_length}")
        need(self.cmcl_variant in ("card", "unimo2"), f"cmcl_variant must be 'card' or 'unimo2', got {self.cmcl_variant!r}")
        need(self.similarity == "cosine", f"similarity: only 'cosine' is implemented, got {self.similarity!r}")
        need(self.lr_schedule in ("linear", "cosine"), f"lr_schedule must be 'linear' or 'cosine', got {self.lr_schedule!r}")
        need(self.pooling in ("cls", "mean"), f"pooling must be 'cls' or 'mean', got {self.pooling!r}")
        need(self.proj_activation in ("relu", "none"), f"proj_activation must be 'relu' or 'none', got {self.proj_activation!r}")
        need(self.mlm_masking in ("span", "token"), f"mlm_masking must be 'span' or 'token', got {self.mlm_masking!r}")
        need(self.region_target in ("pixels", "features"), f"region_target must be 'pixels' or 'features', got {self.region_target!r}")
        need(all(level in REWRITE_LEVELS for level in self.levels), f"rewrite_levels must be a comma list of {REWRITE_LEVELS}, got {self.rewrite_levels!r}")
        need(min(self.n_paraphrases, self.n_ret_texts, self.n_ret_images, self.hard_negatives) >= 0, "candidate counts must be >= 0")
        need(0 < self.temperature_min <= self.init_temperature <= self.temperature_max,
             f"need 0 < temperature_min <= init_temperature <= temperature_max, got {self.temperature_min}, {self.init_temperature}, {self.temperature_max}")
        parse_stream_mix(self.stream_mix)
        need(min(self.weight_cmcl, self.weight_visual, self.weight_language) >= 0, "loss weights must be >= 0")
        need(0 < self.txt_mask_ratio <= 1 and 0 < self.vl_mask_ratio <= 1, "mask ratios must lie in (0, 1]")
        need(0 < self.span_geometric_p <= 1, "span_geometric_p must lie in (0, 1]")
        need(self.mlm_mask_prob >= 0 and self.mlm_random_prob >= 0 and self.mlm_mask_prob + self.mlm_random_prob <= 1, "mlm mask + random probs must be <= 1")
        need(0 <= self.dropout < 1, "dropout must lie in [0, 1)")


# Card c real-run settings: RoBERTa-base-sized backbone, 224 px, 16 px patches (196 regions), BPE context 77.
REAL_RUN_OVERRIDES = {"size": "base", "image_size": 224, "patch_size": 16, "context_length": 77, "stem_channels": 64, "lr": 1e-4,
                      "dropout": 0.1}


def real_run_sets() -> list[str]:
    return [f"method.{k}={v}" for k, v in REAL_RUN_OVERRIDES.items()]
