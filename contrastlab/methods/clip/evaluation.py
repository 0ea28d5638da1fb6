"""Evaluation shared by the image-text methods: zero-shot classification and image<->text retrieval
on the held-out split, computed on gathered features (identical on every rank)."""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import torch

from contrastlab.platform.eval import average_prompt_embeddings, extract_features, retrieval_recall, zero_shot_topk


def collect_eval_features(eval_batches: Callable[[], Iterable[dict]], encode_image, encode_text, label_fields: list[str]):
    """Run both towers over this rank's eval shard; gather (index-deduplicated) from all ranks."""
    dims: list[int] = []

    def both(batch: dict) -> torch.Tensor:
        image, text = encode_image(batch["image"]).float(), encode_text(batch["text"]).float()
        dims[:] = [image.shape[1]]
        return torch.cat([image, text], dim=1)

    index, feats, columns = extract_features(eval_batches, both)
    if not len(index):
        return None
    d = feats.shape[1] // 2 if not dims else dims[0]
    return {"image": feats[:, :d], "text": feats[:, d:], "index": index, **{f: columns[f] for f in label_fields}}


def evaluate_image_text(eval_batches, encode_image, encode_text, tokenizer, meta: dict, device) -> dict[str, float]:
    """Zero-shot top-1 per task in `meta["zero_shot"]` (prompt-ensemble averaged; top-5 too for tasks of
    more than 5 classes, where it is not trivially 1) and retrieval R@1/5/10."""
    tasks = meta.get("zero_shot", {})
    label_fields = [t["label_field"] for t in tasks.values()]
    feats = collect_eval_features(eval_batches, encode_image, encode_text, label_fields)
    if feats is None:
        return {}
    metrics: dict[str, float] = {}
    image = torch.from_numpy(feats["image"])
    for task, spec in tasks.items():
        names, templates = spec["classnames"], spec["templates"]
        prompts = [tpl.format(name) for name in names for tpl in templates]
        ids = torch.from_numpy(tokenizer.encode(prompts)).to(device)
        with torch.no_grad():
            text = encode_text(ids).float().cpu()
        class_feats = average_prompt_embeddings(text, len(names), len(templates))
        labels = feats[spec["label_field"]]
        keep = labels >= 0
        if keep.any():
            ks = (1, 5) if len(names) > 5 else (1,)
            top = zero_shot_topk(image[keep], class_feats, labels[keep], ks=ks)
            metrics.update({f"zeroshot_{task}_top{k}": top[f"top{k}"] for k in ks})
    recall = retrieval_recall(feats["image"], feats["text"], np.arange(len(feats["image"])), ks=(1, 5, 10))
    metrics.update({k: float(v) for k, v in recall.items()})
    return metrics
