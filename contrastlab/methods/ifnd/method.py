"""IFND on the platform: instance-contrastive learning with incremental false-negative detection.

Spec: the method card `ifnd.md`. Two base methods (`variant`):

- "inbatch" (SimCLR / NT-Xent, card g, the default): z = normalize(head(backbone([v1; v2]))),
  loss `ifnd_inbatch_loss` over the global batch (local anchors against gathered candidates).
- "queue" (MoCo-v2, card b/c): q = encoder(v1), k = momentum_encoder(v2), negatives = a FIFO of
  keys stored with their dataset indices (`KeyQueue`), loss `ifnd_queue_loss`; the momentum
  encoder is updated after every optimiser step (`after_optimizer_step`). The key forward uses
  shuffle-BN (card c; `shuffle_bn`, shared with FAME: `contrastlab.methods.momentum`): MoCo's
  cross-worker shuffle under DDP, `bn_splits` shuffled sub-batches with their own BN statistics on
  one worker.

Encoder presets: `hidden_dim`, `proj_dim` and `in_channels` = 0 take the encoder's preset: small
(card g) 1 channel, head 128 -> 128 -> 64; resnet50 (card c, MoCo v2) 3 channels, head
2048 -> 2048 -> 128. ResNet-50's first conv takes RGB, so grey datasets (digits, Fashion-MNIST) are
fed to it as 3 equal channels by the loader (`load_image` repeats a grey channel when 3 are asked for).

False-negative detection (card c), in `on_epoch_start`: at every epoch e >= e_w with
(e - e_w) % cluster_every == 0, embed the whole training set (`ctx.extract("train_eval", ...)`,
eval preprocessing, eval mode; the momentum encoder for "queue", the online encoder for
"inbatch"), cluster it once on rank 0 (hierarchical spherical k-means, `cluster_pass`), broadcast
labels and confidences, and check on every rank that the label digest agrees. The acceptance
rate r_e follows the schedule; between clustering passes (cluster_every > 1) the stored
confidences are re-ranked at the current rate [R: the card only says "cluster every few epochs"].
Pseudo-labels, confidences and acceptance flags are buffers (so checkpoints carry them; a resume
in the middle of epoch e keeps the labels of e's pass instead of re-clustering). Labels of a batch
or queue entry are looked up by dataset index, so the queue always uses the newest clustering.

`strategy="none"` is the base method (no clustering pass at all); with acceptance 0 the IFND
losses return exactly the base loss. True labels are only read by the diagnostics (FN precision
of each pass, evaluation); the training step never sees them (the train preprocessing drops them).

Evaluation (card f): backbone features, L2-normalised: weighted kNN top-1 (k=200, e^{sim/0.07}),
k-means(#classes) ACC/NMI/ARI on the eval split, logistic-regression linear probe (last epoch, or
every `probe_every` epochs), plus the last pass's acceptance and FN precision.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from contrastlab.methods.base import OptimSpec
from contrastlab.methods.ifnd.augment import random_view, to_float
from contrastlab.methods.ifnd.clustering import (
    HIERARCHIES,
    SCHEDULES,
    SCOPES,
    accept,
    acceptance_rate,
    cluster_pass,
    cluster_sizes,
    fn_precision_recall,
    labels_digest,
)
from contrastlab.methods.ifnd.loss import STRATEGIES, ifnd_inbatch_loss, ifnd_queue_loss
from contrastlab.methods.ifnd.model import KeyQueue, MomentumEncoder, resnet50_encoder, small_encoder
from contrastlab.methods.momentum import SHUFFLE_BN_MODES, shuffled_key_forward
from contrastlab.platform import distributed as dist_utils
from contrastlab.platform.data.augment import moco_v2_view, resize, to_chw
from contrastlab.platform.eval.features import extract_features

PL_BUFFERS = ("pl_index", "pl_labels", "pl_confidence", "pl_accepted")
PROBE_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
# What 0 means for in_channels / hidden_dim / proj_dim: card g's small CNN, card c's ResNet-50 (MoCo v2 head).
ENCODER_PRESETS = {"small": {"in_channels": 1, "hidden_dim": 128, "proj_dim": 64},
                   "resnet50": {"in_channels": 3, "hidden_dim": 2048, "proj_dim": 128}}


@dataclass
class IFNDConfig:
    # base method and loss (card b)
    variant: str = "inbatch"  # inbatch (SimCLR NT-Xent, card g) | queue (MoCo-v2 queue with stored indices)
    strategy: str = "elim"  # elim | attr | none (= the base method: no clustering, plain loss)
    temperature: float = 0.2  # [R] MoCo-v2 value
    # networks (card c / g)
    encoder: str = "small"  # small (card-g CNN 1->32->64->128, head 128->128->64) | resnet50 (head 2048->2048->128)
    # 0 = the encoder's preset (ENCODER_PRESETS): small 1 channel, head 128->128->64; resnet50 3 channels, head 2048->2048->128
    in_channels: int = 0  # 1: grey (colour inputs are averaged), 3: RGB (grey inputs are repeated); resnet50 needs 3
    image_size: int = 0  # 0 = the dataset's native size
    hidden_dim: int = 0
    proj_dim: int = 0
    # queue variant
    queue_size: int = 4096  # card: 65,536 ImageNet, 16,384 ImageNet-100; small data: a few epochs' worth
    momentum: float = 0.99  # card c says 0.999 (ImageNet, 200 epochs); 0.99 for runs of a few thousand steps
    shuffle_bn: str = "auto"  # card c: ShuffleBN in the key encoder. auto (ddp with >1 worker, else split) | split | ddp | off
    bn_splits: int = 4  # sub-batches of the single-worker shuffle-BN equivalent ("split")
    # clustering and schedule (card c) -- all [R]
    cluster_counts: tuple[int, ...] = (100, 30, 10)  # card: CIFAR-10 (100, 30, 10), digits (20, 10)
    cluster_multiplier: float = 1.0  # sweep: {0.5, 1, 2, 4} x cluster_counts
    hierarchy: str = "nested"  # nested | independent (PCL-style separate runs)
    acceptance_scope: str = "global"  # global | per_cluster
    schedule: str = "linear"  # linear | step | constant (the non-incremental ablation)
    warmup_fraction: float = 0.2  # e_w = round(fraction x epochs) (card c: 0.1 ImageNet, card g: 0.2 small data)
    warmup_epochs: int = -1  # >= 0 overrides warmup_fraction
    cluster_every: int = 1  # epochs between clustering passes (card i: big data clusters every few epochs)
    reaccept_between_passes: bool = True  # re-rank stored confidences at the new rate on epochs without a pass
    kmeans_iters: int = 20
    kmeans_restarts: int = 3
    kmeans_init: str = "kmeans++"  # kmeans++ | random
    cluster_device: str = "auto"  # auto (the training device of rank 0) | cpu
    # optimisation (card g: Adam 2e-3, wd 1e-5; card e: SGD 0.03 x B/256, wd 1e-4 for ImageNet)
    optimizer: str = "adam"  # adam | sgd
    lr: float = 2e-3
    weight_decay: float = 1e-5
    sgd_momentum: float = 0.9
    warmup_lr_fraction: float = 0.0
    # augmentation
    augmentation: str = "affine"  # affine (card g: rotation, scale, shift, brightness, noise, erasing) | mocov2 (card d)
    hflip: bool = False  # extra horizontal flip for the affine recipe (not in card g; digits must not flip)
    crop_scale_min: float = 0.2  # mocov2 RandomResizedCrop scale
    blur: bool = True  # mocov2 Gaussian blur (card d: off for CIFAR)
    # evaluation (card f)
    knn_k: int = 200
    knn_temperature: float = 0.07
    probe_every: int = 0  # 0: linear probe at the last epoch only; n: also every n epochs
    probe_max_train: int = 10000  # linear probe fits on at most this many (seeded) training features
    eval_kmeans_n_init: int = 10
    eval_threads: int = 1  # BLAS/OpenMP threads for the sklearn metrics (oversubscribed BLAS made a 1k-sample probe take minutes); 0 = library default

    def channels(self) -> int:
        """Input channels: `in_channels`, or the encoder's preset when 0."""
        return self.in_channels or ENCODER_PRESETS[self.encoder]["in_channels"]

    def dims(self) -> tuple[int, int]:
        """(hidden_dim, proj_dim) of the projection head: the configured values, or the encoder's preset where 0."""
        preset = ENCODER_PRESETS[self.encoder]
        return self.hidden_dim or preset["hidden_dim"], self.proj_dim or preset["proj_dim"]

    def ks(self) -> tuple[int, ...]:
        return tuple(max(1, int(round(k * self.cluster_multiplier))) for k in self.cluster_counts)

    def validate(self) -> None:
        choices = {"variant": ("inbatch", "queue"), "strategy": STRATEGIES + ("none",), "encoder": ("small", "resnet50"),
                   "hierarchy": HIERARCHIES, "acceptance_scope": SCOPES, "schedule": SCHEDULES, "optimizer": ("adam", "sgd"),
                   "augmentation": ("affine", "mocov2"), "kmeans_init": ("kmeans++", "random"), "cluster_device": ("auto", "cpu")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"method.{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        if self.in_channels not in (0, 1, 3):
            raise ValueError(f"method.in_channels must be 0 (the encoder's preset), 1 or 3, got {self.in_channels}")
        if self.encoder == "resnet50" and self.channels() != 3:
            raise ValueError(f"method.encoder=resnet50 needs method.in_channels=3 (its first conv takes RGB; grey images are "
                             f"repeated to 3 channels when loaded), got in_channels={self.in_channels}; use 3 or 0 (the preset)")
        if self.hidden_dim < 0 or self.proj_dim < 0:
            raise ValueError(f"method.hidden_dim and method.proj_dim must be >= 0 (0 = the encoder's preset), got {self.hidden_dim}, {self.proj_dim}")
        if self.shuffle_bn not in SHUFFLE_BN_MODES:
            raise ValueError(f"method.shuffle_bn must be one of {list(SHUFFLE_BN_MODES)}, got {self.shuffle_bn!r}")
        if self.bn_splits < 1:
            raise ValueError(f"method.bn_splits must be >= 1, got {self.bn_splits}")
        if self.temperature <= 0:
            raise ValueError(f"method.temperature must be > 0, got {self.temperature}")
        if not self.cluster_counts or any(int(k) < 1 for k in self.cluster_counts):
            raise ValueError(f"method.cluster_counts must be positive cluster counts, got {self.cluster_counts}")
        if self.cluster_multiplier <= 0:
            raise ValueError(f"method.cluster_multiplier must be > 0, got {self.cluster_multiplier}")
        ks = self.ks()
        if self.hierarchy == "nested" and any(b > a for a, b in zip(ks, ks[1:])):
            raise ValueError(f"method.hierarchy=nested needs non-increasing cluster counts, got {ks}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"method.warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.cluster_every < 1:
            raise ValueError(f"method.cluster_every must be >= 1, got {self.cluster_every}")
        if self.queue_size < 1 or not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"method.queue_size must be >= 1 and momentum in [0, 1), got {self.queue_size}, {self.momentum}")
        if not 0 < self.crop_scale_min <= 1:
            raise ValueError(f"method.crop_scale_min must lie in (0, 1], got {self.crop_scale_min}")


# --------------------------------------------------------------------------- CPU preprocessing
def image_member(meta: dict) -> str:
    """The image member of the dataset's samples: "png" for digits (meta image_format), else "jpg"."""
    fmt = (meta or {}).get("image_format", "jpg")
    return fmt if fmt in ("jpg", "png") else "jpg"


def load_image(sample: dict, member: str, channels: int, size: int) -> np.ndarray:
    """Decoded member -> uint8 HxWxC with C = `channels` (grey from the channel mean), resized to `size`."""
    img = np.asarray(sample[member])
    if img.ndim == 2:
        img = img[:, :, None]
    if img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    if channels == 1 and img.shape[2] != 1:
        img = np.rint(img[:, :, :3].astype(np.float32).mean(axis=2, keepdims=True)).astype(np.uint8)
    elif channels == 3 and img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    if size and img.shape[:2] != (size, size):
        img = resize(img, size)
    return np.ascontiguousarray(img)


def make_sample_fn(cfg: IFNDConfig, split: str, meta: dict):
    member = image_member(meta)

    def train_fn(sample: dict, rng: np.random.Generator) -> dict:
        img = load_image(sample, member, cfg.channels(), cfg.image_size)
        views = []
        for _ in range(2):
            if cfg.augmentation == "affine":
                v = random_view(to_float(img[None]), rng)[0]  # float32 (C, H, W)
                if cfg.hflip and rng.random() < 0.5:
                    v = np.ascontiguousarray(v[:, :, ::-1])
            else:
                v = to_chw(moco_v2_view(img, img.shape[0], rng, crop_scale=(cfg.crop_scale_min, 1.0), blur=cfg.blur))
            views.append(v)
        return {"view1": views[0], "view2": views[1]}  # no label: training never reads it

    def eval_fn(sample: dict, rng: np.random.Generator) -> dict:
        label = (sample.get("json") or {}).get("label", -1)
        return {"image": to_chw(load_image(sample, member, cfg.channels(), cfg.image_size)),
                "label": np.int64(label if isinstance(label, (int, np.integer)) else -1)}

    return (train_fn if split == "train" else eval_fn), (member,)


def _to_input(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [0, 1]; augmented float views pass through (card g: no mean/std)."""
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


# --------------------------------------------------------------------------- the method
class IFND(nn.Module):
    Config = IFNDConfig
    name = "ifnd"
    modality = "image"
    default_dataset = "fashion-mnist"
    dataset_splits = {"train": "train", "eval": "test"}
    eval_metric = "knn_top1"  # card e: kNN top-1 per epoch; the linear probe comes at the end
    eval_mode = "max"
    needs_train_features = True
    train_defaults = {"batch_size": 256, "epochs": 60, "log_every_steps": 10}
    # --smoke: 2 trials x 2 epochs on 1,000 images; warm-up rounds to 0 epochs, so both epochs cluster.
    smoke_overrides = {"train.epochs": 2, "train.batch_size": 128, "data.embedded_params": "{n_train: 1000, n_test: 500}"}

    def __init__(self, cfg: IFNDConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        hidden_dim, proj_dim = cfg.dims()
        if cfg.encoder == "small":
            self.encoder = small_encoder(cfg.channels(), hidden_dim=hidden_dim, proj_dim=proj_dim)
        else:
            self.encoder = resnet50_encoder(hidden_dim, proj_dim)
        self.momentum_encoder = MomentumEncoder(self.encoder, cfg.momentum) if cfg.variant == "queue" else None
        self.queue = KeyQueue(cfg.queue_size, proj_dim) if cfg.variant == "queue" else None
        m = len(cfg.cluster_counts)
        # Pseudo-labels of the last pass, compact: sorted dataset indices (N,) and (M, N) tables.
        # N is only known after the first pass, so loading resizes them (_load_from_state_dict).
        self.register_buffer("pl_index", torch.zeros(0, dtype=torch.long))
        self.register_buffer("pl_labels", torch.zeros(m, 0, dtype=torch.long))
        self.register_buffer("pl_confidence", torch.zeros(m, 0))
        self.register_buffer("pl_accepted", torch.zeros(m, 0, dtype=torch.bool))
        self.register_buffer("pl_epoch", torch.tensor(-1, dtype=torch.long))  # epoch of the last clustering pass
        self.register_buffer("pl_rate", torch.tensor(0.0))  # acceptance rate of the current flags
        self._active = False  # any label accepted (cached so train_step needs no host sync)
        self.pass_stats: dict[str, float] = {}  # diagnostics of the last pass (logged, returned by evaluate)

    # ---- contract
    @staticmethod
    def make_preprocess(cfg: IFNDConfig, split: str, meta: dict):
        return make_sample_fn(cfg, split, meta)

    def trainable(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder}  # the momentum encoder is an EMA copy, never stepped or synced

    def optimizers(self) -> dict[str, OptimSpec]:
        c = self.cfg
        return {"main": OptimSpec(["encoder"], c.optimizer, lr=c.lr, weight_decay=c.weight_decay, momentum=c.sgd_momentum,
                                  warmup_fraction=c.warmup_lr_fraction)}

    @staticmethod
    def search_space(cfg: IFNDConfig | None = None) -> dict:
        """Card e: tau, warm-up fraction, schedule, cluster-count multiplier, strategy, lr x [0.3, 3]."""
        from ray import tune

        lr = (cfg or IFNDConfig()).lr
        return {
            "method.temperature": tune.choice([0.1, 0.2, 0.3, 0.5]),
            "method.warmup_fraction": tune.uniform(0.05, 0.3),
            "method.schedule": tune.choice(list(SCHEDULES)),
            "method.cluster_multiplier": tune.choice([0.5, 1.0, 2.0, 4.0]),
            "method.strategy": tune.choice(list(STRATEGIES)),
            "method.lr": tune.loguniform(0.3 * lr, 3.0 * lr),
        }

    # ---- pseudo-label state
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        for name in PL_BUFFERS:  # sizes depend on the dataset: take the checkpoint's
            key = prefix + name
            if key in state_dict:
                cur = getattr(self, name)
                setattr(self, name, torch.empty(state_dict[key].shape, dtype=cur.dtype, device=cur.device))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
        self._active = bool(self.pl_accepted.any())

    def set_pseudo_labels(self, index, labels, confidence, accepted, epoch: int, rate: float) -> None:
        """Install one pass's tables (index (N,) sorted ascending; labels/confidence/accepted (M, N))."""
        dev = self.pl_index.device
        index = torch.as_tensor(np.asarray(index), dtype=torch.long, device=dev)
        if index.numel() > 1 and not bool((index[1:] > index[:-1]).all()):
            raise ValueError("pseudo-label index must be sorted and unique")
        self.pl_index = index
        self.pl_labels = torch.as_tensor(np.asarray(labels), dtype=torch.long, device=dev)
        self.pl_confidence = torch.as_tensor(np.asarray(confidence), dtype=torch.float32, device=dev)
        self.pl_accepted = torch.as_tensor(np.asarray(accepted), dtype=torch.bool, device=dev)
        self.pl_epoch.fill_(int(epoch))
        self.pl_rate.fill_(float(rate))
        self._active = bool(self.pl_accepted.any())

    def reaccept(self, rate: float) -> None:
        """Acceptance flags of the stored pass at a new rate (same confidences, same ranking)."""
        if self.pl_index.numel():
            self.pl_accepted = accept(self.pl_confidence, rate, self.cfg.acceptance_scope, self.pl_labels)
        self.pl_rate.fill_(float(rate))
        self._active = bool(self.pl_accepted.any())

    def lookup(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, n) labels and flags of dataset ids `indices`; ids not in the last pass (or -1) are never FN."""
        idx = indices.to(device=self.pl_index.device, dtype=torch.long)
        m, n = self.pl_labels.shape
        if n == 0:
            return (torch.full((m, len(idx)), -1, dtype=torch.long, device=idx.device),
                    torch.zeros((m, len(idx)), dtype=torch.bool, device=idx.device))
        pos = torch.searchsorted(self.pl_index, idx).clamp(max=n - 1)
        found = self.pl_index[pos] == idx
        labels = torch.where(found, self.pl_labels[:, pos], torch.full_like(self.pl_labels[:, pos], -1))
        return labels, self.pl_accepted[:, pos] & found

    def total_epochs(self, ctx) -> int:
        phases = getattr(self, "phases", None)
        return sum(n for _, n in phases()) if callable(phases) else int(ctx.exp.train.epochs)

    def warmup_epochs(self, epochs: int) -> int:
        c = self.cfg
        ew = c.warmup_epochs if c.warmup_epochs >= 0 else int(round(c.warmup_fraction * epochs))
        return max(0, min(ew, epochs - 1))

    def is_cluster_epoch(self, epoch: int, epochs: int) -> bool:
        ew = self.warmup_epochs(epochs)
        return epoch >= ew and (epoch - ew) % self.cfg.cluster_every == 0

    # ---- clustering pass
    @torch.no_grad()
    def cluster_embed(self, batch: dict) -> torch.Tensor:
        """What is clustered: the normalised projection of the momentum (queue) or online (inbatch) encoder."""
        enc = self.momentum_encoder.encoder if self.momentum_encoder is not None else self.encoder
        return enc(_to_input(batch["image"]))

    def on_epoch_start(self, ctx) -> None:
        if self.cfg.strategy == "none":
            return
        epochs, epoch = self.total_epochs(ctx), ctx.epoch
        rate = acceptance_rate(epoch, epochs, self.warmup_epochs(epochs), self.cfg.schedule)
        if int(self.pl_epoch) == epoch:
            return  # resumed inside this epoch: keep the labels of its pass, do not re-cluster
        if self.is_cluster_epoch(epoch, epochs):
            self.clustering_pass(ctx, rate)
        elif self.cfg.reaccept_between_passes and float(self.pl_rate) != rate:
            self.reaccept(rate)

    def clustering_pass(self, ctx, rate: float) -> dict:
        """Embed the training set, cluster on rank 0, broadcast, install; returns the pass statistics."""
        c = self.cfg
        was_training = self.training
        self.eval()
        idx, feats, cols = ctx.extract("train_eval", self.cluster_embed)
        self.train(was_training)
        payload = None
        if ctx.rank == 0:
            device = ctx.device if c.cluster_device == "auto" else torch.device("cpu")
            pl = cluster_pass(torch.from_numpy(np.ascontiguousarray(feats)).to(device), c.ks(), rate, c.hierarchy,
                              c.acceptance_scope, seed=int(ctx.exp.run.seed) * 100003 + int(ctx.epoch), iters=c.kmeans_iters,
                              restarts=c.kmeans_restarts, init=c.kmeans_init)
            payload = (idx, pl.labels.cpu().numpy(), pl.confidence.cpu().numpy(), pl.accepted.cpu().numpy())
        idx, labels, conf, accepted = dist_utils.broadcast_object(payload)
        self.set_pseudo_labels(idx, labels, conf, accepted, ctx.epoch, rate)
        digests = dist_utils.gather_objects(labels_digest(self.pl_index, self.pl_labels, self.pl_accepted))
        if len(set(digests)) != 1:
            raise RuntimeError(f"IFND pseudo-labels differ across ranks after broadcast (digests {digests})")
        self.pass_stats = self.pass_statistics(labels, accepted, cols.get("label"), rate)
        self.pass_stats["cluster_epoch"] = float(ctx.epoch)
        if ctx.is_main:
            ctx.log(self.pass_stats, prefix="ifnd/")
        return self.pass_stats

    def pass_statistics(self, labels: np.ndarray, accepted: np.ndarray, true_labels: np.ndarray | None, rate: float) -> dict:
        """Acceptance rate, #accepted, cluster-size summary and (diagnostic only) FN precision/recall per level."""
        labels, accepted = np.asarray(labels), np.asarray(accepted)
        stats = {"acceptance_rate": float(rate), "n_accepted": float(accepted[0].sum()) if len(accepted) else 0.0}
        known = true_labels is not None and len(true_labels) == labels.shape[1] and (np.asarray(true_labels) >= 0).all()
        for m in range(labels.shape[0]):
            sizes = cluster_sizes(torch.from_numpy(labels[m]), self.cfg.ks()[m]).numpy()
            stats[f"l{m + 1}_clusters_nonempty"] = float((sizes > 0).sum())
            stats[f"l{m + 1}_cluster_size_max"] = float(sizes.max()) if len(sizes) else 0.0
            stats[f"l{m + 1}_cluster_size_median"] = float(np.median(sizes[sizes > 0])) if (sizes > 0).any() else 0.0
            if known and accepted[m].any():
                p, r = fn_precision_recall(labels[m], accepted[m], true_labels)
                stats[f"fn_precision_l{m + 1}"], stats[f"fn_recall_l{m + 1}"] = p, r
        if "fn_precision_l1" in stats:
            stats["fn_precision"] = stats["fn_precision_l1"]
        return stats

    # ---- training
    def train_step(self, batch: dict, ctx) -> dict[str, float]:
        c = self.cfg
        v1, v2, idx = _to_input(batch["view1"]), _to_input(batch["view2"]), batch["index"]
        use_labels = c.strategy != "none" and self._active
        strategy = "elim" if c.strategy == "none" else c.strategy
        logs: dict[str, float] = {}
        if use_labels:
            a_lab, a_acc = self.lookup(idx)
            logs["accepted_fraction"] = float(a_acc[0].float().mean())
        else:
            a_lab = a_acc = None
        if c.variant == "inbatch":
            with ctx.autocast():
                z = self.encoder(torch.cat([v1, v2]))
            gl = lambda x: ctx.gather(x.long(), grad=False).to(x.dtype)  # noqa: E731 - bool all-gather via int64
            loss = ifnd_inbatch_loss(z, a_lab, a_acc, strategy, c.temperature, gather=ctx.gather, gather_labels=gl, rank=ctx.rank)
            ctx.optimize(loss, "main")
        else:
            with ctx.autocast():
                q = self.encoder(v1)
                k = self.keys(v2, ctx)
            q_lab, q_acc = self.lookup(self.queue.indices) if use_labels else (None, None)
            loss = ifnd_queue_loss(q, k, self.queue.keys.clone(), a_lab, a_acc, q_lab, q_acc, strategy, c.temperature)
            ctx.optimize(loss, "main")
            self.queue.enqueue(ctx.gather(k.float(), grad=False), ctx.gather(idx.long(), grad=False))
        logs["loss"] = float(loss.detach())
        return logs

    def keys(self, x: torch.Tensor, ctx) -> torch.Tensor:
        """Normalised keys of the momentum encoder (no gradient) with shuffle-BN (`cfg.shuffle_bn`, card c)."""
        return shuffled_key_forward(self.momentum_encoder.encoder, x, self.cfg.shuffle_bn, ctx.world_size, self.cfg.bn_splits)

    def after_optimizer_step(self, name: str, ctx) -> None:
        if self.momentum_encoder is not None:
            self.momentum_encoder.update(self.encoder)

    # ---- evaluation
    @torch.no_grad()
    def backbone_features(self, batch: dict) -> torch.Tensor:
        """Evaluation features: the backbone output (before the projection head) of the eval view."""
        return self.encoder.features(_to_input(batch["image"]))

    def evaluate(self, eval_batches, ctx) -> dict[str, float]:
        c = self.cfg
        tr_idx, tr_x, tr_cols = ctx.extract("train_eval", self.backbone_features)
        tr_y = tr_cols.get("label", np.full(len(tr_idx), -1))
        _, te_x, te_cols = extract_features(eval_batches, self.backbone_features)
        te_y = te_cols.get("label", np.full(len(te_x), -1))
        out: dict[str, float] = {}
        epochs = self.total_epochs(ctx)
        do_probe = ctx.epoch + 1 >= epochs or (c.probe_every and (ctx.epoch + 1) % c.probe_every == 0)
        if ctx.rank == 0 and len(te_x) and len(tr_x) and (tr_y >= 0).all() and (te_y >= 0).all():
            out = evaluate_features(tr_x, tr_y, te_x, te_y, n_classes=len(ctx.meta.get("classes", [])) or None,
                                    knn_k=c.knn_k, knn_temperature=c.knn_temperature, probe=bool(do_probe),
                                    probe_max_train=c.probe_max_train, kmeans_n_init=c.eval_kmeans_n_init, seed=int(ctx.exp.run.seed),
                                    threads=c.eval_threads)
        out = dist_utils.broadcast_object(out)
        for k in ("acceptance_rate", "n_accepted", "fn_precision", "cluster_epoch"):
            if k in self.pass_stats:
                out[k] = float(self.pass_stats[k])
        for k, v in self.pass_stats.items():
            if k.startswith("fn_precision_l") or k.startswith("fn_recall_l"):
                out[k] = float(v)
        return out


def evaluate_features(train_x, train_y, test_x, test_y, *, n_classes: int | None = None, knn_k: int = 200, knn_temperature: float = 0.07,
                      probe: bool = True, probe_max_train: int = 10000, kmeans_n_init: int = 10, seed: int = 0,
                      threads: int = 1) -> dict[str, float]:
    """Card f on frozen features: kNN top-1, k-means(#classes) ACC/NMI/ARI on the test features, linear probe.

    Features are L2-normalised first (kNN is cosine anyway; k-means then clusters directions).
    Shared with the Fashion-MNIST benchmark so every arm is scored by the same code. `threads`
    caps BLAS/OpenMP threads while it runs (0 = no cap).
    """
    import contextlib

    from threadpoolctl import threadpool_limits

    with threadpool_limits(threads) if threads > 0 else contextlib.nullcontext():
        return _evaluate_features(train_x, train_y, test_x, test_y, n_classes, knn_k, knn_temperature, probe, probe_max_train,
                                  kmeans_n_init, seed)


def _evaluate_features(train_x, train_y, test_x, test_y, n_classes, knn_k, knn_temperature, probe, probe_max_train, kmeans_n_init, seed):
    from sklearn.cluster import KMeans

    from contrastlab.platform.eval import ari, clustering_accuracy, knn_accuracy, linear_probe, nmi

    def unit(x):
        x = np.asarray(x, dtype=np.float32)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    train_x, test_x = unit(train_x), unit(test_x)
    train_y, test_y = np.asarray(train_y, dtype=np.int64), np.asarray(test_y, dtype=np.int64)
    k = n_classes or len(np.unique(train_y))
    out = {"knn_top1": knn_accuracy(train_x, train_y, test_x, test_y, k=knn_k, temperature=knn_temperature)}
    pred = KMeans(k, n_init=kmeans_n_init, random_state=seed).fit_predict(test_x)
    out.update(kmeans_acc=clustering_accuracy(test_y, pred), kmeans_nmi=nmi(test_y, pred), kmeans_ari=ari(test_y, pred))
    if probe:
        sel = np.arange(len(train_y))
        if len(sel) > probe_max_train:
            sel = np.sort(np.random.default_rng(seed).choice(len(sel), probe_max_train, replace=False))
        out["linear_probe"] = float(linear_probe(train_x[sel], train_y[sel], test_x, test_y, grid=PROBE_GRID, seed=seed)["accuracy"])
    return out
