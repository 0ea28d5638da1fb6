"""C3-GAN generator and discriminator (card c), plus the D-step and G-step loss helpers.

Official widths at 128x128 RGB (`img_size=128`); `img_size=32` gives the card-g variant
(G stem 128 ch at 4x4, up 128 -> 64 -> 32 -> 16, one Res block; D trunk 1/3 -> 32 -> 64 -> 128 +
conv3s1, e = 128). Other sizes: pass `channels` (and `disc_channels`) explicitly.

Blocks: GLU(x) = x[:C/2] * sigmoid(x[C/2:]); up(i->o) = nearest x2, conv3x3 i->2o (no bias), BN,
GLU; same(i->o) = conv3x3 i->2o, BN, GLU; Res(C) = x + BN(conv3x3(GLU(BN(conv3x3(x, C->2C)))), C->C).
All G convs are bias-free; D trunk convs are bias-free, the two head output convs have biases.
Init: orthogonal (gain 1) for every conv/linear weight, linear biases 0, BN weight ~ N(1, 0.02),
BN bias 0.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .loss import cosine_logits, d_loss, g_loss
from .warp import warp

GEN_PRESETS = {  # img_size -> (stem + up-block widths, trunk Res blocks, pixel-branch Res blocks)
    128: ((512, 256, 128, 64, 16, 16), 3, 2),
    64: ((256, 128, 64, 32, 16), 2, 2),
    32: ((128, 64, 32, 16), 1, 1),
}
DISC_PRESETS = {  # img_size -> (conv4s2 widths, embedding dim e)
    128: ((64, 128, 256, 512, 512), 512),
    64: ((64, 128, 256, 256), 256),
    32: ((32, 64, 128), 128),
}


class GLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1] // 2
        return x[:, :c] * torch.sigmoid(x[:, c:])


def conv3x3(i: int, o: int) -> nn.Conv2d:
    return nn.Conv2d(i, o, 3, 1, 1, bias=False)


def up_block(i: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv3x3(i, 2 * o), nn.BatchNorm2d(2 * o), GLU())


def same_block(i: int, o: int) -> nn.Sequential:
    return nn.Sequential(conv3x3(i, 2 * o), nn.BatchNorm2d(2 * o), GLU())


class ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(conv3x3(c, 2 * c), nn.BatchNorm2d(2 * c), GLU(), conv3x3(c, c), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def init_weights(module: nn.Module) -> None:
    """Card c: orthogonal weights (gain 1), linear biases 0, BN weight N(1, 0.02), BN bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.orthogonal_(m.weight, gain=1.0)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _n_up(img_size: int) -> int:
    n = math.log2(img_size / 4)
    if n < 1 or n != int(n):
        raise ValueError(f"img_size must be 4 * 2^n with n >= 1, got {img_size}")
    return int(n)


def _stem(z_dim: int, c0: int) -> nn.Sequential:
    """Linear(z -> c0*4*4*2, no bias) -> BN1d -> GLU; reshaped to (c0, 4, 4) by the caller."""
    return nn.Sequential(nn.Linear(z_dim, c0 * 16 * 2, bias=False), nn.BatchNorm1d(c0 * 16 * 2), GLU())


def _ups(widths: tuple[int, ...], first_in: int) -> list[nn.Module]:
    ins = (first_in,) + tuple(widths[1:-1])
    return [up_block(i, o) for i, o in zip(ins, widths[1:])]


class BackgroundGenerator(nn.Module):
    def __init__(self, widths: tuple[int, ...], res_blocks: int, z_dim: int, img_channels: int):
        super().__init__()
        self.c0 = widths[0]
        self.fc = _stem(z_dim, self.c0)
        self.body = nn.Sequential(
            *_ups(widths, widths[0]), *[ResBlock(widths[-1]) for _ in range(res_blocks)], conv3x3(widths[-1], img_channels), nn.Tanh()
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.fc(z).view(-1, self.c0, 4, 4))


class ForegroundGenerator(nn.Module):
    """Code-conditioned foreground: mask m in (0, 1) and pixels f in (-1, 1), unwarped."""

    def __init__(self, widths, res_blocks, fg_res_blocks, n_clusters, z_dim, cz_dim, img_channels):
        super().__init__()
        self.c0, self.cz_dim, self.n_clusters = widths[0], cz_dim, n_clusters
        self.fc = _stem(z_dim, self.c0)
        # Linear(Y -> 4 cz) -> BN1d -> GLU gives 2 cz values: mu and log-sigma (sigma~)
        self.cond = nn.Sequential(nn.Linear(n_clusters, 4 * cz_dim), nn.BatchNorm1d(4 * cz_dim), GLU())
        w = widths[-1]
        self.base = nn.Sequential(*_ups(widths, widths[0] + cz_dim), *[ResBlock(w) for _ in range(res_blocks)])
        self.to_mask = nn.Sequential(same_block(w, w), conv3x3(w, 1), nn.Sigmoid())
        self.to_pixels = nn.Sequential(
            same_block(n_clusters + w, w), *[ResBlock(w) for _ in range(fg_res_blocks)], same_block(w, w), conv3x3(w, img_channels), nn.Tanh()
        )

    def forward(self, z: torch.Tensor, onehot: torch.Tensor, cz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_sigma = self.cond(onehot).split(self.cz_dim, dim=1)
        c_prime = (mu + log_sigma.exp() * cz)[:, :, None, None].expand(-1, -1, 4, 4)
        feat = self.base(torch.cat([self.fc(z).view(-1, self.c0, 4, 4), c_prime], dim=1))
        mask = self.to_mask(feat)
        tiled = onehot[:, :, None, None].expand(-1, -1, feat.shape[2], feat.shape[3])
        return mask, self.to_pixels(torch.cat([feat, tiled], dim=1))


class Generator(nn.Module):
    """x_hat = (1 - m) * b + m * f with b = G_bg(z), (m, f) = T(G_fg(z, c, c_z)); x_hat_m = m * x_hat."""

    def __init__(
        self,
        n_clusters: int,
        img_size: int = 128,
        img_channels: int = 3,
        z_dim: int = 64,
        cz_dim: int = 8,
        channels: tuple[int, ...] | None = None,
        res_blocks: int | None = None,
        fg_res_blocks: int | None = None,
    ):
        super().__init__()
        preset = GEN_PRESETS.get(img_size)
        if channels is None:
            if preset is None:
                raise ValueError(f"no width preset for img_size={img_size}; pass channels (length log2(size/4)+1)")
            channels = preset[0]
        res_blocks = preset[1] if res_blocks is None else res_blocks
        fg_res_blocks = preset[2] if fg_res_blocks is None else fg_res_blocks
        if len(channels) != _n_up(img_size) + 1:
            raise ValueError(f"channels {channels} need {_n_up(img_size) + 1} entries for img_size={img_size}")
        self.n_clusters, self.z_dim, self.cz_dim, self.img_size = n_clusters, z_dim, cz_dim, img_size
        self.bg = BackgroundGenerator(channels, res_blocks, z_dim, img_channels)
        self.fg = ForegroundGenerator(channels, res_blocks, fg_res_blocks, n_clusters, z_dim, cz_dim, img_channels)
        init_weights(self)

    def forward(self, z: torch.Tensor, c: torch.Tensor, cz: torch.Tensor, theta: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """c: one-hot codes (B, Y) or ids (B,). theta (B, 2, 3) warps m and f; None = no warp."""
        onehot = F.one_hot(c.long(), self.n_clusters).to(z.dtype) if c.dim() == 1 else c
        bg = self.bg(z)
        mask, fg = self.fg(z, onehot, cz)
        if theta is not None:
            mask, fg = warp(mask, theta), warp(fg, theta)
        fake = (1 - mask) * bg + mask * fg
        return {"bg": bg, "mask": mask, "fg": fg, "fake": fake, "masked_fake": mask * fake}


class Discriminator(nn.Module):
    """Trunk -> (adversarial logit r, embedding h); Linear(Y -> e) centroid layer."""

    def __init__(
        self, n_clusters: int, img_size: int = 128, img_channels: int = 3, channels: tuple[int, ...] | None = None, embed_dim: int | None = None
    ):
        super().__init__()
        preset = DISC_PRESETS.get(img_size)
        if channels is None or embed_dim is None:
            if preset is None:
                raise ValueError(f"no width preset for img_size={img_size}; pass channels and embed_dim")
            channels = channels or preset[0]
            embed_dim = embed_dim or preset[1]
        if len(channels) != _n_up(img_size):
            raise ValueError(f"channels {channels} need {_n_up(img_size)} entries (one conv4s2 per halving to 4x4)")
        layers, c_in = [], img_channels
        for i, c in enumerate(channels):
            layers.append(nn.Conv2d(c_in, c, 4, 2, 1, bias=False))
            if i > 0:
                layers.append(nn.BatchNorm2d(c))
            layers.append(nn.LeakyReLU(0.2))
            c_in = c
        layers += [nn.Conv2d(c_in, c_in, 3, 1, 1, bias=False), nn.BatchNorm2d(c_in), nn.LeakyReLU(0.2)]
        self.trunk = nn.Sequential(*layers)
        self.adv_head = nn.Conv2d(c_in, 1, 4, 4)
        self.info_head = nn.Sequential(nn.Conv2d(c_in, c_in, 3, 1, 1, bias=False), nn.BatchNorm2d(c_in), nn.LeakyReLU(0.2), nn.Conv2d(c_in, embed_dim, 4, 4))
        self.centroid_layer = nn.Linear(n_clusters, embed_dim)
        self.n_clusters, self.embed_dim = n_clusters, embed_dim
        init_weights(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.trunk(x)
        return self.adv_head(feat).flatten(), self.info_head(feat).flatten(1)

    def centroids(self) -> torch.Tensor:
        """L = l(I_Y): row k = column k of the weight plus the bias, shape (Y, e)."""
        return self.centroid_layer.weight.T + self.centroid_layer.bias

    def cluster_logits(self, h: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
        return cosine_logits(h, self.centroids(), tau)

    @torch.no_grad()
    def assign(self, x: torch.Tensor) -> torch.Tensor:
        """Cluster of each real image = most similar centroid (call with D in eval mode)."""
        return self.cluster_logits(self(x)[1], 1.0).argmax(dim=1)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@contextlib.contextmanager
def frozen_bn_stats(module: nn.Module, enabled: bool = True):
    """Train-mode BN inside the block still normalises with batch statistics (the training maths is
    unchanged) but leaves the running mean/var alone (momentum 0)."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] if enabled else []
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(bns, saved):
            m.momentum = momentum


BN_STATS = ("real", "all")


def discriminator_step_loss(
    gen: Generator,
    disc: Discriminator,
    real: torch.Tensor,
    aug: torch.Tensor,
    inputs: dict,
    theta: torch.Tensor | None,
    tau: float = 0.1,
    gather: Callable[[torch.Tensor], torch.Tensor] = _identity,
    bn_stats: str = "all",
    **weights,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """D step: G outputs computed without gradient; four separate D calls (separate BN batches).

    `bn_stats`: which D calls update D's BN running statistics, "all" (official: real, aug, fake and
    masked-fake calls, so the last, masked-fake batch dominates the running stats) or "real" (only
    the real-image call; see C3GANConfig.bn_stats). Batch statistics in the forward are the same.

    `gather` (all-gather with gradient across workers) is applied to h(real) and h(aug), so NT-Xent
    and the entropy terms see the global batch as in the official single-process code (card i).
    Every rank then computes the same global loss; the gather's backward sums the W ranks'
    gradients into each owner and the loop's gradient average divides by W, so the gradient is
    exactly that of the global loss. The returned terms also hold the mean logits r_real, r_fake.
    """
    with torch.no_grad():
        out = gen(inputs["z"], inputs["onehot"], inputs["cz"], theta)
    if bn_stats not in BN_STATS:
        raise ValueError(f"bn_stats must be one of {BN_STATS}, got {bn_stats!r}")
    r_real, h_real = disc(real)
    with frozen_bn_stats(disc, bn_stats == "real"):
        _, h_aug = disc(aug)
        r_fake, h_fake = disc(out["fake"])
        _, h_masked = disc(out["masked_fake"])
    total, terms = d_loss(r_real, r_fake, h_fake, h_masked, gather(h_real), gather(h_aug), disc.centroids(), inputs["codes"], tau, **weights)
    return total, {**terms, "r_real": r_real.detach().float().mean(), "r_fake": r_fake.detach().float().mean()}


def generator_step_loss(
    gen: Generator, disc: Discriminator, inputs: dict, theta: torch.Tensor | None, tau: float = 0.1, bn_stats: str = "all", **weights
) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """G step: D forward with gradient (freeze D's parameters / step only G's optimiser).

    With bn_stats="real" these fake-image calls leave D's BN running statistics alone.
    Returns (total, terms, G outputs) so the caller can log the mean mask.
    """
    if bn_stats not in BN_STATS:
        raise ValueError(f"bn_stats must be one of {BN_STATS}, got {bn_stats!r}")
    out = gen(inputs["z"], inputs["onehot"], inputs["cz"], theta)
    with frozen_bn_stats(disc, bn_stats == "real"):
        r_fake, h_fake = disc(out["fake"])
        _, h_masked = disc(out["masked_fake"])
    total, terms = g_loss(r_fake, h_fake, h_masked, disc.centroids(), inputs["codes"], out["mask"], tau, **weights)
    return total, terms, out
