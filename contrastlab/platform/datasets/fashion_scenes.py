"""`fashion-scenes`: real Fashion-MNIST items pasted onto textured canvases, for weakly supervised
segmentation (PPC). Image-level tags for training, exact masks for evaluation.

Each image is a `image_size`^2 RGB canvas with a random texture (stripes, checks or blobs in two
random colours, the second `texture_contrast` of the way from the first to a random colour, plus noise) and `min_items`..`max_items` Fashion-MNIST items, each resized to a
random side in [item_min, item_max], tinted a random colour (shaded by the item's grey levels) and
pasted at a random place; later items occlude earlier ones. The mask is exact: a canvas pixel
belongs to an item where the resized item's grey level exceeds `mask_threshold` (those pixels are
replaced by the item), else to whatever was below. Classes come in co-occurring pairs (T-shirt +
Trouser, Sneaker + Bag, Dress + Ankle boot): with probability `pair_prob` the first item brings its
partner, so a classifier can score one class from its partner's pixels and CAMs have something to
confuse. A class is tagged if at least `min_visible` of its pixels stay visible; pixels of an item
occluded below that are marked 255 (ignore) in the mask.

Splits: `train` (items from the official Fashion-MNIST train set; no masks unless
`train_masks=True`), `val` (items from the official test set, with masks). Members per sample:
`key.jpg`, `key.json` {"labels": [1-based class ids], "index", "split", "image_id", "height",
"width", "items": [{"class", "bbox": [x, y, w, h], "source_index"}]}, and `key.png` (uint8 class
index mask: 0 background, c for class c, 255 ignore) where masks are written.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from contrastlab.platform.data.codecs import encode_jpeg, encode_png

from ._common import DatasetSpec, check_count, sample_key, write_split
from .fashion_mnist import load_fashion_mnist, resolve_fashion_sources

# (name, Fashion-MNIST label); consecutive entries form the co-occurring pairs
CLASS_SET = [("T-shirt/top", 0), ("Trouser", 1), ("Sneaker", 7), ("Bag", 8), ("Dress", 3), ("Ankle boot", 9)]
IGNORE = 255
MAX_TRIES = 1000  # scenes composed before giving up on one that tags a class (min_visible / mask_threshold unreachable)


def partner(c: int) -> int:
    """The co-occurring partner of class c (0-based foreground index): 0<->1, 2<->3, 4<->5."""
    return c ^ 1


def _texture(rng: np.random.Generator, size: int, contrast: float = 1.0) -> np.ndarray:
    """A random two-colour texture with noise, uint8 (size, size, 3); the second colour is moved
    `contrast` of the way from the first towards a random colour (1 = two independent colours)."""
    c1 = rng.integers(0, 256, 3).astype(np.float64)
    c2 = c1 + contrast * (rng.integers(0, 256, 3) - c1)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    kind = rng.integers(3)
    if kind == 0:  # stripes at a random angle and period
        angle, period = rng.uniform(0, np.pi), rng.uniform(4, 16)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
    elif kind == 1:  # checks
        cell = rng.integers(4, 13)
        t = (((yy // cell) + (xx // cell)) % 2).astype(np.float32)
    else:  # smooth blobs: a few random Gaussian bumps
        t = np.zeros((size, size), np.float32)
        for _ in range(rng.integers(3, 7)):
            cy, cx, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(size / 10, size / 3)
            t += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        t = np.clip(t, 0, 1)
    img = c1[None, None, :] * (1 - t[..., None]) + c2[None, None, :] * t[..., None]
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _tint(rng: np.random.Generator) -> np.ndarray:
    """A random fairly saturated colour (RGB floats in [0, 255])."""
    c = rng.uniform(40, 255, 3)
    c[rng.integers(3)] = rng.uniform(150, 255)
    return c


def compose_scene(rng: np.random.Generator, pools: list[tuple[np.ndarray, np.ndarray]], *, image_size: int, n_classes: int,
                  min_items: int, max_items: int, pair_prob: float, item_min: int, item_max: int, mask_threshold: int,
                  min_visible: int, texture_contrast: float = 1.0) -> tuple[np.ndarray, np.ndarray, list[int], list[dict]]:
    """One scene: (uint8 image (S, S, 3), uint8 mask (S, S), sorted 1-based labels, item records).

    pools[c] = (Fashion-MNIST images of class c, their indices in the official split).
    A scene where no class keeps min_visible pixels is redrawn, at most MAX_TRIES times.
    """
    for _ in range(MAX_TRIES):  # bounded: impossible settings must fail, not spin forever
        n_items = int(rng.integers(min_items, max_items + 1))
        first = int(rng.integers(n_classes))
        classes = [first]
        if n_items > 1 and partner(first) < n_classes and rng.random() < pair_prob:
            classes.append(partner(first))
        while len(classes) < n_items:
            classes.append(int(rng.integers(n_classes)))
        order = rng.permutation(len(classes))  # the partner is not always pasted on top
        image = _texture(rng, image_size, texture_contrast).astype(np.float32)
        owner = np.full((image_size, image_size), -1, np.int64)  # item id per pixel
        items = []
        for item_id, pos in enumerate(order):
            c = classes[pos]
            images, sources = pools[c]
            j = int(rng.integers(len(images)))
            side = int(rng.integers(item_min, item_max + 1))
            grey = np.asarray(Image.fromarray(images[j]).resize((side, side), Image.BILINEAR)).astype(np.float32)
            y0, x0 = int(rng.integers(0, image_size - side + 1)), int(rng.integers(0, image_size - side + 1))
            on = grey > mask_threshold
            shade = (0.35 + 0.65 * grey / 255.0)[..., None] * _tint(rng)[None, None, :]
            region = image[y0:y0 + side, x0:x0 + side]
            region[on] = shade[on]
            owner[y0:y0 + side, x0:x0 + side][on] = item_id
            items.append({"class": c + 1, "bbox": [x0, y0, side, side], "source_index": int(sources[j])})
        mask = np.zeros((image_size, image_size), np.uint8)
        visible = {c: 0 for c in range(n_classes)}
        for item_id, item in enumerate(items):
            visible[item["class"] - 1] += int((owner == item_id).sum())
        labels = sorted(c + 1 for c, n in visible.items() if n >= min_visible)
        for item_id, item in enumerate(items):
            c = item["class"]
            mask[owner == item_id] = c if c in labels else IGNORE
        if labels:
            return np.clip(image, 0, 255).astype(np.uint8), mask, labels, items
    raise ValueError(f"no scene out of {MAX_TRIES} left any class with min_visible={min_visible} pixels above "
                     f"mask_threshold={mask_threshold} (items {item_min}-{item_max} px, {min_items}-{max_items} per image): "
                     f"lower min_visible or mask_threshold, or enlarge the items")


def _class_pools(split: str, n_classes: int):
    images, labels = load_fashion_mnist(split)
    pools = []
    for _, fm_label in CLASS_SET[:n_classes]:
        idx = np.nonzero(labels == fm_label)[0]
        pools.append((images[idx], idx))
    return pools


def generate(out_dir: Path, *, seed: int, n_train: int, n_val: int, image_size: int, n_classes: int, min_items: int,
             max_items: int, pair_prob: float, item_min: int, item_max: int, mask_threshold: int, min_visible: int,
             texture_contrast: float, train_masks: bool, jpeg_quality: int):
    check_count("n_train", n_train, 0)
    check_count("n_val", n_val, 0)
    check_count("image_size", image_size, 16, 1024)
    check_count("min_items", min_items, 1)
    check_count("max_items", max_items, min_items)
    check_count("item_min", item_min, 4, image_size)
    check_count("item_max", item_max, item_min, image_size)
    check_count("mask_threshold", mask_threshold, 0, 254)
    # a class's visible pixels lie inside its items' squares and the canvas: more can never be visible
    check_count("min_visible", min_visible, 1, min(image_size * image_size, max_items * item_max * item_max))
    check_count("jpeg_quality", jpeg_quality, 1, 100)
    if not 0.0 <= pair_prob <= 1.0:
        raise ValueError(f"pair_prob must lie in [0, 1], got {pair_prob}")
    if not 0.0 <= texture_contrast <= 1.0:
        raise ValueError(f"texture_contrast must lie in [0, 1], got {texture_contrast}")
    params = dict(image_size=image_size, n_classes=n_classes, min_items=min_items, max_items=max_items, pair_prob=pair_prob,
                  item_min=item_min, item_max=item_max, mask_threshold=mask_threshold, min_visible=min_visible,
                  texture_contrast=texture_contrast)
    splits = {}
    for split_id, (split, n, source, offset, with_mask) in enumerate(
            (("train", n_train, "train", 0, train_masks), ("val", n_val, "test", n_train, True))):
        pools = _class_pools(source, n_classes)
        rng = np.random.default_rng([seed, split_id, 4242])

        def samples(n=n, split=split, offset=offset, with_mask=with_mask, pools=pools, rng=rng):
            for i in range(n):
                index = offset + i
                image, mask, labels, items = compose_scene(rng, pools, **params)
                key = sample_key(index)
                info = {"labels": labels, "index": index, "split": split, "image_id": key, "height": image_size,
                        "width": image_size, "items": items}
                fields = {"jpg": encode_jpeg(image, quality=jpeg_quality), "json": info}
                if with_mask:
                    fields["png"] = encode_png(mask)
                yield key, fields

        splits[split] = write_split(out_dir, split, samples(), n, "fashion-scenes")
    names = [name for name, _ in CLASS_SET[:n_classes]]
    meta = {
        "classes": names,
        "num_classes": n_classes + 1,
        "background_index": 0,
        "ignore_index": IGNORE,
        "pairs": [[names[c], names[partner(c)]] for c in range(0, n_classes, 2)],
        "image_size": image_size,
        "channels": 3,
        "modality": "segmentation",
        "label_format": "json labels are 1-based class ids; png masks: 0 background, c = classes[c - 1], 255 ignore",
    }
    return splits, meta


SPEC = DatasetSpec(
    name="fashion-scenes",
    description="real Fashion-MNIST items pasted on textured canvases with co-occurring class pairs: image-level tags + exact masks (WSSS)",
    defaults={"n_train": 1500, "n_val": 300, "image_size": 64, "n_classes": 4, "min_items": 2, "max_items": 4, "pair_prob": 0.7,
              # items 28-44 px on a 64 px canvas and a half-contrast texture: with 20-36 px items and full-contrast
              # textures a plain CNN stayed near the label prior for hundreds of steps and neither CAM arm localised
              # (README.md, the PPC comparison); these are the settings where tag learning starts within the card's budget
              "item_min": 28, "item_max": 44, "mask_threshold": 40, "min_visible": 16, "texture_contrast": 0.5, "train_masks": False, "jpeg_quality": 95},
    choices={"n_classes": (2, 4, 6)},
    generate=generate,
    resolve=resolve_fashion_sources,  # the Fashion-MNIST files read are part of the cache key
)
