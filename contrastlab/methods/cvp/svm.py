"""Stage 3: SVM on frozen features, OA / AA / kappa (card cvp.md §f, [R] ContrastNet protocol).

Features are z-scored with training-pixel statistics; the SVM is grid-searched (3-fold, stratified)
on the training labels only, class_weight balanced, then refit on all training pixels.
"""
from __future__ import annotations

import warnings

import numpy as np

from contrastlab.platform.eval.hsi import hsi_scores

C_GRID = [0.1, 1, 10, 100, 1000]
RBF_GAMMAS = [1e-3, 1e-2, 1e-1, 1]
POLY_GAMMAS = [1e-1, 1e-2, 1e-3]
SVM_MODES = ("grid", "linear", "rbf", "linear-fixed")


def param_grid(mode: str) -> list[dict]:
    """grid: RBF gamma x C, linear C, poly degree 3 gamma x C (card §f); linear: the 'simple SVM'; rbf: RBF only."""
    rbf = {"kernel": ["rbf"], "gamma": RBF_GAMMAS, "C": C_GRID}
    lin = {"kernel": ["linear"], "C": C_GRID}
    poly = {"kernel": ["poly"], "degree": [3], "gamma": POLY_GAMMAS, "C": C_GRID}
    grids = {"grid": [rbf, lin, poly], "linear": [lin], "rbf": [rbf]}
    if mode not in grids:
        raise ValueError(f"svm mode must be one of {SVM_MODES}, got {mode!r}")
    return grids[mode]


def fit_svm(x_train: np.ndarray, y_train: np.ndarray, mode: str = "grid", c_fixed: float = 10.0, folds: int = 3):
    """Fitted classifier (a pipeline-free SVC on z-scored inputs) and the chosen params.
    linear-fixed: linear SVM with C = c_fixed, no search (the card's calibration setting)."""
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.svm import SVC

    if mode == "linear-fixed":
        return SVC(kernel="linear", C=c_fixed, class_weight="balanced").fit(x_train, y_train), {"kernel": "linear", "C": c_fixed}
    counts = np.bincount(y_train)
    n_folds = min(folds, int(counts[counts > 0].min()))
    if n_folds < 2:  # a class with one training pixel: no stratified CV possible, fall back to the default C
        return SVC(kernel="linear", C=c_fixed, class_weight="balanced").fit(x_train, y_train), {"kernel": "linear", "C": c_fixed}
    search = GridSearchCV(SVC(class_weight="balanced"), param_grid(mode), cv=StratifiedKFold(n_folds, shuffle=True, random_state=0),
                          n_jobs=1, refit=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search.fit(x_train, y_train)
    return search.best_estimator_, dict(search.best_params_)


def zscore_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = x.mean(axis=0), x.std(axis=0)
    return mean, np.where(std > 1e-12, std, 1.0)


def svm_scores(features: np.ndarray, labels: np.ndarray, train_pos: np.ndarray, test_pos: np.ndarray, mode: str = "grid",
               c_fixed: float = 10.0) -> tuple[dict, object, tuple[np.ndarray, np.ndarray]]:
    """Fit on features[train_pos] (z-scored with their own stats), score on features[test_pos].
    Returns (hsi_scores dict + 'svm_params', classifier, (mean, std))."""
    features = np.asarray(features, dtype=np.float64)
    mean, std = zscore_fit(features[train_pos])
    clf, params = fit_svm((features[train_pos] - mean) / std, labels[train_pos], mode, c_fixed)
    pred = clf.predict((features[test_pos] - mean) / std)
    scores = hsi_scores(labels[test_pos], pred)
    scores["svm_params"] = params
    return scores, clf, (mean, std)


def class_map_image(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, height: int, width: int, scale: int = 4) -> np.ndarray:
    """uint8 (H*scale, W*scale, 3) colour map of per-pixel classes (-1 / missing = black)."""
    rng = np.random.default_rng(12345)
    palette = np.concatenate([rng.integers(40, 256, (max(int(values.max(initial=0)) + 1, 1), 3)), [[0, 0, 0]]]).astype(np.uint8)
    grid = np.full((height, width), -1, dtype=np.int64)
    grid[rows, cols] = values
    img = palette[grid]  # -1 -> last entry (black)
    return np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)
