"""Where a dataset lives: `DatasetPaths`, reading a dataset folder back from its `meta.json`, and
the atomic hand-over of a finished temporary folder.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
from dataclasses import dataclass


@dataclass
class DatasetPaths:
    name: str
    root: pathlib.Path
    splits: dict[str, list[str]]  # split name -> shard paths (e.g. "train", "test", "heldout")
    meta: dict  # classes, zero-shot tasks, sizes, seed, params, counts per split


def load_dataset_paths(root: str | os.PathLike) -> DatasetPaths:
    """Read a generated or converted dataset folder back from its `meta.json`."""
    root = pathlib.Path(root)
    meta_path = root / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: {root} is not a complete contrastlab dataset folder")
    meta = json.loads(meta_path.read_text())
    splits = {split: [str(root / name) for name in shards] for split, shards in meta["splits"].items()}
    return DatasetPaths(name=meta["name"], root=root, splits=splits, meta=meta)


def temporary_sibling(final_dir: pathlib.Path) -> pathlib.Path:
    """A fresh hidden folder next to `final_dir` (same file system, so the final rename is atomic)."""
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    return pathlib.Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.tmp-", dir=final_dir.parent))


def prepare_output_dir(out_dir: str | os.PathLike, overwrite: bool) -> tuple[pathlib.Path, pathlib.Path]:
    """For converters: refuse a non-empty `out_dir` unless `overwrite`; return (out_dir, temporary sibling)."""
    out_dir = pathlib.Path(out_dir).expanduser().absolute()
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise FileExistsError(f"output folder {out_dir} exists and is not empty; remove it, choose another, or pass overwrite=True")
    return out_dir, temporary_sibling(out_dir)


def finalize_dataset(tmp_dir: pathlib.Path, final_dir: pathlib.Path, name: str, splits: dict[str, list[str]], meta: dict,
                     replace: bool = False) -> DatasetPaths:
    """Write `meta.json` into the finished temporary folder and rename it into place.

    With `replace`, an existing `final_dir` is removed first (converters with overwrite=True);
    otherwise, if another process finished the same dataset first, keep theirs and drop ours.
    """
    counts = {}
    for split in splits:
        manifest = json.loads((tmp_dir / f"{split}.manifest.json").read_text())
        counts[split] = manifest["total"]
    full_meta = {
        "name": name,
        **meta,
        "splits": {split: [os.path.basename(p) for p in paths] for split, paths in splits.items()},
        "counts": counts,
    }
    with open(tmp_dir / "meta.json", "w") as fh:
        json.dump(full_meta, fh, indent=1)  # insertion order: train split first
    os.chmod(tmp_dir, 0o755)  # mkdtemp makes it 0700; a shared cache must stay readable
    if replace and final_dir.exists():
        shutil.rmtree(final_dir) if final_dir.is_dir() else final_dir.unlink()
    try:
        os.rename(tmp_dir, final_dir)
    except OSError:
        if (final_dir / "meta.json").is_file():
            shutil.rmtree(tmp_dir, ignore_errors=True)  # lost a race with an identical generation
        else:  # an incomplete folder (not made by us: ours appear whole): replace it
            shutil.rmtree(final_dir)
            os.rename(tmp_dir, final_dir)
    return load_dataset_paths(final_dir)


