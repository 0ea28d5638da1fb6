"""CAM seeds and their evaluation (card, section f): multi-scale x flip inference, label masking,
per-class normalisation, and the background-threshold sweep accumulated batch by batch.

Seeds: for each scale s and flip, the CAM map (cam_rv by default) is upsampled to the image size
and summed; the foreground channels are multiplied by the GT image labels, then normalised per
image and class with the official formula (`loss.normalize_cam`: ReLU, min-max). The label map
is argmax over [t, cams of present classes] (`platform.eval.segmentation.cam_to_mask`: ties go to
the background), swept over t = start, start + step, ... < stop; the best mIoU is reported.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from contrastlab.methods.ppc.loss import normalize_cam
from contrastlab.platform.eval.segmentation import cam_to_mask, miou, segmentation_confusion


def seed_cams(net, images: torch.Tensor, labels_fg: torch.Tensor, *, scales: Sequence[float] = (1.0,), flip: bool = True,
              cam_key: str = "cam_rv", bg_index: int = 0) -> torch.Tensor:
    """(N, C_fg, H, W) normalised seed scores for normalised images (N, 3, H, W)."""
    h, w = images.shape[-2:]
    total = None
    for s in scales:
        x = images if s == 1 else F.interpolate(images, size=(max(1, round(h * s)), max(1, round(w * s))), mode="bilinear",
                                                align_corners=True)
        for flipped in ((False, True) if flip else (False,)):
            cam = net(x.flip(-1) if flipped else x)[cam_key].float()
            if flipped:
                cam = cam.flip(-1)
            cam = F.interpolate(cam, size=(h, w), mode="bilinear", align_corners=True)
            total = cam if total is None else total + cam
    fg = [i for i in range(total.shape[1]) if i != bg_index]
    return normalize_cam(total[:, fg] * labels_fg.float()[:, :, None, None])


def thresholds_from(start: float, stop: float, step: float) -> list[float]:
    """start, start + step, ... < stop (card: 0.00 ... 0.59, 60 values), rounded to 10 digits."""
    n = int(np.floor((stop - start) / step + 1e-9))
    return [round(start + i * step, 10) for i in range(n)]


class SeedSweep:
    """Per-threshold confusion matrices accumulated over batches (so no CAM is kept in memory).

    update(cams (N, C_fg, H, W) in [0, 1]-ish, labels (N, C_fg), targets (N, H, W)); result() ->
    {"best_miou", "best_threshold" (smallest among equal mIoUs), "iou" (per class at the best
    threshold), "curve": [(t, miou)], "confusion" (at the best threshold)}. num_classes counts the
    background. Equals `platform.eval.segmentation.sweep_background_threshold` on the whole data.
    """

    def __init__(self, num_classes: int, thresholds: Sequence[float], ignore_index: int = 255, count_absent_as_zero: bool = False):
        if not len(thresholds):
            raise ValueError("no thresholds")
        self.num_classes, self.thresholds, self.ignore_index = num_classes, [float(t) for t in thresholds], ignore_index
        self.count_absent_as_zero = count_absent_as_zero
        self.confusion = np.zeros((len(self.thresholds), num_classes, num_classes), dtype=np.int64)

    def update(self, cams, labels, targets) -> None:
        cams, labels, targets = np.asarray(cams), np.asarray(labels), np.asarray(targets)
        for i, t in enumerate(self.thresholds):
            self.confusion[i] += segmentation_confusion(cam_to_mask(cams, labels, t), targets, self.num_classes, self.ignore_index)

    def result(self) -> dict:
        scores = [miou(m, self.count_absent_as_zero) for m in self.confusion]
        curve = [(t, s["miou"]) for t, s in zip(self.thresholds, scores)]
        best = max(range(len(curve)), key=lambda i: (np.nan_to_num(curve[i][1], nan=-1.0), -curve[i][0]))
        return {"best_miou": curve[best][1], "best_threshold": curve[best][0], "iou": scores[best]["iou"], "curve": curve,
                "confusion": self.confusion[best]}


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map (n, 3) uint8; index 255 (ignore) is drawn white."""
    pal = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    if n > 255:
        pal[255] = 255
    return pal


def overlay_strip(image: np.ndarray, cams: np.ndarray, labels: np.ndarray, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """One row for TensorBoard: [image | image + max present-class CAM heat (red) | seed mask | GT], uint8 (H, 4W, 3)."""
    present = labels.astype(bool)
    heat = np.clip(cams[present].max(axis=0), 0, 1) if present.any() else np.zeros(image.shape[:2], np.float32)
    red = np.zeros_like(image, dtype=np.float32)
    red[..., 0] = 255
    blend = (image.astype(np.float32) * (1 - 0.6 * heat[..., None]) + red * 0.6 * heat[..., None]).astype(np.uint8)
    pal = voc_palette()
    return np.concatenate([image, blend, pal[pred.astype(np.int64)], pal[target.astype(np.int64)]], axis=1)
