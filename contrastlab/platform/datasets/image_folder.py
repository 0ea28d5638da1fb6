"""Converter from a class-per-folder image tree (torchvision ImageFolder layout) to labelled shards.

Accepted layouts, checked in this order:
1. `split_files={"train": "train.txt", "test": "test.txt"}`: each file lists image paths
   relative to `src_dir`, one per line (normalised: `./cls/a.jpg` = `cls/a.jpg`; an image listed
   twice is refused); the class is the image's parent folder name.
2. `src_dir/<split>/<class>/<image>` where every sub-folder of src_dir is one of train, val,
   test (ImageNet style); a split folder with images outside class folders (a flat val/) or no
   class folder at all is refused, not skipped.
3. `src_dir/<class>/<image>`: one split "train", or, with `test_fraction > 0`, a stratified
   train/test split (sklearn train_test_split, random_state=seed).

Classes are the sorted folder names (label = position). `index` is the position of the image's
relative path in the sorted list of all images, so it does not depend on the split assignment.
Each split's samples are written in a random order drawn from `seed` (not class by class).
Members: `key.jpg` (re-encoded RGB JPEG, optionally resized) and `key.json` {label, index,
split, class, path}.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from contrastlab.platform.data.codecs import encode_jpeg
from contrastlab.platform.data.shards import write_shards

from ._common import SHARD_SIZE, with_progress
from ._paths import DatasetPaths, finalize_dataset, prepare_output_dir

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
SPLIT_DIRS = ("train", "val", "test")


def _images_under(folder: Path, extensions) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in extensions and not p.name.startswith("."))


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _collect(src: Path, split_files, test_fraction: float, seed: int, extensions) -> list[tuple[str, str, str]]:
    """(relative path, class name, split) for every image."""
    if split_files:
        items, listed = [], {}  # listed: normalised path -> (split file, line)
        for split, list_file in split_files.items():
            list_path = Path(list_file) if Path(list_file).is_absolute() else src / list_file
            if not list_path.is_file():
                raise FileNotFoundError(f"split file {list_path} for split {split!r} not found")
            for lineno, line in enumerate(list_path.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                rel = os.path.normpath(line.strip())  # "./cls/a.jpg" and "cls/a.jpg" are the same image
                if not (src / rel).is_file():
                    raise FileNotFoundError(f"{list_path}: listed image {src / rel} not found")
                if rel in listed:
                    raise ValueError(f"{list_path}:{lineno}: image {rel} is already listed in {listed[rel]} "
                                     f"(an image belongs to one split, once)")
                listed[rel] = f"{list_path}:{lineno}"
                items.append((rel, Path(rel).parent.name, split))
        return items
    subdirs = _class_dirs(src)
    if not subdirs:
        raise ValueError(f"{src} has no class sub-folders (expected {src}/<class>/<image> or {src}/<split>/<class>/<image>)")
    if all(d.name in SPLIT_DIRS for d in subdirs):
        for s in subdirs:  # a split folder without class folders (e.g. ImageNet's flat val/) would vanish silently
            loose = [p for p in s.iterdir() if p.is_file() and p.suffix.lower() in extensions and not p.name.startswith(".")]
            if loose or not _class_dirs(s):
                raise ValueError(f"split folder {s} " + (f"holds {len(loose)} image(s) outside class sub-folders" if loose else
                                 "has no class sub-folders") + f": expected {src}/<split>/<class>/<image> (for a flat "
                                 "folder such as ImageNet's val/, sort its images into class folders or pass split_files=)")
        return [(str(p.relative_to(src)), c.name, s.name) for s in subdirs for c in _class_dirs(s) for p in _images_under(c, extensions)]
    items = [(str(p.relative_to(src)), c.name, "train") for c in subdirs for p in _images_under(c, extensions)]
    if test_fraction > 0:
        from sklearn.model_selection import train_test_split

        classes = [c for _, c, _ in items]
        _, test = train_test_split(np.arange(len(items)), test_size=test_fraction, stratify=classes, random_state=seed)
        test_set = set(test.tolist())
        items = [(rel, c, "test" if i in test_set else "train") for i, (rel, c, _) in enumerate(items)]
    return items


def _encode(path: Path, image_size, resize: str, quality: int) -> bytes:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
    except Exception as exc:  # noqa: BLE001 - name the file whatever the decoder said
        raise ValueError(f"cannot decode image {path}: {exc}") from None
    if image_size is not None:
        w, h = im.size
        if isinstance(image_size, (tuple, list)):
            size = (int(image_size[0]), int(image_size[1]))
        elif resize == "square":
            size = (image_size, image_size)
        else:
            scale = image_size / min(w, h)
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
        if size != im.size:
            im = im.resize(size, Image.BICUBIC)
    return encode_jpeg(np.asarray(im), quality=quality)


def convert_image_folder(src_dir: str | os.PathLike, out_dir: str | os.PathLike, *, split_files: dict[str, str] | None = None,
                         test_fraction: float = 0.0, seed: int = 0, image_size=None, resize: str = "shorter",
                         extensions=IMAGE_EXTENSIONS, maxcount: int = SHARD_SIZE, jpeg_quality: int = 95,
                         name: str | None = None, overwrite: bool = False) -> DatasetPaths:
    """Convert a class-per-folder image tree into shards, one shard set per split (see module doc)."""
    src = Path(src_dir).expanduser()
    if not src.is_dir():
        raise FileNotFoundError(f"image folder {src} does not exist")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if resize not in ("shorter", "square"):
        raise ValueError(f"resize must be 'shorter' or 'square', got {resize!r}")
    extensions = tuple(e.lower() for e in extensions)
    items = _collect(src, split_files, test_fraction, seed, extensions)
    if not items:
        raise ValueError(f"no images with extensions {extensions} found under {src}")
    classes = sorted({c for _, c, _ in items})
    index_of = {rel: i for i, rel in enumerate(sorted(rel for rel, _, _ in items))}
    if len(index_of) != len(items):
        raise ValueError(f"some images of {src} are listed in more than one split")
    split_order = [s for s in SPLIT_DIRS if any(it[2] == s for it in items)]
    split_order += sorted({s for _, _, s in items} - set(split_order))

    out_dir, tmp_dir = prepare_output_dir(out_dir, overwrite)
    try:
        splits = {}
        order_rng = np.random.default_rng(seed)
        for split in split_order:
            chosen = sorted((index_of[rel], rel, c) for rel, c, s in items if s == split)
            # seeded random order, not class-sorted: training shuffles only shard files plus a small buffer
            chosen = [chosen[i] for i in order_rng.permutation(len(chosen))]

            def samples(chosen=chosen, split=split):
                for index, rel, cls in chosen:
                    meta = {"label": classes.index(cls), "index": index, "split": split, "class": cls, "path": rel}
                    yield f"{index:08d}", {"jpg": _encode(src / rel, image_size, resize, jpeg_quality), "json": meta}

            splits[split] = write_shards(with_progress(samples(), len(chosen), f"image folder {split}"), tmp_dir, prefix=split, maxcount=maxcount)
        meta = {"classes": classes, "source": str(src.absolute()), "image_size": image_size, "resize": resize, "modality": "image-labels"}
        paths = finalize_dataset(tmp_dir, out_dir, name or src.absolute().name, splits, meta, replace=overwrite)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    counts = ", ".join(f"{n} {s}" for s, n in paths.meta["counts"].items())
    print(f"contrastlab: converted image folder {src} into {out_dir} ({counts}, {len(classes)} classes)", flush=True)
    return paths
