"""Two-view augmentation of the small-scale IFND version (card g), numpy in / numpy out.

Per view and image, in this order: random affine (rotation U(-12, 12) degrees, scale
U(0.9, 1.1), shift U(-0.2, 0.2) of the half-width on each axis, bilinear, zero fill),
brightness x U(0.8, 1.2), additive Gaussian noise sigma 0.1, and with p = 0.5 a 3x3 patch set
to 0 (erasing). Pixel values are uint8 / 255, so in [0, 1] before noise; no clipping (option).
Vectorised over the batch (one affine_grid / grid_sample call), so it runs far above
1,000 images/s per core at 28 px inside Ray Data `map_batches`. Randomness comes only from the
numpy Generator passed in. Images are assumed square (shift and rotation in normalised coords).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W) or (N, H, W, C) -> float32 (N, C, H, W) in [0, 1] (the eval view)."""
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        x = x.transpose(0, 3, 1, 2)
    else:
        raise ValueError(f"expected (N,H,W) or (N,H,W,C) images, got shape {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32) / np.float32(255.0)


def random_view(
    x: np.ndarray,
    rng: np.random.Generator,
    rotation_deg: float = 12.0,
    scale: float = 0.1,
    shift: float = 0.2,
    brightness: tuple[float, float] = (0.8, 1.2),
    noise_std: float = 0.1,
    erase_size: int = 3,
    erase_p: float = 0.5,
    clip: bool = False,
) -> np.ndarray:
    """One augmented view of float32 images (N, C, H, W) in [0, 1]; returns the same shape."""
    n, c, h, w = x.shape
    if n == 0:
        return x.copy()
    ang = np.deg2rad(rng.uniform(-rotation_deg, rotation_deg, n))
    s = rng.uniform(1.0 - scale, 1.0 + scale, n)
    t = rng.uniform(-shift, shift, (n, 2))
    # Forward map p_out = s R p_in + t; affine_grid wants the inverse, p_in = (s R)^-1 (p_out - t).
    cos, sin = np.cos(ang) / s, np.sin(ang) / s
    inv = np.stack([np.stack([cos, sin], 1), np.stack([-sin, cos], 1)], 1)  # (n, 2, 2) = R^T / s
    theta = np.concatenate([inv, -(inv @ t[:, :, None])], axis=2).astype(np.float32)
    xt = torch.from_numpy(x)
    grid = F.affine_grid(torch.from_numpy(theta), list(xt.shape), align_corners=False)
    out = F.grid_sample(xt, grid, mode="bilinear", padding_mode="zeros", align_corners=False).numpy()
    out *= rng.uniform(*brightness, n).astype(np.float32)[:, None, None, None]
    out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(noise_std)
    if erase_p > 0 and erase_size > 0:
        k = min(erase_size, h, w)
        erase = rng.random(n) < erase_p
        y0 = rng.integers(0, h - k + 1, n)
        x0 = rng.integers(0, w - k + 1, n)
        rows, cols = np.arange(h), np.arange(w)
        in_r = (rows[None, :] >= y0[:, None]) & (rows[None, :] < y0[:, None] + k)
        in_c = (cols[None, :] >= x0[:, None]) & (cols[None, :] < x0[:, None] + k)
        patch = in_r[:, :, None] & in_c[:, None, :] & erase[:, None, None]  # (n, h, w)
        out[np.broadcast_to(patch[:, None], out.shape)] = 0.0
    if clip:
        np.clip(out, 0.0, 1.0, out=out)
    return out


def two_views(images: np.ndarray, rng: np.random.Generator, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, H, W[, C]) -> two independent augmented views, float32 (N, C, H, W)."""
    x = to_float(images)
    return random_view(x, rng, **kwargs), random_view(x, rng, **kwargs)

