"""C3-GAN on the platform: an InfoGAN whose discriminator is the clustering model (card c3gan.md).

One training step, local batch B of real images x with an augmented view x_aug (card b):

    D step  (codes c, noise z, c_z and warp T freshly sampled; G's outputs without gradient)
        L_D = hinge(r(x), r(x_hat)) + 5 Info(x_hat, c) + 1 Info(m * x_hat, c)
              + NT-Xent(h(x), h(x_aug)) + 0.1 mean_i H(p_i) - 0.1 H(mean_i p_i)
        ctx.optimize(L_D, "discriminator")
    G step  (fresh c, z, c_z, T; D's parameters frozen with ctx.frozen, D still in train mode)
        L_G = -mean r(x_hat) + 5 Info(x_hat, c) + 1 Info(m * x_hat, c) + mask regulariser
        ctx.optimize(L_G, "generator")

Info(x, c) = CE over the Y centroids L = l(I_Y) (D's Linear(Y -> e) applied to the identity) with
cosine/tau logits; Y = over x n_classes. A real image's cluster is its most similar centroid, with D
in eval mode (no k-means). Each optimiser sees only its own network: the D step's generator forward
runs under no_grad, the G step freezes D's parameters, so neither backward reaches the other net.
(BatchNorm running statistics are buffers and are updated by every train-mode forward, as in the
official code.)

Evaluation (every eval epoch, all ranks, predictions gathered): cluster_acc (Hungarian, each class
matched to `over` clusters, the card's protocol), cluster_nmi (scikit-learn's arithmetic NMI),
cluster_ari, cluster_nmi_official (log2, +1e-6, max-normalised), the usage of real-image clusters
(real_clusters_used/empty, real_max_cluster_share, real_usage_entropy), and the mode-collapse
diagnostic on generated samples (gen_clusters_hit, gen_code_agreement, gen_codes_distinct,
gen_mask_mean). At each epoch end rank 0 logs a grid of unwarped samples, one row per cluster, and
the matching masks to TensorBoard ("c3gan/samples_per_cluster", "c3gan/masks_per_cluster").

Deviations, all config options: the default is the card's small-scale version (section g) on
Fashion-MNIST at 32 px, grey, weak warp, the small view recipe; with Y < B the codes are drawn
with replacement (the official code silently uses cluster 0 for the surplus rows); D's BN running
statistics (used by eval-mode assignment) follow the real-image batches only (`bn_stats`, see there).

Not computed: FID and IS (card e, f: "report NMI and FID alongside"). Both need Inception-v3 weights
trained on ImageNet, which nothing here may download, and a randomly initialised Inception would give
numbers comparable with nothing. Generation quality is watched through the collapse diagnostic above
and the per-cluster sample grids instead.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from contrastlab.methods.base import OptimSpec
from contrastlab.methods.c3gan.augment import eval_view, small_two_views, two_views
from contrastlab.methods.c3gan.evaluation import cluster_metrics, generator_collapse
from contrastlab.methods.c3gan.loss import sample_inputs
from contrastlab.methods.c3gan.model import BN_STATS, DISC_PRESETS, GEN_PRESETS, Discriminator, Generator, discriminator_step_loss, generator_step_loss
from contrastlab.methods.c3gan.warp import WARP_RANGES, _ALIASES, sample_theta
from contrastlab.platform import distributed as dist_utils

GEN, DISC = "generator", "discriminator"  # trainable module names = optimiser names


@dataclass
class C3GANConfig:
    n_classes: int = 10  # ground-truth classes of the data; Y = over * n_classes clusters
    over: int = 1  # over-clustering factor OVER (card b); ACC matches each class to `over` clusters
    image_size: int = 32  # 32 (card g widths), 64, or 128 (official widths)
    channels: int = 1  # 1: grey (RGB-decoded grey JPEGs are converted with ITU-R 601 luma); 3: colour
    views: str = "small"  # small: card g (clean view + small affine/brightness) | full: card d (crops, jitter, grey)
    warp: str = "weak"  # weak | strong (card b default 's'; the paper's per-dataset choice is unknown [paper?]) | none
    tau: float = 0.1
    info_weight: float = 5.0
    masked_info_weight: float = 1.0
    simclr_weight: float = 1.0
    entropy_weight: float = 0.1
    mask_weight: float = 1.0
    lr: float = 2e-4  # Adam, both networks, constant (card e)
    betas: tuple[float, float] = (0.5, 0.999)
    z_dim: int = 64
    cz_dim: int = 8
    # network widths; empty / 0 = the preset for image_size (card g at 32 px, official at 128 px).
    # On CPU the card-g generator costs ~2-4 s per train step at B=64 on one core; (64, 32, 16, 8)
    # with disc (16, 32, 64) and embed 64 is ~3x cheaper (used by --smoke and the tests).
    gen_channels: tuple[int, ...] = ()  # stem width at 4x4, then one width per up-block (log2(size/4) + 1 values)
    disc_channels: tuple[int, ...] = ()  # one conv4s2 width per halving down to 4x4 (log2(size/4) values)
    embed_dim: int = 0  # e, D's embedding / centroid dimension
    # Which D forwards update D's BN running statistics, the ones eval-mode assignment uses.
    # "all" = official (real, aug, fake, masked-fake calls; the masked-fake batch, mostly black, comes
    # last and dominates). Measured here (Fashion-MNIST, 2,000 images, 4 epochs, narrow nets, same
    # training losses): "all" let eval ACC fall 0.28 -> 0.18 with 78% of real images in one cluster;
    # "real" gave ACC 0.33, NMI 0.31, largest cluster 21%. "real" (default, our deviation [R]): only
    # the real-image call updates them; the training maths (batch statistics) is unchanged.
    bn_stats: str = "real"
    gather_real: bool = True  # NT-Xent and entropy terms over the global batch (all-gather with gradient)
    grid_samples_per_cluster: int = 8  # columns of the per-cluster sample grid logged every epoch
    diag_samples_per_cluster: int = 10  # generated samples per code for the mode-collapse diagnostic
    vis_seed: int = 1234  # fixed noise for the grids and the diagnostic (does not touch the training RNG)

    @property
    def n_clusters(self) -> int:
        return self.over * self.n_classes

    def validate(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(msg)

        need(self.n_classes >= 1, f"method.n_classes must be >= 1, got {self.n_classes}")
        need(self.over >= 1, f"method.over must be >= 1, got {self.over}")
        need(self.image_size in GEN_PRESETS and self.image_size in DISC_PRESETS,
             f"method.image_size must be one of {sorted(GEN_PRESETS)} (network width presets), got {self.image_size}")
        need(self.channels in (1, 3), f"method.channels must be 1 or 3, got {self.channels}")
        need(self.views in ("small", "full"), f"method.views must be small or full, got {self.views!r}")
        need(self.warp == "none" or _ALIASES.get(self.warp, self.warp) in WARP_RANGES,
             f"method.warp must be weak, strong (or w, s) or none, got {self.warp!r}")
        need(self.bn_stats in BN_STATS, f"method.bn_stats must be one of {BN_STATS}, got {self.bn_stats!r}")
        need(self.tau > 0, f"method.tau must be > 0, got {self.tau}")
        for name in ("info_weight", "masked_info_weight", "simclr_weight", "entropy_weight", "mask_weight"):
            need(getattr(self, name) >= 0, f"method.{name} must be >= 0, got {getattr(self, name)}")
        need(self.lr > 0, f"method.lr must be > 0, got {self.lr}")
        need(all(0 <= b < 1 for b in self.betas), f"method.betas must lie in [0, 1), got {self.betas}")
        need(self.z_dim >= 1 and self.cz_dim >= 1, "method.z_dim and method.cz_dim must be >= 1")
        n_up = int(np.log2(self.image_size // 4))
        need(not self.gen_channels or (len(self.gen_channels) == n_up + 1 and min(self.gen_channels) >= 1),
             f"method.gen_channels needs {n_up + 1} positive widths for image_size {self.image_size} (or [] for the preset), got {list(self.gen_channels)}")
        need(not self.disc_channels or (len(self.disc_channels) == n_up and min(self.disc_channels) >= 1),
             f"method.disc_channels needs {n_up} positive widths for image_size {self.image_size} (or [] for the preset), got {list(self.disc_channels)}")
        need(self.embed_dim >= 0, f"method.embed_dim must be >= 0 (0 = preset), got {self.embed_dim}")
        need(self.grid_samples_per_cluster >= 1 and self.diag_samples_per_cluster >= 1,
             "method.grid_samples_per_cluster and method.diag_samples_per_cluster must be >= 1")


# --------------------------------------------------------------------------- CPU preprocessing
def to_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """uint8 (H, W[, C]) -> (H, W) for channels=1 (luma of RGB), (H, W, 3) for channels=3."""
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if channels == 1:
        if a.ndim == 3:  # ITU-R 601 luma; exact for grey JPEGs decoded to three equal channels
            a = np.rint(a[:, :, :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).clip(0, 255).astype(np.uint8)
        return a
    return np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a[:, :, :3]


def c3gan_sample_fn(cfg: C3GANConfig, split: str, image_key: str = "jpg"):
    """Per-sample preprocessing: train -> `image`, `image_aug` float32 (C, S, S) in [-1, 1];
    eval -> `image` (resize + centre crop) and `label` (the json's label, -1 when absent)."""
    size = cfg.image_size

    def fn(sample: dict, rng: np.random.Generator) -> dict:
        img = to_channels(sample[image_key], cfg.channels)
        if split == "train":
            if cfg.views == "small":
                v1, v2 = small_two_views([img], rng, size=size)
            else:
                v1, v2 = two_views([img], rng, size=size)
            return {"image": v1[0], "image_aug": v2[0]}
        label = (sample.get("json") or {}).get("label", -1)
        return {"image": eval_view([img], size)[0], "label": np.int64(label if isinstance(label, (int, np.integer)) else -1)}

    return fn


# --------------------------------------------------------------------------- the method
class C3GAN(nn.Module):
    Config = C3GANConfig
    name = "c3gan"
    modality = "image"
    default_dataset = "fashion-mnist"
    dataset_splits = {"train": "train", "eval": "test"}
    eval_metric = "cluster_acc"
    eval_mode = "max"
    train_defaults = {"batch_size": 64, "epochs": 20, "log_every_steps": 10}
    # --smoke: 2 trials x 2 epochs of 15 steps on 1,000 Fashion-MNIST images (500 for evaluation), narrow nets
    smoke_overrides = {"train.epochs": 2, "data.embedded_params": "{n_train: 1000, n_test: 500}",
                       "method.gen_channels": "[64, 32, 16, 8]", "method.disc_channels": "[16, 32, 64]", "method.embed_dim": 64,
                       "method.diag_samples_per_cluster": 4}

    def __init__(self, cfg: C3GANConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        y, size, ch = cfg.n_clusters, cfg.image_size, cfg.channels
        self.gen = Generator(y, img_size=size, img_channels=ch, z_dim=cfg.z_dim, cz_dim=cfg.cz_dim, channels=tuple(cfg.gen_channels) or None)
        disc_channels = tuple(cfg.disc_channels) or DISC_PRESETS[size][0]
        self.disc = Discriminator(y, img_size=size, img_channels=ch, channels=disc_channels, embed_dim=cfg.embed_dim or DISC_PRESETS[size][1])

    # ---- contract
    @staticmethod
    def make_preprocess(cfg: C3GANConfig, split: str, meta: dict):
        ext = "png" if (meta or {}).get("image_format") == "png" else "jpg"  # the digits dataset writes PNG
        return c3gan_sample_fn(cfg, split, ext), (ext,)

    def trainable(self) -> dict[str, nn.Module]:
        return {GEN: self.gen, DISC: self.disc}

    def optimizers(self) -> dict[str, OptimSpec]:
        c = self.cfg  # Adam, no weight decay, constant LR, no warm-up (card e)
        spec = dict(kind="adam", lr=c.lr, betas=tuple(c.betas), weight_decay=0.0, schedule="constant")
        return {DISC: OptimSpec([DISC], **spec), GEN: OptimSpec([GEN], **spec)}

    @staticmethod
    def search_space(cfg=None) -> dict:
        """Card e's sweep: lr, tau, info weight, OVER, warp strength, entropy weight."""
        from ray import tune

        return {
            "method.lr": tune.loguniform(5e-5, 5e-4),
            "method.tau": tune.choice([0.05, 0.1, 0.2, 0.5]),
            "method.info_weight": tune.uniform(1.0, 10.0),
            "method.over": tune.choice([1, 2, 3]),
            "method.warp": tune.choice(["weak", "strong"]),
            "method.entropy_weight": tune.loguniform(0.01, 0.3),
        }

    # ---- sampling helpers
    def _inputs(self, batch: int, device) -> tuple[dict, torch.Tensor | None]:
        """Fresh codes, noise and warp from the global RNG (seeded and checkpointed by the loop)."""
        c = self.cfg
        inputs = sample_inputs(batch, c.n_clusters, z_dim=c.z_dim, cz_dim=c.cz_dim, device=device)
        theta = None if c.warp == "none" else sample_theta(batch, c.warp, device=device)
        return inputs, theta

    def _weights(self, *names: str) -> dict:
        return {n: getattr(self.cfg, n) for n in names}

    # ---- the two steps
    def discriminator_step(self, batch: dict, ctx) -> dict[str, float]:
        c = self.cfg
        real, aug = batch["image"].float(), batch["image_aug"].float()
        inputs, theta = self._inputs(real.shape[0], real.device)
        gather = ctx.gather if c.gather_real else (lambda x: x)
        with ctx.autocast():
            total, terms = discriminator_step_loss(
                self.gen, self.disc, real, aug, inputs, theta, c.tau, gather=gather, bn_stats=c.bn_stats,
                **self._weights("info_weight", "masked_info_weight", "simclr_weight", "entropy_weight"),
            )
        ctx.optimize(total, DISC)
        return {"loss_d": float(total.detach()), **{k: float(v.detach()) for k, v in terms.items()}}

    def generator_step(self, batch_size: int, ctx) -> dict[str, float]:
        c = self.cfg
        inputs, theta = self._inputs(batch_size, ctx.device)
        with ctx.frozen(DISC):  # D's parameters get no gradient; only G's optimiser steps
            with ctx.autocast():
                total, terms, out = generator_step_loss(
                    self.gen, self.disc, inputs, theta, c.tau, bn_stats=c.bn_stats, **self._weights("info_weight", "masked_info_weight", "mask_weight")
                )
            ctx.optimize(total, GEN)
        return {"loss_g": float(total.detach()), **{k: float(v.detach()) for k, v in terms.items()},
                "mask_mean": float(out["mask"].detach().float().mean())}

    def train_step(self, batch: dict, ctx) -> dict[str, float]:
        logs = self.discriminator_step(batch, ctx)  # 1:1 alternation, D first (card b)
        logs.update(self.generator_step(batch["image"].shape[0], ctx))
        return logs

    # ---- samples, diagnostics, evaluation
    @torch.no_grad()
    def generate_per_cluster(self, per_cluster: int, device=None, seed: int | None = None) -> tuple[torch.Tensor, dict]:
        """`per_cluster` unwarped samples of every code, code-major (codes, G outputs), G in eval mode.

        Uses its own torch.Generator (fixed seed): the same noise every epoch, training RNG untouched.
        """
        c = self.cfg
        g = torch.Generator().manual_seed(c.vis_seed if seed is None else seed)
        y = c.n_clusters
        codes = torch.arange(y).repeat_interleave(per_cluster)
        z = torch.randn(per_cluster, c.z_dim, generator=g).repeat(y, 1)  # the same noise in every row
        cz = torch.randn(per_cluster, c.cz_dim, generator=g).repeat(y, 1)
        device = device if device is not None else next(self.gen.parameters()).device
        was_training = self.gen.training
        self.gen.eval()
        try:
            out = self.gen(z.to(device), codes.to(device), cz.to(device))
        finally:
            self.gen.train(was_training)
        return codes, out

    @staticmethod
    def _grid(images: torch.Tensor, per_row: int) -> np.ndarray:
        """(N, C, H, W) in [-1, 1] or [0, 1] masks -> uint8 (1, H', W', 3), one row per cluster."""
        from torchvision.utils import make_grid

        grid = make_grid(images.detach().float().cpu(), nrow=per_row, padding=2, pad_value=1.0)
        return (grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).unsqueeze(0).numpy()

    def sample_grids(self, device=None) -> dict[str, np.ndarray]:
        k = self.cfg.grid_samples_per_cluster
        _, out = self.generate_per_cluster(k, device)
        return {"c3gan/samples_per_cluster": self._grid((out["fake"] + 1) / 2, k),
                "c3gan/masks_per_cluster": self._grid(out["mask"], k)}

    def on_epoch_end(self, ctx) -> None:
        if ctx.rank != 0 or getattr(ctx.tb, "writer", None) is None:
            return  # no TensorBoard writer: skip the sampling work
        for tag, grid in self.sample_grids(ctx.device).items():
            ctx.log_images(tag, grid)

    @torch.no_grad()
    def collapse_diagnostic(self, device=None) -> dict[str, float]:
        """Which of D's clusters the generator's unwarped samples of every code fall into (D in eval mode)."""
        codes, out = self.generate_per_cluster(self.cfg.diag_samples_per_cluster, device, seed=self.cfg.vis_seed + 1)
        was_training = self.disc.training
        self.disc.eval()
        try:
            assigned = self.disc.assign(out["fake"])
        finally:
            self.disc.train(was_training)
        return {**generator_collapse(codes, assigned.cpu(), self.cfg.n_clusters), "gen_mask_mean": float(out["mask"].mean())}

    @torch.no_grad()
    def assign(self, images: torch.Tensor) -> torch.Tensor:
        """Cluster ids of real images in [-1, 1]: the most similar centroid (call with D in eval mode)."""
        return self.disc.assign(images.float())

    def evaluate(self, eval_batches, ctx) -> dict[str, float]:
        preds, labels, indices = [], [], []
        for batch in eval_batches():
            preds.append(self.assign(batch["image"]).cpu().numpy())
            labels.append(batch["label"].cpu().numpy())
            if "index" in batch:
                indices.append(batch["index"].cpu().numpy())
        local = tuple(np.concatenate(x) if x else np.zeros(0, np.int64) for x in (preds, labels, indices))
        parts = dist_utils.gather_objects(local)
        pred, label, index = (np.concatenate([p[i] for p in parts]) for i in range(3))
        if len(index) == len(pred) and len(index):  # drop duplicates (padded shards) by sample index
            keep = np.unique(index, return_index=True)[1]
            pred, label = pred[keep], label[keep]
        keep = label >= 0
        if not keep.any():
            raise ValueError("c3gan evaluate: the eval split has no labels (json `label`); clustering metrics need them")
        metrics = cluster_metrics(label[keep], pred[keep], self.cfg.n_clusters, self.cfg.over)
        metrics.update(self.collapse_diagnostic(ctx.device))
        return metrics
