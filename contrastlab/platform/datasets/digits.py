"""`digits`: scikit-learn's 1,797 8x8 handwritten digits as labelled shards.

Pixel values 0..16 are scaled to 0..255 (round(v * 255 / 16)) and written as grey **PNG**
(`key.png`, lossless, so raw-pixel baselines match scikit-learn's numbers) or, with
image_format="jpg", as quality-95 grey JPEG (`key.jpg`). Optional upsampling to image_size
(nearest for integer factors, else bilinear). Split: 70/30 stratified, sklearn
`train_test_split(..., stratify=y, random_state=seed)` (seed 0 by default, the method cards'
protocol). `index` is the position in `load_digits()`, each split in ascending index order.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from contrastlab.platform.data.codecs import encode_jpeg, encode_png

from ._common import DatasetSpec, check_count, resize_batch, sample_key, write_split

CLASSES = [str(d) for d in range(10)]


def load_digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images (1797, 8, 8) in 0..255, int64 labels)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return images, bunch.target.astype(np.int64)


def split_indices(labels: np.ndarray, seed: int, test_fraction: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(np.arange(len(labels)), test_size=test_fraction, stratify=labels, random_state=seed)
    return np.sort(train), np.sort(test)


def _samples(split: str, images: np.ndarray, labels: np.ndarray, indices: np.ndarray, image_format: str):
    for i in indices:
        data = encode_png(images[i]) if image_format == "png" else encode_jpeg(images[i], quality=95)
        yield sample_key(int(i)), {image_format: data, "json": {"label": int(labels[i]), "index": int(i), "split": split}}


def generate(out_dir: Path, *, seed: int, image_size: int, image_format: str, test_fraction: float):
    check_count("image_size", image_size, 8, 256)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    images, labels = load_digits_uint8()
    method = "nearest" if image_size % 8 == 0 else "bilinear"
    images = resize_batch(images, image_size, method)
    train, test = split_indices(labels, seed, test_fraction)
    splits = {}
    for split, indices in (("train", train), ("test", test)):
        splits[split] = write_split(out_dir, split, _samples(split, images, labels, indices, image_format), len(indices), "digits")
    meta = {"classes": CLASSES, "image_size": image_size, "channels": 1, "image_format": image_format,
            "pixel_scale": "round(v * 255 / 16) of sklearn's 0..16 values", "modality": "image-labels"}
    return splits, meta


SPEC = DatasetSpec(
    name="digits",
    description="scikit-learn 8x8 digits (1,797 real images, 10 classes) as lossless PNG shards, 70/30 stratified split",
    defaults={"image_size": 8, "image_format": "png", "test_fraction": 0.3},
    choices={"image_format": ("png", "jpg")},
    generate=generate,
)
