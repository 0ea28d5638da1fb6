"""Semantic segmentation scores and CAM seeds for weakly supervised segmentation (WSSS)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ._arrays import to_numpy

DEFAULT_BG_THRESHOLDS = np.arange(0.05, 0.96, 0.05)


def segmentation_confusion(pred: Any, target: Any, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """(C, C) int64 pixel counts, M[t, p] = #pixels with target class t predicted as p.

    Rows are the target, columns the prediction. Pixels whose target is `ignore_index` are
    skipped; any other target or prediction outside [0, num_classes) raises ValueError.
    `pred` and `target` may have any (equal) shape, e.g. (H, W) or (N, H, W).
    """
    p, t = to_numpy(pred).ravel(), to_numpy(target).ravel()
    if p.shape != t.shape:
        raise ValueError(f"pred and target differ in size: {to_numpy(pred).shape} vs {to_numpy(target).shape}")
    keep = t != ignore_index
    p, t = p[keep].astype(np.int64), t[keep].astype(np.int64)
    if t.size and (t.min() < 0 or t.max() >= num_classes):
        raise ValueError(f"target classes must lie in [0, {num_classes}) or equal ignore_index={ignore_index}")
    if p.size and (p.min() < 0 or p.max() >= num_classes):
        raise ValueError(f"predicted classes must lie in [0, {num_classes}) where the target is not ignored")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes).astype(np.int64)


def miou(confusion: Any, count_absent_as_zero: bool = False) -> dict[str, Any]:
    """IoU_c = TP_c / (T_c + P_c - TP_c) from a confusion matrix (rows target, columns prediction).

    T_c = row sum (target pixels of c), P_c = column sum (pixels predicted c), TP_c = M[c, c].
    A class absent from both target and prediction (T_c + P_c = 0) has IoU nan and is left out
    of the mean; a class predicted but absent from the target has IoU 0 and counts.
    `count_absent_as_zero=True` instead averages over all C classes with absent ones as 0: the
    convention of PSA's evaluation code (and WSSS code derived from it), which computes
    TP/(T+P-TP+1e-10) for every class. The official VOC devkit (VOCevalseg.m) has no epsilon: an
    absent class gives 0/0 = NaN there.
    Returns {"miou", "iou" (np.ndarray, C), "pixel_accuracy"}.
    """
    m = to_numpy(confusion).astype(np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"confusion must be square, got shape {m.shape}")
    tp = np.diag(m)
    union = m.sum(axis=1) + m.sum(axis=0) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    if count_absent_as_zero:
        mean = float(np.nan_to_num(iou, nan=0.0).mean())
    else:
        mean = float(np.nanmean(iou)) if np.any(union > 0) else float("nan")
    total = m.sum()
    return {"miou": mean, "iou": iou, "pixel_accuracy": float(tp.sum() / total) if total else float("nan")}


def _foreground_best(cams: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best present-class score and its mask id (class c -> c + 1), over axis -3 of (..., C_fg, H, W)."""
    present = labels.astype(bool)[..., :, None, None]
    bad = present & ~np.isfinite(cams)
    if bad.any():  # NaN never beats the threshold: a diverged model would yield all-background seeds
        raise ValueError(f"cams have {int(bad.sum())} non-finite values (NaN/inf) in classes present in the image: "
                         f"the model diverged or overflowed in evaluation")
    scores = np.where(present, cams, -np.inf)  # absent classes can never win
    return scores.max(axis=-3), scores.argmax(axis=-3) + 1


def _check_cam_shapes(cams: np.ndarray, labels: np.ndarray) -> None:
    if cams.ndim not in (3, 4) or labels.shape != cams.shape[:-2]:
        raise ValueError(f"cams must be (N, C_fg, H, W) or (C_fg, H, W) with labels (N, C_fg) or (C_fg,); "
                         f"got cams {cams.shape}, labels {labels.shape}")


def cam_to_mask(cams: Any, labels: Any, bg_threshold: float) -> np.ndarray:
    """Label map from class activation maps, as WSSS papers make CAM seeds.

    cams: (N, C_fg, H, W) or (C_fg, H, W), scores in [0, 1]; labels: multi-hot image-level labels
    (N, C_fg) or (C_fg,). Scores of classes not in the image are dropped (never chosen), the
    background gets the constant score `bg_threshold`, and mask = arg-max over
    [bg, fg_1, ..., fg_C] with 0 = background and foreground class c -> c + 1. Ties go to the
    first entry (numpy arg-max, as in SEAM/PSA): a pixel is background iff every present-class
    score is <= bg_threshold. Returns int64 (N, H, W) or (H, W). NaN/inf scores of present classes
    raise ValueError (those of absent classes are ignored).
    """
    c, lab = to_numpy(cams), to_numpy(labels)
    _check_cam_shapes(c, lab)
    best, cls = _foreground_best(c, lab)
    return np.where(best > bg_threshold, cls, 0).astype(np.int64)


def sweep_background_threshold(
    cams: Any,
    labels: Any,
    targets: Any,
    num_classes: int,
    thresholds: Sequence[float] = DEFAULT_BG_THRESHOLDS,
    ignore_index: int = 255,
    count_absent_as_zero: bool = False,
) -> dict[str, Any]:
    """mIoU of `cam_to_mask` seeds for each background threshold, accumulated over the dataset.

    cams/labels/targets: arrays (N, C_fg, H, W) / (N, C_fg) / (N, H, W), or equal-length
    sequences of per-image (C_fg, H, W) / (C_fg,) / (H, W) for images of different sizes.
    num_classes counts the background (C_fg + 1). Returns {"best_miou", "best_threshold"
    (the smallest among equals), "curve": [(threshold, miou), ...]}. (PPC's card sweeps
    np.arange(0, 0.6, 0.01); pass it as `thresholds`.)
    """
    thresholds = [float(t) for t in thresholds]
    if not thresholds:
        raise ValueError("no thresholds")
    if isinstance(cams, (list, tuple)):
        items = list(zip(cams, labels, targets, strict=True))
    else:
        items = [(cams, labels, targets)]
    conf = np.zeros((len(thresholds), num_classes, num_classes), dtype=np.int64)
    for c, lab, tgt in items:
        c, lab, tgt = to_numpy(c), to_numpy(lab), to_numpy(tgt)
        _check_cam_shapes(c, lab)
        best, cls = _foreground_best(c, lab)  # computed once, thresholded many times
        if best.shape != tgt.shape:
            raise ValueError(f"cams give masks of shape {best.shape} but targets are {tgt.shape}")
        keep = tgt != ignore_index
        best, cls = best[keep], cls[keep]
        for i, t in enumerate(thresholds):
            conf[i] += segmentation_confusion(np.where(best > t, cls, 0), tgt[keep], num_classes, ignore_index)
    curve = [(round(t, 10), miou(m, count_absent_as_zero)["miou"]) for t, m in zip(thresholds, conf)]
    best_t, best_m = max(curve, key=lambda tm: (np.nan_to_num(tm[1], nan=-1.0), -tm[0]))
    return {"best_miou": best_m, "best_threshold": best_t, "curve": curve}
