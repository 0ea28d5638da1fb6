"""`synthetic-reid`: procedural person re-identification across domains and cameras (UCR, card g).

A "person" is a small upright figure: hair/head, an upper garment with a colour and an identity
pattern (plain, horizontal or vertical stripes, dots, checks) in a second colour, a lower garment,
shoes and optionally a bag on one side. Per image: shift (+-3 px), scale 0.9-1.1, mirror, and
background clutter. Each domain has a global style (colour-temperature matrix, contrast, blur,
background type, noise level); each of its cameras adds a gain/hue/brightness shift and a
viewpoint change (horizontal squash, vertical offset). Identities never repeat across domains or
between train and test.

Domains: `d0`..: `n_source_domains` source domains (labelled warm start), then `n_seen_domains`
seen domains (the lifelong sequence), then `u1`..: `n_unseen_domains` test-only domains.

Splits:
- `train`: source + seen domains, `n_train_ids` x `images_per_train_id` images each; split "train";
  domains interleaved in random order (a method training on one domain per phase filters by
  the json's "domain", and every batch then holds a similar share of each domain).
- `test`: every domain, `n_test_ids` identities x `images_per_test_id` (>= n_cameras + 1) images,
  spread over all cameras; the first image of each identity in each camera is a "query", the rest
  "gallery", except that when only one camera holds several images of the identity (exactly
  n_cameras + 1 images) that camera's images are all gallery: every query then has a gallery image
  of its identity in another camera.

Per-sample json: index, pid (unique across the dataset), camera (0-based, per domain), camid (same),
domain (name), domain_id, split (train | query | gallery), style_id (the domain's style index).
meta: domain_names (index = domain_id), source_domains, seen_domains, unseen_domains,
cameras_per_domain, image_size [H, W], modality "reid".
"""
from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from contrastlab.platform.data.codecs import encode_jpeg

from ._common import DatasetSpec, check_count, sample_key, write_split

PATTERNS = ("plain", "hstripes", "vstripes", "dots", "checks")
BACKGROUNDS = ("plain", "gradient", "noise", "bricks")
SKIN = np.array([[235, 200, 170], [200, 150, 115], [150, 105, 75], [95, 65, 45]], dtype=np.float32)


def _random_colour(rng: np.random.Generator, s=(0.35, 1.0), v=(0.25, 1.0)) -> np.ndarray:
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*s), rng.uniform(*v))
    return np.array([r, g, b], dtype=np.float32) * 255


def make_identity(rng: np.random.Generator) -> dict:
    return {
        "hair": _random_colour(rng, (0.1, 0.6), (0.05, 0.45)),
        "skin": SKIN[rng.integers(len(SKIN))] + rng.normal(0, 8, 3).astype(np.float32),
        "upper": _random_colour(rng), "lower": _random_colour(rng, (0.2, 0.9), (0.15, 0.8)),
        "pattern": PATTERNS[rng.integers(len(PATTERNS))], "pattern_colour": _random_colour(rng),
        "period": int(rng.integers(3, 7)), "upper_len": rng.uniform(0.32, 0.45), "width": rng.uniform(0.5, 0.72),
        "shoes": _random_colour(rng, (0.0, 0.5), (0.05, 0.5)),
        "bag": bool(rng.random() < 0.4), "bag_colour": _random_colour(rng, (0.2, 0.8), (0.2, 0.7)),
    }


def make_domain_style(rng: np.random.Generator, n_cameras: int) -> dict:
    temperature = rng.uniform(-0.25, 0.25)
    matrix = np.diag([1 + temperature, 1.0, 1 - temperature]) + rng.normal(0, 0.06, (3, 3))
    cameras = [{
        "gain": rng.uniform(0.8, 1.2, 3).astype(np.float32), "offset": rng.uniform(-22, 22),
        "hue_mix": rng.normal(0, 0.05, (3, 3)).astype(np.float32),
        "squash": rng.uniform(0.85, 1.12), "dy": rng.uniform(-2.5, 2.5),
    } for _ in range(n_cameras)]
    return {
        "matrix": matrix.astype(np.float32), "contrast": rng.uniform(0.65, 1.25), "blur": rng.uniform(0.0, 1.0),
        "background": BACKGROUNDS[rng.integers(len(BACKGROUNDS))], "bg_colour": _random_colour(rng, (0.0, 0.5), (0.3, 0.8)),
        "noise": rng.uniform(2, 10), "cameras": cameras,
    }


def _background(style: dict, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    base = style["bg_colour"] + rng.normal(0, 12, 3).astype(np.float32)
    img = np.broadcast_to(base, (h, w, 3)).astype(np.float32).copy()
    kind = style["background"]
    if kind == "gradient":
        img *= np.linspace(0.6, 1.3, h, dtype=np.float32)[:, None, None]
    elif kind == "noise":
        img += rng.normal(0, 25, (h // 4 + 1, w // 4 + 1, 1)).repeat(4, 0).repeat(4, 1)[:h, :w].astype(np.float32)
    elif kind == "bricks":
        yy, xx = np.mgrid[0:h, 0:w]
        img[(yy % 8 == 0) | ((xx + 4 * ((yy // 8) % 2)) % 10 == 0)] *= 0.6
    for _ in range(rng.integers(0, 3)):  # clutter: random rectangles
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        img[y0:y0 + rng.integers(3, h // 4), x0:x0 + rng.integers(2, w // 3)] = _random_colour(rng, (0, 0.6), (0.2, 0.9))
    return img


def render_person(ident: dict, style: dict, camera: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """One uint8 (h, w, 3) image of identity `ident` seen by `camera` of the domain `style`."""
    cam = style["cameras"][camera]
    img = _background(style, h, w, rng)
    scale = rng.uniform(0.9, 1.1)
    height = 0.9 * h * scale
    top = (h - height) / 2 + rng.uniform(-3, 3) + cam["dy"]
    cx = w / 2 + rng.uniform(-3, 3)
    half_w = 0.5 * ident["width"] * w * scale * cam["squash"]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    v = (yy + 0.5 - top) / height  # 0 = top of head, 1 = soles
    u = (xx + 0.5 - cx) / half_w  # -1..1 across the torso
    if rng.random() < 0.5:
        u = -u  # mirror: the bag changes side
    head = ((u / 0.5) ** 2 + ((v - 0.08) / 0.08) ** 2) <= 1
    hair = head & (v < 0.06)
    upper_end = 0.16 + ident["upper_len"]
    upper = (v >= 0.16) & (v < upper_end) & (np.abs(u) <= 1)
    lower = (v >= upper_end) & (v < 0.94) & (np.abs(u) <= 0.9) & ~((np.abs(u) < 0.12) & (v > upper_end + 0.12))
    shoes = (v >= 0.94) & (v <= 1.0) & (np.abs(u) <= 0.9) & (np.abs(u) >= 0.12)
    img[head] = ident["skin"]
    img[hair] = ident["hair"]
    img[upper] = ident["upper"]
    period = ident["period"]
    py, px = (yy - top).astype(int), (xx - cx).astype(int)
    pattern = {
        "plain": np.zeros_like(upper), "hstripes": (py // period) % 2 == 0, "vstripes": (px // period) % 2 == 0,
        "dots": ((py % (period + 2)) < 2) & ((px % (period + 2)) < 2),
        "checks": ((py // period) + (px // period)) % 2 == 0,
    }[ident["pattern"]]
    img[upper & pattern] = ident["pattern_colour"]
    img[lower] = ident["lower"]
    img[shoes] = ident["shoes"]
    if ident["bag"]:
        bag = (u > 0.85) & (u < 1.35) & (v > 0.3) & (v < 0.55)
        img[bag] = ident["bag_colour"]
    # camera: gain, hue mixing, brightness; domain: colour-temperature matrix and contrast
    img = img * cam["gain"] + img @ cam["hue_mix"].T + cam["offset"]
    img = img @ style["matrix"].T
    mean = img.mean()
    img = (img - mean) * style["contrast"] + mean
    img = np.clip(img, 0, 255).astype(np.uint8)
    if style["blur"] > 0.15:
        img = np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius=style["blur"])))
    noisy = img.astype(np.float32) + rng.normal(0, style["noise"], img.shape).astype(np.float32)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _domain_names(n_source: int, n_seen: int, n_unseen: int) -> tuple[list[str], list[str], list[str]]:
    source = [f"d{i}" for i in range(n_source)]
    seen = [f"d{i}" for i in range(n_source, n_source + n_seen)]
    unseen = [f"u{i + 1}" for i in range(n_unseen)]
    return source, seen, unseen


def generate(out_dir: Path, *, seed: int, n_source_domains: int, n_seen_domains: int, n_unseen_domains: int,
             n_train_ids: int, images_per_train_id: int, n_test_ids: int, images_per_test_id: int, n_cameras: int,
             height: int, width: int, jpeg_quality: int):
    check_count("n_source_domains", n_source_domains, 0, 5)
    check_count("n_seen_domains", n_seen_domains, 1, 10)
    check_count("n_unseen_domains", n_unseen_domains, 0, 10)
    check_count("n_train_ids", n_train_ids, 1)
    check_count("images_per_train_id", images_per_train_id, 1)
    check_count("n_test_ids", n_test_ids, 1)
    check_count("n_cameras", n_cameras, 2, 16)
    check_count("images_per_test_id", images_per_test_id, 1)
    if images_per_test_id < n_cameras + 1:  # one query per camera needs at least one gallery image on top
        raise ValueError(f"images_per_test_id ({images_per_test_id!r}) must be at least n_cameras + 1 ({n_cameras + 1}): every "
                         f"camera sees each test identity, and every query needs a gallery image of it in another camera")
    check_count("height", height, 16, 512)
    check_count("width", width, 8, 512)
    source, seen, unseen = _domain_names(n_source_domains, n_seen_domains, n_unseen_domains)
    names = source + seen + unseen
    style_rng = np.random.default_rng([seed, 77])
    styles = [make_domain_style(style_rng, n_cameras) for _ in names]
    ident_rng = np.random.default_rng([seed, 78])
    pid_counter = 0
    identities: dict[tuple[str, str], list[tuple[int, dict]]] = {}
    for name in names:
        for part, count in (("train", n_train_ids if name not in unseen else 0), ("test", n_test_ids)):
            identities[(name, part)] = [(pid_counter + i, make_identity(ident_rng)) for i in range(count)]
            pid_counter += count

    def records(part: str):
        """(domain id, pid, identity, camera, split) in a fixed order."""
        rng = np.random.default_rng([seed, 79 if part == "train" else 80])
        for d, name in enumerate(names):
            for pid, ident in identities[(name, part)]:
                n_img = images_per_train_id if part == "train" else images_per_test_id
                cams = rng.permutation(np.arange(n_img) % n_cameras)  # every camera sees the person
                # the first image in each camera is a query, the rest gallery; if only one camera keeps gallery
                # images (n_img = n_cameras + 1), that camera gets no query, else its query would have no
                # gallery image of the person in another camera (same-camera matches are not counted)
                multi = np.flatnonzero(np.bincount(cams, minlength=n_cameras) >= 2)
                seen_cams: set[int] = {int(multi[0])} if part == "test" and len(multi) == 1 else set()
                for cam in cams:
                    split = "train"
                    if part == "test":
                        split = "gallery" if int(cam) in seen_cams else "query"
                        seen_cams.add(int(cam))
                    yield d, pid, ident, int(cam), split

    index = [0]

    def samples(part: str):
        rng = np.random.default_rng([seed, 81 if part == "train" else 82])
        ordered = list(records(part))
        if part == "train":  # interleave domains: a shard-local shuffle buffer then mixes them evenly
            ordered = [ordered[i] for i in rng.permutation(len(ordered))]
        for d, pid, ident, cam, split in ordered:
            img = render_person(ident, styles[d], cam, height, width, rng)
            info = {"index": index[0], "pid": pid, "camera": cam, "camid": cam, "domain": names[d], "domain_id": d,
                    "split": split, "style_id": d}
            yield sample_key(index[0]), {"jpg": encode_jpeg(img, quality=jpeg_quality), "json": info}
            index[0] += 1

    n_train = (len(source) + len(seen)) * n_train_ids * images_per_train_id
    n_test = len(names) * n_test_ids * images_per_test_id
    splits = {"train": write_split(out_dir, "train", samples("train"), n_train, "synthetic-reid"),
              "test": write_split(out_dir, "test", samples("test"), n_test, "synthetic-reid")}
    meta = {
        "modality": "reid", "domain_names": names, "source_domains": source, "seen_domains": seen,
        "unseen_domains": unseen, "cameras_per_domain": n_cameras, "image_size": [height, width], "seed": seed,
    }
    return splits, meta


SPEC = DatasetSpec(
    name="synthetic-reid",
    description="procedural person re-id: source + seen + unseen domains, cameras with style shifts (UCR)",
    defaults={
        "n_source_domains": 1, "n_seen_domains": 3, "n_unseen_domains": 2, "n_train_ids": 60, "images_per_train_id": 8,
        "n_test_ids": 40, "images_per_test_id": 8, "n_cameras": 3, "height": 64, "width": 32, "jpeg_quality": 90,
    },
    generate=generate,
    # v2: images_per_test_id = n_cameras + 1 no longer makes a query whose only same-identity gallery image
    # is in its own camera (fewer images are refused); the default parameters' bytes are unchanged
    version=2,
)
