"""Linear probe: logistic regression on standardised frozen features, C chosen on a validation split."""
from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np

from ._arrays import check_finite, to_labels, to_numpy

# Inverse regularisation strengths tried, one per decade over [1e-6, 1e6]: the range CLIP and
# DeCLIP search (they use 96 log-spaced values there; pass np.logspace(-6, 6, 96) for that).
DEFAULT_C_GRID: tuple[float, ...] = tuple(float(c) for c in np.logspace(-6, 6, 13))


def _fit_score(x_fit, y_fit, x_eval, y_eval, c: float, max_iter: int, seed: int) -> tuple[float, int]:
    """Standardise with statistics of x_fit only, fit, return (accuracy on x_eval, 1 if not converged)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_fit)
    model = LogisticRegression(C=c, max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(scaler.transform(x_fit), y_fit)
    unconverged = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    for w in caught:  # pass anything else on
        if not issubclass(w.category, ConvergenceWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    acc = float(np.mean(model.predict(scaler.transform(x_eval)) == y_eval)) if len(y_eval) else float("nan")
    return acc, unconverged


def linear_probe(
    train_feats: Any,
    train_labels: Any,
    test_feats: Any,
    test_labels: Any,
    *,
    grid: Sequence[float] = DEFAULT_C_GRID,
    val_fraction: float = 0.2,
    seed: int = 0,
    max_iter: int = 1000,
    threads: int | None = 1,
) -> dict[str, Any]:
    """Linear-probe accuracy of frozen features.

    1. Split the training features into fit/validation parts, stratified by label
       (`val_fraction` of them, seeded; unstratified when stratification is impossible: a class
       with a single sample, or fewer validation rows than classes).
    2. For each C in `grid` (sklearn's L-BFGS multinomial `LogisticRegression`, C = 1/lambda):
       standardise with the fit part's mean/std, fit, score on the validation part.
    3. best_C = the C with the highest validation accuracy (ties: the smallest C, i.e. the
       strongest regularisation); refit scaler + classifier on all training features and
       report the test accuracy. Test features never influence the scaler or the choice of C.

    `threads` caps the BLAS/OpenMP threads of the fits (default 1: inside a Train worker that shares
    the machine an uncapped pool oversubscribes the cores; one probe on 1,000 samples took 7 minutes
    that way on a loaded 2-core box). None leaves the libraries' defaults.

    Returns {"accuracy", "best_C", "val_accuracy", "val_curve": [(C, val_acc), ...],
    "unconverged_fits": number of fits that hit max_iter}. Non-finite (NaN/inf) features raise ValueError.
    """
    if threads is not None:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=threads):
            return linear_probe(train_feats, train_labels, test_feats, test_labels, grid=grid, val_fraction=val_fraction,
                                seed=seed, max_iter=max_iter, threads=None)
    x_train = to_numpy(train_feats).astype(np.float64, copy=False)
    x_test = to_numpy(test_feats).astype(np.float64, copy=False)
    y_train, y_test = to_labels(train_labels, "train_labels"), to_labels(test_labels, "test_labels")
    if x_train.ndim != 2 or x_test.ndim != 2:
        raise ValueError("features must be 2-D (N, D)")
    check_finite(x_train, "train_feats")
    check_finite(x_test, "test_feats")
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise ValueError("features and labels differ in length")
    if not 0 < val_fraction < 1:
        raise ValueError("val_fraction must be in (0, 1)")
    grid = sorted(float(c) for c in grid)
    if not grid:
        raise ValueError("empty C grid")

    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y_train))
    try:
        idx_fit, idx_val = train_test_split(idx, test_size=val_fraction, random_state=seed, stratify=y_train)
    except ValueError:  # a class with one sample, or fewer validation rows than classes
        idx_fit, idx_val = train_test_split(idx, test_size=val_fraction, random_state=seed)
    curve, unconverged = [], 0
    for c in grid:
        acc, bad = _fit_score(x_train[idx_fit], y_train[idx_fit], x_train[idx_val], y_train[idx_val], c, max_iter, seed)
        curve.append((c, acc))
        unconverged += bad
    best_c, best_val = max(curve, key=lambda ca: (ca[1], -ca[0]))  # highest acc, then smallest C
    acc, bad = _fit_score(x_train, y_train, x_test, y_test, best_c, max_iter, seed)
    return {
        "accuracy": acc,
        "best_C": best_c,
        "val_accuracy": best_val,
        "val_curve": curve,
        "unconverged_fits": unconverged + bad,
    }
