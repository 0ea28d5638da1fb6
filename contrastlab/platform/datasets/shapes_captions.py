"""`shapes-captions`: procedural image-caption pairs with held-out colour x shape compositions.

Each image shows one to three filled shapes (circle, square, triangle, star) in one of six
colours, small or large, at distinct positions (left, right, top, bottom), on a noisy grey
background. The caption names every object's colour and shape (and, depending on the
template, its size and position), picking words from a synonym map (red/crimson/scarlet,
circle/ring/disc, square/box/block, large/big/huge, ...) so that EDA synonym replacement and
nearest-neighbour text supervision have real paraphrases to exploit.

Splits:
- `train`: 1..max_objects shapes per image, none of them a held-out colour x shape combination.
- `test`: one shape per image, an in-distribution (training) combination.
- `heldout`: one shape per image whose combination never occurs in training (zero-shot
  compositional generalisation).

Held-out combinations: `n_heldout_combos` (default 5 of 24, ~20%; at most 12) drawn from the seed
so that each colour loses at most two of its 4 shapes, and each shape loses at most two of its 6
colours for n_heldout_combos <= 7, three for 8..11 and four for 12: every colour and every shape
still appears in training with other partners (at least two).

The `label` of a sample is the colour x shape class (colour_id * 4 + shape_id) of its primary
object: the first in `objects`, which lists large shapes before small ones and is drawn on top.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from contrastlab.platform.data.codecs import encode_jpeg

from ._common import DatasetSpec, check_count, fill_prompts, sample_key, with_article, write_split

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]
SHAPES = ["circle", "square", "triangle", "star"]
SIZES = ["small", "large"]
POSITIONS = ["left", "right", "top", "bottom"]
CLASSES = [f"{c} {s}" for c in COLOURS for s in SHAPES]  # class id = colour_id * len(SHAPES) + shape_id

COLOUR_RGB = {
    "red": (215, 35, 35),
    "green": (40, 165, 50),
    "blue": (40, 75, 220),
    "yellow": (235, 215, 35),
    "purple": (135, 50, 180),
    "orange": (245, 135, 20),
}

# canonical word -> alternatives used in captions (the canonical word is used half of the time)
SYNONYMS: dict[str, list[str]] = {
    "red": ["crimson", "scarlet"],
    "green": ["emerald", "lime"],
    "blue": ["azure", "cobalt"],
    "yellow": ["golden", "lemon"],
    "purple": ["violet", "lilac"],
    "orange": ["amber", "tangerine"],
    "circle": ["ring", "disc"],
    "square": ["box", "block"],
    "triangle": ["wedge", "trigon"],
    "star": ["pentagram", "starburst"],
    "small": ["little", "tiny"],
    "large": ["big", "huge"],
    "left": ["left side", "left-hand side"],
    "right": ["right side", "right-hand side"],
    "top": ["upper part", "top edge"],
    "bottom": ["lower part", "bottom edge"],
}

# how one object is described; every template names colour and shape
OBJECT_TEMPLATES = [
    "{colour} {shape}",
    "{size} {colour} {shape}",
    "{colour} {shape} on the {position}",
    "{size} {colour} {shape} on the {position}",
    "{size} {shape} in {colour}",
    "{colour} {shape} at the {position}",
]
# `{objs}` is the article-prefixed list: "a red circle", "a big box and an amber ring"
SENTENCE_TEMPLATES = [
    "{objs}.",
    "a photo of {objs}.",
    "an image of {objs} on a noisy background.",
    "there is {objs}.",
    "a picture showing {objs}.",
]

ZERO_SHOT_TEMPLATES = {
    "colour_shape": ["a photo of a {}.", "a {} on a noisy background.", "an image of a {}.", "there is a {}.", "a picture showing a {}."],
    "colour": ["a photo of a {} shape.", "a {} object on a noisy background.", "an image of a {} shape."],
    "shape": ["a photo of a {}.", "a {} on a noisy background.", "an image of a {}."],
}

_POSITION_CENTRES = {"left": (0.25, 0.5), "right": (0.75, 0.5), "top": (0.5, 0.25), "bottom": (0.5, 0.75)}
_RADIUS = {"small": 0.10, "large": 0.16}  # fraction of the image side
_SPLIT_STREAM = {"train": 0, "test": 1, "heldout": 2}
_OBJECT_COUNT_PROBS = np.array([0.5, 0.3, 0.2])
MAX_HELDOUT_COMBOS = 12


def class_id(colour: str, shape: str) -> int:
    return COLOURS.index(colour) * len(SHAPES) + SHAPES.index(shape)


def choose_heldout_combos(seed: int, n_combos: int = 5) -> list[int]:
    """Class ids of the held-out colour x shape combinations (sorted).

    Colours are taken in a seeded order and paired with shapes in a seeded cyclic order, so
    combination i has colour perm_c[i % 6] and shape perm_s[(i + i // 6) % 4]: at most two
    held-out shapes per colour; held-out colours per shape at most 2 for n_combos <= 7, 3 for
    8..11, 4 for 12 (so not "at most three" in general); never all partners.
    """
    check_count("n_heldout_combos", n_combos, 1, MAX_HELDOUT_COMBOS)
    rng = np.random.default_rng([seed, 1_000_003])
    colour_order, shape_order = rng.permutation(len(COLOURS)), rng.permutation(len(SHAPES))
    ids = []
    for i in range(n_combos):
        c = colour_order[i % len(COLOURS)]
        s = shape_order[(i + i // len(COLOURS)) % len(SHAPES)]
        ids.append(int(c) * len(SHAPES) + int(s))
    return sorted(ids)


_CANONICAL_PATTERNS = sorted(
    ((alt, canon) for canon, alts in SYNONYMS.items() for alt in alts), key=lambda pair: -len(pair[0])
)
_CANONICAL_RE = re.compile(r"\b(" + "|".join(re.escape(alt) for alt, _ in _CANONICAL_PATTERNS) + r")\b")
_TO_CANONICAL = dict(_CANONICAL_PATTERNS)


def canonicalize(text: str) -> str:
    """Map every synonym in a caption back to its canonical word ('a big crimson ring' -> 'a large red circle')."""
    return _CANONICAL_RE.sub(lambda m: _TO_CANONICAL[m.group(1)], text.lower())


# ---------------------------------------------------------------- drawing


def _polygon_mask(xx: np.ndarray, yy: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Even-odd rule point-in-polygon for pixel centres (xx, yy); vertices (k, 2) as (x, y)."""
    inside = np.zeros(xx.shape, dtype=bool)
    x1, y1 = vertices[:, 0], vertices[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    for ax, ay, bx, by in zip(x1, y1, x2, y2):
        if ay == by:
            continue  # horizontal edges never cross a horizontal ray
        crosses = (ay > yy) != (by > yy)
        x_cross = ax + (yy - ay) * (bx - ax) / (by - ay)
        inside ^= crosses & (xx < x_cross)
    return inside


def _regular_vertices(cx: float, cy: float, radii: list[float], start: float) -> np.ndarray:
    k = len(radii)
    angles = start + 2 * np.pi * np.arange(k) / k
    return np.stack([cx + np.array(radii) * np.cos(angles), cy + np.array(radii) * np.sin(angles)], axis=1)


def shape_mask(shape: str, cx: float, cy: float, r: float, theta: float, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Boolean mask of a filled shape of nominal radius r centred at (cx, cy), rotated by theta.

    Vertex radii are chosen so the four shapes have roughly similar areas (2-3 r^2). Only the
    window around the shape is tested, which keeps drawing cheap at any image size.
    """
    mask = np.zeros(xx.shape, dtype=bool)
    reach = 1.4 * r + 1
    rows = slice(max(0, int(cy - reach)), min(xx.shape[0], int(cy + reach) + 1))
    cols = slice(max(0, int(cx - reach)), min(xx.shape[1], int(cx + reach) + 1))
    wx, wy = xx[rows, cols], yy[rows, cols]
    if shape == "circle":
        mask[rows, cols] = (wx - cx) ** 2 + (wy - cy) ** 2 <= r * r
        return mask
    if shape == "square":
        vertices = _regular_vertices(cx, cy, [1.2 * r] * 4, theta + np.pi / 4)
    elif shape == "triangle":
        vertices = _regular_vertices(cx, cy, [1.3 * r] * 3, theta - np.pi / 2)  # y points down: apex up
    elif shape == "star":
        vertices = _regular_vertices(cx, cy, [1.35 * r, 0.55 * r] * 5, theta - np.pi / 2)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    mask[rows, cols] = _polygon_mask(wx, wy, vertices)
    return mask


def render(objects: list[dict], size: int, rng: np.random.Generator, grid: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Draw `objects` (primary first; drawn last so it is on top) on a noisy background; fills each object's bbox."""
    xx, yy = grid
    noise = rng.standard_normal((size, size, 3), dtype=np.float32)
    grey = rng.uniform(60, 190)
    tint = rng.normal(0, 8, 3).astype(np.float32)
    image = grey + tint + 20.0 * noise
    for obj in reversed(objects):
        fx, fy = _POSITION_CENTRES[obj["position"]]
        jitter = rng.uniform(-0.03, 0.03, 2) * size
        cx, cy = fx * size + jitter[0], fy * size + jitter[1]
        r = _RADIUS[obj["size"]] * size * rng.uniform(0.9, 1.1)
        theta = rng.uniform(-0.25, 0.25)
        mask = shape_mask(obj["shape"], cx, cy, r, theta, xx, yy)
        colour = np.asarray(COLOUR_RGB[obj["colour"]], dtype=np.float32) + rng.normal(0, 10, 3).astype(np.float32)
        image[mask] = colour + 8.0 * noise[mask]
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        obj["bbox"] = [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1] if rows.size else [0, 0, 0, 0]
    return np.clip(image, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- captions


def _word(canonical: str, rng: np.random.Generator) -> str:
    if rng.random() < 0.5:
        return canonical
    alternatives = SYNONYMS[canonical]
    return alternatives[rng.integers(len(alternatives))]


def make_caption(objects: list[dict], rng: np.random.Generator) -> str:
    template = OBJECT_TEMPLATES[rng.integers(len(OBJECT_TEMPLATES))]
    phrases = [
        with_article(template.format(**{k: _word(obj[k], rng) for k in ("colour", "shape", "size", "position")}))
        for obj in objects
    ]
    objs = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return SENTENCE_TEMPLATES[rng.integers(len(SENTENCE_TEMPLATES))].format(objs=objs)


# ---------------------------------------------------------------- samples


def _draw_objects(rng: np.random.Generator, combos: list[int], n_objects: int) -> list[dict]:
    positions = rng.choice(len(POSITIONS), size=n_objects, replace=False)
    picks = rng.choice(len(combos), size=n_objects, replace=False)  # no two identical objects in one image
    objects = []
    for pos, pick in zip(positions, picks):
        cid = combos[pick]
        objects.append({
            "colour": COLOURS[cid // len(SHAPES)],
            "shape": SHAPES[cid % len(SHAPES)],
            "size": SIZES[rng.integers(2)],
            "position": POSITIONS[pos],
            "label": int(cid),
        })
    objects.sort(key=lambda o: o["size"] != "large")  # stable: large first, so the primary is the largest
    return objects


def _samples(split: str, n: int, first_index: int, seed: int, image_size: int, combos: list[int], max_objects: int):
    rng = np.random.default_rng([seed, _SPLIT_STREAM[split]])
    grid = tuple(g.astype(np.float32) + 0.5 for g in np.mgrid[0:image_size, 0:image_size][::-1])  # (xx, yy)
    probs = _OBJECT_COUNT_PROBS[:max_objects] / _OBJECT_COUNT_PROBS[:max_objects].sum()
    for i in range(n):
        n_objects = int(rng.choice(max_objects, p=probs)) + 1 if split == "train" else 1
        objects = _draw_objects(rng, combos, n_objects)
        image = render(objects, image_size, rng, grid)
        caption = make_caption(objects, rng)
        primary = objects[0]
        index = first_index + i
        yield sample_key(index), {
            "jpg": encode_jpeg(image),
            "txt": caption,
            "json": {
                "caption": caption,
                "index": index,
                "split": split,
                "label": primary["label"],
                "colour": primary["colour"],
                "shape": primary["shape"],
                "colour_id": COLOURS.index(primary["colour"]),
                "shape_id": SHAPES.index(primary["shape"]),
                "size": primary["size"],
                "position": primary["position"],
                "objects": objects,
            },
        }


def generate(out_dir: Path, *, seed: int, n_train: int, n_test: int, n_heldout: int, image_size: int,
             max_objects: int, n_heldout_combos: int) -> tuple[dict[str, list[str]], dict]:
    check_count("n_train", n_train)
    check_count("n_test", n_test)
    check_count("n_heldout", n_heldout)
    check_count("image_size", image_size, 16, 1024)
    check_count("max_objects", max_objects, 1, 3)
    heldout = choose_heldout_combos(seed, n_heldout_combos)
    seen = [c for c in range(len(CLASSES)) if c not in heldout]
    # indices: train [0, n_train), test next, heldout last
    plan = [("train", n_train, seen, max_objects), ("test", n_test, seen, 1), ("heldout", n_heldout, heldout, 1)]
    splits, first = {}, 0
    for split, n, combos, k in plan:
        samples = _samples(split, n, first, seed, image_size, combos, k)
        splits[split] = write_split(out_dir, split, samples, n, "shapes-captions")
        first += n
    zero_shot = {}
    for task, names, field in (("colour_shape", CLASSES, "label"), ("colour", COLOURS, "colour_id"), ("shape", SHAPES, "shape_id")):
        templates = ZERO_SHOT_TEMPLATES[task]
        zero_shot[task] = {"classnames": list(names), "templates": templates, "label_field": field,
                           "prompts": fill_prompts(templates, list(names))}
    meta = {
        "classes": CLASSES,
        "colours": COLOURS,
        "shapes": SHAPES,
        "sizes": SIZES,
        "positions": POSITIONS,
        "heldout_classes": heldout,
        "heldout_classnames": [CLASSES[c] for c in heldout],
        "zero_shot": zero_shot,
        "synonyms": SYNONYMS,
        "image_size": image_size,
        "modality": "image-text",
    }
    return splits, meta


SPEC = DatasetSpec(
    name="shapes-captions",
    description="procedural coloured shapes with templated, synonym-rich captions; held-out colour x shape combos for zero-shot",
    defaults={"n_train": 3000, "n_test": 500, "n_heldout": 500, "image_size": 64, "max_objects": 3, "n_heldout_combos": 5},
    generate=generate,
)
