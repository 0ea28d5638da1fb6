"""FAME on the platform: MoCo on video clips whose query clip is foreground-background merged.

Spec: the method card `fame.md`. One step on a local batch of B videos, two uint8 clips each:

    c1, c2 = clip_q, clip_k in [0, 1]                 (crop + flip already applied in the sample fn)
    x_q = aug(FAME(c1)),  x_k = aug(c2)               (FAME: mask + merge onto a shuffled partner's background)
    L = 1/2 [ l(f_q(x_q), f_k(x_k)) + l(f_q(x_k), f_k(x_q)) ]
    l(q, k) = CE([q.k, q.Q] / T, 0),  k = shuffle-BN key forward under no_grad

Queue order (`enqueue_order`, card b): the official builder runs forward_once(im_q, im_k) and then
forward_once(im_k, im_q, update=False), each ending in `_dequeue_and_enqueue(k)`; so with the default
"per_term" term 1's all-gathered keys (`ctx.gather(k1, grad=False)`) are pushed BEFORE term 2's logits
are formed, i.e. term 2's negatives already hold term 1's keys (including f_k(x_k) of its own video,
the key of the very clip its query encodes: an official quirk), then term 2's keys are pushed.
"after_both" (a deviation, the common symmetric-MoCo recipe) scores both terms against the same
snapshot and pushes both key sets afterwards. Either way 2 B_global keys per step, in the order
[k1 of all workers, k2 of all workers]. After the optimiser step the key encoder moves by
theta_k <- m theta_k + (1 - m) theta_q (`after_optimizer_step`; the update the official code does
before the first term of the next step, so the order of operations is the same).

Shuffle-BN (shared with IFND: `contrastlab.methods.momentum.shuffled_key_forward`): across DDP workers
MoCo's gather-shuffle-scatter; on a single worker (`shuffle_bn="auto"` with one worker, or "split") the
key batch is shuffled and run as `bn_splits` sub-batches with their own BN statistics: a shuffle alone
would not change the statistics of one BN over the whole batch. "off" = plain forward.

Evaluation (debiased test split): frozen backbone features (mean over `eval_clips` clips), a
logistic-regression probe fit on the (background-biased) training split, top-1 on the test split
(probe features = mean of the raw pooled clip features: a linear classifier's logits averaged over
clips, card f, equal the classifier applied to that mean); test -> train class retrieval R@1/5/10 on
the mean of the per-clip L2-normalised pooled features (official `main_retrieve`: fc replaced by
Normalize, then the mean over clips), with per-set centring; and, when the data has `bg_id`, a
probe for the background family (lower = less background in the features). Diagnostic: a probe fit
and scored within the test split (even / odd indices), i.e. whether the class is in the features at all.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from contrastlab.methods.base import OptimSpec
from contrastlab.methods.fame.augment import IMAGENET_MEAN, IMAGENET_STD, ClipColourAugment, normalize_clips, uint8_clips_to_float
from contrastlab.methods.fame.data import make_sample_fn
from contrastlab.methods.fame.evaluation import class_retrieval_recall, gather_features, mean_of_unit_features
from contrastlab.methods.fame.mask import fame, gaussian_kernel_size
from contrastlab.methods.fame.model import BACKBONES, VideoEncoder
from contrastlab.methods.fame.moco import KeyQueue, moco_loss, momentum_update_
from contrastlab.methods.momentum import SHUFFLE_BN_MODES, shuffled_key_forward

ENQUEUE_ORDERS = ("per_term", "after_both")


@dataclass
class FAMEConfig:
    # encoder (card c; CPU default = the small-scale version of card g)
    backbone: str = "small"  # small | r2plus1d_18 | r3d_18
    embed_dim: int = 32  # card g: 32 for the small CNN; official 128
    head_hidden: int = 0  # 0 = the backbone width (official)
    # MoCo (card b/c; official K=65,536 K400 / 2,048 UCF101, m=0.999)
    queue_size: int = 1024
    momentum: float = 0.99  # card g small-scale value; official 0.999
    temperature: float = 0.1
    shuffle_bn: str = "auto"  # auto | split | ddp | off (contrastlab/methods/momentum.py)
    bn_splits: int = 4  # sub-batches of the single-worker shuffle-BN equivalent
    # card b / official builder: "per_term" = each symmetric term enqueues its (gathered) keys right after
    # its logits, so term 2's negatives already hold term 1's keys. "after_both" is a DEVIATION (the usual
    # symmetric-MoCo recipe, not FAME's): both terms against the same queue snapshot, both enqueued after.
    enqueue_order: str = "per_term"
    # FAME (card b)
    use_fame: bool = True  # False = the MoCo baseline
    beta: float = 0.5  # fraction of pixels kept as foreground
    fg_seed: float = 0.5
    bg_seed: float = 0.1
    hue_quirk: bool = True  # official double 2pi on the radian hue
    # clips (card d; CPU default = card g: 8 frames, crop 32, scale (0.5, 1))
    clip_len: int = 8
    frame_stride: int = 2
    crop_size: int = 32
    crop_scale_min: float = 0.5  # official 0.2
    flip_prob: float = 0.5
    eval_clips: int = 2  # official 10 uniformly spaced clips
    eval_resize_ratio: float = 128 / 112
    # Retrieval input normalisation. Official main_retrieve normalises with the ImageNet mean/std although
    # pretraining used the Kinetics statistics of card d (a quirk). Default False: retrieval uses the same
    # Kinetics statistics as training and the probe, so one forward pass serves both; True reproduces the
    # quirk (a second forward per eval clip). The two differ by < 0.06 in mean and < 0.01 in std.
    retrieval_imagenet_norm: bool = False
    decode_cache: int = 0  # >0: keep that many decoded videos per sample-fn copy (tiny data, one process)
    # GPU-side colour augmentation (card d)
    colour_aug: bool = True
    blur_sigma_once: bool = True  # official quirk: sigma ~ U(0.1, 2) drawn once at start-up
    # optimiser (card e: SGD momentum 0.9, wd 1e-4, cosine)
    lr: float = 0.03
    weight_decay: float = 1e-4
    sgd_momentum: float = 0.9
    # evaluation
    probe_bg: bool = True  # also probe the background family (synthetic data with bg_id)
    probe_max_iter: int = 500
    image_strip: int = 4  # clips in the TensorBoard clip/mask/merged strip per epoch; 0 = off

    def validate(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"method.backbone must be one of {BACKBONES}, got {self.backbone!r}")
        for name in ("beta", "fg_seed", "bg_seed"):
            v = getattr(self, name)
            if not 0 < v < 1:
                raise ValueError(f"method.{name} must lie in (0, 1), got {v}")
        if self.fg_seed + self.bg_seed > 1:
            raise ValueError(f"method.fg_seed + method.bg_seed must be <= 1 (disjoint seeds), got {self.fg_seed} + {self.bg_seed}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"method.momentum must lie in [0, 1), got {self.momentum}")
        if self.temperature <= 0:
            raise ValueError(f"method.temperature must be > 0, got {self.temperature}")
        if self.queue_size < 1:
            raise ValueError(f"method.queue_size must be >= 1, got {self.queue_size}")
        if self.shuffle_bn not in SHUFFLE_BN_MODES:
            raise ValueError(f"method.shuffle_bn must be one of {SHUFFLE_BN_MODES}, got {self.shuffle_bn!r}")
        if self.enqueue_order not in ENQUEUE_ORDERS:
            raise ValueError(f"method.enqueue_order must be one of {ENQUEUE_ORDERS}, got {self.enqueue_order!r}")
        if self.clip_len < 2 or self.frame_stride < 1:
            raise ValueError(f"method.clip_len must be >= 2 (FAME needs frame differences) and frame_stride >= 1, got {self.clip_len}, {self.frame_stride}")
        if self.crop_size < 8 or self.eval_clips < 1:
            raise ValueError(f"method.crop_size must be >= 8 and eval_clips >= 1, got {self.crop_size}, {self.eval_clips}")
        if not 0 < self.crop_scale_min <= 1:
            raise ValueError(f"method.crop_scale_min must lie in (0, 1], got {self.crop_scale_min}")


class FAME(nn.Module):
    Config = FAMEConfig
    name = "fame"
    modality = "video"
    default_dataset = "moving-shapes"
    dataset_splits = {"train": "train", "eval": "test"}  # test = background decorrelated from class
    eval_metric = "probe_top1"
    eval_mode = "max"
    needs_train_features = True  # probe-train / retrieval gallery = the training split
    train_defaults = {"batch_size": 32, "epochs": 30, "log_every_steps": 10}
    # --smoke: 2 trials x 2 epochs of 6 steps on 192 tiny videos (+ 96 test videos; every epoch also decodes
    # the 288 videos for evaluation). Measured in-process (run_local) on the shared 2-core machine at load
    # 18-20: 240 videos x 3 epochs took 104-164 s per run, so 2 smoke trials fit in 5 minutes.
    smoke_overrides = {"train.epochs": 2, "data.embedded_params": "{n_train: 192, n_test: 96}"}

    def __init__(self, cfg: FAMEConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        hidden = cfg.head_hidden or None
        self.encoder_q = VideoEncoder(cfg.backbone, cfg.embed_dim, hidden)
        self.encoder_k = copy.deepcopy(self.encoder_q)
        for p in self.encoder_k.parameters():
            p.requires_grad_(False)
        self.queue = KeyQueue(cfg.embed_dim, cfg.queue_size)
        kernel = gaussian_kernel_size(cfg.crop_size)
        self.colour_aug = ClipColourAugment(kernel, blur_sigma_once=cfg.blur_sigma_once) if cfg.colour_aug else None
        self._strip: np.ndarray | None = None
        self._want_strip = True

    # ---- contract
    @staticmethod
    def make_preprocess(cfg: FAMEConfig, split: str, meta: dict):
        return make_sample_fn(cfg, split), ("mp4",)

    def trainable(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder_q}

    def optimizers(self) -> dict[str, OptimSpec]:
        c = self.cfg  # MoCo decays every parameter (no 1-D exemption)
        return {"main": OptimSpec(["encoder"], "sgd", lr=c.lr, weight_decay=c.weight_decay, momentum=c.sgd_momentum, no_decay_1d=False)}

    @staticmethod
    def search_space(cfg=None) -> dict:
        """Card e. Queue sizes: {1024 .. 65536} that divide by 2 x the default batch (all powers of two do)."""
        from ray import tune

        return {
            "method.beta": tune.choice([0.3, 0.4, 0.5, 0.6, 0.7]),
            "method.temperature": tune.uniform(0.05, 0.2),
            "method.lr": tune.loguniform(0.003, 0.05),
            "method.queue_size": tune.choice([1024, 2048, 4096, 8192, 16384, 32768, 65536]),
            "method.fg_seed": tune.choice([0.3, 0.5]),
            "method.bg_seed": tune.choice([0.05, 0.1, 0.2]),
            "method.momentum": tune.choice([0.99, 0.996, 0.999]),
        }

    # ---- maths
    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        return self.colour_aug(x) if self.colour_aug is not None else normalize_clips(x)

    def _keys(self, x: torch.Tensor, ctx) -> torch.Tensor:
        return shuffled_key_forward(self.encoder_k, x, self.cfg.shuffle_bn, ctx.world_size, self.cfg.bn_splits)

    def query_input(self, clip_q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """[0, 1] clip -> (FAME-merged clip or the clip itself, mask, permutation)."""
        c = self.cfg
        if not c.use_fame:
            return clip_q, None, None
        return fame(clip_q, c.beta, c.fg_seed, c.bg_seed, gaussian_kernel_size(clip_q.shape[-1]), c.hue_quirk)

    def train_step(self, batch: dict, ctx) -> dict[str, float]:
        c = self.cfg
        c1, c2 = uint8_clips_to_float(batch["clip_q"]), uint8_clips_to_float(batch["clip_k"])
        merged, mask, perm = self.query_input(c1)
        if self._want_strip and c.image_strip and ctx.is_main:
            self._strip = image_strip(c1, mask, merged, c.image_strip)
            self._want_strip = False
        x_q, x_k = self._augment(merged), self._augment(c2)
        with ctx.autocast():
            q1, q2 = self.encoder_q(x_q), self.encoder_q(x_k)  # two calls: per-view BN, as the official model
            k1, k2 = self._keys(x_k, ctx), self._keys(x_q, ctx)
        q1, q2, k1, k2 = q1.float(), q2.float(), k1.float(), k2.float()
        # Each term reads a clone of the queue, so a later in-place enqueue never touches a built graph.
        # Keys are all-gathered without gradient (identical queue on every rank) before they are enqueued.
        loss1 = moco_loss(q1, k1, self.queue.queue.clone(), c.temperature)
        if c.enqueue_order == "per_term":  # official: term 2's negatives include term 1's keys
            self.queue.enqueue(ctx.gather(k1, grad=False))
            loss2 = moco_loss(q2, k2, self.queue.queue.clone(), c.temperature)
            self.queue.enqueue(ctx.gather(k2, grad=False))
        else:  # "after_both" (deviation): both terms against the same snapshot
            loss2 = moco_loss(q2, k2, self.queue.queue.clone(), c.temperature)
            self.queue.enqueue(ctx.gather(k1, grad=False))
            self.queue.enqueue(ctx.gather(k2, grad=False))
        loss = 0.5 * (loss1 + loss2)
        ctx.optimize(loss, "main")
        logs = {"loss": float(loss.detach()), "loss_fame_q": float(loss1.detach()), "loss_raw_q": float(loss2.detach()),
                "pos_cosine": float((q1 * k1).sum(1).mean().detach())}
        if perm is not None:
            logs["fame_fixed_points"] = float((perm == torch.arange(len(perm), device=perm.device)).sum())
        return logs

    # ---- hooks
    def after_optimizer_step(self, name: str, ctx) -> None:
        momentum_update_(self.encoder_k, self.encoder_q, self.cfg.momentum)

    def on_epoch_start(self, ctx) -> None:
        self._want_strip = True

    def on_epoch_end(self, ctx) -> None:
        if self._strip is not None and ctx.is_main:
            ctx.log_images("fame/clip_mask_merged", self._strip)
        self._strip = None

    # ---- evaluation
    @torch.no_grad()
    def _per_clip_features(self, clips_uint8: torch.Tensor, imagenet_norm: bool = False) -> torch.Tensor:
        """(B, n, 3, T, H, W) uint8 -> (B, n, D) pooled backbone features of each clip."""
        b, n = clips_uint8.shape[:2]
        x = uint8_clips_to_float(clips_uint8.flatten(0, 1))
        x = normalize_clips(x, IMAGENET_MEAN, IMAGENET_STD) if imagenet_norm else normalize_clips(x)
        return self.encoder_q.features(x).float().view(b, n, -1)

    @torch.no_grad()
    def clip_features(self, clips_uint8: torch.Tensor, retrieval: bool = False) -> torch.Tensor:
        """(B, n, 3, T, H, W) uint8 -> (B, D) video features from the pooled backbone output of its n clips.

        retrieval=False (probe): the mean of the raw per-clip features (averaging a linear probe's logits
        over clips, card f, equals the probe applied to this mean). retrieval=True (card f, official
        main_retrieve with fc replaced by Normalize): each clip feature is L2-normalised BEFORE the mean,
        so a clip with a large activation norm cannot dominate the video feature; input statistics per
        `retrieval_imagenet_norm`. Centring and the final normalisation happen in `class_retrieval_recall`.
        """
        if retrieval:
            return mean_of_unit_features(self._per_clip_features(clips_uint8, self.cfg.retrieval_imagenet_norm))
        return self._per_clip_features(clips_uint8).mean(dim=1)

    @torch.no_grad()
    def eval_features(self, clips_uint8: torch.Tensor) -> torch.Tensor:
        """(B, 2D): [probe features | retrieval features] (see `clip_features`), one forward unless the
        retrieval uses the ImageNet statistics."""
        if self.cfg.retrieval_imagenet_norm:
            return torch.cat([self.clip_features(clips_uint8), self.clip_features(clips_uint8, retrieval=True)], dim=1)
        per_clip = self._per_clip_features(clips_uint8)
        return torch.cat([per_clip.mean(dim=1), mean_of_unit_features(per_clip)], dim=1)

    @torch.no_grad()
    def evaluate(self, eval_batches, ctx) -> dict[str, float]:
        from contrastlab.platform.eval import linear_probe

        fn = lambda batch: self.eval_features(batch["clips"])  # noqa: E731
        test_xr, test_cols = gather_features(eval_batches, fn)
        train_xr, train_cols = gather_features(ctx.datasets["train_eval"], fn)
        c = self.cfg
        metrics: dict[str, float] = {}
        if len(test_xr) == 0 or len(train_xr) == 0:
            return metrics
        d = test_xr.shape[1] // 2  # [probe | retrieval] columns
        test_x, train_x, test_r, train_r = test_xr[:, :d], train_xr[:, :d], test_xr[:, d:], train_xr[:, d:]
        probe = linear_probe(train_x, train_cols["label"], test_x, test_cols["label"], seed=ctx.exp.run.seed if ctx.exp else 0,
                             max_iter=c.probe_max_iter)
        metrics["probe_top1"] = probe["accuracy"]
        recall = class_retrieval_recall(test_r, test_cols["label"], train_r, train_cols["label"], ks=(1, 5, 10))
        metrics.update({f"retrieval_{k}": v for k, v in recall.items()})
        # does the representation hold the class at all, shortcut aside? A probe fit on the even-index half of
        # the debiased test split and scored on the odd half (a diagnostic; not the card's protocol).
        even = test_cols["index"] % 2 == 0
        if even.any() and (~even).any():
            metrics["probe_test_halves_top1"] = linear_probe(test_x[even], test_cols["label"][even], test_x[~even], test_cols["label"][~even],
                                                             max_iter=c.probe_max_iter)["accuracy"]
        if c.probe_bg and "bg_id" in test_cols and (test_cols["bg_id"] >= 0).all() and (train_cols["bg_id"] >= 0).all():
            bg = linear_probe(train_x, train_cols["bg_id"], test_x, test_cols["bg_id"], max_iter=c.probe_max_iter)
            metrics["bg_probe_top1"] = bg["accuracy"]
        return metrics


def image_strip(clips: torch.Tensor, mask: torch.Tensor | None, merged: torch.Tensor, n: int) -> np.ndarray:
    """uint8 (n, H, 3W, 3): per clip, its middle frame | the FAME mask | the merged middle frame."""
    n = min(n, clips.shape[0])
    t = clips.shape[2] // 2
    frame = clips[:n, :, t]
    m = (mask[:n, None].expand(-1, 3, -1, -1) if mask is not None else torch.ones_like(frame)).to(frame.dtype)
    row = torch.cat([frame, m, merged[:n, :, t]], dim=3)  # (n, 3, H, 3W)
    return (row.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
