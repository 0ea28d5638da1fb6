"""DeCLIP's hyperparameters (card e, g; quirks of card b as flags).

Defaults are the card's small-scale faithful version (g): small CNN image tower and 2-layer text
transformer, 48 px, context 16 (deviation: the card's text tower is word-level; this one uses the CLIP
BPE tokenizer of every text tower here, so a caption of 2-3 shapes is often cut at 16 tokens; raise
`context_length` for longer captions), projector 64->128->128->128, predictor 128->32->128, queue 1,024,
crop scale (0.5, 1), AdamW 1e-3 with betas (0.9, 0.98) and weight decay 0.1, loss weights
0.4 / 0.2 / 0.2 / 0.2, theta clamped into [3, 6], scale capped at 100.

Real runs (card c, e) set the towers and sizes through `--set` (or a YAML `method:` section); see
`REAL_RUN_OVERRIDES`, e.g. `real_run_sets("ViT-B-32")` gives the `--set` strings for ViT-B/32.

How switched-off signals combine (card e "the CLIP weight is 1 minus the sum of these"): an extra
term (SimSiam, MLM, NN) is computed and added only when its `use_*` flag is on and its weight is
> 0; the contrastive weight is `1 - sum(active extra weights)` unless `weight_contrastive` is set.
With every extra signal off (`use_mvs=use_simsiam=use_mlm=use_nn=False`) DeCLIP's loss is exactly
CLIP's loss `C(i, t)` on the same batch.

What each switch turns off:
- `use_mvs`: the contrastive term becomes `C(i1, t)` (one image view, no EDA caption in it); the
  NN term then also uses only `i1` and `t` (the queue receives `t` only).
- `use_simsiam`: no projector/predictor, and no second image view unless MVS needs it.
- `use_mlm`: no masking; the contrastive caption is the original one.
- `use_nn`: no queue.
"""
from __future__ import annotations

from dataclasses import dataclass

from contrastlab.methods.declip.nn_queue import OVERFLOW_POLICIES

IMAGE_TOWERS = ("cnn-small", "vit-small", "RN50", "ViT-B-32")
TEXT_TOWERS = ("small", "clip")
VIEW_AUGMENTATIONS = ("mocov2", "crop")


@dataclass
class DeCLIPConfig:
    # ---- towers (reusing the CLIP baseline's builders)
    image_tower: str = "cnn-small"  # cnn-small | vit-small | RN50 | ViT-B-32
    text_tower: str = "small"  # small | clip
    embed_dim: int = 64  # card c: 1024 for RN50, 512 for ViT-B/32
    image_size: int = 48  # training crop; real runs use 224
    context_length: int = 16  # small text tower; 77 for the clip text tower
    text_causal: bool = True  # quirk 2: CLIP's causal mask is kept during MLM
    # ---- SimSiam heads (card c full size: 1024 / 1024 / 512)
    proj_hidden: int = 128
    proj_out: int = 128
    pred_hidden: int = 32

    # ---- which signals are on (each loss term switchable)
    use_mvs: bool = True
    use_simsiam: bool = True
    use_mlm: bool = True
    use_nn: bool = True
    # ---- loss weights (card b: 0.4 L_mvs + 0.2 L_ss + 0.2 L_mlm + 0.2 L_nn)
    weight_ss: float = 0.2
    weight_mlm: float = 0.2
    weight_nn: float = 0.2
    weight_contrastive: float | None = None  # None: 1 - sum of the active extra weights
    masked_caption_in_contrastive: bool = True  # quirk 1: one text pass serves MLM and the embedding
    text_norm_eps: float = 1e-10  # card b: t = f_T / (||f_T|| + 1e-10); 0 = plain F.normalize

    # ---- NN queue (quirk 3)
    queue_size: int = 1024  # card g small scale; 65,536 in the official configs
    queue_overflow: str = "official"  # official (drop the rest of a batch at the end) | ring (recorded deviation)
    queue_seed: int = 0  # seed of the queue's initial random unit rows

    # ---- temperature (card b): s = min(exp(theta), max_logit_scale); theta clamped in the optimiser hooks
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0
    theta_clamp_low: float | None = 3.0
    theta_clamp_high: float | None = 6.0  # None or .inf: clamp from below only (the RN50 configs)

    # ---- image views (card d: MoCo-v2 recipe, twice)
    view_augmentation: str = "mocov2"  # mocov2 (card) | crop (CLIP's crop + flip only)
    crop_scale_min: float = 0.5  # card g for small data; card d: 0.2
    blur: bool = True

    # ---- EDA (card d: one op chosen per caption; weights are relative)
    eda_weight_sr: float = 1.0  # synonym replacement
    eda_weight_ri: float = 0.0  # random insertion (not among the card's textaugment defaults)
    eda_weight_rs: float = 1.0  # random swap
    eda_weight_rd: float = 1.0  # random deletion
    eda_n: int = 1  # words replaced / inserted / swapped
    eda_p_rd: float = 0.1  # per-word deletion probability
    eda_synonyms_file: str = ""  # optional JSON {"word": [synonyms]} merged into the built-in table
    eda_dataset_synonyms: bool = True  # merge the dataset's meta["synonyms"] (shapes-captions ships one)

    # ---- MLM masking (card b)
    mlm_select_prob: float = 0.15
    mlm_mask_prob: float = 0.8
    mlm_random_prob: float = 0.1
    mlm_random_excludes_special: bool = False  # deviation switch, see declip/mlm.py

    # ---- optimiser (card e)
    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    warmup_fraction: float = 0.05  # card: 2,500 of 128,001 iterations (~0.02) on YFCC
    warmup_start_factor: float = 0.1  # card: warm-up from 1e-4 to 1e-3

    # ---- evaluation
    probe: bool = True  # linear probe on frozen image features (needs a label field in the eval data)
    retrieval_examples: int = 4  # query images in the TensorBoard retrieval grid (0 = off)

    # ------------------------------------------------------------------ derived
    @property
    def mlm_active(self) -> bool:
        return self.use_mlm and self.weight_mlm > 0

    @property
    def ss_active(self) -> bool:
        return self.use_simsiam and self.weight_ss > 0

    @property
    def nn_active(self) -> bool:
        return self.use_nn and self.weight_nn > 0

    @property
    def two_views(self) -> bool:
        return self.use_mvs or self.ss_active

    @property
    def contrastive_uses_masked(self) -> bool:
        return self.mlm_active and self.masked_caption_in_contrastive

    def eda_probs(self) -> dict[str, float]:
        return {"sr": self.eda_weight_sr, "ri": self.eda_weight_ri, "rs": self.eda_weight_rs, "rd": self.eda_weight_rd}

    def validate(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(f"method.{msg}")

        need(self.image_tower in IMAGE_TOWERS, f"image_tower must be one of {IMAGE_TOWERS}, got {self.image_tower!r}")
        need(self.text_tower in TEXT_TOWERS, f"text_tower must be one of {TEXT_TOWERS}, got {self.text_tower!r}")
        need(self.view_augmentation in VIEW_AUGMENTATIONS, f"view_augmentation must be one of {VIEW_AUGMENTATIONS}, got {self.view_augmentation!r}")
        need(self.queue_overflow in OVERFLOW_POLICIES, f"queue_overflow must be one of {OVERFLOW_POLICIES}, got {self.queue_overflow!r}")
        need(0 < self.crop_scale_min <= 1, f"crop_scale_min must lie in (0, 1], got {self.crop_scale_min}")
        need(self.context_length >= 3, f"context_length must be >= 3, got {self.context_length}")
        need(min(self.embed_dim, self.proj_hidden, self.proj_out, self.pred_hidden, self.image_size) >= 1, "sizes must be positive")
        need(self.queue_size >= 1, f"queue_size must be >= 1, got {self.queue_size}")
        weights = {"weight_ss": self.weight_ss, "weight_mlm": self.weight_mlm, "weight_nn": self.weight_nn}
        need(all(w >= 0 for w in weights.values()), f"loss weights must be >= 0, got {weights}")
        active = (self.weight_ss if self.ss_active else 0) + (self.weight_mlm if self.mlm_active else 0) + (self.weight_nn if self.nn_active else 0)
        need(self.weight_contrastive is not None or active <= 1, f"active extra loss weights sum to {active:.3f} > 1 (the contrastive weight would be negative)")
        need(self.weight_contrastive is None or self.weight_contrastive >= 0, "weight_contrastive must be >= 0")
        low, high = self.theta_clamp_low, self.theta_clamp_high
        need(low is None or high is None or low <= high, f"theta_clamp_low {low} > theta_clamp_high {high}")
        need(self.init_temperature > 0 and self.max_logit_scale > 0, "init_temperature and max_logit_scale must be > 0")
        need(0 <= self.mlm_select_prob <= 1 and self.mlm_mask_prob >= 0 and self.mlm_random_prob >= 0
             and self.mlm_mask_prob + self.mlm_random_prob <= 1, "mlm probabilities: select in [0, 1], mask + random <= 1")
        eda = self.eda_probs()
        need(all(v >= 0 for v in eda.values()) and sum(eda.values()) > 0, f"EDA weights must be >= 0 with a positive sum, got {eda}")
        need(0 <= self.eda_p_rd < 1 and self.eda_n >= 0, "eda_p_rd must lie in [0, 1) and eda_n >= 0")
        need(self.text_norm_eps >= 0, "text_norm_eps must be >= 0")


# Card c/e real-run settings (random init, 224 px, BPE context 77, full-size heads, 65,536 queue).
_REAL_COMMON = {
    "text_tower": "clip", "context_length": 77, "image_size": 224, "crop_scale_min": 0.2,
    "proj_hidden": 1024, "proj_out": 1024, "pred_hidden": 512, "queue_size": 65536,
}
REAL_RUN_OVERRIDES: dict[str, dict] = {
    "RN50": {**_REAL_COMMON, "image_tower": "RN50", "embed_dim": 1024, "theta_clamp_high": float("inf")},
    "ViT-B-32": {**_REAL_COMMON, "image_tower": "ViT-B-32", "embed_dim": 512},
}


def real_run_sets(tower: str = "ViT-B-32") -> list[str]:
    """`--set` strings for a card-sized run, e.g. `sweeps/declip.py --set method.image_tower=ViT-B-32 ...`."""
    if tower not in REAL_RUN_OVERRIDES:
        raise ValueError(f"no real-run preset for {tower!r}: use {sorted(REAL_RUN_OVERRIDES)}")
    return [f"method.{k}={'.inf' if v == float('inf') else v}" for k, v in REAL_RUN_OVERRIDES[tower].items()]
