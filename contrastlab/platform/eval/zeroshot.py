"""Zero-shot classification with class embeddings from text prompts (CLIP protocol)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ._arrays import default_device, normalized_features, to_labels, to_tensor


def average_prompt_embeddings(text_feats: Any, n_classes: int, n_templates: int) -> Any:
    """Class embeddings from a prompt ensemble: normalise each template embedding, average per class, renormalise.

    `text_feats` is (n_classes * n_templates, D) in class-major order (row c * n_templates + t is
    template t of class c, the order of `for c in classes: for t in templates`) or already
    (n_classes, n_templates, D). Returns (n_classes, D) of the input's kind (numpy in, numpy out;
    a tensor stays on its device).
    """
    t = to_tensor(text_feats, default_device(text_feats))
    if t.ndim == 2:
        if t.shape[0] != n_classes * n_templates:
            raise ValueError(f"expected {n_classes} x {n_templates} = {n_classes * n_templates} rows, got {t.shape[0]}")
        t = t.reshape(n_classes, n_templates, -1)
    elif t.shape[:2] != (n_classes, n_templates):
        raise ValueError(f"expected shape ({n_classes}, {n_templates}, D), got {tuple(t.shape)}")
    out = F.normalize(F.normalize(t, dim=-1).mean(dim=1), dim=-1)
    return out if isinstance(text_feats, torch.Tensor) else out.cpu().numpy()


@torch.no_grad()
def zero_shot_topk(
    image_feats: Any,
    class_text_feats: Any,
    labels: Any,
    ks: Sequence[int] = (1, 5),
    chunk_size: int = 4096,
) -> dict[str, float]:
    """{"top{k}": fraction of images whose true class is among the k highest cosine similarities}.

    Rank of the true class y of an image = #{c: s_c > s_y} + #{c < y: s_c = s_y}: equal scores
    are ordered by class index, so top-1 equals the arg-max with ties going to the smallest index.
    k larger than the number of classes is clipped (the image always hits); k < 1 raises ValueError.
    Non-finite (NaN/inf) features raise ValueError.
    """
    ks = [int(k) for k in ks]
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    device = default_device(image_feats)
    img = normalized_features(image_feats, device, "image_feats")
    txt = normalized_features(class_text_feats, device, "class_text_feats")
    y = to_labels(labels, "labels")
    if len(y) != len(img):
        raise ValueError(f"{len(img)} images but {len(y)} labels")
    if len(y) and (y.min() < 0 or y.max() >= len(txt)):
        raise ValueError(f"labels must lie in [0, {len(txt)})")
    y_t = torch.from_numpy(y.astype(np.int64)).to(device)
    class_idx = torch.arange(len(txt), device=device)
    ranks = torch.empty(len(img), dtype=torch.int64, device=device)
    for start in range(0, len(img), chunk_size):
        s = img[start : start + chunk_size] @ txt.T  # (c, C)
        yc = y_t[start : start + chunk_size]
        s_true = s.gather(1, yc[:, None])
        before = (s > s_true) | ((s == s_true) & (class_idx[None, :] < yc[:, None]))
        ranks[start : start + chunk_size] = before.sum(dim=1)
    ranks_np = ranks.cpu().numpy()
    return {f"top{k}": float(np.mean(ranks_np < k)) if len(y) else float("nan") for k in ks}


def zero_shot_accuracy(image_feats: Any, class_text_feats: Any, labels: Any) -> float:
    """Top-1 zero-shot accuracy: prediction = arg-max_c cos(image, class_text_feats[c]) (ties: smallest c)."""
    return zero_shot_topk(image_feats, class_text_feats, labels, ks=(1,))["top1"]
