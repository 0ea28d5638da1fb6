"""DeCLIP's loss terms, as pure functions of tensors (card b).

Notation: local batch B, world size W, `gather` concatenates a tensor over ranks (with gradient,
see `contrastlab.platform.distributed.gather`), labels `y = rank*B + arange(B)` (local loss).
`C(i, t)` is the CLIP pair loss `contrastlab.methods.clip.loss.clip_loss`.

    L_mvs = [C(i1,t) + C(i2,t) + C(i1,ta) + C(i2,ta)] / 4
    L_ss  = -1/2 [D(p1,z2) + D(p2,z1)],   D(p,z) = mean_b cos(p_b, stopgrad(z_b))
    L_mlm = mean CE over the selected (label != ignore_index) positions
    L_nn  = 1/2 sum_v 1/2 [CE(s i_v gather(n)^T, y) + CE(s i_v gather(na)^T, y)]   (image -> NN-text only)
    L     = w_c L_mvs + w_ss L_ss + w_mlm L_mlm + w_nn L_nn,   w_c = 1 - (w_ss + w_mlm + w_nn)

Every term is computed in (at least) fp32, whatever the autocast dtype of its inputs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from contrastlab.methods.clip.loss import Gather, clip_loss, identity_gather

EXTRA_TERMS = ("ss", "mlm", "nn")
CONTRASTIVE_KEYS = ("mvs", "clip")  # the contrastive term may be given under either name


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """Upcast half/bfloat16 to fp32; keep fp32/fp64 as they are (fp64 only appears in tests)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _mean(values: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean of a few scalars, by pairwise halving for 2 so identical inputs give back exactly the input."""
    if len(values) == 1:
        return values[0]
    if len(values) == 2:
        return 0.5 * (values[0] + values[1])
    return sum(values) / len(values)


def _present(*xs: torch.Tensor | None) -> list[torch.Tensor]:
    return [x for x in xs if x is not None]


def mvs_loss(
    i1: torch.Tensor,
    i2: torch.Tensor | None,
    t: torch.Tensor,
    ta: torch.Tensor | None,
    scale: torch.Tensor | float,
    gather: Gather = identity_gather,
    rank: int = 0,
) -> torch.Tensor:
    """Multi-view supervision: the mean CLIP loss over every (image view, text view) pairing.

    `L_mvs = [C(i1,t) + C(i2,t) + C(i1,ta) + C(i2,ta)]/4`, computed as the mean over image views
    of the mean over text views (the same value, but exact when views coincide). `i2` or `ta` may
    be None (MVS off for that modality): with both None this is plain `C(i1, t)`, the CLIP loss.
    All inputs are local, L2-normalised (B, D) embeddings; `t` is the (MLM-masked) caption.
    """
    images, texts = _present(i1, i2), _present(t, ta)
    per_image = [_mean([clip_loss(i, tx, scale, gather, rank) for tx in texts]) for i in images]
    return _mean(per_image)


def simsiam_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """SimSiam's symmetric negative cosine: `-1/2 [D(p1,z2) + D(p2,z1)]`, in [-1, 1].

    `D(p, z) = mean_b cos(p_b, stopgrad(z_b))`: the targets z get no gradient from this term.
    Invariant to positive rescaling of p or z (cosine). p, z: (B, d) predictor / projector outputs.
    """

    def d(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(_at_least_fp32(p), _at_least_fp32(z.detach()), dim=-1).mean()

    return -0.5 * (d(p1, z2) + d(p2, z1))


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Masked-language-model loss: mean cross-entropy over the selected positions only.

    `logits`: (..., V), `labels`: (...) with `ignore_index` at unselected positions. Works both on
    full (B, L, V) logits and on logits already restricted to the selected positions (N, V).
    With no selected position it returns 0 (not NaN), still attached to the graph of `logits`.
    """
    flat_logits = logits.reshape(-1, logits.shape[-1])
    flat_labels = labels.reshape(-1)
    selected = flat_labels != ignore_index
    if not bool(selected.any()):
        return _at_least_fp32(flat_logits).sum() * 0.0
    return F.cross_entropy(_at_least_fp32(flat_logits[selected]), flat_labels[selected])


def nn_loss(
    i1: torch.Tensor,
    i2: torch.Tensor | None,
    n: torch.Tensor,
    na: torch.Tensor | None,
    scale: torch.Tensor | float,
    gather: Gather = identity_gather,
    rank: int = 0,
) -> torch.Tensor:
    """Nearest-neighbour supervision, one direction only (image -> NN-text).

    `L_nn = 1/2 sum_v 1/2 [CE(s i_v gather(n)^T, y) + CE(s i_v gather(na)^T, y)]`, y = rank*B + arange(B),
    the same labels as the CLIP term. `n`/`na` are the queue neighbours of t/ta (detached, unit
    rows; detached again here so no gradient can reach the queue); the gradient flows to the images
    only. `i2` or `na` may be None: the mean then runs over the views present.
    """
    b = i1.shape[0]
    labels = torch.arange(b, device=i1.device) + rank * b
    neighbours = [gather(_at_least_fp32(x.detach())) for x in _present(n, na)]

    def one_view(i: torch.Tensor) -> torch.Tensor:
        i = _at_least_fp32(i)
        return _mean([F.cross_entropy(scale * i @ nb.T, labels) for nb in neighbours])

    return _mean([one_view(i) for i in _present(i1, i2)])


@dataclass(frozen=True)
class LossWeights:
    """Loss weights, card b: L = 0.4 L_mvs + 0.2 L_ss + 0.2 L_mlm + 0.2 L_nn.

    Rule for switched-off signals (the card's sweep definition, "the CLIP weight is 1 minus the sum
    of these"): an extra term counts as enabled when it is present in `terms` and its weight is > 0;
    the contrastive weight is `1 - sum(enabled extra weights)` unless `contrastive` is set
    explicitly. So with every extra signal off the total is exactly the contrastive term, and with
    MVS also off (no second view) that term is plain `C(i1, t)`: DeCLIP reduces to the CLIP baseline.
    """

    ss: float = 0.2
    mlm: float = 0.2
    nn: float = 0.2
    contrastive: float | None = None  # None: 1 - sum of enabled extra weights (0.4 with all on)

    @classmethod
    def from_mapping(cls, m: Mapping[str, float | None]) -> "LossWeights":
        m = dict(m)
        for key in CONTRASTIVE_KEYS:
            if key in m:
                m["contrastive"] = m.pop(key)
        unknown = set(m) - {"ss", "mlm", "nn", "contrastive"}
        if unknown:
            raise ValueError(f"unknown loss weight(s) {sorted(unknown)}")
        return cls(**m)

    def resolve(self, enabled: set[str] | Sequence[str]) -> dict[str, float]:
        """Weights actually applied, given the names of the extra terms that were computed."""
        if any(w < 0 for w in (self.ss, self.mlm, self.nn)):
            raise ValueError(f"loss weights must be >= 0, got {self}")
        extras = {k: float(getattr(self, k)) for k in EXTRA_TERMS if k in enabled and getattr(self, k) > 0}
        contrastive = 1.0 - sum(extras.values()) if self.contrastive is None else float(self.contrastive)
        if contrastive < 0:
            raise ValueError(f"extra loss weights sum to more than 1: {extras}")
        return {"contrastive": contrastive, **extras}


def declip_total(
    terms: Mapping[str, torch.Tensor], weights: LossWeights | Mapping[str, float | None] = LossWeights()
) -> torch.Tensor:
    """Weighted DeCLIP total. `terms`: {"mvs" (or "clip"): L_mvs, and any of "ss", "mlm", "nn"}.

    See `LossWeights` for how weights renormalise when signals are off. Terms whose weight is 0 are
    left out (not multiplied by 0), so a NaN in a switched-off term cannot leak into the total.
    """
    if not isinstance(weights, LossWeights):
        weights = LossWeights.from_mapping(weights)
    contrastive_keys = [k for k in CONTRASTIVE_KEYS if k in terms]
    if len(contrastive_keys) != 1:
        raise ValueError(f"terms need exactly one of {CONTRASTIVE_KEYS}, got {sorted(terms)}")
    unknown = set(terms) - set(CONTRASTIVE_KEYS) - set(EXTRA_TERMS)
    if unknown:
        raise ValueError(f"unknown loss term(s) {sorted(unknown)}")
    w = weights.resolve(set(terms))
    total = w["contrastive"] * _at_least_fp32(terms[contrastive_keys[0]])
    for key in EXTRA_TERMS:
        if key in w:
            total = total + w[key] * _at_least_fp32(terms[key])
    return total


def clamp_log_scale_(param: torch.Tensor, low: float | None = 3.0, high: float | None = 6.0) -> torch.Tensor:
    """Clamp the learnable log-scale theta in place into [low, high] (card b, i).

    Applied to the parameter (not just the forward value) before and after every optimiser step;
    the first clamp moves the initial log(1/0.07) = 2.659 up to 3. DeCLIP's ViT/YFCC configs use
    [3, 6]; the RN50 configs clamp from below only (`high=None`).
    """
    if low is None and high is None:
        return param
    with torch.no_grad():
        param.clamp_(min=low, max=high)
    return param


@dataclass(frozen=True)
class ThetaClamp:
    """Config-carrying form of `clamp_log_scale_`: `ThetaClamp(3.0, None)(model.log_scale)`."""

    low: float | None = 3.0
    high: float | None = 6.0

    def __call__(self, param: torch.Tensor) -> torch.Tensor:
        return clamp_log_scale_(param, self.low, self.high)
