"""`moving-shapes`: tiny MP4 clips where the MOTION carries the class and the BACKGROUND is a shortcut.

Each video: `n_frames` frames of `size` x `size` px (H.264 via `encode_mp4`, `fps` frames/s). A
`blob_size` square of a random bright colour moves over a static background with one of six class
motions: right, left, up, down, diagonal (down-right), oscillate (horizontal sine, period 8
frames); speed ~ U(0.8, 1.2) px/frame, start positions random within the frame. Per-frame noise
U(-noise, noise) (in [0, 1] units) on every pixel.

Backgrounds come from six families of real textures: family f takes its luminance texture from
a random crop of a real photo (scikit-learn's `load_sample_images`: china.jpg for f = 0, 3,
flower.jpg for f = 1, 4) or a 2x2 tile of real Fashion-MNIST items (f = 2, 5; falls back to a
smooth random texture if the Debian package is missing: the cache key records which), tinted with the family's colour
(hues 0, 60, ..., 300 degrees).

Splits: `train`: background family = class with probability `bg_correlation` (else one of the
other families uniformly), the shortcut; `test`: family uniform and independent of the class
(the debiased evaluation split). `index` runs over train then test, unique across splits.
Members: `key.mp4`, `key.json` {label, label_name, dataset, split, fold, fps, num_frames,
video_id, bg_id, motion_class, index}.
"""
from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np

from contrastlab.platform.data.media import encode_mp4

from ._common import DatasetSpec, check_count, sample_key, write_split

MOTIONS = ["right", "left", "up", "down", "diagonal", "oscillate"]
N_FAMILIES = 6
FAMILY_HUES = [i / N_FAMILIES for i in range(N_FAMILIES)]
OSC_PERIOD = 8.0


def _tint(hue: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue, 0.75, 1.0), dtype=np.float32)


def _texture_sources(seed: int) -> list[np.ndarray]:
    """Three float32 grey textures in [0, 1]: china photo, flower photo, Fashion-MNIST tiles."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = []
    for img in load_sample_images().images:  # 427 x 640 RGB, shrunk 3x so 40 px crops hold texture
        pil = Image.fromarray(img).convert("L")
        pil = pil.resize((pil.width // 3, pil.height // 3), Image.BILINEAR)
        photos.append(np.asarray(pil, dtype=np.float32) / 255.0)
    try:
        from .fashion_mnist import load_fashion_mnist

        items = load_fashion_mnist("test")[0][:2000].astype(np.float32) / 255.0
    except (FileNotFoundError, ValueError):
        rng = np.random.default_rng(seed)
        items = np.clip(rng.normal(0.5, 0.25, (2000, 7, 7)).repeat(4, 1).repeat(4, 2), 0, 1).astype(np.float32)
    return photos + [items]


def resolve_sources(params: dict) -> tuple[dict, dict]:
    """`DatasetSpec.resolve`: the family 2/5 textures come from Fashion-MNIST's test images when they are
    installed, else from the smooth random fallback; which one (a digest of the files, or "fallback") is
    part of the cache key. (Files present but unreadable also give the fallback: same digest, same bytes.)"""
    from .fashion_mnist import fashion_mnist_digest

    try:
        digest = fashion_mnist_digest(("test",))
    except FileNotFoundError:
        digest = "fallback"
    return params, {"fashion_mnist_test": digest}


def _background(family: int, size: int, sources: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """(size, size, 3) float32 in [0, 1]: a tinted real texture of the given family."""
    kind = family % 3
    if kind < 2:
        photo = sources[kind]
        y, x = rng.integers(0, photo.shape[0] - size + 1), rng.integers(0, photo.shape[1] - size + 1)
        lum = photo[y:y + size, x:x + size]
    else:
        items = sources[2]
        half = (size + 1) // 2
        picks = items[rng.integers(0, len(items), 4)]
        from PIL import Image

        tiles = [np.asarray(Image.fromarray((p * 255).astype(np.uint8)).resize((half, half), Image.BILINEAR), np.float32) / 255 for p in picks]
        lum = np.block([[tiles[0], tiles[1]], [tiles[2], tiles[3]]])[:size, :size]
        lum = 0.25 + 0.6 * lum  # keep tiles off pure black so the tint shows
    return np.clip(0.15 + 0.75 * lum[..., None] * _tint(FAMILY_HUES[family])[None, None], 0, 1)


def _trajectory(motion: int, n_frames: int, size: int, blob: int, rng: np.random.Generator) -> np.ndarray:
    """(n_frames, 2) integer top-left (y, x) of the blob; it stays inside the frame."""
    t = np.arange(n_frames, dtype=np.float64)
    hi = size - blob
    speed = rng.uniform(0.8, 1.2)
    travel = min(speed * (n_frames - 1), hi)
    speed = travel / max(1, n_frames - 1)
    free = lambda: rng.uniform(0, hi)  # noqa: E731 - a coordinate with no motion
    start = lambda: rng.uniform(0, hi - travel)  # noqa: E731 - a coordinate that moves by +travel
    name = MOTIONS[motion]
    if name == "right":
        y, x = np.full_like(t, free()), start() + speed * t
    elif name == "left":
        y, x = np.full_like(t, free()), hi - start() - speed * t
    elif name == "down":
        y, x = start() + speed * t, np.full_like(t, free())
    elif name == "up":
        y, x = hi - start() - speed * t, np.full_like(t, free())
    elif name == "diagonal":
        y, x = start() + speed * t, start() + speed * t
    else:  # oscillate: horizontal sine around a random centre
        amp = min(6.0, hi / 2)
        cx = rng.uniform(amp, hi - amp)
        y, x = np.full_like(t, free()), cx + amp * np.sin(2 * np.pi * t / OSC_PERIOD + rng.uniform(0, 2 * np.pi))
    return np.clip(np.rint(np.stack([y, x], axis=1)), 0, hi).astype(np.int64)


def render_video(motion: int, family: int, *, n_frames: int, size: int, blob_size: int, noise: float,
                 sources: list[np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (T, size, size, 3) frames and the (T, 2) blob positions."""
    bg = _background(family, size, sources, rng)
    colour = np.array(colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.6, 1.0), rng.uniform(0.85, 1.0)), np.float32)
    pos = _trajectory(motion, n_frames, size, blob_size, rng)
    frames = np.repeat(bg[None], n_frames, axis=0)
    for f, (y, x) in enumerate(pos):
        frames[f, y:y + blob_size, x:x + blob_size] = colour
    frames = frames + rng.uniform(-noise, noise, frames.shape).astype(np.float32)
    return (np.clip(frames, 0, 1) * 255).round().astype(np.uint8), pos


def _families(labels: np.ndarray, correlation: float, rng: np.random.Generator) -> np.ndarray:
    """Family = label with probability `correlation`, else a uniformly chosen other family."""
    keep = rng.random(len(labels)) < correlation
    other = (labels + rng.integers(1, N_FAMILIES, len(labels))) % N_FAMILIES
    return np.where(keep, labels % N_FAMILIES, other)


def generate(out_dir: Path, *, seed: int, n_train: int, n_test: int, n_frames: int, size: int, blob_size: int,
             bg_correlation: float, noise: float, fps: int, crf: int):
    check_count("n_train", n_train, 1)
    check_count("n_test", n_test, 0)
    check_count("n_frames", n_frames, 2, 512)
    check_count("size", size, 16, 512)
    check_count("blob_size", blob_size, 1, size // 2)
    check_count("fps", fps, 1, 120)
    check_count("crf", crf, 0, 51)
    if not 0 <= bg_correlation <= 1:
        raise ValueError(f"bg_correlation must lie in [0, 1], got {bg_correlation}")
    if not 0 <= noise <= 0.5:
        raise ValueError(f"noise must lie in [0, 0.5], got {noise}")
    size = size // 2 * 2  # H.264 needs even sides
    rng = np.random.default_rng(seed)
    sources = _texture_sources(seed)
    splits = {}
    first = 0
    for split, n, corr in (("train", n_train, bg_correlation), ("test", n_test, None)):
        labels = rng.integers(0, len(MOTIONS), n)
        families = _families(labels, corr, rng) if corr is not None else rng.integers(0, N_FAMILIES, n)
        video_seeds = rng.integers(0, 2**63 - 1, n)

        def samples(labels=labels, families=families, video_seeds=video_seeds, first=first, split=split):
            for i in range(len(labels)):
                index = first + i
                vrng = np.random.default_rng(int(video_seeds[i]))
                frames, _ = render_video(int(labels[i]), int(families[i]), n_frames=n_frames, size=size, blob_size=blob_size,
                                         noise=noise, sources=sources, rng=vrng)
                info = {"label": int(labels[i]), "label_name": MOTIONS[labels[i]], "dataset": "moving-shapes", "split": split,
                        "fold": 1, "fps": float(fps), "num_frames": n_frames, "video_id": f"{split}_{index:06d}",
                        "bg_id": int(families[i]), "motion_class": int(labels[i]), "index": index}
                yield sample_key(index), {"mp4": encode_mp4(frames, fps=fps, crf=crf), "json": info}

        splits[split] = write_split(out_dir, split, samples(), n, "moving-shapes")
        first += n
    meta = {"classes": MOTIONS, "bg_families": [f"{['china', 'flower', 'fashion'][f % 3]}-hue{int(h * 360)}" for f, h in enumerate(FAMILY_HUES)],
            "modality": "video", "num_frames": n_frames, "size": size, "fps": fps, "bg_correlation": {"train": bg_correlation, "test": "independent"}}
    return splits, meta


SPEC = DatasetSpec(
    name="moving-shapes",
    description="tiny MP4 clips: a square's motion (6 kinds) is the class; real-texture backgrounds match the class in train (shortcut), not in test",
    defaults={"n_train": 1200, "n_test": 600, "n_frames": 24, "size": 40, "blob_size": 6, "bg_correlation": 0.9,
              "noise": 0.01, "fps": 8, "crf": 18},
    generate=generate,
    resolve=resolve_sources,
)
