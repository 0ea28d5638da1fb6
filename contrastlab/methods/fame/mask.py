"""FAME's foreground mask and foreground-background merge (card fame.md, section b), pure torch.

Input clips X in [0, 1], shape (B, 3, T, H, W), after crop/flip and before colour jitter and
normalisation. For every clip b:

1. motion      D_b(p) = 1/(T-1) sum_{t=1}^{T-1} sum_c |X_{b,c,t-1}(p) - X_{b,c,t}(p)|
2. smooth      M_b = mm(G * D_b),  mm(x) = (x - min x) / (max x - min x + 1e-8) per clip;
               G a separable Gaussian of size s = 2*floor(floor(0.1*crop)/2) + 1, sigma = s/3,
               reflect border
3. seeds       S_fg = top floor(fg_seed * HW) pixels of M_b, S_bg = bottom floor(bg_seed * HW)
4. colour bins on the temporal-mean frame, HSV in kornia's convention (hue in radians [0, 2pi)):
               a = (s cos(2pi h) + 1)/2, b = (s sin(2pi h) + 1)/2   (official quirk: 2pi times an
               angle already in radians; `hue_quirk=False` uses cos(h), sin(h)),
               q_x = round(9x + 1) (half-to-even), bin = q_a + 10(q_b - 1) + 100(q_v - 1)
5. histograms  H_fg[k] = n_fg(k) / (sum n_fg + 1e-8),
               H_bg[k] = (n_bg(k) + 1) / (sum_k (n_bg(k) + 1) + 1e-8)  (Laplace +1 on all 1000 bins)
6. colour prob R_b(p) = H_fg[bin(p)] / (H_bg[bin(p)] + H_fg[bin(p)])
7. final mask  S_b = mm(G * R_b); m_b = 1 on the top floor(beta * HW) pixels of S_b (exactly that many)
8. merge       Y_b = m_b X_b + (1 - m_b) X_{pi(b)}, pi a random permutation of the local batch
               (fixed points allowed), the mask broadcast over channels and time.

Ties in the top-k selections (flat regions) are broken by `torch.topk`, so exact masks of
perfectly static, noise-free clips are implementation-dependent (card i); the number of ones is not.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

N_BINS = 1000  # bins 1..999 are reachable; index 0 stays empty but gets the Laplace +1 like the rest
MM_EPS = 1e-8
HIST_EPS = 1e-8


# --------------------------------------------------------------------------- Gaussian smoothing
def gaussian_kernel_size(crop: int) -> int:
    """s = 2 * floor(floor(0.1 * crop) / 2) + 1: 224 -> 23, 112 -> 11, 64 -> 7, 48 -> 5, 32 -> 3."""
    return 2 * ((int(0.1 * crop)) // 2) + 1


def gaussian_kernel1d(size: int, sigma: float | None = None, device=None, dtype=torch.float32) -> torch.Tensor:
    """Normalised 1-D Gaussian taps exp(-x^2 / 2 sigma^2), x = -(s//2)..s//2; sigma defaults to s/3."""
    sigma = size / 3.0 if sigma is None else sigma
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def gaussian_blur2d(x: torch.Tensor, size: int, sigma: float | None = None) -> torch.Tensor:
    """Separable Gaussian blur of (B, H, W) maps with reflect padding (size 1 = identity)."""
    if size <= 1:
        return x
    g = gaussian_kernel1d(size, sigma, x.device, x.dtype)
    pad = size // 2
    y = F.pad(x[:, None], (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, g.view(1, 1, 1, size))
    y = F.conv2d(y, g.view(1, 1, size, 1))
    return y[:, 0]


def minmax(x: torch.Tensor) -> torch.Tensor:
    """Per-map min-max scaling of (B, H, W): (x - min) / (max - min + 1e-8)."""
    flat = x.flatten(1)
    lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
    return (x - lo[:, None, None]) / (hi - lo + MM_EPS)[:, None, None]


# --------------------------------------------------------------------------- steps 1-3: motion and seeds
def motion_map(x: torch.Tensor) -> torch.Tensor:
    """D (B, H, W): mean over the T-1 frame pairs of the channel-summed absolute frame difference."""
    if x.shape[2] < 2:
        return torch.zeros(x.shape[0], *x.shape[3:], device=x.device, dtype=x.dtype)
    return (x[:, :, 1:] - x[:, :, :-1]).abs().sum(dim=1).mean(dim=1)


def top_fraction_mask(score: torch.Tensor, fraction: float, largest: bool = True) -> torch.Tensor:
    """Bool (B, H, W): exactly floor(fraction * H * W) pixels with the largest (or smallest) score."""
    b, h, w = score.shape
    n = int(math.floor(fraction * h * w))
    out = torch.zeros(b, h * w, dtype=torch.bool, device=score.device)
    if n > 0:
        idx = score.reshape(b, -1).topk(n, dim=1, largest=largest).indices
        out.scatter_(1, idx, True)
    return out.view(b, h, w)


def seed_masks(motion: torch.Tensor, fg_fraction: float = 0.5, bg_fraction: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """(S_fg, S_bg): top fg_fraction and bottom bg_fraction of the smoothed motion map M."""
    return top_fraction_mask(motion, fg_fraction, True), top_fraction_mask(motion, bg_fraction, False)


# --------------------------------------------------------------------------- steps 4-6: colour statistics
def rgb_to_hsv(img: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> HSV in kornia's convention: h in radians [0, 2pi), s, v in [0, 1].

    v = max, s = (max - min) / (v + eps); hue from the channel holding the max (the first one on
    ties): r: (b - g)/d, g: 2 + (r - b)/d, b: 4 + (g - r)/d, taken /6 mod 1, times 2pi (d = 1 if 0).
    """
    r, g, b = img[:, 0], img[:, 1], img[:, 2]
    maxc, argmax = img.max(dim=1)
    minc = img.min(dim=1).values
    v = maxc
    delta = maxc - minc
    s = delta / (v + eps)
    d = torch.where(delta == 0, torch.ones_like(delta), delta)
    rc, gc, bc = maxc - r, maxc - g, maxc - b
    candidates = torch.stack([bc - gc, 2.0 * d + rc - bc, 4.0 * d + gc - rc], dim=1)
    h = candidates.gather(1, argmax[:, None]).squeeze(1) / d
    h = (h / 6.0) % 1.0
    return torch.stack([2 * math.pi * h, s, v], dim=1)


def colour_bins(frame: torch.Tensor, hue_quirk: bool = True) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> long (B, H, W) bin ids in [1, 999] (see module doc, step 4)."""
    hsv = rgb_to_hsv(frame)
    h, s, v = hsv[:, 0], hsv[:, 1], hsv[:, 2]
    angle = 2 * math.pi * h if hue_quirk else h  # the official code's double 2pi (card b.4)
    a = (s * torch.cos(angle) + 1) / 2
    b = (s * torch.sin(angle) + 1) / 2
    qa, qb, qv = (torch.round(9 * t + 1) for t in (a, b, v))  # torch.round: half to even
    bins = qa + 10 * (qb - 1) + 100 * (qv - 1)
    # s <= 1 makes q_a = q_b = 10 (bin 1000) unreachable; the clamp only guards rounding noise.
    return bins.long().clamp_(0, N_BINS - 1)


def colour_histograms(bins: torch.Tensor, fg: torch.Tensor, bg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(H_fg, H_bg), each (B, 1000): normalised fg-seed counts; Laplace-smoothed bg-seed counts."""
    b = bins.shape[0]
    flat = bins.reshape(b, -1)
    n_fg = torch.zeros(b, N_BINS, device=bins.device).scatter_add_(1, flat, fg.reshape(b, -1).float())
    n_bg = torch.zeros(b, N_BINS, device=bins.device).scatter_add_(1, flat, bg.reshape(b, -1).float())
    h_fg = n_fg / (n_fg.sum(dim=1, keepdim=True) + HIST_EPS)
    h_bg = (n_bg + 1) / ((n_bg + 1).sum(dim=1, keepdim=True) + HIST_EPS)
    return h_fg, h_bg


def colour_foreground_prob(bins: torch.Tensor, h_fg: torch.Tensor, h_bg: torch.Tensor) -> torch.Tensor:
    """R (B, H, W) = H_fg[bin] / (H_bg[bin] + H_fg[bin]) (H_bg > 0 everywhere, so no 0/0)."""
    b = bins.shape[0]
    flat = bins.reshape(b, -1)
    pf, pb = h_fg.gather(1, flat), h_bg.gather(1, flat)
    return (pf / (pb + pf)).view_as(bins).to(h_fg.dtype)


# --------------------------------------------------------------------------- the whole mask + merge
@torch.no_grad()
def fame_mask(x: torch.Tensor, beta: float = 0.5, fg_seed: float = 0.5, bg_seed: float = 0.1, kernel_size: int | None = None,
              hue_quirk: bool = True, return_maps: bool = False):
    """Hard foreground masks (B, H, W) float {0, 1} with exactly floor(beta * H * W) ones per clip.

    `kernel_size` defaults to the rule of the crop size (the clip width). With `return_maps`, also
    returns {"motion": M, "colour_prob": R, "score": S, "fg_seed", "bg_seed", "bins"} for inspection.
    """
    if x.ndim != 5 or x.shape[1] != 3:
        raise ValueError(f"fame_mask expects clips (B, 3, T, H, W), got {tuple(x.shape)}")
    x = x.float()
    size = gaussian_kernel_size(x.shape[-1]) if kernel_size is None else kernel_size
    motion = minmax(gaussian_blur2d(motion_map(x), size))
    fg, bg = seed_masks(motion, fg_seed, bg_seed)
    bins = colour_bins(x.mean(dim=2), hue_quirk)
    h_fg, h_bg = colour_histograms(bins, fg, bg)
    prob = colour_foreground_prob(bins, h_fg, h_bg)
    score = minmax(gaussian_blur2d(prob, size))
    mask = top_fraction_mask(score, beta, True).float()
    if return_maps:
        return mask, {"motion": motion, "colour_prob": prob, "score": score, "fg_seed": fg, "bg_seed": bg, "bins": bins}
    return mask


def merge_clips(x: torch.Tensor, mask: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Y_b = m_b * X_b + (1 - m_b) * X_{perm[b]}: clip b's foreground on clip perm[b]'s background."""
    m = mask[:, None, None].to(x.dtype)  # (B, 1, 1, H, W): same mask for every channel and frame
    return m * x + (1 - m) * x[perm]


@torch.no_grad()
def fame(x: torch.Tensor, beta: float = 0.5, fg_seed: float = 0.5, bg_seed: float = 0.1, kernel_size: int | None = None,
         hue_quirk: bool = True, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FAME on a local batch: (merged clips, masks, permutation). The permutation may have fixed points."""
    mask = fame_mask(x, beta, fg_seed, bg_seed, kernel_size, hue_quirk)
    perm = torch.randperm(x.shape[0], generator=generator, device="cpu").to(x.device)
    return merge_clips(x, mask, perm), mask, perm
