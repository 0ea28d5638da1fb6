"""SCALE configuration (method card `scale.md`, sections c, e and g).

`size` picks the architecture preset: "small" (card g: encoders 2 layers, hidden 64, 4 heads,
fusion 2 layers, poolers 64->64; the CPU default) or "base" (card c: 6 layers, hidden 768, 12 heads /
intermediate 3072 for text+table, 8 heads / 1024 for image+video, fusion 6 layers 8 heads 2048,
poolers 768->1024). Any architecture field left at 0 takes the preset's value.
"""
from __future__ import annotations

from dataclasses import dataclass
from contrastlab.methods.scale.metrics import AP_FORMULAS

PRESETS = {
    "small": dict(hidden=64, layers=2, text_heads=4, text_intermediate=256, image_heads=4, image_intermediate=256,
                  audio_heads=4, audio_intermediate=256, fusion_layers=2, fusion_heads=4, fusion_intermediate=256, pool_dim=64),
    "base": dict(hidden=768, layers=6, text_heads=12, text_intermediate=3072, image_heads=8, image_intermediate=1024,
                 audio_heads=12, audio_intermediate=3072, fusion_layers=6, fusion_heads=8, fusion_intermediate=2048, pool_dim=1024),
}
GRAPH_MODES = ("official", "detached", "off")
MISSING_MODES = ("zeros", "mask")


@dataclass
class SCALEConfig:
    size: str = "small"  # small | base (see PRESETS)
    hidden: int = 0
    layers: int = 0
    text_heads: int = 0
    text_intermediate: int = 0
    image_heads: int = 0
    image_intermediate: int = 0
    audio_heads: int = 0
    audio_intermediate: int = 0
    fusion_layers: int = 0
    fusion_heads: int = 0
    fusion_intermediate: int = 0
    pool_dim: int = 0
    dropout: float = 0.1
    # official sharing quirks (card c / i): table reuses the text embeddings + layers, video the image layers
    share_table_text: bool = True
    share_video_image: bool = True

    # ---- inputs (preprocessing)
    vocab_size: int = 4096  # hashed word vocabulary (the official BERT vocab is 21,128)
    title_len: int = 16  # official 36
    table_len: int = 32  # official 64
    image_size: int = 32
    image_grid: int = 4  # regions = grid x grid patches (official: 36 detector ROIs of 2,048-d)
    video_frames: int = 8  # official 12 S3D frame features
    video_stride: int = 1
    frame_size: int = 8  # frames -> frame_size^2 * 3 pixels as the frame feature
    audio_rate: int = 8000
    audio_seconds: float = 1.5  # official 12 s at 16 kHz
    n_mels: int = 16  # official 80
    n_fft: int = 256  # official 1,024
    audio_hop: int = 256  # official 256
    audio_log: bool = False  # official: power mel (no log), each frame standardised over the mel bins
    audio_tokens_are_mels: bool = True  # official quirk: one token per mel bin, its features = the time frames

    # ---- masking (card d)
    mlm_prob: float = 0.15  # then 80 / 10 / 10 (mask / random / keep)
    mem_pair_prob: float = 0.15  # each (p, v) pair; then 50/50 all property or all value tokens
    mrm_prob: float = 0.15
    mrm_zero_prob: float = 0.9
    mfm_prob: float = 0.15
    mam_prob: float = 0.15
    modality_dropout: float = 0.0  # sweep (card e): drop each present modality at train time, keep >= 1

    # ---- objective (card b / e)
    tau: float = 0.07  # fixed temperature
    clr_weight: float = 1.0  # weight of L_CLR against the (unit-weighted) masked tasks
    img_weight: float = 1.0
    graph_weighting: str = "official"  # official (gradient through G) | detached | off (w = 1)
    mask_weighting: bool = True  # omega = diag(G') on the masked-task outputs
    missing: str = "zeros"  # zeros (official: zeros, attended) | mask (deviation: masked attention + no loss)
    negatives: str = "local"  # card i: official negatives are local to each replica (the only mode implemented)

    # ---- optimisation (card g small recipe: AdamW 3e-4; card e: warm-up 10 %, linear decay)
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1

    # ---- evaluation
    probe: str = "last"  # linear probes: last (final epoch) | always | never
    probe_max_train: int = 2000  # training rows used by the probes
    retrieval_ks: tuple = (1, 5, 10)
    # [unsure] the card gives the mAP@k formula in words only: "official" cuts each ranked list at
    # k_eff = min(k, |pos|, |list|) and divides by the hits (evaluate_unit_v2.py); "min_k_pos" scans the
    # top k and divides by min(k, |pos|) (this code before session 19). See metrics.py.
    retrieval_ap: str = "official"

    def arch(self) -> dict:
        """The resolved architecture: the preset with every non-zero field applied."""
        preset = dict(PRESETS[self.size])
        return {k: (getattr(self, k) or v) for k, v in preset.items()}

    @property
    def n_regions(self) -> int:
        return self.image_grid * self.image_grid

    @property
    def region_dim(self) -> int:
        return (self.image_size // self.image_grid) ** 2 * 3

    @property
    def frame_dim(self) -> int:
        return self.frame_size * self.frame_size * 3

    @property
    def audio_frames(self) -> int:
        return int(round(self.audio_rate * self.audio_seconds)) // self.audio_hop + 1  # torch.stft, center=True

    @property
    def audio_shape(self) -> tuple[int, int]:
        """(tokens, features per token) of the audio input."""
        return (self.n_mels, self.audio_frames) if self.audio_tokens_are_mels else (self.audio_frames, self.n_mels)

    def validate(self) -> None:
        if self.size not in PRESETS:
            raise ValueError(f"method.size must be one of {sorted(PRESETS)}, got {self.size!r}")
        if self.graph_weighting not in GRAPH_MODES:
            raise ValueError(f"method.graph_weighting must be one of {GRAPH_MODES}, got {self.graph_weighting!r}")
        if self.missing not in MISSING_MODES:
            raise ValueError(f"method.missing must be one of {MISSING_MODES}, got {self.missing!r}")
        if self.negatives != "local":
            raise ValueError("method.negatives: only 'local' (the official per-replica negatives) is implemented")
        if self.retrieval_ap not in AP_FORMULAS:
            raise ValueError(f"method.retrieval_ap must be one of {AP_FORMULAS}, got {self.retrieval_ap!r}")
        if self.probe not in ("last", "always", "never"):
            raise ValueError(f"method.probe must be last, always or never, got {self.probe!r}")
        if self.image_size % self.image_grid:
            raise ValueError(f"method.image_size ({self.image_size}) must be a multiple of method.image_grid ({self.image_grid})")
        if self.tau <= 0:
            raise ValueError(f"method.tau must be > 0, got {self.tau}")
        for name in ("mlm_prob", "mem_pair_prob", "mrm_prob", "mrm_zero_prob", "mfm_prob", "mam_prob", "modality_dropout", "dropout"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"method.{name} must lie in [0, 1], got {v}")
        if self.title_len < 3 or self.table_len < 3 or self.vocab_size < 16:
            raise ValueError("method.title_len and method.table_len must be >= 3 and method.vocab_size >= 16")
        a = self.arch()
        for heads in ("text_heads", "image_heads", "audio_heads", "fusion_heads"):
            if a["hidden"] % a[heads]:
                raise ValueError(f"hidden size {a['hidden']} is not divisible by {heads}={a[heads]}")
