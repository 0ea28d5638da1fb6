"""Evaluation shared by the image-text methods: zero-shot classification and image<->text retrieval
on the held-out split, computed on gathered features (identical on every rank)."""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import torch

from contrastlab.platform import distributed as dist_utils
from contrastlab.platform.eval import average_prompt_embeddings, retrieval_recall, zero_shot_topk


def collect_eval_features(eval_batches: Callable[[], Iterable[dict]], encode_image, encode_text, label_fields: list[str]):
    """Run both towers over this rank's eval shard; gather (index-deduplicated) from all ranks."""
    rows: dict[str, list[np.ndarray]] = {"image": [], "text": [], "index": [], **{f: [] for f in label_fields}}
    for batch in eval_batches():
        rows["image"].append(encode_image(batch["image"]).float().cpu().numpy())
        rows["text"].append(encode_text(batch["text"]).float().cpu().numpy())
        rows["index"].append(batch["index"].cpu().numpy())
        for f in label_fields:
            rows[f].append(batch[f].cpu().numpy())
    local = {k: (np.concatenate(v) if v else np.zeros((0,))) for k, v in rows.items()}
    parts = [p for p in dist_utils.gather_objects(local) if len(p["index"])]
    if not parts:
        return None
    merged = {k: np.concatenate([p[k] for p in parts]) for k in local}
    _, first = np.unique(merged["index"], return_index=True)
    return {k: v[first] for k, v in merged.items()}


def evaluate_image_text(eval_batches, encode_image, encode_text, tokenizer, meta: dict, device) -> dict[str, float]:
    """Zero-shot top-1 per task in `meta["zero_shot"]` (prompt-ensemble averaged) and retrieval R@1/5/10."""
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
            top = zero_shot_topk(image[keep], class_feats, labels[keep], ks=(1,))
            metrics[f"zeroshot_{task}_top1"] = top["top1"]
    recall = retrieval_recall(feats["image"], feats["text"], np.arange(len(feats["image"])), ks=(1, 5, 10))
    metrics.update({k: float(v) for k, v in recall.items()})
    return metrics
