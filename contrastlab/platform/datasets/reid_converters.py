"""Converters from public person re-id layouts into one multi-domain shard dataset (UCR).

    from contrastlab.platform.datasets.reid_converters import convert_reid
    convert_reid([("market1501", "~/data/Market-1501-v15.09.15", "market1501", "seen"),
                  ("dukemtmc", "~/data/DukeMTMC-reID", "duke", "seen"),
                  ("msmt17", "~/data/MSMT17_V1", "msmt17", "unseen")], "~/shards/reid", image_size=(256, 128))

Layouts read:
- Market-1501: `bounding_box_train/` (train), `query/`, `bounding_box_test/` (gallery); file names
  `0002_c1s1_000451_03.jpg` = pid 0002, camera 1 (sequence s1, frame, box). pid -1 ("junk") images
  are dropped; pid 0000 (distractors) stay in the gallery, as in the standard protocol.
- DukeMTMC-reID: the same folders; names `0005_c2_f0046182.jpg`.
- MSMT17 (V1 or V2): list files `list_train.txt`, `list_val.txt` (merged into train unless
  include_val=False), `list_query.txt`, `list_gallery.txt`, lines `<relative path> <pid>`; images
  under `train/` + `test/` (V1) or `mask_train_v2/` + `mask_test_v2/` (V2); the camera is the third
  `_` field of the file name (`0000_000_01_0303morning_0015_0.jpg` -> camera 01).

Output (same schema as the embedded `synthetic-reid`): split `train` = train images of the
"seen"/"source" domains, interleaved in a seeded random order (a phase filters one domain); split
`test` = query + gallery images of every domain. Per-sample json: index, pid (dataset-local),
camera / camid (0-based), domain, domain_id, split (train | query | gallery), orig_name.
meta: domain_names, source_domains, seen_domains, unseen_domains, image_size, modality "reid".
Cameras are made 0-based (Market's c1 -> 0).
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np

from contrastlab.platform.data.codecs import encode_jpeg
from contrastlab.platform.data.shards import write_shards

from ._common import SHARD_SIZE, with_progress
from ._paths import DatasetPaths, finalize_dataset, prepare_output_dir

LAYOUTS = ("market1501", "dukemtmc", "msmt17")
ROLES = ("seen", "unseen", "source")
_MARKET_NAME = re.compile(r"^(-?\d+)_c(\d+)")
_MARKET_DIRS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


def _find_root(root: Path, required: list[str]) -> Path:
    """`root` itself, or its only child folder, holding every `required` entry."""
    root = Path(root).expanduser()
    if all((root / r).exists() for r in required):
        return root
    children = [c for c in root.iterdir() if c.is_dir()] if root.is_dir() else []
    matches = [c for c in children if all((c / r).exists() for r in required)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ValueError(f"{root} holds several candidate dataset folders ({', '.join(sorted(m.name for m in matches))}): pass one of them")
    raise FileNotFoundError(f"{root} does not hold {', '.join(required)} (nor does a folder directly inside it)")


def read_market_style(root: str | os.PathLike, name: str = "market1501") -> list[dict]:
    """Records {path, pid, camera, split, orig_name} of a Market-1501 / DukeMTMC-reID folder."""
    root = _find_root(Path(root), list(_MARKET_DIRS.values()))
    records = []
    for split, folder in _MARKET_DIRS.items():
        for path in sorted((root / folder).glob("*.jpg")):
            m = _MARKET_NAME.match(path.name)
            if not m:
                raise ValueError(f"{path}: not a {name} file name (expected e.g. 0002_c1s1_000451_03.jpg)")
            pid, cam = int(m.group(1)), int(m.group(2))
            if pid == -1:
                continue  # junk boxes
            if cam < 1:
                raise ValueError(f"{path}: camera {cam} (cameras are numbered from 1)")
            records.append({"path": path, "pid": pid, "camera": cam - 1, "split": split, "orig_name": path.name})
    if not records:
        raise ValueError(f"{root}: no images found in {', '.join(_MARKET_DIRS.values())}")
    return records


def read_market1501(root: str | os.PathLike) -> list[dict]:
    return read_market_style(root, "market1501")


def read_dukemtmc(root: str | os.PathLike) -> list[dict]:
    return read_market_style(root, "dukemtmc")


def read_msmt17(root: str | os.PathLike, include_val: bool = True) -> list[dict]:
    """Records of an MSMT17 (V1: train/, test/; V2: mask_train_v2/, mask_test_v2/) folder with its list files."""
    lists = ["list_train.txt", "list_query.txt", "list_gallery.txt"]
    root = _find_root(Path(root), lists)
    train_dir = next((root / d for d in ("train", "mask_train_v2") if (root / d).is_dir()), None)
    test_dir = next((root / d for d in ("test", "mask_test_v2") if (root / d).is_dir()), None)
    if train_dir is None or test_dir is None:
        raise FileNotFoundError(f"{root}: expected image folders train/ + test/ (V1) or mask_train_v2/ + mask_test_v2/ (V2)")
    parts = [("list_train.txt", train_dir, "train"), ("list_query.txt", test_dir, "query"), ("list_gallery.txt", test_dir, "gallery")]
    if include_val and (root / "list_val.txt").is_file():
        parts.insert(1, ("list_val.txt", train_dir, "train"))
    records = []
    for list_name, folder, split in parts:
        for n, line in enumerate((root / list_name).read_text().splitlines(), 1):
            if not line.strip():
                continue
            fields = line.split()
            if len(fields) != 2:
                raise ValueError(f"{root / list_name}:{n}: expected '<path> <pid>', got {line!r}")
            rel = fields[0]
            try:
                pid = int(fields[1])
            except ValueError:
                raise ValueError(f"{root / list_name}:{n}: pid {fields[1]!r} is not an integer (expected '<path> <pid>')") from None
            name_fields = Path(rel).name.split("_")
            if len(name_fields) < 3 or not name_fields[2].isdigit():
                raise ValueError(f"{root / list_name}:{n}: cannot read the camera from {rel!r} (expected pid_idx_cam_...)")
            path = folder / rel
            if not path.is_file():
                raise FileNotFoundError(f"{path} (listed in {root / list_name}:{n}) is missing")
            records.append({"path": path, "pid": pid, "camera": int(name_fields[2]) - 1, "split": split, "orig_name": rel})
    return records


READERS = {"market1501": read_market1501, "dukemtmc": read_dukemtmc, "msmt17": read_msmt17}


def _load(path: Path, image_size) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if image_size is not None:
            h, w = image_size
            if im.size != (w, h):
                im = im.resize((w, h), Image.BICUBIC)
        return np.asarray(im)


def convert_reid(sources: list, out_dir: str | os.PathLike, *, image_size: tuple[int, int] | None = (256, 128),
                 seed: int = 0, maxcount: int = SHARD_SIZE, jpeg_quality: int = 95, overwrite: bool = False) -> DatasetPaths:
    """Convert re-id folders into one dataset: `sources` = [(layout, src_dir, domain name, role)].

    layout: market1501 | dukemtmc | msmt17; role: seen (train + test), unseen (test only) or
    source (labelled warm-start domain: train + test). image_size (H, W) resizes (bicubic);
    None keeps the original size. Domains keep the order given (domain_id = position).
    """
    parsed = []
    for entry in sources:
        entry = tuple(entry) + (("seen",) if len(entry) == 3 else ())
        if len(entry) != 4:
            raise ValueError(f"a source is (layout, src_dir, domain name[, role]), got {entry!r}")
        layout, src, domain, role = entry
        if layout not in READERS:
            raise ValueError(f"unknown re-id layout {layout!r}: use one of {LAYOUTS}")
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        parsed.append((layout, Path(src).expanduser(), str(domain), role))
    names = [p[2] for p in parsed]
    if len(set(names)) != len(names):
        raise ValueError(f"domain names must be distinct, got {names}")
    train, test = [], []
    for d, (layout, src, domain, role) in enumerate(parsed):
        for r in READERS[layout](src):
            r = {**r, "domain": domain, "domain_id": d}
            if r["split"] == "train":
                if role != "unseen":
                    train.append(r)
            else:
                test.append(r)
    order = np.random.default_rng(seed).permutation(len(train))
    train = [train[i] for i in order]
    out_dir, tmp_dir = prepare_output_dir(out_dir, overwrite)
    try:
        counter = [0]

        def samples(records):
            for r in records:
                info = {"index": counter[0], "pid": r["pid"], "camera": r["camera"], "camid": r["camera"], "domain": r["domain"],
                        "domain_id": r["domain_id"], "split": r["split"], "orig_name": r["orig_name"]}
                yield f"{counter[0]:08d}", {"jpg": encode_jpeg(_load(r["path"], image_size), quality=jpeg_quality), "json": info}
                counter[0] += 1

        splits = {split: write_shards(with_progress(samples(recs), len(recs), f"reid {split}"), tmp_dir, prefix=split, maxcount=maxcount)
                  for split, recs in (("train", train), ("test", test))}
        meta = {
            "modality": "reid", "domain_names": names,
            "source_domains": [p[2] for p in parsed if p[3] == "source"],
            "seen_domains": [p[2] for p in parsed if p[3] == "seen"],
            "unseen_domains": [p[2] for p in parsed if p[3] == "unseen"],
            "image_size": list(image_size) if image_size is not None else None,
            "sources": [{"layout": p[0], "path": str(p[1]), "domain": p[2], "role": p[3]} for p in parsed],
        }
        paths = finalize_dataset(tmp_dir, out_dir, "reid", splits, meta, replace=overwrite)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    print(f"contrastlab: converted {len(parsed)} re-id domain(s) into {out_dir} "
          f"({paths.meta['counts']['train']} train, {paths.meta['counts']['test']} query+gallery)", flush=True)
    return paths
