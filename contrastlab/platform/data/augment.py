"""CPU image augmentations on uint8 HxWxC numpy arrays, for Ray Data preprocessing.

Each takes an explicit `np.random.Generator` (seeded per sample, epoch and run by the reader), so
views are reproducible. PIL does the resampling, mirroring and blur (C code); colour ops are
vectorised numpy (measured: torchvision's PIL path for ColorJitter is 2-3x slower here, its HSV
round trip for hue alone costs more than all four numpy ops).
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageFilter

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def random_resized_crop_box(h: int, w: int, rng: np.random.Generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop box (y, x, ch, cw): area fraction ~ U(scale), log-uniform aspect;
    10 tries, then the centred square. Shared by image crops and clip crops (one box for all frames)."""
    area = h * w
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
    side = min(h, w)
    return (h - side) // 2, (w - side) // 2, side, side


def random_resized_crop(img: np.ndarray, size: int, rng: np.random.Generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> np.ndarray:
    """torchvision's RandomResizedCrop of one image (box from `random_resized_crop_box`)."""
    y, x, ch, cw = random_resized_crop_box(img.shape[0], img.shape[1], rng, scale, ratio)
    return resize(img[y : y + ch, x : x + cw], size)


def resize(img: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    hw = (size, size) if isinstance(size, int) else size
    if img.shape[:2] == hw:
        return np.ascontiguousarray(img)
    squeeze = img.ndim == 3 and img.shape[2] == 1
    pil = Image.fromarray(img[:, :, 0] if squeeze else img)
    out = np.asarray(pil.resize((hw[1], hw[0]), Image.BILINEAR))
    return out[:, :, None] if squeeze else out


def resize_shorter_center_crop(img: np.ndarray, resize_to: int, crop: int) -> np.ndarray:
    h, w = img.shape[:2]
    s = resize_to / min(h, w)
    img = resize(img, (max(crop, round(h * s)), max(crop, round(w * s))))
    h, w = img.shape[:2]
    y, x = (h - crop) // 2, (w - crop) // 2
    return np.ascontiguousarray(img[y : y + crop, x : x + crop])


def hflip(img: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    if rng.random() >= p:
        return img
    if img.dtype == np.uint8 and (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (1, 3))):
        squeeze = img.ndim == 3 and img.shape[2] == 1
        out = np.asarray(Image.fromarray(img[:, :, 0] if squeeze else img).transpose(Image.FLIP_LEFT_RIGHT))
        return out[:, :, None] if squeeze else out  # PIL's mirror: 3x faster than a negative-stride copy
    return np.ascontiguousarray(img[:, ::-1])


def color_jitter(img: np.ndarray, rng: np.random.Generator, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p: float = 0.8) -> np.ndarray:
    """ColorJitter in random order (brightness, contrast, saturation, hue shift via YIQ rotation)."""
    if rng.random() >= p:
        return img
    x = img.astype(np.float32) / 255.0
    for op in rng.permutation(4):
        if op == 0 and brightness:
            x = x * rng.uniform(1 - brightness, 1 + brightness)
        elif op == 1 and contrast:
            mean = (x @ np.array([0.299, 0.587, 0.114], np.float32)).mean()
            x = (x - mean) * rng.uniform(1 - contrast, 1 + contrast) + mean
        elif op == 2 and saturation:
            grey = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
            x = (x - grey) * rng.uniform(1 - saturation, 1 + saturation) + grey
        elif op == 3 and hue:
            angle = rng.uniform(-hue, hue) * 2 * math.pi
            c, s = math.cos(angle), math.sin(angle)
            to_yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
            rot = np.array([[1, 0, 0], [0, c, -s], [0, s, c]], np.float32)
            m = np.linalg.inv(to_yiq) @ rot @ to_yiq
            x = x @ m.T.astype(np.float32)
        x = np.clip(x, 0, 1)
    return (x * 255 + 0.5).astype(np.uint8)


def random_grayscale(img: np.ndarray, rng: np.random.Generator, p: float = 0.2) -> np.ndarray:
    if rng.random() >= p:
        return img
    grey = (img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) + 0.5).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def gaussian_blur(img: np.ndarray, rng: np.random.Generator, sigma=(0.1, 2.0), p: float = 0.5) -> np.ndarray:
    if rng.random() >= p:
        return img
    return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius=rng.uniform(*sigma))))


def moco_v2_view(img: np.ndarray, size: int, rng: np.random.Generator, crop_scale=(0.2, 1.0), blur: bool = True) -> np.ndarray:
    """The MoCo-v2 'aug+' recipe used by DeCLIP/IFND: crop, jitter p=.8, grey p=.2, blur p=.5, flip."""
    x = random_resized_crop(img, size, rng, scale=crop_scale)
    x = color_jitter(x, rng)
    x = random_grayscale(x, rng)
    if blur:
        x = gaussian_blur(x, rng)
    return hflip(x, rng)


def to_chw(img: np.ndarray) -> np.ndarray:
    """HxWxC uint8 -> CxHxW uint8 (converted to float and normalised on the Train worker)."""
    if img.ndim == 2:
        img = img[:, :, None]
    return np.ascontiguousarray(img.transpose(2, 0, 1))


def normalize_batch(x, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """uint8 (B, C, H, W) tensor on the worker -> float normalised."""
    import torch

    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return (x.float() / 255.0 - m) / s
