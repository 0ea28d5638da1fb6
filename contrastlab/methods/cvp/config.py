"""CVP hyperparameters. Defaults: the card's full-scale values (cvp.md §b, §c, §e); `SMALL_SCALE` holds
the card's §g small-scale faithful version (2 CPU cores, minutes). [R] marks reconstructed choices
(no paper body, no official code): each is a field here so it can be changed and swept."""
from __future__ import annotations

from dataclasses import dataclass

from contrastlab.methods.cvp.bands import SCHEMES
from contrastlab.methods.cvp.model import conv2d_out_size
from contrastlab.methods.cvp.svm import SVM_MODES

FEATURES = ("hidden", "logits", "softmax", "views")


@dataclass
class CVPConfig:
    # data / views
    n_bands: int = 200  # bands in the shards (usgs-cube default); must match the data's meta["bands"]
    patch_size: int = 9  # w; centre crop of the stored patches (stored patch must be >= w) [R]
    # Padding of the stage-1 3x3 Conv2d. 0 = the card's layout (§c: unpadded, (w-8)x(w-8) map, needs w >= 9);
    # 1 = the previous padded layout of this code ((w-6)x(w-6) map, w >= 7), still available.
    predictor_conv2d_padding: int = 0
    split_scheme: str = "halves"  # [R] halves | interleave | blocks4 | random
    split_seed: int = 0  # seed of the `random` partition
    # stage 1: cross-channel predictors [R: ContrastNet's AE budget]
    view_dim: int = 128  # d
    predict_epochs: int = 30
    predict_lr: float = 1e-3
    predict_weight_decay: float = 5e-4
    # Stage-1 batch (card §e, §g: 128; stage 2 uses train.batch_size, 256). The platform reads one batch
    # size per run, so stage 1 splits each training batch into near-equal chunks of about this many rows,
    # one Adam step each (one micro-batch under train.accumulate): the card's batch size and number of
    # steps. 0 = one step per training batch.
    predict_batch_size: int = 128
    # stage 2: COMPLETER contrastive network
    contrast_epochs: int = 500  # 0 = stage-1 views only (the ablation)
    contrast_lr: float = 1e-4
    clusters: int = 128  # K
    alpha: float = 9.0
    lambda_rec: float = 0.1
    lambda_pre: float = 0.1
    pre_start_epoch: int = 100  # dual prediction from this stage-2 epoch on
    encoder_hidden: str = "1024,1024,1024"  # E: d -> these -> K
    predictor_hidden: str = "128,256,128,256,128"  # Q: K -> these -> K
    # D: K -> these -> d; "" = mirror of the encoder (K -> reversed(encoder_hidden) -> d), the card's
    # full-scale COMPLETER decoder (§b); SMALL_SCALE sets "256" (§g: D = K -> 256 -> d)
    decoder_hidden: str = ""
    zscore_views: bool = True  # [R §g] views z-scored (training-pixel stats) before stage 2
    # stage 3: SVM on frozen features
    features: str = "hidden"  # [R] hidden (penultimate) | logits | softmax | views ([v1; v2], stage 1 only)
    svm: str = "grid"  # grid (rbf+linear+poly, 3-fold) | linear | rbf | linear-fixed (C = svm_c, no search)
    svm_c: float = 10.0
    eval_labels_per_class: float = 0.0  # 0 = the shards' draw (json split); >0: redraw n (or a fraction) per class
    eval_draws: int = 1  # redraws (with eval_labels_per_class > 0), mean and std reported
    eval_seed: int = 0
    eval_views_ablation: bool = True  # also report the SVM on stage-1 views (views_oa ...) in stage 2
    class_map: bool = True  # classification map image to TensorBoard

    def validate(self) -> None:
        if self.split_scheme not in SCHEMES:
            raise ValueError(f"method.split_scheme must be one of {SCHEMES}, got {self.split_scheme!r}")
        if self.features not in FEATURES:
            raise ValueError(f"method.features must be one of {FEATURES}, got {self.features!r}")
        if self.svm not in SVM_MODES:
            raise ValueError(f"method.svm must be one of {SVM_MODES}, got {self.svm!r}")
        if self.predictor_conv2d_padding not in (0, 1):
            raise ValueError(f"method.predictor_conv2d_padding must be 0 (card layout) or 1 (previous padded layout), "
                             f"got {self.predictor_conv2d_padding}")
        if self.patch_size % 2 == 0:
            raise ValueError(f"method.patch_size must be odd (centre pixel), got {self.patch_size}")
        # the 3-D convs take w -> w-6, the 3x3 Conv2d -> w - 8 + 2*padding; at least a 1x1 map must remain
        if conv2d_out_size(self.patch_size, self.predictor_conv2d_padding) < 1:
            min_w = 9 - 2 * self.predictor_conv2d_padding
            raise ValueError(f"method.patch_size={self.patch_size} is too small for method.predictor_conv2d_padding="
                             f"{self.predictor_conv2d_padding}: the stage-1 predictor needs patch_size >= {min_w} "
                             f"(>= 9 with the card's unpadded Conv2d, >= 7 with padding 1); raise method.patch_size "
                             f"or set method.predictor_conv2d_padding=1")
        if self.n_bands < 26:
            raise ValueError(f"method.n_bands must be >= 26 (each band group needs >= 13 bands), got {self.n_bands}")
        if self.predict_batch_size < 0:
            raise ValueError(f"method.predict_batch_size must be >= 0 (0 = the whole training batch), got {self.predict_batch_size}")
        if self.predict_epochs < 1 or self.contrast_epochs < 0:
            raise ValueError("method.predict_epochs must be >= 1 and method.contrast_epochs >= 0")
        if self.clusters < 2 or self.view_dim < 1:
            raise ValueError("method.clusters must be >= 2 and method.view_dim >= 1")
        if self.eval_labels_per_class < 0 or self.eval_draws < 1:
            raise ValueError("method.eval_labels_per_class must be >= 0 and method.eval_draws >= 1")
        if self.features != "views" and self.contrast_epochs == 0:
            raise ValueError("method.contrast_epochs=0 trains no stage 2: use method.features=views")


# Card §g: the small-scale faithful version (d=64, K=32, E d->256->256->K, D K->256->d, Q K->64->K, stage 2
# lr 1e-3, 100 stage-2 epochs with dual prediction from 30, stage 1 10 epochs, linear SVM C=10).
SMALL_SCALE = {
    "method.view_dim": 64, "method.clusters": 32, "method.encoder_hidden": "256,256", "method.decoder_hidden": "256",
    "method.predictor_hidden": "64",
    "method.predict_epochs": 10, "method.contrast_epochs": 100, "method.contrast_lr": 1e-3, "method.pre_start_epoch": 30,
    "method.svm": "linear-fixed", "method.svm_c": 10.0,
}
