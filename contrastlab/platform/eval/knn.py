"""Weighted k-nearest-neighbour classification of frozen features (InstDisc protocol)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ._arrays import default_device, normalized_features, to_labels


@torch.no_grad()
def knn_predict(
    train_feats: Any,
    train_labels: Any,
    test_feats: Any,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 256,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Predicted label of every test row by a similarity-weighted vote of its k nearest train rows.

    Features are L2-normalised, sim(q, x) = <q, x> (cosine). The k most similar training rows
    (k clipped to the training-set size) each add w = exp(sim / temperature) to the score of
    their label; the label with the largest score wins (ties: the smallest label).
    Weights are computed as exp((sim - sim_max) / temperature), the same up to a per-query factor,
    so small temperatures cannot overflow float32.

    Memory: test rows are processed `chunk_size` at a time, so besides the normalised features
    the peak is one (chunk_size, N_train) float32 similarity block. Which of several equally similar
    rows at the k-th place is kept is up to `torch.topk`. Runs on `device` (default: the device
    of `train_feats` if it is a tensor, else the CPU). Non-finite (NaN/inf) features raise ValueError
    (one NaN training row would make every vote NaN and every prediction the first class).
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    device = torch.device(device) if device is not None else default_device(train_feats)
    train = normalized_features(train_feats, device, "train_feats")
    test = normalized_features(test_feats, device, "test_feats")
    labels = to_labels(train_labels, "train_labels")
    if len(labels) != len(train):
        raise ValueError(f"{len(train)} train features but {len(labels)} train labels")
    if len(train) == 0:
        raise ValueError("empty training set")
    if train.shape[1] != test.shape[1]:
        raise ValueError(f"feature dims differ: {train.shape[1]} vs {test.shape[1]}")
    classes, label_idx = np.unique(labels, return_inverse=True)
    label_idx = torch.from_numpy(label_idx.astype(np.int64)).to(device)
    k = min(k, len(train))
    pred = torch.empty(len(test), dtype=torch.int64, device=device)
    for start in range(0, len(test), chunk_size):
        sim = test[start : start + chunk_size] @ train.T  # (c, N_train)
        top_sim, top_idx = sim.topk(k, dim=1)  # sorted, top_sim[:, 0] is the row max
        weights = torch.exp((top_sim - top_sim[:, :1]) / temperature)
        votes = torch.zeros(len(top_sim), len(classes), device=device)
        votes.scatter_add_(1, label_idx[top_idx], weights)
        pred[start : start + chunk_size] = votes.argmax(dim=1)
        del sim  # free this block before the next one is allocated
    return classes[pred.cpu().numpy()]


def knn_accuracy(
    train_feats: Any,
    train_labels: Any,
    test_feats: Any,
    test_labels: Any,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 256,
    device: torch.device | str | None = None,
) -> float:
    """Top-1 accuracy of `knn_predict` (fraction in [0, 1]).

    Defaults k = 200, temperature 0.1; InstDisc and IFND's card use temperature 0.07.
    """
    y = to_labels(test_labels, "test_labels")
    pred = knn_predict(train_feats, train_labels, test_feats, k, temperature, chunk_size, device)
    if len(y) != len(pred):
        raise ValueError(f"{len(pred)} test features but {len(y)} test labels")
    return float(np.mean(pred == y)) if len(y) else float("nan")
