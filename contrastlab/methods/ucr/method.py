"""UCR: unsupervised lifelong person re-id with contrastive rehearsal (Chen et al. 2022; card ucr.md).

Phases = domains: optional labelled source phases (a supervised warm start standing in for
ImageNet pre-training: the same losses with ground-truth ids as labels), then one phase per seen
domain. In phase d the method trains only on samples whose "domain" is d, plus the buffered
images of earlier domains.

Data (`phase_data=select`, default): each epoch the method tells the loader which training samples
to read (`train_selection`, platform/data/selection.py): the current domain's samples plus the
rehearsal buffer, each buffered image repeated so old rows make `old_batch_ratio` x the new rows
(card: old batch 32 = new batch 32, so 1.0); the read tasks drop every other sample before decoding.
Batches therefore carry about batch_size / (1 + old_batch_ratio) new rows and the rest old ones;
the card's two separate batches (32 + 32) become one mixed batch of 64 (one forward, see below).
`phase_data=all` is the first design, kept for comparison: every domain every epoch, filtered in
train_step (about batch_size / n_domains new rows per step, n_domains times the decoding). The
clustering pass reads every training image either way (the EMA, or in a source phase the online
model, runs on current-domain rows only).
Batch composition is random (no P x K identity sampler; card b/i: new batch 8 pseudo-ids x 4, old
batch 16 old ids x 2, two loaders in lock-step). L_ccl and L_old contrast each row with the centroid
memory and L_cam with the proxy memory, so they only get noisier. L_kl does change: it distils the
similarity structure among whichever old rows share the batch. With the official K = 2 sampler every
buffered image has its sibling (the other buffered image of its pseudo-id) in the batch, so P_old
carries a same-identity peak and L_kl keeps old identities' images together under the new model.
With random draws a sibling shares the batch with probability about (old rows per batch - 1) /
buffer size (about 0.25 in d2 at the small-scale defaults, falling as the buffer grows; about 0.02
at official scale). L_kl then mostly distils relations between different old identities, and only
L_old keeps each identity together. The number of old rows per batch also varies (about
batch_size * r / (1 + r), r = old_batch_ratio) instead of being exactly 32, and a repeated image (a
buffered one, or a new-domain one repeated to iters_per_epoch) can meet its own copy (another
augmentation). The streams are sized from the domain's images, DBSCAN outliers included; the step
drops those rows, so a step holds somewhat fewer than 32 usable new rows (the card samples clustered
images only).

Steps per domain (card g: 6 epochs x 40 iterations, batch 32 new + 32 old = 240 steps per domain).
`method.iters_per_epoch` (default 40) fixes a seen domain's epoch at that many batches' worth of
new-domain rows: the domain's samples are repeated `iters_per_epoch * new_batch / domain size` times in
expectation (DataSelection.value_copies; fractional copies are drawn per sample and epoch), with
new_batch = train.batch_size / (1 + old_batch_ratio) under rehearsal (32 of UCR's 64) and the whole batch
without (the fine-tune arm's 32), and the buffer repeated so buffered rows are `old_batch_ratio` x the
new ones (index_copies). Both arms thus read the same number of new-domain images; from the second seen
domain on UCR takes iters_per_epoch batches of 32 + 32 (the card's 240 steps per domain). A batch
that can hold no buffered rows (the first seen domain, source phases) is all new rows; the loader has
one batch size per run, so UCR steps it in chunks of the card's new batch, 64 / (1 + old_batch_ratio)
= 32 rows (`split_unbuffered_batches`; off, it took half as many 64-row steps there, as before
session 20). Both arms then train alike until the buffer exists. `iters_per_epoch=0` reads each
selection once per epoch (before session 20: 480 // 64 = 7 steps per epoch at the embedded defaults,
42 per domain). Labelled source phases (the warm start, card g: "2 min supervised") always read their
domain once per epoch. The EMA at alpha 0.999 keeps 0.999^240 = 79% of its domain-start weights, as
on the card. iters_per_epoch applies with phase_data=select (with `all` an epoch is the whole train
split); under train.accumulate a chunk is one micro-batch.

Per epoch: cluster EMA eval features of the current domain (k-reciprocal Jaccard + DBSCAN; on
rank 0, broadcast; a source phase takes its ground-truth ids over the online model's features),
recompute centroids C_new and per-camera proxies. Per step:
L = L_ccl + L_cam (+ L_old + L_kl from the second seen domain on), Adam, EMA update.
End of each seen domain: buffer += the mem_samples most central images of every cluster (with
centroids and proxies), old model <- EMA. End of each labelled source phase: EMA <- online
(parameters and buffers), so both models start the first seen domain from the warm start (card c:
identical init; card g: the warm start stands in for the pre-training both models share). Without
that the EMA, updated only about 28 times at alpha 0.999 (2 epochs of 7 batches, each stepped as
two), would still be about 97% its random init, and online <- EMA would discard the warm start.
Start of each domain after the first: online <- EMA. In a source phase the centroids (the
classifier L_ccl trains against, from the ground-truth ids) come from the online model's features
(`source_cluster_model=online`): the EMA is still its random init there, so its centroids would be
random-feature class means for the whole warm start (`ema`, the behaviour before session 20). Seen
domains cluster the EMA's, as the card.

Deviations / options (flags): `proxy_norm` (column = official quirk, row = intended),
`label_offset` (intended | official, see `_append_buffer`), negatives when fewer than
`num_negatives` exist (all of them, see loss.py), one forward over new + old rows (BN statistics
shared by both parts; official uses two forwards), no EMA shuffle/unshuffle (single-process BN).
Multi-worker: losses are computed per worker on its local batch (L_cam / L_kl are batch-level);
pseudo-labels are identical on every rank.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from contrastlab.methods.base import OptimSpec, step_chunks
from contrastlab.methods.ucr import clustering as cl
from contrastlab.methods.ucr.loss import PROXY_NORMS, camera_proxy_contrast, centroid_contrast, ema_update, similarity_kl
from contrastlab.methods.ucr.model import BACKBONES, ReIDEncoder
from contrastlab.platform import distributed as dist_utils
from contrastlab.platform.data.augment import IMAGENET_MEAN, gaussian_blur, hflip, normalize_batch, resize, to_chw

LABEL_OFFSETS = ("intended", "official")


def _names(text: str) -> list[str]:
    return [t.strip() for t in str(text).split(",") if t.strip()]


@dataclass
class UCRConfig:
    backbone: str = "cnn-small"  # cnn-small (card g) | resnet50 (official, random init here)
    height: int = 64
    width: int = 32
    pad: int = 4  # official pad 10 at 256x128
    erasing_p: float = 0.5
    blur_p: float = 0.5
    source_domains: str = "d0"  # comma list; labelled warm-start phases ("" = none)
    source_epochs: int = 2
    source_cluster_model: str = "online"  # features for a source phase's centroids: online | ema (see the docstring)
    domains: str = "d1,d2,d3"  # the lifelong sequence, one phase each (names of the json "domain")
    epochs_per_domain: int = 6
    # batches' worth of new-domain rows per seen-domain epoch (card g: 40; official 400); 0 = one pass over
    # the domain's samples (see the module docstring)
    iters_per_epoch: int = 40
    rehearsal: bool = True  # False = sequential fine-tuning baseline (no buffer, no L_old, no L_kl)
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    warmup_epochs: float = 2.0  # per domain, linear from warmup_start_factor * lr (official 10 of 30)
    warmup_start_factor: float = 0.1
    ema_alpha: float = 0.999
    k1: int = 10
    k2: int = 4
    eps: float = 0.55  # DBSCAN eps (`rho`)
    min_samples: int = 4
    tau_c: float = 0.5
    label_smoothing: float = 0.1
    beta: float = 0.07
    num_negatives: int = 50
    camera_weight: float = 0.5
    proxy_norm: str = "column"  # column (official quirk) | row (intended)
    tau_kl: float = 0.2
    lambda_kl: float = 20.0
    mem_samples: int = 2
    label_offset: str = "intended"  # intended | official (stale labels for domains older than the newest)
    phase_data: str = "select"  # select: read only the phase's domain + the buffer | all: every domain, filtered in the step
    old_batch_ratio: float = 1.0  # buffered rows per new-domain row in the training stream (card: 32 old per 32 new)
    # with rehearsal, a batch that can hold no buffered rows (source phases, the first seen domain) is
    # stepped in chunks of train.batch_size / (1 + old_batch_ratio) rows: the card's new batch (32 of 64)
    split_unbuffered_batches: bool = True

    def validate(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"method.backbone must be one of {BACKBONES}, got {self.backbone!r}")
        if self.proxy_norm not in PROXY_NORMS:
            raise ValueError(f"method.proxy_norm must be one of {PROXY_NORMS}, got {self.proxy_norm!r}")
        if self.label_offset not in LABEL_OFFSETS:
            raise ValueError(f"method.label_offset must be one of {LABEL_OFFSETS}, got {self.label_offset!r}")
        if not _names(self.domains):
            raise ValueError("method.domains must name at least one domain, e.g. 'd1,d2,d3'")
        overlap = set(_names(self.domains)) & set(_names(self.source_domains))
        if overlap:
            raise ValueError(f"method.domains and method.source_domains share {sorted(overlap)}")
        if self.epochs_per_domain < 1 or self.source_epochs < 0:
            raise ValueError("method.epochs_per_domain must be >= 1 and method.source_epochs >= 0")
        if not 0 < self.ema_alpha < 1:
            raise ValueError(f"method.ema_alpha must lie in (0, 1), got {self.ema_alpha}")
        if self.k1 < 2 or self.k2 < 1 or self.min_samples < 1 or self.mem_samples < 1 or self.num_negatives < 1:
            raise ValueError("method.k1 >= 2, k2 >= 1, min_samples >= 1, mem_samples >= 1, num_negatives >= 1 required")
        for name in ("eps", "tau_c", "beta", "tau_kl"):
            if getattr(self, name) <= 0:
                raise ValueError(f"method.{name} must be > 0, got {getattr(self, name)}")
        if self.source_cluster_model not in ("online", "ema"):
            raise ValueError(f"method.source_cluster_model must be 'online' or 'ema', got {self.source_cluster_model!r}")
        if self.phase_data not in ("select", "all"):
            raise ValueError(f"method.phase_data must be 'select' or 'all', got {self.phase_data!r}")
        if self.iters_per_epoch < 0:
            raise ValueError(f"method.iters_per_epoch must be >= 0 (0 = one pass over the domain), got {self.iters_per_epoch}")
        if self.old_batch_ratio < 0:
            raise ValueError(f"method.old_batch_ratio must be >= 0, got {self.old_batch_ratio}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"method.label_smoothing must lie in [0, 1), got {self.label_smoothing}")


def strong_view(img: np.ndarray, cfg: UCRConfig, rng: np.random.Generator) -> np.ndarray:
    """Pad, random crop back to (H, W), flip, blur p, random erasing p (area 0.02-0.4, aspect 0.3-3.33, mean fill)."""
    h, w = img.shape[:2]
    p = cfg.pad
    padded = np.pad(img, ((p, p), (p, p), (0, 0)))
    y, x = rng.integers(0, 2 * p + 1, 2)
    out = hflip(np.ascontiguousarray(padded[y:y + h, x:x + w]), rng)
    out = gaussian_blur(out, rng, p=cfg.blur_p)
    if rng.random() < cfg.erasing_p:
        out = out.copy()
        for _ in range(100):
            area = rng.uniform(0.02, 0.4) * h * w
            aspect = math.exp(rng.uniform(math.log(0.3), math.log(1 / 0.3)))
            eh, ew = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if eh < h and ew < w:
                y0, x0 = rng.integers(0, h - eh + 1), rng.integers(0, w - ew + 1)
                out[y0:y0 + eh, x0:x0 + ew] = np.round(np.array(IMAGENET_MEAN) * 255).astype(np.uint8)
                break
    return out


def _empty(*shape: int, dtype=torch.float32) -> torch.Tensor:
    return torch.zeros(shape, dtype=dtype)


class UCR(nn.Module):
    Config = UCRConfig
    name = "ucr"
    modality = "reid"
    default_dataset = "synthetic-reid"
    dataset_splits = {"train": "train", "eval": "test"}
    eval_metric = "mAP_seen"
    eval_mode = "max"
    needs_train_features = True
    # `epochs` only sizes the LR schedule bookkeeping: the phases (source_epochs + epochs_per_domain
    # per domain) decide how many epochs run; the per-domain warm-up is done in before_optimizer_step.
    # batch 64 = the card's new batch 32 + old batch 32, mixed (see phase_data above)
    train_defaults = {"batch_size": 64, "epochs": 20, "log_every_steps": 10, "eval_every_epochs": 2}
    smoke_overrides = {
        "method.source_epochs": 1, "method.epochs_per_domain": 1, "train.epochs": 4, "method.iters_per_epoch": 0,
        "data.embedded_params": "{n_train_ids: 12, images_per_train_id: 6, n_test_ids: 8, images_per_test_id: 6, n_unseen_domains: 1}",
    }
    # variable-size persistent state: resized from the checkpoint in _load_from_state_dict
    _DYNAMIC = ("pl_index", "pl_label", "pl_score", "centroids", "proxies", "proxy_owner",
                "buf_index", "buf_label", "old_centroids", "old_proxies", "old_proxy_owner", "map_table")

    def __init__(self, cfg: UCRConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.online = ReIDEncoder(cfg.backbone)
        self.ema = copy.deepcopy(self.online)
        self.old_model = copy.deepcopy(self.online)
        for p in list(self.ema.parameters()) + list(self.old_model.parameters()):
            p.requires_grad_(False)
        d = self.online.dim
        long = torch.long
        # current domain's pseudo-labels (sorted stable indices), centroid score, memories
        self.register_buffer("pl_index", _empty(0, dtype=long))
        self.register_buffer("pl_label", _empty(0, dtype=long))
        self.register_buffer("pl_score", _empty(0))
        self.register_buffer("centroids", _empty(0, d))
        self.register_buffer("proxies", _empty(0, d))
        self.register_buffer("proxy_owner", _empty(0, dtype=long))
        # rehearsal buffer: indices, labels = rows of old_centroids; frozen old memories
        self.register_buffer("buf_index", _empty(0, dtype=long))
        self.register_buffer("buf_label", _empty(0, dtype=long))
        self.register_buffer("old_centroids", _empty(0, d))
        self.register_buffer("old_proxies", _empty(0, d))
        self.register_buffer("old_proxy_owner", _empty(0, dtype=long))
        self.register_buffer("has_old", torch.zeros((), dtype=torch.bool))
        self.register_buffer("phase_step", torch.zeros((), dtype=long))
        # mAP of every eval domain (rows, meta order) after every phase (columns); NaN = not yet
        self.register_buffer("map_table", _empty(0, len(self.phases())))

    # ------------------------------------------------------------------ state
    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in self._DYNAMIC:
            key = prefix + name
            if key in state_dict:
                self._buffers[name] = torch.empty_like(state_dict[key], device=self._buffers[name].device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def train(self, mode: bool = True):
        super().train(mode)
        self.old_model.eval()  # the old model always runs in eval mode
        return self

    # ------------------------------------------------------------------ contract
    def phases(self) -> list[tuple[str, int]]:
        c = self.cfg
        source = [(s, c.source_epochs) for s in _names(c.source_domains)] if c.source_epochs > 0 else []
        return source + [(d, c.epochs_per_domain) for d in _names(c.domains)]

    @staticmethod
    def make_preprocess(cfg: UCRConfig, split: str, meta: dict):
        names = list(meta.get("domain_names", []))
        hw = (cfg.height, cfg.width)

        def fn(sample: dict, rng: np.random.Generator) -> dict:
            info = sample["json"]
            img = resize(sample["jpg"], hw)
            domain = info.get("domain")
            out = {
                "domain": np.int64(names.index(domain) if domain in names else info.get("domain_id", 0)),
                "camera": np.int64(info.get("camera", info.get("camid", 0))),
                "pid": np.int64(info.get("pid", -1)),
            }
            if split == "train":
                out["image"] = to_chw(strong_view(img, cfg, rng))
                out["image_weak"] = to_chw(img)
            else:
                out["image"] = to_chw(img)
                out["is_query"] = np.int64(info.get("split") == "query")
            return out

        return fn, ("jpg", "json")

    def trainable(self) -> dict[str, nn.Module]:
        return {"model": self.online}

    def optimizers(self) -> dict[str, OptimSpec]:
        c = self.cfg
        return {"main": OptimSpec(["model"], "adam", lr=c.lr, weight_decay=c.weight_decay, schedule="constant", no_decay_1d=False)}

    @staticmethod
    def search_space(cfg=None) -> dict:
        from ray import tune

        k1 = [20, 30] if cfg is None or cfg.k1 >= 20 else [cfg.k1, 2 * cfg.k1]  # card: scale k1 with images per id
        return {
            "method.eps": tune.uniform(0.4, 0.7),
            "method.tau_c": tune.choice([0.05, 0.1, 0.5, 1.0]),
            "method.lambda_kl": tune.choice([1.0, 5.0, 20.0, 50.0]),
            "method.tau_kl": tune.choice([0.1, 0.2, 0.5, 2.0]),
            "method.mem_samples": tune.choice([1, 2, 4]),
            "method.k1": tune.choice(k1),
        }

    # ------------------------------------------------------------------ helpers
    def _domain_id(self, ctx, name: str) -> int:
        names = list(ctx.meta.get("domain_names", []))
        if name not in names:
            raise ValueError(f"phase domain {name!r} is not in the dataset's domain_names {names}: set method.domains / method.source_domains")
        return names.index(name)

    def _is_source(self, phase: str) -> bool:
        return phase in _names(self.cfg.source_domains)

    def _phase_index(self, phase: str) -> int:
        return [p for p, _ in self.phases()].index(phase)

    def _lookup_labels(self, index: torch.Tensor) -> torch.Tensor:
        """Pseudo-label of each stable index (-1: outlier, other domain, or not clustered)."""
        if self.pl_index.numel() == 0:
            return torch.full_like(index, -1)
        pos = torch.searchsorted(self.pl_index, index).clamp(max=self.pl_index.numel() - 1)
        hit = self.pl_index[pos] == index
        return torch.where(hit, self.pl_label[pos], torch.full_like(index, -1))

    def _buffer_labels(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(in-buffer mask, old-centroid row) for each stable index."""
        if self.buf_index.numel() == 0:
            return torch.zeros_like(index, dtype=torch.bool), torch.full_like(index, -1)
        order = torch.argsort(self.buf_index)
        keys = self.buf_index[order]
        pos = torch.searchsorted(keys, index).clamp(max=keys.numel() - 1)
        hit = keys[pos] == index
        return hit, torch.where(hit, self.buf_label[order][pos], torch.full_like(index, -1))

    # ------------------------------------------------------------------ hooks
    def on_phase_start(self, ctx) -> None:
        self.phase_step.zero_()
        if self._phase_index(ctx.phase) > 0:
            self.online.load_state_dict(self.ema.state_dict())  # new domain starts from the mean teacher
        for name in ("pl_index", "pl_label", "pl_score", "centroids", "proxies", "proxy_owner"):
            self._buffers[name] = self._buffers[name][:0]

    def on_epoch_start(self, ctx) -> None:
        """Cluster the current domain's EMA eval features (weak view) once, on rank 0; broadcast. A
        source phase's centroids of its ground-truth ids use `source_cluster_model`'s features."""
        dom = self._domain_id(ctx, ctx.phase)
        dev = self.pl_index.device
        use_online = self._is_source(ctx.phase) and self.cfg.source_cluster_model == "online"
        model = self.online if use_online else self.ema

        def features(batch):
            out = torch.zeros(batch["image"].shape[0], self.online.dim, device=dev)
            mask = batch["domain"] == dom
            if mask.any():
                out[mask] = model(normalize_batch(batch["image"][mask]))
            return out

        was_training = model.training
        model.eval()
        idx, feats, cols = ctx.extract("train_eval", features)
        model.train(was_training)
        keep = cols["domain"] == dom
        self._domain_count = int(keep.sum())  # sizes this epoch's buffer repeats (train_selection)
        idx, feats, cams, pids = idx[keep], feats[keep], cols["camera"][keep], cols["pid"][keep]
        result = None
        if ctx.rank == 0:
            if self._is_source(ctx.phase):
                labels = cl.relabel(pids)  # labelled warm start: ground-truth ids
            else:
                labels = cl.dbscan_labels(cl.jaccard_distance(feats, self.cfg.k1, self.cfg.k2), self.cfg.eps, self.cfg.min_samples)
            cents = cl.cluster_centroids(feats, labels)
            proxies, owner, _ = cl.camera_proxies(feats, labels, cams)
            scores = cl.centroid_scores(feats, labels, cents)
            result = (labels, cents, proxies, owner, scores)
        labels, cents, proxies, owner, scores = dist_utils.broadcast_object(result)
        keep = labels >= 0
        as_t = lambda a, dt=None: torch.as_tensor(np.ascontiguousarray(a), dtype=dt, device=dev)  # noqa: E731
        self.pl_index = as_t(idx[keep], torch.long)
        self.pl_label = as_t(labels[keep], torch.long)
        self.pl_score = as_t(scores[keep], torch.float32)
        self.centroids = as_t(cents, torch.float32)
        self.proxies = as_t(proxies, torch.float32)
        self.proxy_owner = as_t(owner, torch.long)
        if ctx.is_main:
            logs = {"clusters": float(len(cents)), "outlier_fraction": float(1 - keep.mean()) if len(keep) else 0.0}
            if len(keep) and keep.any():
                from sklearn.metrics import adjusted_rand_score

                logs["cluster_ari"] = float(adjusted_rand_score(pids[keep], labels[keep]))
            ctx.log(logs, prefix="cluster/")
            self._last_cluster_logs = logs

    def train_selection(self, ctx):
        """This epoch's training samples: the phase's domain (repeated to `iters_per_epoch` batches' worth
        of new rows in seen domains) plus the rehearsal buffer, repeated so buffered rows make
        `old_batch_ratio` x the new ones (None with phase_data=all)."""
        from contrastlab.platform.data.selection import DataSelection

        c = self.cfg
        accumulate = max(1, int(getattr(ctx.exp.train, "accumulate", 1)))
        if c.phase_data == "all":  # every batch of the whole split; the warm-up counts its optimiser steps
            chunks = 1 if self._buffer_in_batches(ctx) else len(self._chunk_sizes(ctx.exp.train.batch_size))
            self._steps_per_epoch = max(1, ctx.steps_per_epoch * chunks // accumulate)
            return None
        source = self._is_source(ctx.phase)
        use_old = self._buffer_in_batches(ctx)
        n_new = getattr(self, "_domain_count", 0) or self.pl_index.numel()
        global_batch = ctx.exp.train.batch_size * ctx.world_size
        new_rows, new_copies = float(n_new), 1.0
        if c.iters_per_epoch and not source and n_new:
            new_share = 1.0 / (1.0 + (c.old_batch_ratio if c.rehearsal else 0.0))  # of each batch, when the buffer is full
            new_rows = c.iters_per_epoch * global_batch * new_share
            new_copies = new_rows / n_new
        rows = new_rows * (1 + (c.old_batch_ratio if use_old else 0.0))
        # the per-domain warm-up counts this stream's optimiser steps (phase_step), not the whole split's
        # batches: chunks per batch, one step per `accumulate` chunks
        chunks = 1 if use_old else len(self._chunk_sizes(ctx.exp.train.batch_size))
        self._steps_per_epoch = max(1, int(rows // global_batch) * chunks // accumulate)
        if not use_old:
            return DataSelection("domain", (ctx.phase,), value_copies=new_copies)
        copies = c.old_batch_ratio * new_rows / self.buf_index.numel()
        return DataSelection("domain", (ctx.phase,), tuple(self.buf_index.tolist()), copies, new_copies)

    def _sync_ema_to_online(self) -> None:
        """EMA <- online, parameters and buffers (BN running statistics): the end of the warm start."""
        self.ema.load_state_dict(self.online.state_dict())

    def on_phase_end(self, ctx) -> None:
        if self._is_source(ctx.phase):
            return  # EMA <- online happened in on_epoch_end of the phase's last epoch (and is in its checkpoint)
        if not self.cfg.rehearsal:
            return
        self._append_buffer()
        self.old_model.load_state_dict(self.ema.state_dict())
        self.has_old.fill_(True)

    def _append_buffer(self) -> None:
        """Buffer += the mem_samples most central samples of every cluster of the last clustering.

        Old-centroid rows are ordered newest domain first: [C_d; C_{d-1}; ...]. `intended`: labels
        of already-buffered samples shift by the new domain's cluster count, so every label indexes
        its own centroid row. `official`: they are not shifted (the official code offsets only by
        the newest domain's count), so from the third domain on the oldest samples point at rows of
        a newer domain."""
        n_new = self.centroids.shape[0]
        chosen = torch.as_tensor(cl.select_buffer(self.pl_label.cpu().numpy(), self.pl_score.cpu().numpy(), self.cfg.mem_samples),
                                 dtype=torch.long, device=self.pl_index.device)
        old_labels = self.buf_label + (n_new if self.cfg.label_offset == "intended" else 0)
        self.buf_index = torch.cat([self.pl_index[chosen], self.buf_index])
        self.buf_label = torch.cat([self.pl_label[chosen], old_labels])
        self.old_centroids = torch.cat([self.centroids, self.old_centroids])
        self.old_proxies = torch.cat([self.proxies, self.old_proxies])
        self.old_proxy_owner = torch.cat([self.proxy_owner, self.old_proxy_owner + n_new])

    def before_optimizer_step(self, name: str, ctx) -> None:
        """Per-domain linear warm-up (re-created each domain; Adam state carries over)."""
        c = self.cfg
        warm = c.warmup_epochs * (getattr(self, "_steps_per_epoch", 0) or ctx.steps_per_epoch)
        factor = 1.0 if warm <= 0 else min(1.0, c.warmup_start_factor + (1 - c.warmup_start_factor) * float(self.phase_step) / warm)
        for group, base in zip(ctx.optimizers[name].param_groups, ctx.base_lrs[name]):
            group["lr"] = base * factor

    def after_optimizer_step(self, name: str, ctx) -> None:
        ema_update(self.ema, self.online, self.cfg.ema_alpha)
        self.phase_step += 1

    # ------------------------------------------------------------------ training
    def _buffer_in_batches(self, ctx) -> bool:
        """Do this phase's batches carry buffered (old-domain) rows?"""
        c = self.cfg
        return bool(self.has_old) and c.rehearsal and not self._is_source(ctx.phase) and self.buf_index.numel() > 0

    def _chunk_sizes(self, rows: int) -> list[int]:
        """Rows per optimiser step for a batch without buffered rows: the new-row share of a full batch
        (train.batch_size / (1 + old_batch_ratio)) with split_unbuffered_batches under rehearsal."""
        c = self.cfg
        if not (c.split_unbuffered_batches and c.rehearsal and c.old_batch_ratio > 0):
            return [rows]
        return step_chunks(rows, rows / (1 + c.old_batch_ratio))

    def train_step(self, batch: dict, ctx) -> dict[str, float]:
        rows = int(batch["index"].shape[0])
        sizes = [rows] if self._buffer_in_batches(ctx) else self._chunk_sizes(rows)
        if len(sizes) == 1:
            return self._train_step(batch, ctx)
        logs, start = [], 0
        for size in sizes:  # the card's new batch, one optimiser (and EMA) step each
            part = {k: (v[start:start + size] if torch.is_tensor(v) and v.ndim and v.shape[0] == rows else v) for k, v in batch.items()}
            logs.append(self._train_step(part, ctx))
            start += size
        learned = [lg for lg in logs if lg["n_new"] + lg["n_old"] >= 2] or logs  # chunks that had a loss
        out = {k: float(np.mean([lg[k] for lg in learned])) for k in logs[0] if not k.startswith("n_")}
        out.update({k: float(sum(lg[k] for lg in logs)) for k in logs[0] if k.startswith("n_")})
        return out

    def _train_step(self, batch: dict, ctx) -> dict[str, float]:
        c = self.cfg
        dom = self._domain_id(ctx, ctx.phase)
        index = batch["index"].long()
        labels = self._lookup_labels(index)
        new = (batch["domain"] == dom) & (labels >= 0)
        in_buf, old_rows = self._buffer_labels(index)
        use_old = bool(self.has_old) and c.rehearsal and not self._is_source(ctx.phase)
        old = in_buf & (batch["domain"] != dom) if use_old else torch.zeros_like(new)
        n_new, n_old = int(new.sum()), int(old.sum())
        zero = {"loss": 0.0, "loss_ccl": 0.0, "loss_cam": 0.0, "loss_old": 0.0, "loss_kl": 0.0,
                "n_new": float(n_new), "n_old": float(n_old)}
        if self.centroids.shape[0] == 0:
            return zero  # no clusters this epoch (the same on every rank: labels are broadcast)
        if n_new + n_old < 2:  # BatchNorm needs two rows; nothing to learn from this batch
            if getattr(ctx, "world_size", 1) > 1:
                # the other ranks step: join their gradient all-reduce with zero gradients (DDP's
                # average), so no rank waits alone and the EMA and phase_step stay identical
                ctx.optimize(sum(p.sum() for p in self.online.parameters()) * 0.0, "main")
            return zero
        strong = torch.cat([batch["image"][new], batch["image"][old]])
        with ctx.autocast():
            feats = self.online(normalize_batch(strong)).float()
            with torch.no_grad():
                ema_feats = self.ema(normalize_batch(strong)).float()  # train mode: its BN statistics move
        f_new, f_old = feats[:n_new], feats[n_new:]
        n_clusters, n_old_clusters = self.centroids.shape[0], self.old_centroids.shape[0] if use_old else 0
        k_total = n_clusters + n_old_clusters
        all_proxies, all_owner = self.proxies, self.proxy_owner
        if use_old and n_old_clusters:
            all_proxies = torch.cat([self.proxies, self.old_proxies])
            all_owner = torch.cat([self.proxy_owner, self.old_proxy_owner + n_clusters])
        loss = feats.new_zeros(())
        logs = dict(zero)
        if n_new:
            y = labels[new]
            l_ccl = centroid_contrast(f_new, self.centroids, y, c.tau_c, k_total, c.label_smoothing)
            l_cam = camera_proxy_contrast(f_new, y, batch["camera"][new], all_proxies, all_owner, c.beta, c.num_negatives,
                                          c.proxy_norm, c.camera_weight)
            loss = loss + l_ccl + l_cam
            logs.update(loss_ccl=l_ccl.item(), loss_cam=l_cam.item())
        if n_old:
            all_centroids = torch.cat([self.centroids, self.old_centroids])
            y_old = (n_clusters + old_rows[old]).clamp(max=k_total - 1)
            l_old = centroid_contrast(f_old, all_centroids, y_old, c.tau_c, k_total, c.label_smoothing)
            loss = loss + l_old
            logs["loss_old"] = l_old.item()
            if n_old >= 2:
                with torch.no_grad(), ctx.autocast():
                    f_past = self.old_model(normalize_batch(batch["image_weak"][old])).float()
                l_kl = similarity_kl(f_old, ema_feats[n_new:], f_past, c.tau_kl, c.lambda_kl)
                loss = loss + l_kl
                logs["loss_kl"] = l_kl.item()
        ctx.optimize(loss, "main")
        logs["loss"] = loss.item()
        return logs

    # ------------------------------------------------------------------ evaluation
    def _phase_end_epochs(self) -> dict[int, int]:
        ends, total = {}, 0
        for i, (_, n) in enumerate(self.phases()):
            total += n
            ends[total - 1] = i
        return ends

    def reid_metrics(self, ctx) -> dict[str, float]:
        """mAP / CMC per eval domain (EMA, unit features, squared Euclidean), seen/unseen averages."""
        from contrastlab.platform.eval import check_finite, reid_evaluate

        was_training = self.ema.training
        self.ema.eval()
        _, feats, cols = ctx.extract("eval", lambda b: self.ema(normalize_batch(b["image"])))
        self.ema.train(was_training)
        names = list(ctx.meta.get("domain_names", []))
        check_finite(feats, "UCR's EMA eval features")  # below, a ValueError only means "no valid query"
        out: dict[str, float] = {}
        maps = {}
        for d in np.unique(cols["domain"]):
            name = names[d] if d < len(names) else str(d)
            q = (cols["domain"] == d) & (cols["is_query"] == 1)
            g = (cols["domain"] == d) & (cols["is_query"] == 0)
            if not q.any() or not g.any():
                continue
            dist = 2.0 - 2.0 * feats[q] @ feats[g].T
            try:
                r = reid_evaluate(dist, cols["pid"][q], cols["pid"][g], cols["camera"][q], cols["camera"][g])
            except ValueError:
                continue
            maps[name] = r["mAP"]
            out.update({f"mAP_{name}": r["mAP"], f"rank1_{name}": r["rank1"], f"rank5_{name}": r["rank5"], f"rank10_{name}": r["rank10"]})
        seen = [n for n in _names(self.cfg.domains) if n in maps]
        unseen = [n for n in ctx.meta.get("unseen_domains", []) if n in maps]
        for group, members in (("seen", seen), ("unseen", unseen)):
            if members:
                out[f"mAP_{group}"] = float(np.mean([maps[n] for n in members]))
                out[f"rank1_{group}"] = float(np.mean([out[f"rank1_{n}"] for n in members]))
        self._record_table(ctx, names, maps, out)
        return out

    def _record_table(self, ctx, names: list[str], maps: dict, out: dict) -> None:
        """At a phase end, store every domain's mAP in map_table[:, phase]; forgetting per trained domain."""
        n_phases = len(self.phases())
        if self.map_table.shape[0] != len(names):
            self.map_table = torch.full((len(names), n_phases), float("nan"), device=self.map_table.device)
        phase_of_end = self._phase_end_epochs().get(ctx.epoch)
        if phase_of_end is not None:
            for name, m in maps.items():
                self.map_table[names.index(name), phase_of_end] = m
            if ctx.is_main:
                phase = self.phases()[phase_of_end][0]
                ctx.log({f"mAP_{n}_after_{phase}": m for n, m in maps.items()}, prefix="reid_table/")
        current = self._phase_index(ctx.phase)
        phase_names = [p for p, _ in self.phases()]
        forgetting = []
        for name in _names(self.cfg.domains):
            p = phase_names.index(name)
            if p < current and name in maps and name in names and not math.isnan(float(self.map_table[names.index(name), p])):
                f = float(self.map_table[names.index(name), p]) - maps[name]
                out[f"forgetting_{name}"] = f
                forgetting.append(f)
        out["forgetting_mean"] = float(np.mean(forgetting)) if forgetting else 0.0

    def domain_phase_table(self, meta: dict) -> dict[str, dict[str, float]]:
        """{domain: {phase: mAP after that phase}} from the persistent table (NaN rows/cols dropped)."""
        names = list(meta.get("domain_names", []))
        table = {}
        for r, name in enumerate(names[: self.map_table.shape[0]]):
            row = {p: float(self.map_table[r, i]) for i, (p, _) in enumerate(self.phases()) if not math.isnan(float(self.map_table[r, i]))}
            if row:
                table[name] = row
        return table

    def on_epoch_end(self, ctx) -> None:
        """End of a source phase: EMA <- online (before this epoch's evaluation, so it scores the warm
        start; part of the epoch-end checkpoint, so a resume neither redoes nor skips it). Phase-end
        epochs the loop will not evaluate still get their table column."""
        if ctx.epoch in self._phase_end_epochs() and self._is_source(ctx.phase):
            self._sync_ema_to_online()
        every = ctx.exp.train.eval_every_epochs
        last = sum(n for _, n in self.phases()) - 1
        if ctx.epoch in self._phase_end_epochs() and not ((ctx.epoch + 1) % every == 0 or ctx.epoch == last) \
                and getattr(ctx, "has_eval", True):  # a run without evaluation data has no table to fill
            self.eval()
            with torch.no_grad():
                self.reid_metrics(ctx)
            self.train()

    def evaluate(self, eval_batches, ctx) -> dict[str, float]:
        out = self.reid_metrics(ctx)
        out.update(getattr(self, "_last_cluster_logs", {}))
        return out
