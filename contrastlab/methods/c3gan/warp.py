"""C3-GAN's random affine warp T of the foreground mask and pixels (card b).

theta = [[s cos rho, -s sin rho, t_x], [s sin rho, s cos rho, t_y]] in normalised coordinates,
applied with affine_grid / grid_sample(align_corners=True), zeros outside (so the warped mask
is 0 there and the background shows). Ranges:
    strong ('s', default): s ~ U(0.8, 1.5), rho ~ U(-15, 15) deg, t ~ U(-0.15, 0.15)
    weak   ('w'):          s ~ U(0.9, 1.1), rho ~ U(-2, 2) deg,   t ~ U(-0.08, 0.08)
Only during training; samples for FID and visualisation are unwarped (theta=None).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

WARP_RANGES = {
    "strong": {"scale": (0.8, 1.5), "rotation_deg": 15.0, "shift": 0.15},
    "weak": {"scale": (0.9, 1.1), "rotation_deg": 2.0, "shift": 0.08},
}
_ALIASES = {"s": "strong", "w": "weak"}


def affine_theta(scale: torch.Tensor, rotation: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    """(B, 2, 3) matrices from per-sample scale, rotation (radians) and shifts."""
    cos, sin = torch.cos(rotation) * scale, torch.sin(rotation) * scale
    return torch.stack([torch.stack([cos, -sin, tx], -1), torch.stack([sin, cos, ty], -1)], -2)


def identity_theta(batch: int, device=None) -> torch.Tensor:
    return torch.eye(2, 3, device=device).unsqueeze(0).repeat(batch, 1, 1)


def sample_theta(batch: int, strength: str = "strong", generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Random warps drawn on the generator's device (CPU by default), then moved to `device`."""
    strength = _ALIASES.get(strength, strength)
    if strength not in WARP_RANGES:
        raise ValueError(f"warp strength must be one of {list(WARP_RANGES)} (or s/w), got {strength!r}")
    r = WARP_RANGES[strength]
    u = torch.rand(4, batch, generator=generator)
    lo, hi = r["scale"]
    scale = lo + (hi - lo) * u[0]
    rot = math.radians(r["rotation_deg"]) * (2 * u[1] - 1)
    tx, ty = r["shift"] * (2 * u[2] - 1), r["shift"] * (2 * u[3] - 1)
    return affine_theta(scale, rot, tx, ty).to(device)


def warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Apply per-sample theta (B, 2, 3) to x (B, C, H, W) with align_corners=True, zero padding."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, align_corners=True)
