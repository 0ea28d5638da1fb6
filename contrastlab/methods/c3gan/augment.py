"""C3-GAN views (card d, card g), numpy in / numpy out for Ray Data `map_batches`.

Full-size recipe (`two_views`, `eval_view`), outputs float32 (N, C, size, size) in [-1, 1]:
  v1   = resize shorter side to `size` -> random crop `size` -> h-flip
  v2   = RandomResizedCrop(size, scale 0.2-1, ratio 3/4-4/3) -> h-flip
         -> ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8 (ops in random order) -> grayscale p 0.2
  eval = resize shorter side to `size` -> center crop
Small digits recipe (`small_two_views`, card g): images upsampled bilinearly to `size`;
  v1 = the clean image, v2 = +-2 px translation, +-10 deg rotation, brightness x U(0.8, 1.2).
All random parameters come from the numpy Generator passed in (reproducible per batch); the
pixel work uses torchvision.transforms.v2.functional. Images: a uint8 array (N, H, W[, C]) or a
list of (H, W[, C]) arrays of different sizes. Single-channel images skip saturation and hue.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF


def _to_chw(img: np.ndarray) -> torch.Tensor:
    a = np.asarray(img)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.dtype != np.uint8:
        raise ValueError(f"expected uint8 (H, W[, C]) images, got {a.dtype} {a.shape}")
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))


def _to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 1] float -> float32 in [-1, 1]."""
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    return x.clamp(0, 1) * 2 - 1


def _stack(views: list[torch.Tensor]) -> np.ndarray:
    return torch.stack(views).numpy().astype(np.float32, copy=False)


def resized_crop_params(h: int, w: int, rng: np.random.Generator, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a RandomResizedCrop, the usual 10-tries algorithm."""
    area = h * w
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        r = math.exp(rng.uniform(*log_r))
        cw, ch = int(round(math.sqrt(target * r))), int(round(math.sqrt(target / r)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
    in_ratio = w / h  # fallback: central crop at the closest allowed ratio
    if in_ratio < ratio[0]:
        cw, ch = w, int(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        ch, cw = h, int(round(h * ratio[1]))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def color_jitter(x: torch.Tensor, rng: np.random.Generator, b=0.4, c=0.4, s=0.4, hue=0.1) -> torch.Tensor:
    """ColorJitter with factors U(1-b, 1+b) etc. and hue shift U(-hue, hue), ops in random order."""
    ops = [
        lambda t, f=rng.uniform(1 - b, 1 + b): TF.adjust_brightness(t, f),
        lambda t, f=rng.uniform(1 - c, 1 + c): TF.adjust_contrast(t, f),
    ]
    if x.shape[0] == 3:
        ops += [
            lambda t, f=rng.uniform(1 - s, 1 + s): TF.adjust_saturation(t, f),
            lambda t, f=rng.uniform(-hue, hue): TF.adjust_hue(t, f),
        ]
    for i in rng.permutation(len(ops)):
        x = ops[i](x)
    return x


def view1(img: torch.Tensor, size: int, rng: np.random.Generator) -> torch.Tensor:
    x = TF.resize(img, [size], antialias=True)  # shorter side -> size
    h, w = x.shape[-2:]
    top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    x = TF.crop(x, top, left, size, size)
    if rng.random() < 0.5:
        x = TF.horizontal_flip(x)
    return _to_unit(x)


def view2(img: torch.Tensor, size: int, rng: np.random.Generator, scale=(0.2, 1.0), jitter_p=0.8, gray_p=0.2) -> torch.Tensor:
    top, left, ch, cw = resized_crop_params(img.shape[-2], img.shape[-1], rng, scale)
    x = TF.resized_crop(img, top, left, ch, cw, [size, size], antialias=True)
    if rng.random() < 0.5:
        x = TF.horizontal_flip(x)
    if rng.random() < jitter_p:
        x = color_jitter(x, rng)
    if rng.random() < gray_p and x.shape[0] == 3:
        x = TF.rgb_to_grayscale(x, num_output_channels=3)
    return _to_unit(x)


def eval_view(images, size: int = 128) -> np.ndarray:
    """Resize shorter side to `size`, center crop; float32 (N, C, size, size) in [-1, 1]."""
    return _stack([_to_unit(TF.center_crop(TF.resize(_to_chw(im), [size], antialias=True), [size, size])) for im in images])


def two_views(images, rng: np.random.Generator, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Card d: (v1, v2) float32 (N, C, size, size) in [-1, 1]."""
    chw = [_to_chw(im) for im in images]
    return _stack([view1(x, size, rng) for x in chw]), _stack([view2(x, size, rng) for x in chw])


def small_two_views(
    images, rng: np.random.Generator, size: int = 32, shift_px: float = 2.0, rotation_deg: float = 10.0, brightness=(0.8, 1.2)
) -> tuple[np.ndarray, np.ndarray]:
    """Card g (digits): v1 = clean upsampled image, v2 = small affine + brightness; in [-1, 1]."""
    v1, v2 = [], []
    for im in images:
        x = TF.resize(_to_chw(im).float() / 255.0, [size, size], antialias=True)  # bilinear upsampling
        v1.append(_to_unit(x))
        y = TF.affine(
            x,
            angle=float(rng.uniform(-rotation_deg, rotation_deg)),
            translate=[float(rng.uniform(-shift_px, shift_px)), float(rng.uniform(-shift_px, shift_px))],
            scale=1.0,
            shear=[0.0, 0.0],
            interpolation=TF.InterpolationMode.BILINEAR,
        )
        v2.append(_to_unit(y * float(rng.uniform(*brightness))))
    return _stack(v1), _stack(v2)
