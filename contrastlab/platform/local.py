"""Run a method's training loop in this process, without Ray: one worker, the same loop code.

    from contrastlab.platform.local import run_local
    result = run_local("ifnd", ["train.epochs=2", "data.embedded_params={n_train: 2000}"])
    result.history[-1]["knn_top1"], result.method

For debugging a method, for tests that show a method learns without paying for a Ray start, and
for the step-overhead benchmark. It reads the same shards (the method's embedded dataset or
`data.train`), runs the same per-sample preprocessing, the same `run_epochs` loop (phases, hooks,
optimiser steps, evaluation) and can write the same TensorBoard events. What it does not do:
distribute, checkpoint, or stream through Ray Data; use `contrastlab train`/`sweep` for that.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Iterator

import torch

from contrastlab.platform.config import Experiment, build_experiment
from contrastlab.platform.data.reader import PreprocessBatches, epoch_rows, iter_tar_samples
from contrastlab.platform.data.tar_stream import TAR_READ_BUFFER
from contrastlab.platform.tb import TBLogger


@dataclass
class LocalRun:
    history: list[dict]
    method: torch.nn.Module
    ctx: object
    exp: Experiment
    meta: dict = field(default_factory=dict)


def iter_batches(paths: list[str], sample_fn, required, batch_size: int, *, split: str, seed: int, epoch: int = 0,
                 shuffle_buffer: int = 0, drop_last: bool = False, filesystem=None, policy: str = "raise",
                 device: str | torch.device = "cpu", mix=None, selection=None, photometric: str = "reader") -> Iterator[dict]:
    """Shards -> preprocessed torch batches in this process. With `shuffle_buffer`, the shard order
    and samples (through a buffer of that many raw samples) are shuffled per (seed, epoch). With a
    `MixPlan` and/or a method's `DataSelection`, each sample appears as many times as they draw (the
    same draw as the Ray reader)."""
    import numpy as np

    fn = PreprocessBatches(sample_fn, tuple(required), policy, None, seed, split, epoch=epoch, photometric=photometric)
    rng = random.Random(seed * 7919 + epoch)
    order = list(paths)
    if shuffle_buffer:
        rng.shuffle(order)

    def raw_samples():
        buffer: list[dict] = []
        for path in order:
            stream = filesystem.open_input_stream(path, buffer_size=TAR_READ_BUFFER) if filesystem is not None else open(path, "rb")
            with stream:
                for raw in iter_tar_samples(stream, path, policy):
                    chosen = (raw,) if mix is None and selection is None else epoch_rows(raw, path, seed, epoch, mix, selection)
                    for sample in chosen:
                        if not shuffle_buffer:
                            yield sample
                            continue
                        buffer.append(sample)
                        if len(buffer) >= shuffle_buffer:
                            yield buffer.pop(rng.randrange(len(buffer)))
        rng.shuffle(buffer)
        yield from buffer

    def flush(pending):
        names = {k for s in pending for k in s}
        cols = {k: np.array([s.get(k) for s in pending] + [None], dtype=object)[:-1] for k in names}  # missing members stay None
        out = fn(cols)
        return {k: torch.as_tensor(v).to(device) for k, v in out.items()}

    pending: list[dict] = []
    for sample in raw_samples():
        pending.append(sample)
        if len(pending) == batch_size:
            out = flush(pending)
            pending = []
            if out and (not drop_last or len(next(iter(out.values()))) == batch_size):
                yield out
    if pending and not drop_last:
        out = flush(pending)
        if out:
            yield out


def run_local(method_name: str, sets: list[str] | None = None, *, exp: Experiment | None = None, tb_dir: str | None = None,
              device: str = "cpu", quiet: bool = False) -> LocalRun:
    """Train `method_name` with `--set`-style overrides in this process; returns history, model, context."""
    from contrastlab.methods.registry import get_method
    from contrastlab.platform.runner import plan_data, steps_per_epoch
    from contrastlab.platform.train import build_context, run_epochs, seed_everything

    exp = exp or build_experiment(method_name, sets=list(sets or []))
    plan = plan_data(exp)
    cls = get_method(exp.method_name)
    torch.manual_seed(exp.run.seed)
    method = cls(exp.method).to(device)
    seed_everything(exp.run.seed)
    tb = TBLogger(tb_dir, enabled=tb_dir is not None)
    ctx = build_context(exp, method, device=torch.device(device), steps_per_epoch=steps_per_epoch(exp, plan), tb=tb, meta=plan.meta)
    preprocess = {split: cls.make_preprocess(exp.method, "train" if split == "train" else "eval", plan.meta)
                  for split in ("train", "eval")}
    sources = {"train": plan.train, "eval": plan.eval, "train_eval": plan.train if getattr(cls, "needs_train_features", False) else []}

    def batches(split: str, shuffle: bool = False, epoch: int = 0, drop_last: bool = False):
        fn, required = preprocess["train" if split == "train" else "eval"]
        return iter_batches(sources.get(split, []), fn, required, exp.train.batch_size, split=split, seed=exp.run.seed,
                            epoch=epoch, shuffle_buffer=exp.data.shuffle_buffer if shuffle else 0, drop_last=drop_last,
                            filesystem=plan.filesystem, policy=exp.data.bad_samples, device=device, photometric=exp.data.photometric,
                            mix=plan.mix if split == "train" else None,
                            selection=ctx.data_selection if split == "train" else None)

    if quiet:
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            history = run_epochs(ctx, batches, lambda *a, **k: None, has_eval=bool(plan.eval))
    else:
        history = run_epochs(ctx, batches, lambda *a, **k: None, has_eval=bool(plan.eval))
    tb.close()
    return LocalRun(history, method, ctx, exp, plan.meta)
