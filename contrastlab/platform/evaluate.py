"""Evaluate a checkpoint in this process: the same preprocessing and `Method.evaluate` as training,
read straight from the shards (no cluster), on one CPU or GPU."""
from __future__ import annotations

from typing import Iterator

import torch

from contrastlab.platform.config import build_experiment
from contrastlab.platform.data.paths import resolve_shards
from contrastlab.platform.local import iter_batches


def iter_local_batches(paths: list[str], sample_fn, required, batch_size: int, split: str = "eval", seed: int = 0,
                       filesystem=None, device: str | torch.device = "cpu") -> Iterator[dict]:
    """Shards -> preprocessed torch batches without Ray (evaluation, benchmarks, debugging)."""
    return iter_batches(paths, sample_fn, required, batch_size, split=split, seed=seed, filesystem=filesystem, device=device)


def evaluate_checkpoint(method: str, checkpoint: str, eval_data: str | None = None, sets: list[str] | None = None, batch_size: int = 128) -> dict:
    import json
    import os

    from contrastlab.methods.registry import get_method
    from contrastlab.platform.runner import plan_data
    from contrastlab.platform.train import StepContext, load_checkpoint_state

    with open(os.path.join(checkpoint, "meta.json")) as fh:
        meta = json.load(fh)
    exp = build_experiment(method, sets=[*(f"method.{k}={json.dumps(v)}" for k, v in meta["method"].items()), *(sets or [])])
    if eval_data:  # resolved below on its own store: planning only needs the dataset's metadata
        exp.data.eval = "none"
    plan = plan_data(exp)
    paths, fs = resolve_shards(eval_data) if eval_data else (plan.eval, plan.filesystem)
    cls = get_method(method)
    model = cls(exp.method)
    model.load_state_dict(load_checkpoint_state(checkpoint, exp)["method"])
    model.eval()
    fn, required = cls.make_preprocess(exp.method, "eval", plan.meta)
    ctx = StepContext(exp=exp, method=model, device=torch.device("cpu"), meta=plan.meta)
    with torch.no_grad():
        return model.evaluate(lambda: iter_local_batches(paths, fn, required, batch_size, filesystem=fs), ctx)
