"""Converter from the CUB-200-2011 folder layout to labelled image shards.

Expected layout (the official CUB_200_2011.tgz; `src_dir` may also be its parent folder):

    images.txt              "<image id> <relative path under images/>"
    image_class_labels.txt  "<image id> <class id, 1-based>"
    train_test_split.txt    "<image id> <1 = train | 0 = test>"
    bounding_boxes.txt      "<image id> <x> <y> <width> <height>"  (floats, pixels, top-left origin)
    classes.txt             "<class id> <class folder name, e.g. 001.Black_footed_Albatross>"
    images/<class folder>/<file>.jpg

Output: `train-*.tar`, `test-*.tar` (+ manifests and `meta.json`) in `out_dir`. Members:
`key.jpg` (re-encoded RGB JPEG, optionally cropped to the bounding box and/or resized) and
`key.json` {label (0-based class), index (= image id - 1), split, class, path (relative, as in
images.txt), bbox (x, y, w, h in the source image, as in bounding_boxes.txt), image_bbox (the
box in the written image's pixels), source_size (w, h)}. Samples are written in a random order
(fixed seed `SHUFFLE_SEED`), not in images.txt's class-sorted order.
"""
from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import numpy as np

from contrastlab.platform.data.codecs import encode_jpeg

from ._common import SHARD_SIZE, with_progress
from ._paths import DatasetPaths, finalize_dataset, prepare_output_dir
from contrastlab.platform.data.shards import write_shards

# Samples are written in a random order drawn from this fixed seed (one generator, train then test):
# images.txt is sorted by class and training shuffles only shard files plus a small buffer, so class-
# sorted shards would give batches of 1-3 classes. `index` stays image id - 1.
SHUFFLE_SEED = 0
CUB_FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt", "classes.txt")


def _find_root(src_dir: Path) -> Path:
    if (src_dir / "images.txt").is_file() or not (src_dir / "CUB_200_2011" / "images.txt").is_file():
        return src_dir
    return src_dir / "CUB_200_2011"  # the folder the official archive unpacks to


def _read_table(root: Path, filename: str, n_fields: int) -> dict[int, list[str]]:
    """id -> remaining fields of a whitespace-separated CUB list file; errors name the file and line."""
    path = root / filename
    if not path.is_file():
        raise FileNotFoundError(f"CUB-200-2011 file {path} is missing (expected {', '.join(CUB_FILES)} and images/ in {root})")
    table = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=n_fields - 1)
        if len(parts) != n_fields:
            raise ValueError(f"{path}:{lineno}: expected {n_fields} fields, got {line!r}")
        try:
            key = int(parts[0])
        except ValueError:
            raise ValueError(f"{path}:{lineno}: id {parts[0]!r} is not an integer") from None
        if key in table:
            raise ValueError(f"{path}:{lineno}: duplicate id {key}")
        table[key] = [p.strip() for p in parts[1:]]
    return table


def _parse_number(value: str, path: Path, what: str, kind=float):
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"{path}: {what} {value!r} is not a number") from None


def read_cub_metadata(src_dir: str | os.PathLike) -> tuple[Path, list[dict], list[str]]:
    """Parse the list files: (root, records sorted by image id, class folder names by 0-based label)."""
    root = _find_root(Path(src_dir).expanduser())
    if not root.is_dir():
        raise FileNotFoundError(f"CUB-200-2011 folder {root} does not exist")
    images = _read_table(root, "images.txt", 2)
    labels = _read_table(root, "image_class_labels.txt", 2)
    splits = _read_table(root, "train_test_split.txt", 2)
    boxes = _read_table(root, "bounding_boxes.txt", 5)
    classes_table = _read_table(root, "classes.txt", 2)
    if sorted(classes_table) != list(range(1, len(classes_table) + 1)):
        raise ValueError(f"{root / 'classes.txt'}: class ids must be 1..{len(classes_table)}")
    class_dirs = [classes_table[c][0] for c in range(1, len(classes_table) + 1)]
    if not (root / "images").is_dir():
        raise FileNotFoundError(f"CUB-200-2011 folder {root / 'images'} is missing")

    records = []
    for image_id in sorted(images):
        for table, filename in ((labels, "image_class_labels.txt"), (splits, "train_test_split.txt"), (boxes, "bounding_boxes.txt")):
            if image_id not in table:
                raise ValueError(f"{root / filename}: no entry for image id {image_id} (listed in images.txt)")
        label = _parse_number(labels[image_id][0], root / "image_class_labels.txt", "class id", int)
        if not 1 <= label <= len(class_dirs):
            raise ValueError(f"{root / 'image_class_labels.txt'}: image {image_id} has class {label}, outside 1..{len(class_dirs)}")
        flag = splits[image_id][0]
        if flag not in ("0", "1"):
            raise ValueError(f"{root / 'train_test_split.txt'}: image {image_id} has split flag {flag!r}, expected 1 (train) or 0 (test)")
        bbox = [_parse_number(v, root / "bounding_boxes.txt", "box coordinate") for v in boxes[image_id]]
        records.append({"id": image_id, "path": images[image_id][0], "label": label - 1,
                        "split": "train" if flag == "1" else "test", "bbox": bbox})
    return root, records, class_dirs


def _class_name(folder: str) -> str:
    """'001.Black_footed_Albatross' -> 'Black footed Albatross'."""
    return folder.split(".", 1)[-1].replace("_", " ")


def _crop_box(bbox: list[float], width: int, height: int, margin: float) -> tuple[int, int, int, int]:
    """Integer (left, top, right, bottom) covering the box enlarged by `margin` of its size per side, clipped."""
    x, y, w, h = bbox
    x0, y0 = x - margin * w, y - margin * h
    x1, y1 = x + w + margin * w, y + h + margin * h
    left, top = max(0, math.floor(x0 + 1e-6)), max(0, math.floor(y0 + 1e-6))
    right, bottom = min(width, math.ceil(x1 - 1e-6)), min(height, math.ceil(y1 - 1e-6))
    if right <= left or bottom <= top:
        raise ValueError(f"bounding box {bbox} lies outside the {width}x{height} image")
    return left, top, right, bottom


def _target_size(width: int, height: int, image_size, resize: str) -> tuple[int, int]:
    if image_size is None:
        return width, height
    if isinstance(image_size, (tuple, list)):
        return int(image_size[0]), int(image_size[1])
    if resize == "square":
        return image_size, image_size
    if resize == "shorter":
        scale = image_size / min(width, height)
        return max(1, round(width * scale)), max(1, round(height * scale))
    raise ValueError(f"resize must be 'shorter' or 'square', got {resize!r}")


def _convert_one(root: Path, record: dict, crop_to_bbox: bool, bbox_margin: float, image_size, resize: str, quality: int) -> tuple[bytes, dict]:
    from PIL import Image

    path = root / "images" / record["path"]
    if not path.is_file():
        raise FileNotFoundError(f"CUB image {path} (id {record['id']} in images.txt) is missing")
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")  # a few CUB images are greyscale
    except Exception as exc:  # noqa: BLE001 - any decoder failure names the file
        raise ValueError(f"cannot decode CUB image {path}: {exc}") from None
    width, height = im.size
    x, y, w, h = record["bbox"]
    left, top = 0, 0
    if crop_to_bbox:
        left, top, right, bottom = _crop_box(record["bbox"], width, height, bbox_margin)
        im = im.crop((left, top, right, bottom))
    out_w, out_h = _target_size(im.size[0], im.size[1], image_size, resize)
    sx, sy = out_w / im.size[0], out_h / im.size[1]
    if (out_w, out_h) != im.size:
        im = im.resize((out_w, out_h), Image.BICUBIC)
    image_bbox = [(x - left) * sx, (y - top) * sy, w * sx, h * sy]
    info = {"source_size": [width, height], "image_bbox": [round(v, 2) for v in image_bbox]}
    return encode_jpeg(np.asarray(im), quality=quality), info


def convert_cub(src_dir: str | os.PathLike, out_dir: str | os.PathLike, *, crop_to_bbox: bool = False, image_size=None,
                maxcount: int = SHARD_SIZE, bbox_margin: float = 0.0, resize: str = "shorter", jpeg_quality: int = 95,
                overwrite: bool = False) -> DatasetPaths:
    """Convert a CUB-200-2011 folder into `train` and `test` shards in `out_dir`.

    crop_to_bbox: crop each image to its bounding box, enlarged by `bbox_margin` x box size per side.
    image_size: None keeps the size; an int resizes the shorter side to it (resize="shorter",
    aspect kept) or to image_size x image_size (resize="square"); a (w, h) pair resizes exactly.
    The output is built in a temporary sibling folder and renamed into place when complete.
    """
    if resize not in ("shorter", "square"):
        raise ValueError(f"resize must be 'shorter' or 'square', got {resize!r}")
    root, records, class_dirs = read_cub_metadata(src_dir)
    out_dir, tmp_dir = prepare_output_dir(out_dir, overwrite)
    try:
        splits = {}
        order_rng = np.random.default_rng(SHUFFLE_SEED)
        for split in ("train", "test"):
            chosen = [r for r in records if r["split"] == split]
            chosen = [chosen[i] for i in order_rng.permutation(len(chosen))]  # not class-sorted (see SHUFFLE_SEED)

            def samples(chosen=chosen, split=split):
                for r in chosen:
                    jpg, info = _convert_one(root, r, crop_to_bbox, bbox_margin, image_size, resize, jpeg_quality)
                    meta = {"label": r["label"], "index": r["id"] - 1, "split": split, "class": _class_name(class_dirs[r["label"]]),
                            "path": r["path"], "bbox": r["bbox"], **info}
                    yield f"{r['id'] - 1:08d}", {"jpg": jpg, "json": meta}

            splits[split] = write_shards(with_progress(samples(), len(chosen), f"cub {split}"), tmp_dir, prefix=split, maxcount=maxcount)
        meta = {
            "classes": [_class_name(d) for d in class_dirs],
            "class_dirs": class_dirs,
            "source": str(root),
            "crop_to_bbox": crop_to_bbox,
            "bbox_margin": bbox_margin,
            "image_size": image_size,
            "resize": resize,
            "modality": "image-labels",
        }
        paths = finalize_dataset(tmp_dir, out_dir, "cub-200-2011", splits, meta, replace=overwrite)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    print(f"contrastlab: converted CUB-200-2011 from {root} into {out_dir} "
          f"({paths.meta['counts']['train']} train, {paths.meta['counts']['test']} test)", flush=True)
    return paths
