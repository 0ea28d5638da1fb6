"""Hyperspectral scenes -> patch shards, and the converter from the Indian Pines / Pavia University /
Pavia Centre / Salinas `.mat` layout.

Shard schema (DESIGN §3, hyperspectral patch): `key.npy` = float16 patch (bands, w, w) centred on a
pixel (centre at [w//2, w//2]), `key.json` = {label, row, col, index, scene, labelled, split}.

One scene is written as ONE split, "pixels": every written pixel exactly once (index = row*W + col,
so indices are unique and stable). Why one split: self-supervised stages train on all pixels while
the classifier needs the per-class train/test draw; the platform trains on one split, and a pixel in
two splits would need two indices. The draw is in each json's `split` field: "train" (the labelled
budget, `train_per_class` per class), "test" (the other labelled pixels) or "unlabelled"
(gt == 0, only written with `include_unlabelled`). `meta` (and `scene.json` for converted scenes)
holds band count, per-band stats, class names, patch size and the draw's counts.

Preprocessing (card cvp.md §d): optional per-pixel brightness normalisation (spectrum / its mean over
bands; [R], default on), then per-band z-score over the whole scene (stats in float64, computed from
every pixel, never from labels), reflect padding at borders; z-score first, then cast to float16.

    from contrastlab.platform.datasets.hsi import convert_hsi
    convert_hsi("Indian_pines_corrected.mat", "Indian_pines_gt.mat", "/data/ip-shards", train_per_class=10)
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from contrastlab.platform.data.shards import write_shards

from ._common import SHARD_SIZE, with_progress
from ._paths import DatasetPaths, finalize_dataset, prepare_output_dir

SPLIT = "pixels"

# Variable names inside the public .mat files (the usual GIC/EHU downloads) and class names.
KNOWN_SCENES: dict[str, dict] = {
    "indian_pines": {
        "cube_keys": ("indian_pines_corrected", "indian_pines"), "gt_keys": ("indian_pines_gt",),
        "classes": ["Alfalfa", "Corn-notill", "Corn-mintill", "Corn", "Grass-pasture", "Grass-trees", "Grass-pasture-mowed",
                    "Hay-windrowed", "Oats", "Soybean-notill", "Soybean-mintill", "Soybean-clean", "Wheat", "Woods",
                    "Buildings-Grass-Trees-Drives", "Stone-Steel-Towers"],
    },
    "pavia_centre": {  # Pavia.mat / Pavia_gt.mat (1096 x 715 after the usual crop, 102 bands)
        "cube_keys": ("pavia",), "gt_keys": ("pavia_gt",),
        "classes": ["Water", "Trees", "Asphalt", "Self-Blocking Bricks", "Bitumen", "Tiles", "Shadows", "Meadows", "Bare Soil"],
    },
    "pavia_university": {
        "cube_keys": ("paviaU",), "gt_keys": ("paviaU_gt",),
        "classes": ["Asphalt", "Meadows", "Gravel", "Trees", "Painted metal sheets", "Bare Soil", "Bitumen",
                    "Self-Blocking Bricks", "Shadows"],
    },
    "salinas": {
        "cube_keys": ("salinas_corrected", "salinas"), "gt_keys": ("salinas_gt",),
        "classes": ["Brocoli_green_weeds_1", "Brocoli_green_weeds_2", "Fallow", "Fallow_rough_plow", "Fallow_smooth",
                    "Stubble", "Celery", "Grapes_untrained", "Soil_vinyard_develop", "Corn_senesced_green_weeds",
                    "Lettuce_romaine_4wk", "Lettuce_romaine_5wk", "Lettuce_romaine_6wk", "Lettuce_romaine_7wk",
                    "Vinyard_untrained", "Vinyard_vertical_trellis"],
    },
}


# --------------------------------------------------------------------------- cube preprocessing
def brightness_normalise(cube: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """x[r, c, :] / mean_b x[r, c, b]: removes per-pixel illumination, which every band group shares
    (without it a cross-band objective learns brightness; card §d [R])."""
    cube = np.asarray(cube, dtype=np.float64)
    mean = cube.mean(axis=-1, keepdims=True)
    return cube / np.where(np.abs(mean) < eps, eps, mean)


def band_stats(cube: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and std over every pixel of the scene, float64 (std 0 -> 1)."""
    flat = np.asarray(cube, dtype=np.float64).reshape(-1, cube.shape[-1])
    mean, std = flat.mean(axis=0), flat.std(axis=0)
    return mean, np.where(std > 0, std, 1.0)


def preprocess_cube(cube: np.ndarray, brightness_norm: bool = True) -> tuple[np.ndarray, dict]:
    """(H, W, B) raw cube -> z-scored float32 cube and {band_mean, band_std, brightness_norm}."""
    x = brightness_normalise(cube) if brightness_norm else np.asarray(cube, dtype=np.float64)
    mean, std = band_stats(x)
    z = ((x - mean) / std).astype(np.float32)
    return z, {"band_mean": mean.tolist(), "band_std": std.tolist(), "brightness_norm": bool(brightness_norm)}


def pad_cube(cube: np.ndarray, patch_size: int) -> np.ndarray:
    """Reflect-pad (H, W, B) by patch_size // 2 on each spatial side."""
    r = patch_size // 2
    return np.pad(cube, ((r, r), (r, r), (0, 0)), mode="reflect")


def extract_patch(padded: np.ndarray, row: int, col: int, patch_size: int) -> np.ndarray:
    """(B, w, w) patch of the reflect-padded cube centred on original pixel (row, col)."""
    return np.ascontiguousarray(padded[row:row + patch_size, col:col + patch_size].transpose(2, 0, 1))


def extract_patches(cube: np.ndarray, rows: Sequence[int], cols: Sequence[int], patch_size: int) -> np.ndarray:
    """(N, B, w, w) patches centred on (rows[i], cols[i]); borders reflect-padded."""
    if patch_size < 1 or patch_size % 2 == 0:
        raise ValueError(f"patch_size must be a positive odd integer, got {patch_size}")
    padded = pad_cube(cube, patch_size)
    return np.stack([extract_patch(padded, r, c, patch_size) for r, c in zip(rows, cols)]) if len(rows) else \
        np.zeros((0, cube.shape[-1], patch_size, patch_size), cube.dtype)


# --------------------------------------------------------------------------- the labelled draw
def per_class_count(n_class: int, train_per_class: float, cap_half: bool = True) -> int:
    """Training pixels drawn from a class of n_class pixels.

    train_per_class >= 1: that many (an integer count); 0 < train_per_class < 1: that fraction,
    rounded, at least 1. With cap_half, a class with FEWER pixels than that count gives half of
    them, rounded down (card cvp.md §f: "for a class with < n pixels take half of it"; Indian Pines
    has classes of 20-46 pixels); every other class gives exactly n (checklist §h.7), even when
    that leaves it fewer test pixels than training ones (a class of exactly n pixels: none).
    """
    if train_per_class <= 0:
        raise ValueError(f"train_per_class must be > 0 (a count >= 1 or a fraction < 1), got {train_per_class}")
    if train_per_class >= 1:
        if float(train_per_class) != int(train_per_class):
            raise ValueError(f"train_per_class >= 1 must be a whole count, got {train_per_class}")
        n = int(train_per_class)
    else:
        n = max(1, int(round(train_per_class * n_class)))
    if cap_half and n_class < n:  # only classes smaller than n are halved (was: every class below 2n)
        n = n_class // 2
    return min(n, n_class)


def draw_train_test(labels: np.ndarray, train_per_class: float, seed: int | np.random.Generator = 0,
                    cap_half: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per-class random draw over labelled positions (labels >= 0; -1 = unlabelled).

    Returns (train positions, test positions), both sorted: exactly per_class_count(n_c) of each class
    in train, the rest of the labelled positions in test (disjoint; union = every labelled position).
    """
    labels = np.asarray(labels)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    train = []
    for c in np.unique(labels[labels >= 0]):
        pos = np.flatnonzero(labels == c)
        train.append(rng.choice(pos, per_class_count(len(pos), train_per_class, cap_half), replace=False))
    train = np.sort(np.concatenate(train)) if train else np.zeros(0, np.int64)
    test = np.setdiff1d(np.flatnonzero(labels >= 0), train)
    return train.astype(np.int64), test.astype(np.int64)


# --------------------------------------------------------------------------- writing shards
def _select_bands(cube: np.ndarray, bands) -> tuple[np.ndarray, list[int]]:
    n = cube.shape[-1]
    if bands is None:
        return cube, list(range(n))
    idx = [int(b) for b in bands]
    if not idx or min(idx) < 0 or max(idx) >= n or len(set(idx)) != len(idx):
        raise ValueError(f"bands must be distinct indices in [0, {n}), got {bands!r}")
    return cube[..., idx], idx


def write_hsi_shards(out_dir: str | os.PathLike, cube: np.ndarray, gt: np.ndarray, *, patch_size: int = 9,
                     bands: Sequence[int] | None = None, train_per_class: float = 10, seed: int = 0,
                     brightness_norm: bool = True, include_unlabelled: bool = False, cap_half: bool = True,
                     scene: str = "scene", class_names: Sequence[str] | None = None, maxcount: int = SHARD_SIZE,
                     label: str = "hsi") -> tuple[dict[str, list[str]], dict]:
    """Write one scene as the split "pixels" (see the module docstring). cube (H, W, B), gt (H, W) with
    0 = unlabelled and classes 1..C (shifted to 0..C-1 in the shards). Returns ({"pixels": paths}, meta)."""
    cube, gt = np.asarray(cube), np.asarray(gt)
    if cube.ndim != 3 or gt.shape != cube.shape[:2]:
        raise ValueError(f"cube must be (H, W, B) and gt (H, W); got {cube.shape} and {gt.shape}")
    if patch_size < 1 or patch_size % 2 == 0:
        raise ValueError(f"patch_size must be a positive odd integer, got {patch_size}")
    cube, band_idx = _select_bands(cube, bands)
    h, w, b = cube.shape
    z, stats = preprocess_cube(cube, brightness_norm)
    padded = pad_cube(z, patch_size)
    labels = gt.reshape(-1).astype(np.int64) - 1  # -1 = unlabelled
    n_classes = int(labels.max()) + 1 if (labels >= 0).any() else 0
    train, test = draw_train_test(labels, train_per_class, seed, cap_half)
    role = np.full(h * w, "", dtype=object)
    role[train], role[test] = "train", "test"
    if include_unlabelled:
        role[labels < 0] = "unlabelled"
    written = np.flatnonzero(role != "")

    def samples() -> Iterator:
        for pix in written:
            r, c = divmod(int(pix), w)
            patch = extract_patch(padded, r, c, patch_size).astype(np.float16)
            info = {"label": int(labels[pix]), "row": r, "col": c, "index": int(pix), "scene": scene,
                    "labelled": bool(labels[pix] >= 0), "split": str(role[pix])}
            yield f"{int(pix):08d}", {"npy": patch, "json": info}

    paths = write_shards(with_progress(samples(), len(written), f"{label} {SPLIT}"), Path(out_dir), prefix=SPLIT, maxcount=maxcount)
    names = list(class_names) if class_names is not None else [f"class_{k}" for k in range(n_classes)]
    meta = {
        "modality": "hsi", "scene": scene, "height": h, "width": w, "bands": b, "band_indices": band_idx,
        "patch_size": patch_size, "classes": names[:n_classes] if class_names is not None else names,
        "num_classes": n_classes, "train_per_class": train_per_class, "split_seed": seed, "cap_half": cap_half,
        "include_unlabelled": include_unlabelled,
        "draw_counts": {"train": int(len(train)), "test": int(len(test)),
                        "unlabelled": int((labels < 0).sum()) if include_unlabelled else 0},
        **stats,
    }
    return {SPLIT: paths}, meta


# --------------------------------------------------------------------------- the .mat converter
def _pick(mat: dict, keys: Sequence[str], ndim: int, what: str, path) -> np.ndarray:
    arrays = {k: v for k, v in mat.items() if not k.startswith("__") and isinstance(v, np.ndarray)}
    for k in keys:
        if k in arrays:
            return arrays[k]
    lower = {k.lower(): v for k, v in arrays.items()}
    for k in keys:
        if k.lower() in lower:
            return lower[k.lower()]
    candidates = [v for v in arrays.values() if v.ndim == ndim]
    if len(candidates) == 1:
        return candidates[0]
    raise KeyError(f"{path}: cannot tell which variable is the {what} (tried {list(keys)}; variables: "
                   f"{ {k: v.shape for k, v in arrays.items()} }); pass {what}_key= (command line: --{what}-key NAME)")


def _loadmat(path) -> dict:
    """scipy.io.loadmat, with a v7.3 (HDF5) file named in the error and the way out."""
    import scipy.io

    try:
        return scipy.io.loadmat(str(path))
    except NotImplementedError:  # scipy: "Please use HDF reader for matlab v7.3 files"
        raise NotImplementedError(f"{path} is a MATLAB v7.3 (HDF5) .mat file, which scipy.io cannot read: re-save it as v7 "
                                  f"(MATLAB: save(name, var, '-v7')) or read it with h5py and write it with scipy.io.savemat") from None


def guess_scene(path: str | os.PathLike) -> str | None:
    name = Path(path).name.lower()
    if "indian" in name:
        return "indian_pines"
    if "paviau" in name or "pavia_u" in name or "pavia_university" in name or "paviauniversity" in name:
        return "pavia_university"
    if "pavia" in name:  # Pavia.mat / Pavia_gt.mat / PaviaC: Pavia Centre, a different scene with other classes
        return "pavia_centre"
    if "salinas" in name:
        return "salinas"
    return None


def load_hsi_mat(cube_path: str | os.PathLike, gt_path: str | os.PathLike, *, cube_key: str | None = None,
                 gt_key: str | None = None, scene: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read the public (cube, ground truth) .mat pair: cube (H, W, B) float, gt (H, W) int (0 = unlabelled)."""
    known = KNOWN_SCENES.get(scene or guess_scene(cube_path) or "", {})
    cube_mat, gt_mat = _loadmat(cube_path), _loadmat(gt_path)
    cube = _pick(cube_mat, [cube_key] if cube_key else known.get("cube_keys", ()), 3, "cube", cube_path)
    gt = _pick(gt_mat, [gt_key] if gt_key else known.get("gt_keys", ()), 2, "gt", gt_path)
    if gt.shape != cube.shape[:2]:
        raise ValueError(f"ground truth {gt.shape} does not match the cube's spatial size {cube.shape[:2]}")
    return cube.astype(np.float32), gt.astype(np.int64)


def convert_hsi(cube_path: str | os.PathLike, gt_path: str | os.PathLike, out_dir: str | os.PathLike, *,
                scene: str | None = None, cube_key: str | None = None, gt_key: str | None = None,
                class_names: Sequence[str] | None = None, overwrite: bool = False, **writer_kwargs) -> DatasetPaths:
    """Convert a .mat scene into patch shards (split "pixels") + meta.json + scene.json in `out_dir`.

    writer_kwargs go to `write_hsi_shards`: patch_size, bands, train_per_class, seed, brightness_norm,
    include_unlabelled, cap_half, maxcount. Use as data.train = data.eval = '<out_dir>/pixels-*.tar'.
    """
    scene = scene or guess_scene(cube_path) or Path(cube_path).stem
    cube, gt = load_hsi_mat(cube_path, gt_path, cube_key=cube_key, gt_key=gt_key, scene=scene)
    if class_names is None and scene in KNOWN_SCENES and len(KNOWN_SCENES[scene]["classes"]) >= gt.max():
        class_names = KNOWN_SCENES[scene]["classes"]
    out_dir, tmp_dir = prepare_output_dir(out_dir, overwrite)
    try:
        splits, meta = write_hsi_shards(tmp_dir, cube, gt, scene=scene, class_names=class_names, label=scene, **writer_kwargs)
        meta["source"] = {"cube": str(cube_path), "gt": str(gt_path)}
        (tmp_dir / "scene.json").write_text(json.dumps(meta, indent=1))
        paths = finalize_dataset(tmp_dir, out_dir, scene, splits, meta, replace=overwrite)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    print(f"contrastlab: converted {scene} ({cube.shape}) into {out_dir}: {meta['draw_counts']}", flush=True)
    return paths
