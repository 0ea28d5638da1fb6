"""The training loop: one Ray Train `TorchTrainer` loop that drives any `Method`.

The loop owns data parallelism, precision, optimiser stepping, schedules, checkpoints, resume,
TensorBoard and reporting; the method owns its maths (see contrastlab/methods/base.py).

Data parallelism: gradients of the *trainable* modules only are averaged across workers with one
coalesced all-reduce per optimiser step, after a tiny one that makes the ranks agree on which
parameters have a gradient (DDP's semantics with unused parameters), instead of wrapping modules in
`DistributedDataParallel`. Why: methods call their modules several times per step (two views with
separate BN statistics), step two optimisers over shared forward passes (C3-GAN) and freeze one
network during the other's step; DDP's reducer breaks on each of those (unused parameters,
double-marked gradients) and renames state-dict keys. Momentum/EMA copies are never synced, as in
open_clip. Parameters are broadcast from rank 0 once at start so every replica starts equal.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn

from contrastlab.methods.base import OptimSpec
from contrastlab.platform import distributed as dist_utils
from contrastlab.platform.config import Experiment
from contrastlab.platform.data.device_views import finishing_views
from contrastlab.platform.data.shuffle import iter_shuffled_torch_batches
from contrastlab.platform.tb import TBLogger

STATE_FILE = "state.pt"
META_FILE = "meta.json"


class NonFiniteLossError(RuntimeError):
    """Raised when a loss is NaN/inf: stops the trial with the reason in its result."""


class CheckpointMismatchError(ValueError):
    pass


# --------------------------------------------------------------------------- optimisers
def _lr_multiplier(name: str, ndim: int, spec: OptimSpec) -> float:
    for prefix, weight_mult, bias_mult in spec.lr_multipliers:
        if name.startswith(prefix):
            return float(bias_mult if ndim <= 1 else weight_mult)
    return 1.0


def _param_groups(modules: list[nn.Module], spec: OptimSpec) -> list[dict]:
    """One group per (weight decay on/off, lr multiplier), in first-seen order."""
    groups: dict[tuple[bool, float], dict] = {}
    seen: set[int] = set()
    for module in modules:
        for name, p in module.named_parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            skip = (spec.no_decay_1d and p.ndim <= 1) or any(n in name for n in spec.no_decay_names)
            key = (not skip, _lr_multiplier(name, p.ndim, spec))
            if key not in groups:
                groups[key] = {"params": [], "weight_decay": spec.weight_decay if key[0] else 0.0, "lr_mult": key[1]}
            groups[key]["params"].append(p)
    if not groups:
        return [{"params": [], "weight_decay": spec.weight_decay, "lr_mult": 1.0}]
    return sorted(groups.values(), key=lambda g: (g["weight_decay"] == 0.0, g["lr_mult"]))  # decayed, 1x first


def build_optimizer(modules: list[nn.Module], spec: OptimSpec, lr_scale: float = 1.0) -> torch.optim.Optimizer:
    groups = _param_groups(modules, spec)
    lr = spec.lr * lr_scale
    for g in groups:
        g["lr"] = lr * g["lr_mult"]
    if spec.kind == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=spec.betas, eps=spec.eps)
    if spec.kind == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=spec.betas, eps=spec.eps)
    if spec.kind == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=spec.momentum, nesterov=spec.nesterov)
    raise ValueError(f"unknown optimiser kind {spec.kind!r}: use adamw, adam or sgd")


def lr_factor(step: int, total: int, spec: OptimSpec) -> float:
    """Linear warm-up from `warmup_start_factor` to 1, then cosine to `min_lr_factor`, constant, or
    poly `(1 - progress) ** poly_power` (floored at `min_lr_factor`)."""
    warm = int(round(spec.warmup_fraction * total))
    if step < warm:
        return spec.warmup_start_factor + (1 - spec.warmup_start_factor) * step / max(1, warm)
    if spec.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warm) / max(1, total - warm))
    if spec.schedule == "poly":
        return max(spec.min_lr_factor, (1 - progress) ** spec.poly_power)
    if spec.schedule != "cosine":
        raise ValueError(f"unknown LR schedule {spec.schedule!r}: use cosine, constant or poly")
    return spec.min_lr_factor + (1 - spec.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * progress))


# --------------------------------------------------------------------------- the step context
@dataclass
class StepContext:
    """What a method sees of the loop. Built by the loop, never by a method."""

    exp: Experiment
    method: nn.Module
    device: torch.device
    rank: int = 0
    world_size: int = 1
    step: int = 0  # training batches taken (= optimiser steps when train.accumulate is 1, except methods that step per chunk: CVP's stage 1, UCR without a buffer)
    epoch: int = 0
    phase: str = "main"
    total_steps: int = 1
    steps_per_epoch: int = 1
    tb: TBLogger | None = None
    optimizers: dict[str, torch.optim.Optimizer] = field(default_factory=dict)
    specs: dict[str, OptimSpec] = field(default_factory=dict)
    scaler: Any = None
    base_lrs: dict[str, list[float]] = field(default_factory=dict)
    datasets: dict[str, Callable[[], Iterable]] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)  # dataset metadata: class names, zero-shot prompts, ...
    data_selection: Any = None  # this epoch's DataSelection from method.train_selection (data/selection.py)
    has_eval: bool = True  # the run has an evaluation split (False: data.eval=none, or --data without --eval-data)
    _micro: dict[str, int] = field(default_factory=dict)
    _opt_steps: dict[str, int] = field(default_factory=dict)
    _scaled_steps: set = field(default_factory=set)  # optimisers stepped through the fp16 scaler since its update
    fp16_skipped_steps: dict[str, int] = field(default_factory=dict)  # per optimiser: steps the fp16 scaler skipped (overflow)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        precision = self.exp.train.precision
        if precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def gather(self, x: torch.Tensor, grad: bool = True) -> torch.Tensor:
        return dist_utils.gather(x, grad=grad)

    @contextlib.contextmanager
    def frozen(self, *names: str):
        """No gradient for these trainable modules inside the block (e.g. D during the G step)."""
        modules = self.method.trainable()
        saved = []
        for name in names:
            for p in modules[name].parameters():
                saved.append((p, p.requires_grad))
                p.requires_grad_(False)
        try:
            yield
        finally:
            for p, flag in saved:
                p.requires_grad_(flag)

    def step_optimizer(self, loss: torch.Tensor, name: str = "main") -> None:
        """Backward, and at each accumulation boundary: sync grads, unscale, clip, step, schedule, zero."""
        self.check_finite({f"loss/{name}": loss})
        accumulate = self.exp.train.accumulate
        scaled = loss / accumulate
        if self.scaler is not None:
            if name in self._scaled_steps:  # this optimiser steps again in one iteration (n critic steps):
                self.end_iteration()  # close the last step's update before scaling this loss
            scaled = self.scaler.scale(scaled)
        scaled.backward()
        self._micro[name] = self._micro.get(name, 0) + 1
        if self._micro[name] % accumulate:
            return
        opt, spec = self.optimizers[name], self.specs[name]
        params = [p for g in opt.param_groups for p in g["params"]]
        sync_gradients(params, self.world_size)
        overflowed = False
        if self.scaler is not None:
            self.scaler.unscale_(opt)
            overflowed = self._grads_overflowed(params)
        clip = spec.clip_grad_norm or self.exp.train.grad_clip
        if clip > 0:
            torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], clip)
        hook = getattr(self.method, "before_optimizer_step", None)
        if hook:
            hook(name, self)
        if self.scaler is not None:
            # one scaler.update() per training iteration (end_iteration), after every optimiser of the
            # iteration stepped: updating between C3-GAN's D and G steps would unscale G's accumulated
            # micro-batches by a scale they were not scaled with
            self.scaler.step(opt)
            self._scaled_steps.add(name)
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)
        if overflowed:
            # GradScaler.step skipped this step (fp16 overflow; update() lowers the scale): the weights
            # did not move, so neither do the LR schedule nor the method's after-step work (momentum
            # encoders, queues), as if the batch had not been stepped; counted for TensorBoard
            skipped = self.fp16_skipped_steps[name] = self.fp16_skipped_steps.get(name, 0) + 1
            self.log({f"fp16_skipped_steps/{name}": skipped})
            return
        hook = getattr(self.method, "after_optimizer_step", None)
        if hook:
            hook(name, self)
        n = self._opt_steps[name] = self._opt_steps.get(name, 0) + 1
        factor = lr_factor(n, self.total_steps, spec)
        for group, base in zip(opt.param_groups, self.base_lrs[name]):
            group["lr"] = base * factor

    @staticmethod
    def _grads_overflowed(params: list[torch.Tensor]) -> bool:
        """Whether GradScaler.step will skip: an inf/NaN in the unscaled gradients (its own test, done
        with public ops; one device sync, as the scaler's step makes anyway)."""
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return False
        return not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())

    def end_iteration(self) -> None:
        """The loop calls this after each train_step: update the fp16 loss scale once if any optimiser
        stepped (PyTorch's rule for several optimisers: step each, then one update())."""
        if self.scaler is not None and self._scaled_steps:
            self.scaler.update()
            self._scaled_steps.clear()

    def lr(self, name: str = "main") -> float:
        group = self.optimizers[name].param_groups[0]  # the base lr (groups may carry lr multipliers)
        return group["lr"] / group.get("lr_mult", 1.0)

    def check_finite(self, values: dict) -> None:
        if not self.exp.train.stop_on_nonfinite:
            return
        for k, v in values.items():
            value = v.detach().float() if torch.is_tensor(v) else torch.tensor(float(v))
            if not torch.isfinite(value).all():
                raise NonFiniteLossError(
                    f"non-finite {k} = {value.item() if value.numel() == 1 else value} at epoch {self.epoch}, "
                    f"step {self.step} (rank {self.rank}); lower the learning rate, use fp32/bf16, or enable "
                    f"train.grad_clip. Set train.stop_on_nonfinite=false to continue anyway."
                )

    def extract(self, split: str, fn: Callable[[dict], torch.Tensor], max_batches: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
        """`extract_features` over this run's `split` ("eval" or "train_eval"): (indices ascending,
        features, other 1-D columns), gathered from every worker, identical on every rank."""
        from contrastlab.platform.eval.features import extract_features

        return extract_features(self.datasets[split], fn, max_batches=max_batches)

    def log(self, values: dict, prefix: str = "train/") -> None:
        if self.tb:
            self.tb.scalars(values, self.step, prefix)

    def log_images(self, tag: str, images) -> None:
        if self.tb:
            self.tb.images(tag, images, self.step)


# DESIGN §4 sketched `ctx.step(loss, name)`; here `ctx.step` is the step counter methods read, and
# stepping an optimiser is `ctx.optimize(loss, name)`.
StepContext.optimize = StepContext.step_optimizer


def sync_gradients(params: list[torch.Tensor], world_size: int) -> None:
    """Average gradients over workers with DDP's semantics (`find_unused_parameters=True`).

    Ranks may differ in which parameters got a gradient this step (mixed batch types, a branch
    taken on one rank only). So the ranks first agree on it with one small all-reduce of a presence
    vector (how many ranks hold each parameter's grad); a parameter with a grad on some rank but not
    on this one gets a zero grad here, so every rank reduces the same parameters in the same order;
    a parameter no rank has a grad for stays None (optimisers skip it, as in a single-worker run).
    Then one coalesced all-reduce per gradient dtype (one in practice) averages them. A single
    worker (world_size <= 1) returns at once, with no collective.
    """
    if world_size <= 1 or not params:
        return
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    present = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=params[0].device)
    torch.distributed.all_reduce(present)  # every rank passes the optimiser's params in the same order
    buckets: dict[tuple, list[torch.Tensor]] = {}
    for p, used in zip(params, present.tolist()):
        if not used:
            continue
        if p.grad is None:  # used on another rank only: contribute zeros, as DDP does
            p.grad = torch.zeros_like(p)
        buckets.setdefault((p.grad.device, p.grad.dtype), []).append(p.grad)
    for grads in buckets.values():  # same keys, order and sizes on every rank
        flat = _flatten_dense_tensors(grads)
        torch.distributed.all_reduce(flat)
        flat /= world_size
        for g, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
            g.copy_(synced)


def per_rank_keys(method: nn.Module) -> list[str]:
    """state_dict keys that legitimately differ between workers (e.g. DeCLIP's per-rank NN queue):
    those under any prefix the method lists in `per_rank_state`. They are not broadcast from rank 0
    and each rank's own values are saved in (and restored from) the checkpoint."""
    prefixes = tuple(getattr(method, "per_rank_state", ()))
    if not prefixes:
        return []
    return [k for k in method.state_dict() if k.startswith(prefixes)]


def broadcast_parameters(method: nn.Module) -> None:
    """Make every rank start from rank 0's parameters and buffers (except per-rank state)."""
    if not dist_utils.is_distributed():
        return
    skip = set(per_rank_keys(method))
    for name, t in list(method.named_parameters()) + list(method.named_buffers()):
        if name not in skip:
            torch.distributed.broadcast(t.data, src=0)


def broadcast_norm_statistics(method: nn.Module) -> None:
    """Rank 0's BatchNorm running statistics to every rank (per-rank state excepted): DDP's
    `broadcast_buffers`, done once per epoch before evaluation and the epoch's checkpoint, so every
    rank evaluates and clusters with the model the checkpoint holds. Only normalisation layers: the
    methods' own buffers (queues, banks, pseudo-labels) are kept identical by the methods themselves,
    and a buffer whose shape differed between ranks would make a broadcast hang."""
    if not dist_utils.is_distributed():
        return
    skip = set(per_rank_keys(method))
    for prefix, module in method.named_modules():
        if not isinstance(module, nn.modules.batchnorm._NormBase):
            continue
        for name, t in module.named_buffers(recurse=False):
            if t is not None and f"{prefix}.{name}".lstrip(".") not in skip:
                torch.distributed.broadcast(t.data, src=0)


def local_per_rank_state(method: nn.Module) -> dict:
    state = method.state_dict()
    return {k: state[k].detach().cpu().clone() for k in per_rank_keys(method)}


def restore_per_rank_state(method: nn.Module, per_rank: list[dict], rank: int) -> None:
    """Load this rank's saved per-rank buffers; a run resumed on more workers than it was saved with
    gives rank r the state of old rank r % old_world (documented in the README)."""
    if not per_rank:
        return
    mine = per_rank[rank % len(per_rank)]
    if mine:
        method.load_state_dict({**method.state_dict(), **mine})


# --------------------------------------------------------------------------- RNG + checkpoints
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]), float(np_state[4])),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def config_fingerprint(exp: Experiment) -> dict:
    return {"method_name": exp.method_name, "method": exp.to_dict()["method"]}


def save_checkpoint(directory: str, ctx: StepContext, epoch_done: int, step_in_epoch: int, rng_states: list,
                    per_rank: list[dict] | None = None) -> None:
    """Write state.pt + meta.json into `directory` (a fresh temp dir that Ray then persists)."""
    state = {
        "per_rank": per_rank or [],  # each rank's per-rank buffers (method.per_rank_state), in rank order
        "method": ctx.method.state_dict(),
        "optimizers": {k: o.state_dict() for k, o in ctx.optimizers.items()},
        "scaler": ctx.scaler.state_dict() if ctx.scaler is not None else {},
        "opt_steps": dict(ctx._opt_steps),
        "fp16_skipped_steps": dict(ctx.fp16_skipped_steps),
        "micro": dict(ctx._micro),
        "step": ctx.step,
        "epoch_done": epoch_done,  # epochs fully finished
        "step_in_epoch": step_in_epoch,  # >0: a mid-epoch checkpoint
        # training rows taken this epoch over all workers: a resume with another batch size or worker
        # count skips this many rows' worth of its own batches, not the same number of batches
        "rows_in_epoch": step_in_epoch * ctx.exp.train.batch_size * max(1, ctx.world_size),
        "phase": ctx.phase,
        "rng": rng_states,
    }
    tmp = os.path.join(directory, STATE_FILE + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, os.path.join(directory, STATE_FILE))
    # meta.json last, via rename, with state.pt's size: a checkpoint is complete only if meta.json
    # exists and the size matches, so a copy torn by a kill is refused, never half-loaded.
    meta = {**config_fingerprint(ctx.exp), "epoch_done": epoch_done, "step": ctx.step, "step_in_epoch": step_in_epoch,
            "state_bytes": os.path.getsize(os.path.join(directory, STATE_FILE))}
    with open(os.path.join(directory, META_FILE + ".tmp"), "w") as fh:
        json.dump(meta, fh)
    os.replace(os.path.join(directory, META_FILE + ".tmp"), os.path.join(directory, META_FILE))


def load_checkpoint_state(directory: str, exp: Experiment) -> dict:
    """Load with `weights_only=True` (no arbitrary unpickling); refuse other methods/configs."""
    meta_path, state_path = os.path.join(directory, META_FILE), os.path.join(directory, STATE_FILE)
    if not os.path.exists(state_path) or not os.path.exists(meta_path):
        raise CheckpointMismatchError(f"{directory} holds no {STATE_FILE} + {META_FILE}: not a contrastlab checkpoint (or a torn one)")
    try:
        with open(meta_path) as fh:
            meta = json.load(fh)
    except ValueError as exc:
        raise CheckpointMismatchError(f"{directory}: unreadable {META_FILE} ({exc}): a torn checkpoint") from None
    if "state_bytes" in meta and os.path.getsize(state_path) != meta["state_bytes"]:
        raise CheckpointMismatchError(f"{directory}: {STATE_FILE} has {os.path.getsize(state_path)} bytes, "
                                      f"{META_FILE} says {meta['state_bytes']}: a torn checkpoint")
    if meta["method_name"] != exp.method_name:
        raise CheckpointMismatchError(
            f"checkpoint {directory} is from method {meta['method_name']!r}, this run is {exp.method_name!r}"
        )
    mine = json.loads(json.dumps(config_fingerprint(exp)["method"]))  # tuples -> lists, as in meta.json
    diff = {k: (meta["method"].get(k), v) for k, v in mine.items() if meta["method"].get(k) != v}
    if diff:
        def describe(k, a, b):
            if k not in meta["method"]:  # an option added after this checkpoint was written
                return f"{k}: absent from the checkpoint (an option newer than it; its run had the behaviour from before the option) vs now {b!r}"
            return f"{k}: checkpoint {a!r} vs now {b!r}"

        raise CheckpointMismatchError(
            f"checkpoint {directory} was trained with a different {exp.method_name} config: "
            + ", ".join(describe(k, a, b) for k, (a, b) in diff.items())
            + ". Resume with the original config (and the contrastlab version that wrote it), or start a new run name."
        )
    import pickle

    try:
        return torch.load(state_path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as exc:  # a torn zip, or a non-tensor pickle weights_only refuses
        raise CheckpointMismatchError(f"{directory}: cannot load {STATE_FILE} with weights_only=True: {str(exc)[:300]}") from None


# --------------------------------------------------------------------------- the per-worker loop
def _epochs_of(method) -> list[tuple[str, int]]:
    """[(phase name, epochs)]; methods without phases have one phase, 'main'."""
    phases = getattr(method, "phases", None)
    return list(phases()) if callable(phases) else []


def build_context(exp: Experiment, method: nn.Module, *, device: torch.device, rank: int = 0, world: int = 1,
                  steps_per_epoch: int = 1, tb: TBLogger | None = None, meta: dict | None = None) -> StepContext:
    """Optimisers, LR schedules and the StepContext for `method` (shared by the Ray loop and `run_local`)."""
    t_cfg = exp.train
    trainable = method.trainable()
    specs = method.optimizers()
    total_steps = max(1, steps_per_epoch * t_cfg.epochs // t_cfg.accumulate)
    lr_scale = (t_cfg.batch_size * world / t_cfg.reference_batch_size) if t_cfg.scale_lr_with_world_size else 1.0
    optimizers = {n: build_optimizer([trainable[m] for m in s.modules], s, lr_scale) for n, s in specs.items()}
    scaler = torch.amp.GradScaler("cuda") if t_cfg.precision == "fp16" else None
    ctx = StepContext(
        exp=exp, method=method, device=device, rank=rank, world_size=world, tb=tb, optimizers=optimizers,
        specs=specs, scaler=scaler, total_steps=total_steps, steps_per_epoch=steps_per_epoch,
        base_lrs={n: [g["lr"] for g in o.param_groups] for n, o in optimizers.items()},
        meta=meta or {},
    )
    for name, opt in optimizers.items():  # warm-up starts at warmup_start_factor * lr
        for group, base in zip(opt.param_groups, ctx.base_lrs[name]):
            group["lr"] = base * lr_factor(0, total_steps, specs[name])
    return ctx


def restore_context(ctx: StepContext, state: dict) -> tuple[int, int]:
    """Load a checkpoint's state into the method, optimisers and counters; returns (epoch, step in epoch)."""
    ctx.method.load_state_dict(state["method"])
    for n, o in ctx.optimizers.items():
        o.load_state_dict(state["optimizers"][n])
    if ctx.scaler is not None and state["scaler"]:
        ctx.scaler.load_state_dict(state["scaler"])
    # gradients of a half-done accumulation are not in the checkpoint: start a fresh one, so the
    # first step after a resume sums train.accumulate micro-batches, not only the ones left
    ctx._opt_steps, ctx._micro = dict(state["opt_steps"]), {}
    ctx.fp16_skipped_steps = dict(state.get("fp16_skipped_steps", {}))  # absent from checkpoints before session 21
    ctx.step, ctx.phase = state["step"], state["phase"]
    if ctx.rank < len(state["rng"]):
        set_rng_state(state["rng"][ctx.rank])
    restore_per_rank_state(ctx.method, state.get("per_rank", []), ctx.rank)
    return state["epoch_done"], _steps_to_skip(ctx, state)


def _steps_to_skip(ctx: StepContext, state: dict) -> int:
    """Batches of this run to skip in a resumed epoch: the rows the checkpoint had taken in it, in
    this run's global batches (batch size and workers may change on resume). Rounded down: with a
    different global batch up to one batch's rows are trained again, rather than left out."""
    steps, rows = state["step_in_epoch"], state.get("rows_in_epoch")  # rows: absent before session 21
    if not steps or rows is None:
        return steps
    per_step = ctx.exp.train.batch_size * max(1, ctx.world_size)
    skip = rows // per_step
    if skip * per_step != rows or skip != steps:
        if ctx.is_main:
            print(f"[contrastlab] resumed mid-epoch with a different global batch ({rows // steps} rows per step in the "
                  f"checkpoint, {per_step} now): skipping {skip} batches = {skip * per_step} of the {rows} rows it had "
                  f"taken this epoch")
    return skip


def run_epochs(ctx: StepContext, batches: Callable, report: Callable, *, start_epoch: int = 0, skip_steps: int = 0,
               resumed: bool = False, on_epoch_begin: Callable | None = None, skipped_in_epoch: Callable | None = None,
               has_eval: bool = True) -> list[dict]:
    """The epoch loop every backend shares: phases, hooks, steps, logging, evaluation, reports.

    `batches(split, shuffle=, epoch=, drop_last=)` yields torch batches of this worker's part of a
    split; `report(metrics, epoch_done, step_in_epoch, with_checkpoint=True)` is called at every
    checkpoint boundary. Returns the per-epoch metrics of the epochs run here. `has_eval=False` (no
    evaluation split: `data.eval=none`, or `--data` without `--eval-data`): the method's evaluate()
    is never called, so epochs report training losses only.
    """
    method, exp, t_cfg, rank = ctx.method, ctx.exp, ctx.exp.train, ctx.rank
    tb = ctx.tb
    ctx.has_eval = has_eval  # methods that evaluate from their own hooks (UCR's phase ends) read it
    batches = finishing_views(batches)  # data.photometric=device: views' jitter/grey/blur, batched on ctx.device
    ctx.datasets = {s: (lambda s=s: batches(s)) for s in ("eval", "train_eval")}
    eval_fn = lambda: batches("eval")  # noqa: E731
    phases = _epochs_of(method) or [("main", t_cfg.epochs)]
    epoch_to_phase = [name for name, n in phases for _ in range(n)]
    ck_every = t_cfg.checkpoint_every_steps
    steps_per_epoch = ctx.steps_per_epoch
    first_opt = next(iter(ctx.optimizers))
    history: list[dict] = []
    last_metrics: dict = {}
    started_phase = ctx.phase if resumed else None  # a resumed phase keeps its restored state
    for epoch in range(start_epoch, len(epoch_to_phase)):
        ctx.epoch = epoch
        if epoch_to_phase[epoch] != started_phase:
            if started_phase is not None and hasattr(method, "on_phase_end"):
                method.on_phase_end(ctx)
            ctx.phase = started_phase = epoch_to_phase[epoch]
            if hasattr(method, "on_phase_start"):
                method.on_phase_start(ctx)
        dist_utils.barrier()
        method.train()
        if hasattr(method, "on_epoch_start"):
            method.on_epoch_start(ctx)
        # which training samples this epoch reads (e.g. one domain + a buffer); None = all of them
        ctx.data_selection = method.train_selection(ctx) if hasattr(method, "train_selection") else None
        if on_epoch_begin is not None:
            on_epoch_begin(epoch)  # publishes the epoch (augmentation seeds) and the selection to the readers
        dist_utils.barrier()
        sums: dict[str, float] = {}
        n_logged, samples, t_wait, t0 = 0, 0, 0.0, time.perf_counter()
        step_in_epoch = 0
        it = iter(batches("train", shuffle=True, epoch=epoch, drop_last=True))
        while True:
            t_fetch = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                break
            t_wait += time.perf_counter() - t_fetch
            step_in_epoch += 1
            if step_in_epoch <= skip_steps:
                continue  # mid-epoch resume: these steps were done before the stop
            if t_cfg.max_steps_per_epoch and step_in_epoch > t_cfg.max_steps_per_epoch:
                break  # a resume that skipped the whole capped epoch (another global batch) trains none of it
            logs = method.train_step(batch, ctx)
            ctx.end_iteration()
            ctx.check_finite({k: v for k, v in logs.items() if k.startswith("loss")})
            ctx.step += 1
            if hasattr(method, "after_step"):
                method.after_step(ctx)
            samples += next(iter(batch.values())).shape[0]
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            n_logged += 1
            if rank == 0 and ctx.step % t_cfg.log_every_steps == 0:
                now = time.perf_counter()
                ctx.log({**{k: float(v) for k, v in logs.items()}, "lr": ctx.lr(first_opt),
                         "samples_per_s_per_worker": samples / max(now - t0, 1e-9)})
            if ck_every and ctx.step % ck_every == 0:
                # Mid-epoch reports carry the last evaluation (epoch `epoch`'s), so their time stays below
                # epoch + 1 even when the driver's steps_per_epoch estimate is short: at epoch + 1 ASHA
                # would file that old score at the next rung, and stop the trial at max_t before its
                # final evaluation.
                fraction = min(step_in_epoch / steps_per_epoch, 0.999)
                report({**last_metrics, "epoch": epoch + fraction, "step": ctx.step}, epoch, step_in_epoch)
            if t_cfg.max_steps_per_epoch and step_in_epoch >= t_cfg.max_steps_per_epoch:
                break
        skip_steps = 0
        if step_in_epoch == 0 and rank == 0:
            chosen = f" (the method selected {ctx.data_selection.describe()})" if ctx.data_selection is not None else ""
            print(f"[contrastlab] warning: epoch {epoch + 1} had no full training batch{chosen}: check the data and "
                  f"train.batch_size")
        elapsed = time.perf_counter() - t0
        if hasattr(method, "on_epoch_end"):
            method.on_epoch_end(ctx)
        broadcast_norm_statistics(method)  # each rank's BN statistics followed its own batches: rank 0's, as DDP
        metrics = {f"train_{k}": v / max(1, n_logged) for k, v in sums.items()}
        metrics.update({
            "epoch": epoch + 1, "step": ctx.step, "phase": ctx.phase,
            "samples_per_s": samples * ctx.world_size / max(elapsed, 1e-9),
            "samples_per_s_per_worker": samples / max(elapsed, 1e-9),
            "ingest_wait_fraction": t_wait / max(elapsed, 1e-9),
        })
        if skipped_in_epoch is not None:
            skipped = skipped_in_epoch(epoch)
            metrics["skipped_samples"] = len(skipped)
            if skipped and rank == 0:
                print(f"[contrastlab] epoch {epoch + 1}: skipped {len(skipped)} bad sample(s): "
                      + "; ".join(f"{s} key {k}: {r}" for s, k, r in skipped[:5]) + (" ..." if len(skipped) > 5 else ""))
        if has_eval and ((epoch + 1) % t_cfg.eval_every_epochs == 0 or epoch + 1 == len(epoch_to_phase)):
            method.eval()
            with torch.no_grad():
                metrics.update(method.evaluate(eval_fn, ctx))
            method.train()
        if rank == 0:
            if tb is not None:
                tb.scalars({k: v for k, v in metrics.items() if k not in ("epoch", "step")}, ctx.step, "epoch/")
                tb.flush()
            shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()}
            print(f"[contrastlab] epoch {epoch + 1}/{len(epoch_to_phase)} {json.dumps(shown, default=str)}")
        last_metrics = {k: v for k, v in metrics.items() if not k.startswith("train_")}
        history.append(metrics)
        report(metrics, epoch + 1, 0)
    if hasattr(method, "on_phase_end") and start_epoch < len(epoch_to_phase):
        method.on_phase_end(ctx)
    return history


def train_loop_per_worker(config: dict) -> None:
    import ray.train

    from contrastlab.methods.registry import get_method
    from contrastlab.platform.data import reader

    exp = Experiment.from_dict(config["experiment"])
    t_cfg = exp.train
    tctx = ray.train.get_context()
    rank, world = tctx.get_world_rank(), tctx.get_world_size()
    torch.set_num_threads(max(1, int(config.get("torch_threads", 1))))
    device = ray.train.torch.get_device() if world > 0 else torch.device("cpu")
    if not isinstance(device, torch.device):
        device = torch.device(device)

    torch.manual_seed(exp.run.seed)  # identical initial weights on every rank
    method = get_method(exp.method_name)(exp.method).to(device)
    seed_everything(exp.run.seed + 1000 * rank)
    tb = TBLogger(config.get("tb_dir"), enabled=rank == 0)
    ctx = build_context(exp, method, device=device, rank=rank, world=world, tb=tb,
                        steps_per_epoch=max(1, int(config["steps_per_epoch"])), meta=config.get("meta", {}))

    start_epoch, skip_steps = 0, 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as ckdir:
            state = load_checkpoint_state(ckdir, exp)
        start_epoch, skip_steps = restore_context(ctx, state)
        if rank == 0:
            print(f"[contrastlab] resumed from checkpoint: epoch {start_epoch}, step {ctx.step}"
                  + (f", {skip_steps} steps into the epoch" if skip_steps else ""))
    broadcast_parameters(method)

    shards = {"train": ray.train.get_dataset_shard("train")}
    for extra in ("eval", "train_eval"):
        try:
            shards[extra] = ray.train.get_dataset_shard(extra)
        except Exception:  # noqa: BLE001 - a dataset the run did not define
            pass
    bs = t_cfg.batch_size

    def batches(split: str, shuffle: bool = False, epoch: int = 0, drop_last: bool = False):
        if split not in shards:
            return iter(())
        if shuffle and exp.data.shuffle_buffer:  # data/shuffle.py: each row copied once (Ray's local shuffle: 2+ times)
            return iter_shuffled_torch_batches(shards[split], bs, exp.data.shuffle_buffer, exp.run.seed * 7919 + epoch * 31 + rank,
                                               drop_last=drop_last, device=device, prefetch_batches=exp.data.prefetch_batches)
        return shards[split].iter_torch_batches(batch_size=bs, drop_last=drop_last, device=device, prefetch_batches=exp.data.prefetch_batches)

    run_state = reader._run_state(config.get("run_state"))

    def report(metrics: dict, epoch_done: int, step_in_epoch: int, with_checkpoint: bool = True) -> None:
        rngs = dist_utils.gather_objects(rng_state())
        per_rank = dist_utils.gather_objects(local_per_rank_state(method)) if per_rank_keys(method) else []
        with tempfile.TemporaryDirectory() as tmp:
            ck = None
            if with_checkpoint and rank == 0:
                save_checkpoint(tmp, ctx, epoch_done, step_in_epoch, rngs, per_rank)
                ck = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=ck)

    def on_epoch_begin(epoch: int) -> None:
        if rank == 0 and run_state is not None:
            selection = ctx.data_selection.to_dict() if ctx.data_selection is not None else None
            ray.get(run_state.set_epoch.remote(epoch, selection))
            if selection is not None:
                print(f"[contrastlab] epoch {epoch + 1} reads {ctx.data_selection.describe()}")

    skipped = (lambda epoch: ray.get(run_state.skipped_in_epoch.remote(epoch))) if run_state is not None else None
    run_epochs(ctx, batches, report, start_epoch=start_epoch, skip_steps=skip_steps, resumed=checkpoint is not None,
               on_epoch_begin=on_epoch_begin, skipped_in_epoch=skipped, has_eval=shards.get("eval") is not None)
    tb.close()
