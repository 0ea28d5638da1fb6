"""Converter from class-per-folder video trees with split files (UCF101 / HMDB51 / plain folders) to
video shards (`key.mp4` + `key.json`, DESIGN §3 and fame.md d).

Layouts (`layout="auto"` picks the first that matches):
- "ucf101": a `classInd.txt` ("1 ApplyEyeMakeup" per line, 1-based ids) next to `trainlist0F.txt`
  ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1") and `testlist0F.txt` (paths only), F = `fold`
  (e.g. in `ucfTrainTestlist/`); the listed paths are relative to the video root (`UCF-101/` or
  wherever they resolve: `src`, or any direct sub-folder of it).
- "hmdb51": per-class files `<class>_test_split<F>.txt` ("<video>.avi <tag>", tag 1 = train,
  2 = test, 0 = unused) somewhere under `src`; videos in `<video root>/<class>/<video>.avi`.
- "folders": `src/<class>/<video>`: one split "train", or with `test_fraction > 0` a stratified
  train/test split (sklearn train_test_split, random_state=seed).
Labels: UCF101 classInd ids - 1; otherwise the position of the class in the sorted class names.

Every video is decoded with PyAV, its shorter side resized to `short_side` (0 keeps the size; sides
rounded down to even for H.264), optionally cut to its first `max_frames` frames, and re-encoded as
H.264 MP4 at its native frame rate. `index` = position of the video's relative path in the sorted
list of all converted videos (independent of the split); each split's videos are written in a random
order drawn from `seed` (not class by class). json: {label, label_name, dataset, split,
fold, fps, num_frames, video_id, index, path}.
"""
from __future__ import annotations

import os
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np

from contrastlab.platform.data.codecs import DecodeError
from contrastlab.platform.data.media import decode_mp4, encode_mp4, probe_mp4
from contrastlab.platform.data.shards import write_shards

from ._common import SHARD_SIZE, with_progress
from ._paths import DatasetPaths, finalize_dataset, prepare_output_dir

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".webm", ".mov", ".mpg", ".mpeg", ".m4v")
LAYOUTS = ("auto", "ucf101", "hmdb51", "folders")


# --------------------------------------------------------------------------- layouts -> (rel path, class, split)
def _find_one(src: Path, pattern: str) -> Path | None:
    hits = sorted(src.rglob(pattern))
    return hits[0] if hits else None


def _video_root(src: Path, rel_paths: list[str]) -> Path:
    """The folder the split files' paths are relative to: src or one of its direct sub-folders."""
    probe = rel_paths[0]
    for cand in [src, *sorted(p for p in src.iterdir() if p.is_dir())]:
        if (cand / probe).is_file():
            return cand
    raise FileNotFoundError(f"listed video {probe!r} not found under {src} or any of its direct sub-folders")


def _ucf101(src: Path, fold: int) -> tuple[Path, list[tuple[str, str, str]], list[str]]:
    class_ind = _find_one(src, "classInd.txt")
    lists = class_ind.parent
    classes = {}
    for line in class_ind.read_text().splitlines():
        if line.strip():
            idx, name = line.split()
            classes[name] = int(idx) - 1
    names = [n for n, _ in sorted(classes.items(), key=lambda kv: kv[1])]
    items = []
    for split, fname in (("train", f"trainlist{fold:02d}.txt"), ("test", f"testlist{fold:02d}.txt")):
        path = lists / fname
        if not path.is_file():
            raise FileNotFoundError(f"UCF101 split file {path} not found (fold {fold})")
        for line in path.read_text().splitlines():
            if line.strip():
                rel = line.split()[0].replace("\\", "/")
                cls = rel.split("/")[0]
                if cls not in classes:
                    raise ValueError(f"{path}: class {cls!r} of {rel!r} is not in {class_ind}")
                items.append((rel, cls, split))
    if not items:
        raise ValueError(f"UCF101 split files in {lists} list no videos")
    return _video_root(src, [items[0][0]]), items, names


def _hmdb51(src: Path, fold: int) -> tuple[Path, list[tuple[str, str, str]], list[str]]:
    files = sorted(src.rglob(f"*_test_split{fold}.txt"))
    if not files:
        raise FileNotFoundError(f"no HMDB51 split files *_test_split{fold}.txt under {src}")
    items = []
    for f in files:
        cls = f.name[: -len(f"_test_split{fold}.txt")]
        for line in f.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1] in ("1", "2"):
                items.append((f"{cls}/{parts[0]}", cls, "train" if parts[1] == "1" else "test"))
    if not items:
        raise ValueError(f"HMDB51 split files under {src} list no train/test videos")
    return _video_root(src, [items[0][0]]), items, sorted({c for _, c, _ in items})


def _folders(src: Path, test_fraction: float, seed: int) -> tuple[Path, list[tuple[str, str, str]], list[str]]:
    classes = sorted(p.name for p in src.iterdir() if p.is_dir() and not p.name.startswith("."))
    items = [(str(p.relative_to(src)), c, "train") for c in classes for p in sorted((src / c).rglob("*"))
             if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS]
    if not items:
        raise ValueError(f"no videos with extensions {VIDEO_EXTENSIONS} in class sub-folders of {src}")
    if test_fraction > 0:
        from sklearn.model_selection import train_test_split

        _, test = train_test_split(np.arange(len(items)), test_size=test_fraction, stratify=[c for _, c, _ in items], random_state=seed)
        test = set(test.tolist())
        items = [(r, c, "test" if i in test else "train") for i, (r, c, _) in enumerate(items)]
    return src, items, classes


def detect_layout(src: Path, fold: int = 1) -> str:
    if _find_one(src, "classInd.txt") is not None:
        return "ucf101"
    if _find_one(src, f"*_test_split{fold}.txt") is not None:
        return "hmdb51"
    return "folders"


# --------------------------------------------------------------------------- one video
def even_resize_shape(h: int, w: int, short_side: int) -> tuple[int, int]:
    """(h, w) with the shorter side scaled to `short_side` (0: unchanged), both rounded down to even."""
    if short_side:
        s = short_side / min(h, w)
        h, w = max(2, round(h * s)), max(2, round(w * s))
    return h // 2 * 2, w // 2 * 2


def transcode(data: bytes, short_side: int = 128, max_frames: int = 0, crf: int = 23) -> tuple[bytes, dict]:
    """Video bytes (any container PyAV reads) -> (H.264 MP4 bytes, {"fps", "num_frames", "height", "width"})."""
    info = probe_mp4(data)
    size = even_resize_shape(info["height"], info["width"], short_side)
    frames = decode_mp4(data, None if not max_frames else np.arange(min(max_frames, info["frames"] or max_frames)), size=size)
    fps = info["fps"] or 25.0
    out = encode_mp4(frames, fps=Fraction(fps).limit_denominator(1001), crf=crf)
    return out, {"fps": float(fps), "num_frames": int(len(frames)), "height": size[0], "width": size[1]}


# --------------------------------------------------------------------------- the converter
def convert_video_folder(src_dir: str | os.PathLike, out_dir: str | os.PathLike, *, layout: str = "auto", fold: int = 1,
                         short_side: int = 128, max_frames: int = 0, crf: int = 23, test_fraction: float = 0.0, seed: int = 0,
                         dataset: str | None = None, maxcount: int = SHARD_SIZE, on_error: str = "raise",
                         name: str | None = None, overwrite: bool = False) -> DatasetPaths:
    """Convert a UCF101 / HMDB51 / class-folder video tree into `key.mp4` + `key.json` shards per split."""
    src = Path(src_dir).expanduser()
    if not src.is_dir():
        raise FileNotFoundError(f"video folder {src} does not exist")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    layout = detect_layout(src, fold) if layout == "auto" else layout
    if layout == "ucf101":
        root, items, classes = _ucf101(src, fold)
    elif layout == "hmdb51":
        root, items, classes = _hmdb51(src, fold)
    else:
        root, items, classes = _folders(src, test_fraction, seed)
    label_of = {c: i for i, c in enumerate(classes)}
    dataset = dataset or {"ucf101": "ucf101", "hmdb51": "hmdb51"}.get(layout, src.absolute().name)
    index_of = {rel: i for i, rel in enumerate(sorted({rel for rel, _, _ in items}))}
    if len(index_of) != len(items):
        raise ValueError(f"some videos of {src} are listed more than once (or in more than one split)")
    for rel, _, _ in items:
        if not (root / rel).is_file():
            raise FileNotFoundError(f"listed video {root / rel} not found")
    split_order = [s for s in ("train", "test") if any(it[2] == s for it in items)]
    skipped: list[str] = []

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
                    try:
                        mp4, info = transcode((root / rel).read_bytes(), short_side, max_frames, crf)
                    except DecodeError as exc:
                        if on_error == "raise":
                            raise ValueError(f"cannot decode video {root / rel}: {exc}") from None
                        skipped.append(rel)
                        continue
                    meta = {"label": label_of[cls], "label_name": cls, "dataset": dataset, "split": split, "fold": fold,
                            "fps": info["fps"], "num_frames": info["num_frames"], "video_id": Path(rel).stem, "index": index, "path": rel}
                    yield f"{index:08d}", {"mp4": mp4, "json": meta}

            splits[split] = write_shards(with_progress(samples(), len(chosen), f"video folder {split}"), tmp_dir, prefix=split, maxcount=maxcount)
        meta = {"classes": classes, "source": str(src.absolute()), "layout": layout, "fold": fold, "short_side": short_side,
                "modality": "video", "skipped": skipped}
        paths = finalize_dataset(tmp_dir, out_dir, name or src.absolute().name, splits, meta, replace=overwrite)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    counts = ", ".join(f"{n} {s}" for s, n in paths.meta["counts"].items())
    print(f"contrastlab: converted {layout} video folder {src} into {out_dir} ({counts}, {len(classes)} classes"
          + (f", {len(skipped)} undecodable skipped" if skipped else "") + ")", flush=True)
    return paths
