"""Embedded datasets (generated on first use, cached) and converters from public layouts to shards.

    paths = ensure_dataset("shapes-captions", seed=0, n_train=3000)
    paths.splits["train"]   # ['.../shapes-captions-1a2b3c4d5e/train-00000.tar', ...]
    paths.meta["zero_shot"]

A dataset is generated into `<cache>/<name>-<hash of (name, seed, params, generator version, layout)>/`
(plus, for generators that read machine-dependent inputs, the `sources` their `DatasetSpec.resolve`
hook names: the backend or data file actually used, e.g. a content digest of Fashion-MNIST),
where the cache is `cache_dir`, else `$CONTRASTLAB_CACHE`, else `~/.cache/contrastlab/datasets`.
Generation happens in a hidden temporary sibling that is renamed into place only once every
shard, manifest and `meta.json` is written, so a crash never leaves a half dataset that a later
call would use (stale `.name-hash.tmp-*` folders from killed runs are never read and can be
deleted). Every sample's json carries an integer `index`, unique across the splits of a dataset.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
from typing import Any

import importlib

from ._common import DatasetSpec, log
from ._paths import DatasetPaths, finalize_dataset, load_dataset_paths, temporary_sibling
from .cub import convert_cub
from .image_folder import convert_image_folder

__all__ = [
    "DatasetPaths",
    "ensure_dataset",
    "list_datasets",
    "load_dataset_paths",
    "default_cache_dir",
    "convert_cub",
    "convert_image_folder",
]

DEFAULT_CACHE = "~/.cache/contrastlab/datasets"


# dataset name -> module of this package defining `SPEC`; imported on first use, so a generator's
# heavy imports (PyAV, scipy.io, ...) cost nothing to users of other datasets.
_MODULES: dict[str, str] = {
    "shapes-captions": "shapes_captions",
    "fashion-captions": "fashion_captions",
    "fashion-mnist": "fashion_mnist",
    "digits": "digits",
    "shapes-relations": "shapes_relations",  # UNIMO
    "fashion-products": "fashion_products",  # SCALE
    "moving-shapes": "moving_shapes",  # FAME
    "synthetic-reid": "synthetic_reid",  # UCR
    "fashion-scenes": "fashion_scenes",  # PPC
    "usgs-cube": "usgs_cube",  # CVP
}


class _Registry(dict):
    def __missing__(self, name: str) -> DatasetSpec:
        spec = importlib.import_module(f"{__name__}.{_MODULES[name]}").SPEC
        self[name] = spec
        return spec

    def __contains__(self, name) -> bool:
        return name in _MODULES


_REGISTRY: dict[str, DatasetSpec] = _Registry()


def register_dataset(name: str, module: str) -> None:
    """Add an embedded dataset: `module` (a module of this package) defines `SPEC`."""
    _MODULES[name] = module
    _REGISTRY.pop(name, None)


def list_datasets() -> dict[str, str]:
    """name -> one-line description of every embedded dataset."""
    return {name: _REGISTRY[name].description for name in sorted(_MODULES)}


def default_cache_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("CONTRASTLAB_CACHE") or DEFAULT_CACHE).expanduser()


def _resolve_params(spec: DatasetSpec, params: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(params) - set(spec.defaults))
    if unknown:
        valid = ", ".join(f"{k}={v!r}" for k, v in spec.defaults.items())
        raise ValueError(f"unknown parameter(s) {unknown} for dataset {spec.name!r}; valid parameters (with defaults): {valid}")
    resolved = dict(spec.defaults)
    for key, value in params.items():
        default = spec.defaults[key]
        ok = isinstance(value, type(default)) and not (isinstance(value, bool) and not isinstance(default, bool))
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise ValueError(f"parameter {key!r} of dataset {spec.name!r} must be {type(default).__name__}, got {value!r}")
        if key in spec.choices and value not in spec.choices[key]:
            raise ValueError(f"parameter {key!r} of dataset {spec.name!r} must be one of {list(spec.choices[key])}, got {value!r}")
        resolved[key] = value
    return resolved


def _dataset_hash(name: str, seed: int, params: dict, version: int, sources: dict | None = None) -> str:
    from ._common import SHARD_LAYOUT

    key = {"name": name, "seed": seed, "params": params, "version": version, "layout": SHARD_LAYOUT}
    if sources:  # only when a spec's resolve hook names its inputs: other datasets keep their keys
        key["sources"] = sources
    blob = json.dumps(key, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def ensure_dataset(name: str, *, seed: int = 0, cache_dir: str | os.PathLike | None = None, **params) -> DatasetPaths:
    """Return the dataset `name` generated with `seed` and `params`, generating it on first use."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(_MODULES))}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    spec = _REGISTRY[name]
    resolved = _resolve_params(spec, params)
    sources: dict[str, Any] = {}
    if spec.resolve is not None:  # machine-dependent inputs ("auto" backends, data files) become part of the key
        resolved, sources = spec.resolve(resolved)
    cache = (pathlib.Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()).absolute()
    final_dir = cache / f"{name}-{_dataset_hash(name, seed, resolved, spec.version, sources)}"
    if (final_dir / "meta.json").is_file():
        return load_dataset_paths(final_dir)

    tmp_dir = temporary_sibling(final_dir)
    log(f"contrastlab: generating dataset {name} (seed={seed}, {resolved}) into {final_dir}")
    try:
        splits, meta = spec.generate(tmp_dir, seed=seed, **resolved)
        meta = {"description": spec.description, "seed": seed, "params": resolved, "version": spec.version,
                **({"sources": sources} if sources else {}), **meta}
        return finalize_dataset(tmp_dir, final_dir, name, splits, meta)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
