"""PPC on the platform: SEAM (CAM + PCM, two views, equivariance) plus pixel-to-prototype contrast.

Spec: the method card `ppc.md`. One training step, batch of N images with multi-hot labels:

    x1 = the training crop, x2 = x1 bilinearly resized to view2_size (align_corners)
    o_v = net(x_v) -> cam, cam_rv (PCM-refined), emb (projection head), per view (own BN pass)
    L_seam = L_cls + L_er + L_ecr                         (loss.seam_losses; the CAM baseline)
    L_nce  = lambda [s_cp L_cp + s_cl L_cl + s_intra L_intra]  (loss.ppc_losses on cam_rv, emb)
    L      = L_seam + [use_ppc] L_nce

`use_ppc=False` is the CAM baseline (SEAM-lite). The random halves of the intra-view term come
from a torch.Generator seeded by (run seed, step, rank): reproducible, and identical after a
resume without any saved state. Under several workers, prototypes are built from the all-gathered
(no grad) scores and embeddings (`gather_prototypes`), the intra-view class loop stays per worker.

Deviations (documented, config where possible): the backbone is random-init (no ImageNet
ResNet-38 offline), so the default is one learning rate for every layer: the official 10x/20x
lr of the new layers (cam head, projection, PCM) against 1x/2x for the backbone exists because the
backbone is ImageNet-pretrained; `layer_lr="official"` turns it on. The default schedule is cosine;
`schedule="poly"` is the official (1 - step/max)^0.9. AffinityNet / DeepLab stages are not part of
this method.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from contrastlab.methods.base import OptimSpec
from contrastlab.methods.ppc.evaluation import SeedSweep, overlay_strip, seed_cams, thresholds_from
from contrastlab.methods.ppc.loss import PPCLossConfig, class_separation, ppc_losses, seam_losses, separation_from_sums
from contrastlab.methods.ppc.model import CAMNet
from contrastlab.platform import distributed as dist_utils
from contrastlab.platform.data.augment import IMAGENET_MEAN, color_jitter, hflip, normalize_batch, resize, to_chw
from contrastlab.platform.eval.segmentation import cam_to_mask

PAD_RGB = tuple(int(round(m * 255)) for m in IMAGENET_MEAN)  # zero after normalisation, as the official zero padding


@dataclass
class PPCConfig:
    num_classes: int = 4  # foreground classes: fashion-scenes 4 (2/4/6), VOC 20
    backbone: str = "cnn-small"  # cnn-small | resnet18 | resnet34 | resnet50 (random init)
    output_stride: int = 4  # card: 8 (ResNet-38); small version: 4
    cnn_width: int = 32  # cnn-small: channels of the first layer (x2 in the second)
    cnn_dim: int = 128  # cnn-small: feature dimension (card's small version: 128)
    image_size: int = 64  # training crop (card: 448)
    view2_size: int = 32  # the down-scaled view (card: 128)
    proj_dim: int = 32  # projection head (card: 128)
    pcm_dim: int = 64
    use_pcm: bool = True  # False: cam_rv = cam (no PCM; L_ecr then compares cam with cam)
    dropout: float = 0.0  # Dropout2d before the CAM head (card's ResNet-38: 0.5)
    use_ppc: bool = True  # False = the CAM baseline (SEAM-lite)
    bg_index: int = 0  # background channel: SEAM 0, EPS last
    bg_threshold: float = 0.2  # t, the constant background score of PPC's pseudo-labels
    tau: float = 0.1
    nce_weight: float = 0.1  # lambda: the weight of all three PPC terms
    cp_scale: float = 1.0  # relative multipliers of the three terms (1 = the paper)
    cl_scale: float = 1.0
    intra_scale: float = 1.0
    topk_fraction: float = 0.125  # K = fraction x pixels of the view-2 grid (card: 1/8)
    semi_hard_window: tuple[int, int] = (1, 2)  # (skip, count); card (3, 10) for 21 classes, (1, 2) for 5
    hard_start: float = 0.6
    gather_prototypes: bool = True  # prototypes over the global batch under several workers
    use_er: bool = True
    use_ecr: bool = True
    use_minpool: bool = True
    ecr_fraction: float = 0.2
    optimizer: str = "adam"  # adam | adamw | sgd (card: SGD lr 0.01, momentum slot = 5e-4 quirk; small version: Adam/SGD lr 0.01)
    lr: float = 1e-3  # Adam at the card's 0.01 left the from-scratch classifier at the label prior here (measured)
    weight_decay: float = 5e-4
    momentum: float = 5e-4  # SGD only: the official constructor puts wd into momentum (faithful quirk)
    schedule: str = "cosine"  # cosine | constant | poly (official: (1 - step/max)^0.9)
    layer_lr: str = "none"  # none: one lr | official: new layers 10x weights / 20x biases, backbone 1x / 2x
    train_scale_range: tuple[float, float] = (1.0, 1.0)  # long side / image_size (card: 448-768 -> (1.0, 1.714))
    color_jitter: float = 0.3  # ColorJitter(j, j, j, j/3); 0 = off
    eval_size: int = 0  # eval images: long side resized to this and padded square (0 = image_size)
    eval_scales: tuple[float, ...] = (1.0,)  # card: (0.5, 1.0, 1.5, 2.0)
    eval_flip: bool = True
    seed_map: str = "cam_rv"  # cam_rv | cam
    threshold_start: float = 0.0
    threshold_stop: float = 0.6
    threshold_step: float = 0.01
    log_images: int = 4  # CAM overlays per evaluation (0 = none)

    def validate(self) -> None:
        if self.num_classes < 1:
            raise ValueError(f"method.num_classes must be >= 1, got {self.num_classes}")
        if self.backbone not in ("cnn-small", "resnet18", "resnet34", "resnet50"):
            raise ValueError(f"method.backbone must be cnn-small, resnet18, resnet34 or resnet50, got {self.backbone!r}")
        if self.backbone == "cnn-small" and self.output_stride != 4:
            raise ValueError("method.output_stride must be 4 for backbone cnn-small")
        if self.output_stride not in (4, 8, 16):
            raise ValueError(f"method.output_stride must be 4, 8 or 16, got {self.output_stride}")
        if self.view2_size % self.output_stride or self.image_size % self.output_stride:
            raise ValueError(f"method.image_size ({self.image_size}) and view2_size ({self.view2_size}) must be multiples of output_stride ({self.output_stride})")
        if not 0 <= self.bg_index <= self.num_classes and self.bg_index != -1:
            raise ValueError(f"method.bg_index must be 0..num_classes (or -1 for last), got {self.bg_index}")
        skip, count = self.semi_hard_window
        if skip < 0 or count < 1 or skip + count > self.num_classes + 1:
            raise ValueError(f"method.semi_hard_window {tuple(self.semi_hard_window)} must satisfy skip >= 0, count >= 1 and "
                             f"skip + count <= num_classes + 1 = {self.num_classes + 1}")
        if not 0.5 <= self.hard_start <= 1.0:
            raise ValueError(f"method.hard_start must lie in [0.5, 1], got {self.hard_start}")
        if not 0 < self.topk_fraction <= 1:
            raise ValueError(f"method.topk_fraction must lie in (0, 1], got {self.topk_fraction}")
        if self.tau <= 0:
            raise ValueError(f"method.tau must be > 0, got {self.tau}")
        if self.layer_lr not in ("none", "official"):
            raise ValueError(f"method.layer_lr must be none or official, got {self.layer_lr!r}")
        if self.schedule not in ("cosine", "constant", "poly"):
            raise ValueError(f"method.schedule must be cosine, constant or poly, got {self.schedule!r}")
        if self.optimizer not in ("adam", "adamw", "sgd"):
            raise ValueError(f"method.optimizer must be adam, adamw or sgd, got {self.optimizer!r}")
        if self.seed_map not in ("cam_rv", "cam"):
            raise ValueError(f"method.seed_map must be cam_rv or cam, got {self.seed_map!r}")
        lo, hi = self.train_scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"method.train_scale_range must be 0 < low <= high, got {self.train_scale_range}")
        if not thresholds_from(self.threshold_start, self.threshold_stop, self.threshold_step):
            raise ValueError("method.threshold_start/stop/step give no background thresholds")

    @property
    def bg(self) -> int:
        return self.bg_index if self.bg_index >= 0 else self.num_classes

    def loss_config(self) -> PPCLossConfig:
        lam = self.nce_weight
        return PPCLossConfig(tau=self.tau, bg_index=self.bg, bg_value=self.bg_threshold, topk_fraction=self.topk_fraction,
                             semi_hard_skip=int(self.semi_hard_window[0]), semi_hard_count=int(self.semi_hard_window[1]),
                             hard_start=self.hard_start, weight_cp=lam * self.cp_scale, weight_cl=lam * self.cl_scale,
                             weight_intra=lam * self.intra_scale)


# --------------------------------------------------------------------------- CPU preprocessing
def multi_hot(info: dict, num_classes: int) -> np.ndarray:
    """json {"labels": [1-based class ids]} -> float32 (num_classes,)."""
    out = np.zeros(num_classes, np.float32)
    for c in info["labels"]:
        if not 1 <= int(c) <= num_classes:
            raise ValueError(f"label {c} outside 1..{num_classes} (method.num_classes={num_classes})")
        out[int(c) - 1] = 1.0
    return out


def _scale_long_side(img: np.ndarray, long_side: int, nearest: bool = False) -> np.ndarray:
    h, w = img.shape[:2]
    s = long_side / max(h, w)
    size = (max(1, round(h * s)), max(1, round(w * s)))
    if size == (h, w):
        return img
    if nearest:
        from PIL import Image

        return np.asarray(Image.fromarray(img).resize((size[1], size[0]), Image.NEAREST))
    return resize(img, size)


def _pad_to(img: np.ndarray, size: int, value, y: int = 0, x: int = 0) -> np.ndarray:
    h, w = img.shape[:2]
    out = np.empty((size, size) + img.shape[2:], img.dtype)
    out[...] = value
    out[y:y + h, x:x + w] = img
    return out


def random_crop(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random size x size crop; smaller sides are zero-padded (mean colour) at a random offset."""
    h, w = img.shape[:2]
    if h < size or w < size:
        img = _pad_to(img, max(size, h, w), PAD_RGB, int(rng.integers(0, max(size - h, 0) + 1)), int(rng.integers(0, max(size - w, 0) + 1)))
        h, w = img.shape[:2]
    y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    return np.ascontiguousarray(img[y:y + size, x:x + size])


def ppc_sample_fn(cfg: PPCConfig, split: str):
    size = cfg.image_size
    eval_size = cfg.eval_size or cfg.image_size
    j = cfg.color_jitter

    def train_fn(sample: dict, rng: np.random.Generator) -> dict:
        img = sample["jpg"]
        lo, hi = cfg.train_scale_range
        img = _scale_long_side(img, int(round(size * rng.uniform(lo, hi))))
        if j > 0:
            img = color_jitter(img, rng, j, j, j, j / 3, p=1.0)
        img = hflip(random_crop(img, size, rng), rng)
        return {"image": to_chw(img), "labels": multi_hot(sample["json"], cfg.num_classes)}

    def eval_fn(sample: dict, rng: np.random.Generator) -> dict:
        img, mask = sample["jpg"], sample["png"]
        if mask.ndim != 2 or mask.shape != img.shape[:2]:
            raise ValueError(f"mask shape {mask.shape} does not match image {img.shape[:2]}")
        img = _pad_to(_scale_long_side(img, eval_size), eval_size, PAD_RGB)
        mask = _pad_to(_scale_long_side(mask.astype(np.uint8), eval_size, nearest=True), eval_size, 255)
        return {"image": to_chw(img), "labels": multi_hot(sample["json"], cfg.num_classes), "mask": mask.astype(np.int64)}

    return (train_fn, ("jpg", "json")) if split == "train" else (eval_fn, ("jpg", "json", "png"))


# --------------------------------------------------------------------------- the method
class PPC(nn.Module):
    Config = PPCConfig
    name = "ppc"
    modality = "segmentation"
    default_dataset = "fashion-scenes"
    dataset_splits = {"train": "train", "eval": "val"}
    eval_metric = "seed_miou"
    eval_mode = "max"
    train_defaults = {"batch_size": 16, "epochs": 15, "log_every_steps": 10}
    # --smoke: 2 trials x 2 epochs on 480 scenes (30 steps of 16 per epoch), about a minute per trial on 2 cores
    smoke_overrides = {"train.epochs": 2, "data.embedded_params": "{n_train: 480, n_val: 96}"}

    def __init__(self, cfg: PPCConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.net = CAMNet(cfg.num_classes + 1, cfg.backbone, cfg.output_stride, cfg.proj_dim, cfg.pcm_dim, cfg.dropout, cfg.bg,
                          cfg.use_pcm, cfg.cnn_width, cfg.cnn_dim)
        self.loss_cfg = cfg.loss_config()

    # ---- contract
    @staticmethod
    def make_preprocess(cfg: PPCConfig, split: str, meta: dict):
        classes = meta.get("classes")
        if classes is not None and len(classes) != cfg.num_classes:
            raise ValueError(f"the dataset has {len(classes)} foreground classes but method.num_classes={cfg.num_classes}; "
                             f"set --set method.num_classes={len(classes)}")
        return ppc_sample_fn(cfg, split)

    def trainable(self) -> dict[str, nn.Module]:
        return {"model": self.net}

    def optimizers(self) -> dict[str, OptimSpec]:
        c = self.cfg
        multipliers = ()
        if c.layer_lr == "official":  # names relative to trainable()["model"], the CAMNet
            multipliers = (("cam_head.", 10.0, 20.0), ("proj.", 10.0, 20.0), ("pcm.", 10.0, 20.0), ("", 1.0, 2.0))
        return {"main": OptimSpec(["model"], c.optimizer, lr=c.lr, weight_decay=c.weight_decay, momentum=c.momentum,
                                  schedule=c.schedule, lr_multipliers=multipliers)}

    @staticmethod
    def search_space(cfg=None) -> dict:
        from ray import tune

        channels = (cfg.num_classes if cfg is not None else 4) + 1
        if channels >= 21:
            windows = [[0, 10], [3, 10], [3, 5]]  # the card's (skip, count) windows for 21 prototypes
        else:  # scaled by channels / 21, as the card's small version scales (3, 10) to (1, 2)
            f = channels / 21
            windows = [[0, max(1, round(10 * f))], [round(3 * f), max(1, round(10 * f))], [round(3 * f), max(1, round(5 * f))]]
            windows = [w for i, w in enumerate(windows) if w not in windows[:i] and sum(w) <= channels]
        return {
            "method.nce_weight": tune.choice([0.05, 0.1, 0.2]),
            "method.tau": tune.choice([0.05, 0.1, 0.2]),
            "method.bg_threshold": tune.uniform(0.1, 0.3),
            "method.topk_fraction": tune.choice([1 / 32, 1 / 16, 1 / 8, 1 / 4]),
            "method.semi_hard_window": tune.choice(windows),
            "method.hard_start": tune.choice([0.5, 0.6, 0.7]),
        }

    # ---- maths
    def forward_views(self, images_uint8: torch.Tensor) -> tuple[dict, dict]:
        x1 = normalize_batch(images_uint8)
        x2 = F.interpolate(x1, size=(self.cfg.view2_size, self.cfg.view2_size), mode="bilinear", align_corners=True)
        return self.net(x1), self.net(x2)

    def losses(self, batch: dict, ctx=None, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        c = self.cfg
        labels = batch["labels"].float()
        autocast = ctx.autocast() if ctx is not None else torch.autocast("cpu", enabled=False)
        with autocast:
            o1, o2 = self.forward_views(batch["image"])
        o1 = {k: v.float() for k, v in o1.items()}
        o2 = {k: v.float() for k, v in o2.items()}
        out = seam_losses(o1["cam"], o1["cam_rv"], o2["cam"], o2["cam_rv"], labels, c.bg, c.ecr_fraction, c.use_minpool)
        loss = out["loss_cls"] + (out["loss_er"] if c.use_er else 0.0) + (out["loss_ecr"] if c.use_ecr else 0.0)
        if c.use_ppc:
            gather = None
            if ctx is not None and ctx.world_size > 1 and c.gather_prototypes:
                gather = lambda t: ctx.gather(t, grad=False)  # noqa: E731
            nce = ppc_losses(o1["cam_rv"], o2["cam_rv"], o1["emb"], o2["emb"], labels, generator, self.loss_cfg, gather=gather)
            loss = loss + nce["loss_nce"]
            out.update({k: nce[k] for k in ("loss_cp", "loss_cl", "loss_intra", "loss_nce")})
            out["pseudo_fg_fraction"] = (nce["y2"] != c.bg).float().mean()
        out["loss"] = loss
        return out

    def sampling_generator(self, ctx) -> torch.Generator:
        seed = zlib.crc32(f"ppc:{ctx.exp.run.seed}:{ctx.step}:{ctx.rank}".encode())
        return torch.Generator().manual_seed(seed)

    def train_step(self, batch: dict, ctx) -> dict[str, float]:
        out = self.losses(batch, ctx, self.sampling_generator(ctx))
        ctx.optimize(out["loss"], "main")
        return {k: float(v.detach()) for k, v in out.items()}

    @torch.no_grad()
    def evaluate(self, eval_batches, ctx) -> dict[str, float]:
        c = self.cfg
        classes = list((ctx.meta or {}).get("classes") or [f"class{i + 1}" for i in range(c.num_classes)])
        sweep = SeedSweep(c.num_classes + 1, thresholds_from(c.threshold_start, c.threshold_stop, c.threshold_step))
        dim_feat, dim_emb = self.net.backbone.out_dim, c.proj_dim
        device = next(self.parameters()).device
        sums = {"feat": torch.zeros(c.num_classes + 1, dim_feat, device=device), "emb": torch.zeros(c.num_classes + 1, dim_emb, device=device)}
        counts = torch.zeros(c.num_classes + 1, device=device)
        shown = None
        for batch in eval_batches():
            x = normalize_batch(batch["image"].to(device))
            labels, mask = batch["labels"].to(device).float(), batch["mask"].to(device).long()
            cams = seed_cams(self.net, x, labels, scales=c.eval_scales, flip=c.eval_flip, cam_key=c.seed_map, bg_index=c.bg)
            sweep.update(cams.cpu().numpy(), labels.cpu().numpy(), mask.cpu().numpy())
            out = self.net(x)
            grid = out["feat"].shape[-2:]
            small = F.interpolate(mask[:, None].float(), size=grid, mode="nearest")[:, 0].long()
            for key in ("feat", "emb"):
                s, n = class_separation(out[key], small, c.num_classes + 1)
                sums[key] += s
            counts += n
            if shown is None and c.log_images > 0:
                k = c.log_images
                shown = (batch["image"][:k].permute(0, 2, 3, 1).cpu().numpy(), cams[:k].cpu().numpy(), labels[:k].cpu().numpy(),
                         mask[:k].cpu().numpy())
        sweep.confusion = dist_utils.all_reduce_sum(torch.from_numpy(sweep.confusion)).numpy()
        counts = dist_utils.all_reduce_sum(counts)
        result = sweep.result()
        metrics = {"seed_miou": float(result["best_miou"]), "seed_threshold": float(result["best_threshold"])}
        for name, iou in zip(["background"] + classes, result["iou"]):
            metrics[f"iou_{_slug(name)}"] = float(iou)
        for key in ("feat", "emb"):
            metrics[f"{key}_separation"] = separation_from_sums(dist_utils.all_reduce_sum(sums[key]), counts)
        if shown is not None and ctx is not None and getattr(ctx, "is_main", True):
            images, cam_np, lab_np, gt = shown
            if images.shape[-1] == 1:
                images = np.repeat(images, 3, axis=-1)
            pred = cam_to_mask(cam_np, lab_np, result["best_threshold"])
            strips = np.stack([overlay_strip(images[i], cam_np[i], lab_np[i], pred[i], gt[i]) for i in range(len(images))])
            ctx.log_images("ppc/cam_overlay", strips)
        return metrics


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name.lower()).strip("_")
