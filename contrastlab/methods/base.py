"""The Method contract: what the platform's training loop needs from a method.

A method is an `nn.Module` (so queues, memory banks, pseudo-labels and rehearsal ids are
persistent buffers: they land in `state_dict()` and therefore in every checkpoint) that also
satisfies the `Method` protocol below. The loop owns DDP, precision, optimiser stepping,
checkpoints, resume, logging and reporting; the method owns its maths. Composition over
inheritance: there is deliberately no big base class, only this protocol and `OptimSpec`.

Lifecycle, driven by `contrastlab.platform.train`:

    method = MethodClass(cfg)                 # cfg: MethodClass.Config instance
    specs = method.optimizers()               # loop builds torch optimisers + LR schedules
    for phase in method.phases() (optional):  # default: one phase, "main"
        method.on_phase_start(ctx)            # optional
        for epoch:
            method.on_epoch_start(ctx)        # optional (e.g. clustering via ctx.extract)
            ctx.data_selection = method.train_selection(ctx)  # optional: which training samples this
                                              # epoch reads (platform/data/selection.py), e.g. a domain + buffer
            for batch in train shard:         # batch: dict of torch tensors on ctx.device
                logs = method.train_step(batch, ctx)   # calls ctx.step(loss, "main") itself
                method.after_step(ctx)        # optional
            method.on_epoch_end(ctx)          # optional
            metrics = method.evaluate(eval_batches, ctx)   # every rank calls it
        method.on_phase_end(ctx)              # optional

Two contract details the platform relies on:
- `phases()` reads only `self.cfg`: the driver evaluates it from the config alone (with a stand-in
  object) to set `train.epochs`, the LR schedule's length and ASHA's horizon before any model exists.
- State that differs between workers on purpose (DeCLIP's per-rank NN queue) is named by prefix in
  the class attribute `per_rank_state` (e.g. `("queue.",)`): it is not broadcast from rank 0 at
  start, and every rank's copy is saved in the checkpoint and restored to that rank.
Everything else in `state_dict()` is rank 0's and identical on every rank after the start broadcast.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

NumpyBatch = dict[str, np.ndarray]
BatchFn = Callable[[NumpyBatch], NumpyBatch]


@dataclass
class OptimSpec:
    """How the loop should build one optimiser and its learning-rate schedule.

    `modules`: the modules whose parameters this optimiser steps (keys of `trainable()`).
    Parameters with `ndim <= 1` (biases, norm weights, temperatures) get no weight decay when
    `no_decay_1d` is set, as in CLIP/DeCLIP/MoCo recipes; `no_decay_names` adds more by name.
    `lr_multipliers`: rules (name prefix, multiplier for ndim >= 2 parameters, multiplier for
    ndim <= 1 parameters), first matching prefix wins, unmatched parameters 1x; names are relative to
    each module in `modules`. E.g. new layers at 10x/20x and a pretrained backbone at 1x/2x (SEAM/PPC).
    The schedule scales every group's own learning rate, so the ratios hold throughout.
    """

    modules: list[str]
    kind: str = "adamw"  # adamw | adam | sgd
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    momentum: float = 0.9
    nesterov: bool = False
    schedule: str = "cosine"  # cosine | constant | poly: (1 - progress) ** poly_power (DeepLab/SEAM)
    poly_power: float = 0.9
    warmup_fraction: float = 0.0  # of total steps, linear from warmup_start_factor*lr to lr
    warmup_start_factor: float = 0.0
    min_lr_factor: float = 0.0
    no_decay_1d: bool = True
    no_decay_names: tuple[str, ...] = ()
    clip_grad_norm: float = 0.0  # 0 = off; else overrides the run-level clip for this optimiser
    lr_multipliers: tuple[tuple[str, float, float], ...] = ()


@runtime_checkable
class Method(Protocol):
    Config: type
    name: str
    modality: str  # which shard schema it reads: image-text | image | video | product | hsi | segmentation
    train_defaults: dict[str, Any]  # overrides of TrainConfig defaults (batch size, epochs, ...)

    def preprocess(self, split: str) -> BatchFn: ...

    def trainable(self) -> dict[str, nn.Module]: ...

    def optimizers(self) -> dict[str, OptimSpec]: ...

    def train_step(self, batch: dict[str, torch.Tensor], ctx: Any) -> dict[str, float]: ...

    def evaluate(self, eval_batches: Callable[[], Iterable[dict[str, torch.Tensor]]], ctx: Any) -> dict[str, float]: ...

    def search_space(self) -> dict[str, Any]: ...


@dataclass
class EvalSpec:
    """What a method reports: the metric sweeps optimise, and its direction."""

    metric: str
    mode: str = "max"
    extra: list[str] = field(default_factory=list)


def step_chunks(rows: int, target_rows: float) -> list[int]:
    """Row counts for stepping one loader batch as several optimiser steps of about `target_rows` each
    (a method whose card batch is smaller than the run's one loader batch: CVP's stage 1, UCR without
    a buffer): the nearest whole number of near-equal chunks, none below the two rows BatchNorm needs
    (256 at 128: [128, 128]; 64 at 21.3: [22, 21, 21]; 9 at 4: [5, 4])."""
    n = max(1, min(int(round(rows / max(target_rows, 1e-9))), rows // 2))
    return [rows // n + (1 if i < rows % n else 0) for i in range(n)]
