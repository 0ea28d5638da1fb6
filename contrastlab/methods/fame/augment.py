"""Clip augmentations (card fame.md d). One set of random parameters per clip, shared by all its frames.

CPU side (inside the Ray Data sample function, numpy uint8 (T, H, W, 3)): `random_resized_crop_clip`
(RandomResizedCrop, scale (0.2, 1), ratio (3/4, 4/3)), `hflip_clip` (p = 0.5), `center_crop_clip` (eval).
Worker side (torch, after FAME, clips (B, 3, T, H, W) in [0, 1]): `ClipColourAugment`:
RandomGrayscale p=0.2, ColorJitter(0.4, 0.4, 0.4, 0.1) p=0.8 (random op order, as torchvision),
GaussianBlur s x s p=0.5, then Normalize with the Kinetics mean/std.
"""
from __future__ import annotations


import numpy as np
import torch

from contrastlab.platform.data.augment import random_resized_crop_box, resize, resize_shorter_center_crop

VIDEO_MEAN = (0.43216, 0.394666, 0.37645)
VIDEO_STD = (0.22803, 0.22145, 0.216989)
# ImageNet statistics: official main_retrieve normalises retrieval clips with these (card f quirk);
# used only when method.retrieval_imagenet_norm is set.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------- CPU, numpy
def crop_box(h: int, w: int, rng: np.random.Generator, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """RandomResizedCrop box (y, x, ch, cw) with the card's clip scale default (0.2, 1)."""
    return random_resized_crop_box(h, w, rng, scale, ratio)


def random_resized_crop_clip(frames: np.ndarray, size: int, rng: np.random.Generator, scale=(0.2, 1.0)) -> np.ndarray:
    """(T, H, W, 3) -> (T, size, size, 3): the same crop box for every frame."""
    y, x, ch, cw = crop_box(frames.shape[1], frames.shape[2], rng, scale)
    return np.stack([resize(f[y:y + ch, x:x + cw], size) for f in frames])


def hflip_clip(frames: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    return np.ascontiguousarray(frames[:, :, ::-1]) if rng.random() < p else frames


def center_crop_clip(frames: np.ndarray, size: int, resize_ratio: float = 128 / 112) -> np.ndarray:
    """Eval view: shorter side to round(size * resize_ratio), centre crop size x size, every frame."""
    return np.stack([resize_shorter_center_crop(f, int(round(size * resize_ratio)), size) for f in frames])


# --------------------------------------------------------------------------- worker side, torch
def normalize_clips(x: torch.Tensor, mean=VIDEO_MEAN, std=VIDEO_STD) -> torch.Tensor:
    """(B, 3, T, H, W) in [0, 1] -> normalised with per-channel mean/std."""
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1, 1)
    return (x - m) / s


def uint8_clips_to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255.0


class ClipColourAugment:
    """The per-clip colour/blur augmentations of card d (GPU side), on (B, 3, T, H, W) in [0, 1].

    `blur_sigma_once=True` reproduces the official quirk: sigma ~ U(0.1, 2) is drawn once when this
    object is built and reused for every clip; False draws it per clip (the usual MoCo recipe).
    """

    def __init__(self, kernel_size: int, p_gray: float = 0.2, p_jitter: float = 0.8, jitter=(0.4, 0.4, 0.4, 0.1),
                 p_blur: float = 0.5, blur_sigma=(0.1, 2.0), blur_sigma_once: bool = True, generator: torch.Generator | None = None):
        self.kernel_size, self.p_gray, self.p_jitter, self.jitter = kernel_size, p_gray, p_jitter, jitter
        self.p_blur, self.blur_sigma, self.blur_sigma_once = p_blur, blur_sigma, blur_sigma_once
        self.generator = generator
        self.fixed_sigma = self._uniform(*blur_sigma) if blur_sigma_once else None

    def _uniform(self, lo: float, hi: float) -> float:
        return float(lo + (hi - lo) * torch.rand((), generator=self.generator))

    def _coin(self, p: float) -> bool:
        return p > 0 and float(torch.rand((), generator=self.generator)) < p

    def clip(self, frames: torch.Tensor) -> torch.Tensor:
        """One clip as frames (T, 3, H, W)."""
        import torchvision.transforms.v2.functional as TF

        if self._coin(self.p_gray):
            frames = TF.rgb_to_grayscale(frames, num_output_channels=3)
        if self._coin(self.p_jitter):
            b, c, s, h = self.jitter
            ops = [
                (TF.adjust_brightness, self._uniform(max(0, 1 - b), 1 + b)),
                (TF.adjust_contrast, self._uniform(max(0, 1 - c), 1 + c)),
                (TF.adjust_saturation, self._uniform(max(0, 1 - s), 1 + s)),
                (TF.adjust_hue, self._uniform(-h, h)),
            ]
            for i in torch.randperm(4, generator=self.generator).tolist():
                fn, factor = ops[i]
                frames = fn(frames, factor)
        if self.kernel_size > 1 and self._coin(self.p_blur):
            sigma = self.fixed_sigma if self.blur_sigma_once else self._uniform(*self.blur_sigma)
            frames = TF.gaussian_blur(frames, [self.kernel_size, self.kernel_size], [sigma, sigma])
        return frames

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.stack([self.clip(c.transpose(0, 1)).transpose(0, 1) for c in x])
        return normalize_clips(out.clamp(0, 1))
