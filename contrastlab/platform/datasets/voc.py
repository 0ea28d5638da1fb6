"""Converter from the PASCAL VOC 2012 layout to segmentation shards (image-level labels + eval masks).

Expected layout (the official VOCtrainval_11-May-2012.tar; `src_dir` may be `VOC2012`, the
`VOCdevkit` above it, or the folder holding `VOCdevkit`):

    JPEGImages/<id>.jpg
    SegmentationClass/<id>.png          palette PNG, pixel = class index (0 background, 1..20), 255 = boundary/ignore
    ImageSets/Segmentation/train.txt    one id per line (1,464), val.txt (1,449), trainval.txt
    SegmentationClassAug/<id>.png       optional (SBD, 10,582 + ...): grey PNG of class indices
    ImageSets/Segmentation/train_aug.txt  optional; without it train_aug = (ids in SegmentationClassAug + train) - val
                                        (list lines may also be DeepLab's "/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png")
    Annotations/<id>.xml                optional; labels of images that have no mask (object names)

Output: one set of shards per split (`train_aug-*.tar`, `train-*.tar`, `val-*.tar`, + manifests and
`meta.json`) in `out_dir`. Members: `key.jpg` (the original JPEG bytes, or re-encoded when
resized), `key.json` {"labels": [1-based class ids present], "image_id", "split", "height",
"width", "index"}, and `key.png` (uint8 class mask, 255 = ignore) for the splits in `masks_for`
(default train and val: masks are for evaluating CAM seeds, never for training). Image-level
labels are the classes of the image's mask (SegmentationClass, else SegmentationClassAug, else
the XML annotation). `index` is unique across the written splits (an image in both train_aug and
train gets two indices); the key is the VOC id.
"""
from __future__ import annotations

import io
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from contrastlab.platform.data.codecs import encode_jpeg, encode_png
from contrastlab.platform.data.shards import write_shards

from ._common import SHARD_SIZE, with_progress
from ._paths import DatasetPaths, finalize_dataset, prepare_output_dir

VOC_CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
               "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]
IGNORE = 255
KNOWN_SPLITS = ("train_aug", "train", "val", "trainval")


def find_voc_root(src_dir: str | os.PathLike) -> Path:
    src = Path(src_dir).expanduser()
    for cand in (src, src / "VOC2012", src / "VOCdevkit" / "VOC2012"):
        if (cand / "JPEGImages").is_dir():
            return cand
    raise FileNotFoundError(f"no PASCAL VOC 2012 folder at {src}: expected JPEGImages/ and ImageSets/Segmentation/ in it, "
                            f"in {src / 'VOC2012'} or in {src / 'VOCdevkit' / 'VOC2012'}")


def _list_id(token: str) -> str:
    """An id from a list line's first token: "2007_000032", or DeepLab's "/JPEGImages/2007_000032.jpg"."""
    if "/" in token or Path(token).suffix.lower() in (".jpg", ".jpeg", ".png"):
        return Path(token).stem
    return token


def _read_ids(path: Path) -> list[str]:
    """Ids of a split list: one id per line (VOC), or DeepLab's "<image path> <mask path>" lines."""
    return [_list_id(line.split()[0]) for line in path.read_text().splitlines() if line.strip()]


def split_ids(root: Path) -> dict[str, list[str]]:
    """Split name -> sorted image ids, for the splits this folder provides (train_aug when derivable)."""
    sets = root / "ImageSets" / "Segmentation"
    if not sets.is_dir():
        raise FileNotFoundError(f"{sets} is missing (PASCAL VOC 2012 lists train.txt / val.txt there)")
    out = {name: sorted(set(_read_ids(sets / f"{name}.txt"))) for name in ("train", "val", "trainval") if (sets / f"{name}.txt").is_file()}
    if (sets / "train_aug.txt").is_file():
        out["train_aug"] = sorted(set(_read_ids(sets / "train_aug.txt")))
    elif (root / "SegmentationClassAug").is_dir():
        aug = {p.stem for p in (root / "SegmentationClassAug").glob("*.png")}
        out["train_aug"] = sorted((aug | set(out.get("train", []))) - set(out.get("val", [])))
    return out


def read_mask(path: Path) -> np.ndarray:
    """Class-index mask from a VOC palette PNG or an SBD grey PNG; values must be 0..20 or 255."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode not in ("P", "L"):
            raise ValueError(f"{path}: mask mode {im.mode!r}; expected a palette (P) or grey (L) PNG of class indices")
        mask = np.asarray(im).astype(np.uint8)
    bad = np.setdiff1d(np.unique(mask), np.r_[np.arange(len(VOC_CLASSES) + 1), IGNORE])
    if bad.size:
        raise ValueError(f"{path}: mask values {bad.tolist()} are not VOC class indices (0..20) or {IGNORE}")
    return mask


def _xml_labels(path: Path) -> list[int]:
    names = {obj.findtext("name", "").strip() for obj in ET.parse(path).getroot().iter("object")}
    unknown = names - set(VOC_CLASSES)
    if unknown:
        raise ValueError(f"{path}: unknown VOC class name(s) {sorted(unknown)}")
    return sorted(VOC_CLASSES.index(n) + 1 for n in names)


def _mask_path(root: Path, image_id: str) -> Path | None:
    for folder in ("SegmentationClass", "SegmentationClassAug"):
        p = root / folder / f"{image_id}.png"
        if p.is_file():
            return p
    return None


def image_labels(root: Path, image_id: str) -> list[int]:
    """Sorted 1-based class ids present in the image (from its mask, else from its XML annotation)."""
    mp = _mask_path(root, image_id)
    if mp is not None:
        values = np.unique(read_mask(mp))
        return [int(v) for v in values if 0 < v < IGNORE]
    xml = root / "Annotations" / f"{image_id}.xml"
    if xml.is_file():
        return _xml_labels(xml)
    raise FileNotFoundError(f"no labels for VOC image {image_id}: neither SegmentationClass/{image_id}.png, "
                            f"SegmentationClassAug/{image_id}.png nor Annotations/{image_id}.xml exists in {root}")


def _resize_pair(jpg_bytes: bytes, mask: np.ndarray | None, max_side: int, quality: int) -> tuple[bytes, np.ndarray | None, int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(jpg_bytes)) as im:
        im = im.convert("RGB")
        w, h = im.size
        scale = max_side / max(w, h)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        im = im.resize(size, Image.BICUBIC)
    if mask is not None:
        mask = np.asarray(Image.fromarray(mask).resize(size, Image.NEAREST))
    return encode_jpeg(np.asarray(im), quality=quality), mask, size[1], size[0]


def convert_voc(src_dir: str | os.PathLike, out_dir: str | os.PathLike, *, splits: tuple[str, ...] | None = None,
                masks_for: tuple[str, ...] = ("train", "val"), max_side: int | None = None, jpeg_quality: int = 95,
                maxcount: int = SHARD_SIZE, overwrite: bool = False) -> DatasetPaths:
    """Convert a VOC 2012 folder into segmentation shards in `out_dir`.

    splits: which of train_aug / train / val / trainval to write (default: train_aug when the folder
    provides it, train and val). max_side: resize so the longer side is this (masks: nearest);
    None keeps the original JPEG bytes. The output is built in a temporary sibling folder and
    renamed into place when complete.
    """
    root = find_voc_root(src_dir)
    available = split_ids(root)
    if splits is None:
        splits = tuple(s for s in ("train_aug", "train", "val") if s in available)
    for s in splits:
        if s not in KNOWN_SPLITS:
            raise ValueError(f"unknown VOC split {s!r}; choose from {KNOWN_SPLITS}")
        if s not in available:
            raise FileNotFoundError(f"split {s!r} is not available in {root} (found {sorted(available)}); train_aug needs "
                                    f"ImageSets/Segmentation/train_aug.txt or SegmentationClassAug/")
    out_dir, tmp_dir = prepare_output_dir(out_dir, overwrite)
    try:
        written, index = {}, 0
        for split in splits:
            ids = available[split]
            with_mask = split in masks_for

            def samples(ids=ids, split=split, with_mask=with_mask, first=index):
                for i, image_id in enumerate(ids):
                    jpg_path = root / "JPEGImages" / f"{image_id}.jpg"
                    if not jpg_path.is_file():
                        raise FileNotFoundError(f"VOC image {jpg_path} (listed for split {split}) is missing")
                    jpg = jpg_path.read_bytes()
                    labels = image_labels(root, image_id)
                    mask = None
                    if with_mask:
                        mp = _mask_path(root, image_id)
                        if mp is None:
                            raise FileNotFoundError(f"no mask for VOC image {image_id} of split {split} (masks_for={masks_for})")
                        mask = read_mask(mp)
                    if max_side is not None:
                        jpg, mask, h, w = _resize_pair(jpg, mask, max_side, jpeg_quality)
                    else:
                        from PIL import Image

                        with Image.open(io.BytesIO(jpg)) as im:
                            w, h = im.size
                    if mask is not None and mask.shape != (h, w):
                        raise ValueError(f"VOC mask of {image_id} is {mask.shape[1]}x{mask.shape[0]} but its image is {w}x{h}")
                    info = {"labels": labels, "image_id": image_id, "split": split, "height": h, "width": w, "index": first + i}
                    fields = {"jpg": jpg, "json": info}
                    if mask is not None:
                        fields["png"] = encode_png(mask)
                    yield image_id, fields

            written[split] = write_shards(with_progress(samples(), len(ids), f"voc {split}"), tmp_dir, prefix=split, maxcount=maxcount)
            index += len(ids)
        meta = {
            "classes": list(VOC_CLASSES),
            "num_classes": len(VOC_CLASSES) + 1,
            "background_index": 0,
            "ignore_index": IGNORE,
            "source": str(root),
            "max_side": max_side,
            "masks_for": list(masks_for),
            "modality": "segmentation",
            "label_format": "json labels are 1-based class ids; png masks: 0 background, c = classes[c - 1], 255 ignore",
        }
        paths = finalize_dataset(tmp_dir, out_dir, "voc2012", written, meta, replace=overwrite)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    print(f"contrastlab: converted PASCAL VOC 2012 from {root} into {out_dir} ({paths.meta['counts']})", flush=True)
    return paths
