"""Cross-View-Prediction (CVP) on the platform: self-supervised hyperspectral features, SVM on few labels.

Spec: the card `cvp.md` (paper: Wu, Zhang, Cao, arXiv 2203.07000; only the abstract was available, so
the pipeline is reconstructed [R] from the same group's ContrastNet code and COMPLETER's objective).

Two phases (method.phases()), then an SVM in evaluate():
  "predict"  (stage 1): bands split into G1, G2 (bands.split_bands); P12 predicts the whole G2 patch from
             the G1 patch, P21 the reverse; loss = MSE(P12) + MSE(P21) (disjoint parameters, so one
             optimiser step equals two separate trainings). Views v1, v2 = the bottlenecks.
  "contrast" (stage 2): P12, P21 frozen (eval mode); their views of every training pixel are extracted
             once (ctx.extract over the train split, derived data rebuilt after a resume, so not
             checkpointed), z-scored with buffers view_mean / view_std; COMPLETER:
             L2 = L_MI(z1, z2) + lambda_rec L_rec + [epoch >= pre_start] lambda_pre L_pre,
             z's all-gathered with gradient before forming the joint.
  evaluate:  features (hidden | logits | softmax | views) of the eval split -> SVM fitted on the
             training draw (the shards' json `split`, or fresh per-class draws) -> OA, AA, kappa; in
             stage 2 also the stage-1-only ablation (views_oa ...); a classification map image.

Batch sizes (card §e, §g: stage 1 128, stage 2 256): the data arrive in batches of train.batch_size (256,
the stage-2 value); stage 1 splits each into chunks of method.predict_batch_size (128) with one Adam step
per chunk (a micro-batch under train.accumulate), so it runs at the card's batch size and number of steps.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from contrastlab.methods.base import OptimSpec, step_chunks
from contrastlab.methods.cvp.bands import SCHEMES, split_bands
from contrastlab.methods.cvp.config import SMALL_SCALE, CVPConfig
from contrastlab.methods.cvp.loss import cluster_usage, mi_loss, pre_weight, prediction_loss, reconstruction_loss, stage2_total
from contrastlab.methods.cvp.model import ContrastiveNet, CrossChannelPredictor, parse_dims
from contrastlab.methods.cvp.svm import class_map_image, svm_scores

SPLIT_CODES = {"train": 0, "test": 1, "unlabelled": 2}


def cvp_sample_fn(cfg: CVPConfig, meta: dict):
    """Per-sample CPU preprocessing: centre crop of the stored patch to cfg.patch_size, float32, and the
    label / draw / position columns evaluate() needs."""
    w = cfg.patch_size

    def fn(sample: dict, rng: np.random.Generator) -> dict:
        patch = np.asarray(sample["npy"])
        info = sample.get("json") or {}
        b, h, _ = patch.shape
        if b != cfg.n_bands:
            raise ValueError(f"patch has {b} bands but method.n_bands={cfg.n_bands}: set method.n_bands={b}")
        if h < w:
            raise ValueError(f"stored patches are {h}x{h}, smaller than method.patch_size={w}: regenerate the shards with "
                             f"patch_size >= {w} (e.g. data.embedded_params={{patch_size: 15}})")
        o = (h - w) // 2
        return {
            "patch": patch[:, o:o + w, o:o + w].astype(np.float32),
            "label": np.int64(info.get("label", -1)),
            "svm_split": np.int64(SPLIT_CODES.get(info.get("split", "unlabelled"), 2)),
            "row": np.int64(info.get("row", -1)),
            "col": np.int64(info.get("col", -1)),
        }

    return fn


class CVP(nn.Module):
    Config = CVPConfig
    name = "cvp"
    modality = "hsi"
    default_dataset = "usgs-cube"
    dataset_splits = {"train": "pixels", "eval": "pixels"}  # one split: every pixel once, the draw in its json
    eval_metric = "oa"
    eval_mode = "max"
    needs_train_features = True  # stage 2 extracts the frozen views of the training pixels
    # train.epochs must equal predict_epochs + contrast_epochs (ASHA's max_t and the LR schedule read it).
    # batch 256 is stage 2's (COMPLETER; L_MI's batch-level joint needs batch >> K, card §i); stage 1 splits
    # it into method.predict_batch_size chunks (card: 128), one step each (see train_step).
    train_defaults = {"batch_size": 256, "epochs": 530, "log_every_steps": 10}
    SMALL_SCALE = SMALL_SCALE
    # --smoke: 2 trials, a 32x32 cube of 48 bands (15x15 patches stored so the sweep's w fits), 2 + 2 epochs
    smoke_overrides = {
        "train.epochs": 4, "train.batch_size": 128, "method.n_bands": 48,
        "data.embedded_params": "{size: 32, n_bands: 48, patch_size: 15}",
        **{k: v for k, v in SMALL_SCALE.items() if k not in ("method.predict_epochs", "method.contrast_epochs", "method.pre_start_epoch")},
        "method.predict_epochs": 2, "method.contrast_epochs": 2, "method.pre_start_epoch": 1,
    }

    def __init__(self, cfg: CVPConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        g1, g2 = split_bands(cfg.n_bands, cfg.split_scheme, cfg.split_seed)
        if min(len(g1), len(g2)) < 13:
            raise ValueError(f"split {cfg.split_scheme!r} of {cfg.n_bands} bands gives groups of {len(g1)} and {len(g2)}; each needs >= 13")
        self.register_buffer("g1", torch.as_tensor(g1), persistent=False)
        self.register_buffer("g2", torch.as_tensor(g2), persistent=False)
        self.p12 = CrossChannelPredictor(len(g1), len(g2), cfg.patch_size, cfg.view_dim, cfg.predictor_conv2d_padding)
        self.p21 = CrossChannelPredictor(len(g2), len(g1), cfg.patch_size, cfg.view_dim, cfg.predictor_conv2d_padding)
        decoder_hidden = parse_dims(cfg.decoder_hidden) or None  # "" -> mirror of the encoder
        self.contrastive = ContrastiveNet(cfg.view_dim, parse_dims(cfg.encoder_hidden), cfg.clusters,
                                          parse_dims(cfg.predictor_hidden), decoder_hidden)
        # view statistics of the training pixels (fixed size: checkpointed, so a resumed run normalises alike)
        self.register_buffer("view_mean", torch.zeros(2 * cfg.view_dim))
        self.register_buffer("view_std", torch.ones(2 * cfg.view_dim))
        self._cache: dict[str, tuple[np.ndarray, torch.Tensor, dict]] = {}  # split -> frozen views (stage 2 only)

    # ---- contract
    @staticmethod
    def make_preprocess(cfg: CVPConfig, split: str, meta: dict):
        bands = meta.get("bands")
        if bands is not None and int(bands) != cfg.n_bands:
            raise ValueError(f"the data has {bands} bands but method.n_bands={cfg.n_bands}: set method.n_bands={bands}")
        return cvp_sample_fn(cfg, meta), ("npy", "json")

    def phases(self) -> list[tuple[str, int]]:
        out = [("predict", self.cfg.predict_epochs)]
        return out + ([("contrast", self.cfg.contrast_epochs)] if self.cfg.contrast_epochs else [])

    def trainable(self) -> dict[str, nn.Module]:
        return {"predictors": nn.ModuleList([self.p12, self.p21]), "contrastive": self.contrastive}

    def optimizers(self) -> dict[str, OptimSpec]:
        c = self.cfg  # constant LR: ContrastNet's AE and COMPLETER train with plain Adam
        specs = {"predict": OptimSpec(["predictors"], "adam", lr=c.predict_lr, weight_decay=c.predict_weight_decay, schedule="constant")}
        if c.contrast_epochs:
            specs["contrast"] = OptimSpec(["contrastive"], "adam", lr=c.contrast_lr, schedule="constant")
        return specs

    @staticmethod
    def search_space(cfg=None) -> dict:
        """Card §e. patch_size 11/15 need shards stored with patch_size >= 15 (the smoke data has them)."""
        from ray import tune

        return {
            "method.split_scheme": tune.choice(list(SCHEMES)),
            "method.alpha": tune.choice([1.0, 5.0, 9.0, 15.0]),
            "method.clusters": tune.choice([32, 64, 128]),
            "method.patch_size": tune.choice([9, 11, 15]),
            "method.lambda_pre": tune.choice([0.01, 0.1, 1.0]),
        }

    # ---- stage 1
    def views(self, patch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, b, w, w) -> raw views v1 = bottleneck of P12(x[G1]), v2 = bottleneck of P21(x[G2])."""
        return self.p12.view(patch[:, self.g1]), self.p21.view(patch[:, self.g2])

    def predict_losses(self, patch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x1, x2 = patch[:, self.g1], patch[:, self.g2]
        _, pred2 = self.p12(x1)
        _, pred1 = self.p21(x2)
        return F.mse_loss(pred2.float(), x2.flatten(1)), F.mse_loss(pred1.float(), x1.flatten(1))

    # ---- stage 2
    def _frozen_views(self, split: str, ctx) -> tuple[np.ndarray, torch.Tensor, dict]:
        """Raw [v1; v2] of every sample of `split` (sorted indices, (N, 2d), other columns); cached while
        the predictors are frozen (stage 2), recomputed in stage 1."""
        if ctx.phase == "contrast" and split in self._cache:
            return self._cache[split]
        was = self.training
        self.p12.eval(), self.p21.eval()
        idx, feats, extras = ctx.extract(split, lambda b: torch.cat(self.views(b["patch"]), dim=1))
        self.train(was)
        out = (idx, torch.as_tensor(feats, device=ctx.device), extras)
        if ctx.phase == "contrast":
            self._cache[split] = out
        return out

    def normalise_views(self, v: torch.Tensor) -> torch.Tensor:
        return (v - self.view_mean) / self.view_std if self.cfg.zscore_views else v

    def on_phase_start(self, ctx) -> None:
        self._cache.clear()

    def on_epoch_start(self, ctx) -> None:
        if ctx.phase != "contrast":
            return
        # stage-2 steps read cached views only; the predictors are frozen (eval-mode BN) when views are computed
        if "train_eval" not in self._cache:
            idx, v, _ = self._frozen_views("train_eval", ctx)
            self.view_mean.copy_(v.mean(dim=0))
            self.view_std.copy_(v.std(dim=0).clamp_min(1e-6))

    def contrast_forward(self, v1: torch.Tensor, v2: torch.Tensor) -> dict[str, torch.Tensor]:
        net = self.contrastive
        h1, l1, z1 = net.enc1(v1)
        h2, l2, z2 = net.enc2(v2)
        return {"h1": h1, "h2": h2, "l1": l1, "l2": l2, "z1": z1, "z2": z2}

    def train_step(self, batch: dict, ctx) -> dict[str, float]:
        if ctx.phase == "predict":
            return self._predict_step(batch["patch"], ctx)
        return self._contrast_step(batch, ctx)

    def _predict_step(self, patch: torch.Tensor, ctx) -> dict[str, float]:
        """Stage 1: one Adam step (one micro-batch under train.accumulate) per chunk of about
        method.predict_batch_size rows, the card's stage-1 batch: the batch is cut into the nearest whole
        number of near-equal chunks (256 rows at 128: two of 128; 300: two of 150), never below the two
        rows BatchNorm needs. Logs the row-weighted mean losses. Every rank holds train.batch_size rows
        (drop_last), so all ranks take the same number of steps and their gradient all-reduces pair up."""
        rows = patch.shape[0]
        sums = torch.zeros(3)
        for chunk in patch.split(step_chunks(rows, self.cfg.predict_batch_size or rows)):
            with ctx.autocast():
                l12, l21 = self.predict_losses(chunk)
            loss = l12 + l21
            ctx.optimize(loss, "predict")
            sums += torch.stack([loss.detach(), l12.detach(), l21.detach()]).float().cpu() * chunk.shape[0]
        mean = (sums / rows).tolist()
        return {"loss": mean[0], "loss_p12": mean[1], "loss_p21": mean[2]}

    def _contrast_step(self, batch: dict, ctx) -> dict[str, float]:
        c = self.cfg
        idx, views, _ = self._frozen_views("train_eval", ctx)
        pos = torch.searchsorted(torch.as_tensor(idx, device=ctx.device), batch["index"].to(ctx.device))
        v = self.normalise_views(views[pos])
        v1, v2 = v[:, : c.view_dim], v[:, c.view_dim:]
        net = self.contrastive
        out = self.contrast_forward(v1, v2)
        z1, z2 = out["z1"], out["z2"]
        l_mi = mi_loss(ctx.gather(z1.float()), ctx.gather(z2.float()), c.alpha)  # global joint (card §i)
        l_rec = reconstruction_loss(net.dec1(z1), v1, net.dec2(z2), v2)
        lam = pre_weight(ctx.epoch - c.predict_epochs, c.lambda_pre, c.pre_start_epoch)
        l_pre = prediction_loss(net.q12(z1), z2, net.q21(z2), z1) if lam else None
        loss = stage2_total(l_mi, l_rec, l_pre, c.lambda_rec, lam)
        ctx.optimize(loss, "contrast")
        used, h_mean = cluster_usage(z1.detach())
        logs = {"loss": float(loss.detach()), "loss_mi": float(l_mi.detach()), "loss_rec": float(l_rec.detach()),
                "clusters_used": float(used), "entropy_mean_z": h_mean}
        if l_pre is not None:
            logs["loss_pre"] = float(l_pre.detach())
        return logs

    # ---- stage 3
    @torch.no_grad()
    def features_from_views(self, v: torch.Tensor, kind: str, chunk: int = 4096) -> torch.Tensor:
        """(N, 2d) raw views -> SVM features: views | concat of both encoders' hidden / logits / softmax."""
        if kind == "views":
            return v
        c = self.cfg
        was = self.training
        self.contrastive.eval()
        outs = []
        for s in range(0, len(v), chunk):
            vn = self.normalise_views(v[s:s + chunk])
            o = self.contrast_forward(vn[:, : c.view_dim], vn[:, c.view_dim:])
            key = {"hidden": "h", "logits": "l", "softmax": "z"}[kind]
            outs.append(torch.cat([o[key + "1"], o[key + "2"]], dim=1))
        self.train(was)
        return torch.cat(outs)

    def _draws(self, labels: np.ndarray, svm_split: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        from contrastlab.platform.datasets.hsi import draw_train_test

        c = self.cfg
        if c.eval_labels_per_class > 0:
            lab = np.where(labels >= 0, labels, -1)
            return [draw_train_test(lab, c.eval_labels_per_class, c.eval_seed + k) for k in range(c.eval_draws)]
        train, test = np.flatnonzero((svm_split == 0) & (labels >= 0)), np.flatnonzero((svm_split == 1) & (labels >= 0))
        if not len(train) or not len(test):
            raise ValueError("the eval shards carry no train/test draw (json split); set method.eval_labels_per_class > 0")
        return [(train, test)]

    def svm_evaluate(self, feats: np.ndarray, labels: np.ndarray, draws) -> tuple[dict[str, float], object, tuple]:
        """Mean (and std of OA) of the SVM scores over the draws; also returns the first draw's model."""
        c = self.cfg
        results, first = [], None
        for train, test in draws:
            scores, clf, norm = svm_scores(feats, labels, train, test, c.svm, c.svm_c)
            results.append(scores)
            first = first or (clf, norm)
        out = {k: float(np.mean([r[k] for r in results])) for k in ("oa", "aa", "kappa")}
        out["oa_std"] = float(np.std([r["oa"] for r in results]))
        return out, first[0], first[1]

    def evaluate(self, eval_batches, ctx) -> dict[str, float]:
        c = self.cfg
        _, views, extras = self._frozen_views("eval", ctx)
        labels, svm_split = extras["label"].astype(np.int64), extras["svm_split"]
        draws = self._draws(labels, svm_split)
        kind = "views" if ctx.phase == "predict" else c.features
        feats = self.features_from_views(views, kind).cpu().numpy()
        metrics, clf, (mean, std) = self.svm_evaluate(feats, labels, draws)
        if ctx.phase == "contrast" and c.eval_views_ablation and kind != "views":
            ablation, _, _ = self.svm_evaluate(views.cpu().numpy(), labels, draws)
            metrics.update({f"views_{k}": v for k, v in ablation.items()})
        if c.class_map and ctx.is_main and ctx.tb is not None:
            self._log_class_map(ctx, feats, clf, mean, std, labels, extras)
        return metrics

    def _log_class_map(self, ctx, feats, clf, mean, std, labels, extras) -> None:
        rows, cols = extras["row"].astype(np.int64), extras["col"].astype(np.int64)
        height = int(ctx.meta.get("height", rows.max() + 1))
        width = int(ctx.meta.get("width", cols.max() + 1))
        pred = clf.predict((feats.astype(np.float64) - mean) / std)
        gt_img = class_map_image(rows, cols, labels, height, width)
        pred_img = class_map_image(rows, cols, pred, height, width)  # every pixel, unlabelled ones too
        gap = np.zeros((gt_img.shape[0], 4, 3), np.uint8)
        ctx.log_images("cvp/ground_truth_vs_prediction", np.concatenate([gt_img, gap, pred_img], axis=1)[None])
