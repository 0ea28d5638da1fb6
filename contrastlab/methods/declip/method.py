"""DeCLIP on the platform: CLIP plus multi-view, SimSiam, MLM and nearest-neighbour supervision.

Spec: the method card `declip.md` (section b for the objective). One training step, local batch B:

    i1, i2 = normalize(f_I(x1)), normalize(f_I(x2))           two MoCo-v2 views (two forward passes: per-view BN)
    f_T(t_masked) -> (pooled, hidden)                           quirk 1: the MLM-masked caption is the contrastive t
    t, ta = normalize_eps(pooled), normalize_eps(f_T(eda)[0])   ta: the EDA caption, never masked
    L_mvs = [C(i1,t) + C(i2,t) + C(i1,ta) + C(i2,ta)] / 4
    L_ss  = -1/2 [D(p1, z2) + D(p2, z1)],  z_k = proj(f_I(x_k)) (un-normalised encoder output), p_k = pred(z_k)
    L_mlm = CE(mlm_head(hidden)[selected], labels[selected])
    n, na = queue.query_and_update(t, ta)                       query t, query ta, enqueue ta, enqueue t
    L_nn  = 1/2 sum_v 1/2 [CE(s i_v n^T, y) + CE(s i_v na^T, y)]
    L     = w_c L_mvs + w_ss L_ss + w_mlm L_mlm + w_nn L_nn    (w_c = 1 - active extra weights)

theta is clamped into [theta_clamp_low, theta_clamp_high] before and after every optimiser step
(the `before_optimizer_step` / `after_optimizer_step` hooks the loop calls); the forward scale is
`min(exp(theta), max_logit_scale)`. The NN queue is a submodule made of persistent buffers, so it is
part of `state_dict()` and of every checkpoint.

Each worker's queue differs (it holds that worker's captions), so it is declared in `per_rank_state`:
every rank's queue is saved and restored on resume (tests/methods/test_declip_two_workers.py).

Evaluation differs from card f in two places, both for the small embedded sets: zero-shot reports
top-5 only for tasks of more than 5 classes, and the linear probe is the platform's
(`eval.linear_probe`: standardised features, C chosen on a 20% validation split from a 13-value grid)
rather than the card's L-BFGS search over 96 values of lambda in [1e-6, 1e6].
"""
from __future__ import annotations

import html
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from contrastlab.methods.base import OptimSpec
from contrastlab.methods.clip.evaluation import evaluate_image_text
from contrastlab.methods.clip.loss import logit_scale_value, normalize
from contrastlab.methods.clip.method import image_text_sample_fn
from contrastlab.methods.clip.model import build_image_tower, build_text_tower
from contrastlab.methods.declip.config import DeCLIPConfig
from contrastlab.methods.declip.eda import EDA, load_synonyms
from contrastlab.methods.declip.heads import MLMHead, Predictor, Projector
from contrastlab.methods.declip.loss import LossWeights, clamp_log_scale_, declip_total, mlm_loss, mvs_loss, nn_loss, simsiam_loss
from contrastlab.methods.declip.mlm import IGNORE_INDEX, mask_tokens
from contrastlab.methods.declip.nn_queue import NNQueue
from contrastlab.platform import distributed as dist_utils
from contrastlab.platform.data.augment import hflip, moco_v2_view, normalize_batch, random_resized_crop, to_chw
from contrastlab.platform.text import VOCAB_SIZE, BPETokenizer


# --------------------------------------------------------------------------- CPU preprocessing
def build_eda(cfg: DeCLIPConfig, meta: dict | None = None) -> EDA:
    """The configured EDA augmenter: built-in synonym table + optional user file + the dataset's map."""
    table = {w: set(s) for w, s in load_synonyms(cfg.eda_synonyms_file or None).items()}
    if cfg.eda_dataset_synonyms and meta and isinstance(meta.get("synonyms"), dict):
        from contrastlab.methods.declip.eda import symmetrise

        for w, syns in symmetrise({k: list(v) for k, v in meta["synonyms"].items()}).items():
            table.setdefault(w, set()).update(syns)
    synonyms = {w: sorted(s) for w, s in table.items()}
    return EDA(probs=cfg.eda_probs(), n_sr=cfg.eda_n, n_ri=cfg.eda_n, n_rs=cfg.eda_n, p_rd=cfg.eda_p_rd, synonyms=synonyms)


def declip_train_sample_fn(cfg: DeCLIPConfig, meta: dict, tokenizer: BPETokenizer | None = None):
    """Per-sample training preprocessing (runs in Ray Data CPU tasks, numpy only).

    Output columns: `image` (view 1, uint8 CxHxW), `image2` (view 2, when MVS or SimSiam is on),
    `text` (caption ids), `text_eda` (EDA caption ids, when MVS is on), `text_masked` + `mlm_labels`
    (when MLM is on), `label` (the json's `label` or -1; only used to log the NN same-class rate).
    All randomness comes from the per-sample `rng` (reproducible per run seed, epoch and key).
    """
    tokenizer = tokenizer or BPETokenizer(cfg.context_length)
    eda = build_eda(cfg, meta) if cfg.use_mvs else None
    size, scale = cfg.image_size, (cfg.crop_scale_min, 1.0)

    def view(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if cfg.view_augmentation == "mocov2":
            return moco_v2_view(img, size, rng, crop_scale=scale, blur=cfg.blur)
        return hflip(random_resized_crop(img, size, rng, scale=scale), rng)

    def fn(sample: dict, rng: np.random.Generator) -> dict:
        img, caption = sample["jpg"], str(sample["txt"])
        out = {"image": to_chw(view(img, rng))}
        if cfg.two_views:
            out["image2"] = to_chw(view(img, rng))
        ids = tokenizer.encode([caption])[0]
        out["text"] = ids
        if eda is not None:
            out["text_eda"] = tokenizer.encode([eda(caption, rng)])[0]
        if cfg.mlm_active:
            masked, labels = mask_tokens(
                ids, rng=rng, mask_id=tokenizer.mask_id, vocab_size=tokenizer.vocab_size, special_ids=tokenizer.special_ids,
                select_prob=cfg.mlm_select_prob, mask_prob=cfg.mlm_mask_prob, random_prob=cfg.mlm_random_prob,
                random_excludes_special=cfg.mlm_random_excludes_special,
            )
            out["text_masked"], out["mlm_labels"] = masked, labels
        label = (sample.get("json") or {}).get("label", -1)
        out["label"] = np.int64(label if isinstance(label, (int, np.integer)) else -1)
        return out

    return fn


# --------------------------------------------------------------------------- the method
class DeCLIP(nn.Module):
    Config = DeCLIPConfig
    name = "declip"
    modality = "image-text"
    default_dataset = "shapes-captions"
    dataset_splits = {"train": "train", "eval": "heldout"}
    eval_metric = "zeroshot_colour_shape_top1"  # card i: tune on zero-shot accuracy, not the loss
    per_rank_state = ("queue.",)  # each worker's own NN queue: never broadcast, saved per rank in checkpoints
    train_defaults = {"batch_size": 64, "epochs": 8, "log_every_steps": 10}
    # --smoke: 2 trials x 3 epochs of 16 steps on 1,024 pairs. One trial of 3 x 20 steps took 2 min 12 s
    # on the shared 2-core machine (the two trials run one after the other), so 16 steps keep 2 under 5 min.
    smoke_overrides = {"train.epochs": 3, "data.embedded_params": "{n_train: 1024, n_heldout: 256, n_test: 128}"}

    def __init__(self, cfg: DeCLIPConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        # Built in CLIP's order, so the same seed gives CLIP's exact initial towers and temperature.
        self.image_encoder = build_image_tower(cfg.image_tower, cfg.embed_dim, cfg.image_size)
        self.text_encoder = build_text_tower(cfg.text_tower, cfg.embed_dim, cfg.context_length, causal=cfg.text_causal)
        self.log_scale = nn.Parameter(torch.tensor(float(np.log(1 / cfg.init_temperature))))
        self.projector = Projector(cfg.embed_dim, cfg.proj_hidden, cfg.proj_out) if cfg.ss_active else None
        self.predictor = Predictor(cfg.proj_out, cfg.pred_hidden) if cfg.ss_active else None
        width = self.text_encoder.ln_final.normalized_shape[0]
        self.mlm_head = MLMHead(width, VOCAB_SIZE) if cfg.mlm_active else None
        self.queue = NNQueue(cfg.queue_size, cfg.embed_dim, seed=cfg.queue_seed, overflow=cfg.queue_overflow) if cfg.nn_active else None
        self.weights = LossWeights(ss=cfg.weight_ss, mlm=cfg.weight_mlm, nn=cfg.weight_nn, contrastive=cfg.weight_contrastive)
        self._tokenizer: BPETokenizer | None = None

    # ---- contract
    @staticmethod
    def make_preprocess(cfg: DeCLIPConfig, split: str, meta: dict):
        if split == "train":
            return declip_train_sample_fn(cfg, meta), ("jpg", "txt")
        return image_text_sample_fn(cfg, split, meta), ("jpg", "txt")  # eval: exactly CLIP's

    def trainable(self) -> dict[str, nn.Module]:
        return {"model": self}

    def optimizers(self) -> dict[str, OptimSpec]:
        c = self.cfg  # ndim<=1 params (biases, BN/LN, theta) get no weight decay (card e)
        return {"main": OptimSpec(["model"], "adamw", lr=c.lr, weight_decay=c.weight_decay, betas=c.betas, eps=c.eps,
                                  warmup_fraction=c.warmup_fraction, warmup_start_factor=c.warmup_start_factor)}

    @staticmethod
    def search_space(cfg=None) -> dict:
        """Card e's sweep ranges. Queue sizes {8B, 32B, 1,024} for the embedded data (B = the default
        per-worker batch, 64; the card's third value is 65,536 for real data). theta init values
        above e^-3 (tau > 0.0498) are lifted to theta=3 by the first clamp, so the grid starts at 0.05
        (which becomes theta=3, tau 0.0498): 0.07 would be the same trial."""
        from ray import tune

        b = DeCLIP.train_defaults["batch_size"]
        return {
            "method.lr": tune.loguniform(2e-4, 3e-3),
            "method.weight_decay": tune.choice([0.02, 0.05, 0.1, 0.2]),
            "method.weight_nn": tune.uniform(0.0, 0.3),
            "method.weight_ss": tune.uniform(0.0, 0.3),
            "method.weight_mlm": tune.uniform(0.0, 0.3),
            "method.queue_size": tune.choice(sorted({8 * b, 32 * b, 1024})),
            "method.crop_scale_min": tune.choice([0.2, 0.5]),
            "method.init_temperature": tune.choice([0.05, 0.03, 0.02]),
        }

    # ---- encoders
    def encode_image(self, images_uint8: torch.Tensor) -> torch.Tensor:
        return normalize(self.image_encoder(normalize_batch(images_uint8)))

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return normalize(self.text_encoder(ids)[0], eps=self.cfg.text_norm_eps)

    def scale(self) -> torch.Tensor:
        return logit_scale_value(self.log_scale, self.cfg.max_logit_scale)

    def clamp_theta(self) -> None:
        clamp_log_scale_(self.log_scale, self.cfg.theta_clamp_low, self.cfg.theta_clamp_high)

    # ---- optimiser hooks (called by the loop around optimizer.step())
    def before_optimizer_step(self, name: str, ctx) -> None:
        self.clamp_theta()

    def after_optimizer_step(self, name: str, ctx) -> None:
        self.clamp_theta()

    # ---- the step
    def compute_losses(self, batch: dict, ctx) -> tuple[torch.Tensor, dict[str, Any]]:
        """Forward pass and every active loss term; updates the NN queue. Returns (total, logs)."""
        c = self.cfg
        with ctx.autocast():
            f1 = self.image_encoder(normalize_batch(batch["image"]))
            f2 = self.image_encoder(normalize_batch(batch["image2"])) if c.two_views else None
            text_ids = batch["text_masked"] if c.contrastive_uses_masked else batch["text"]
            pooled, hidden = self.text_encoder(text_ids)
            if c.mlm_active and not c.contrastive_uses_masked:
                hidden = self.text_encoder(batch["text_masked"])[1]  # quirk 1 off: a separate MLM pass
            pooled_eda = self.text_encoder(batch["text_eda"])[0] if c.use_mvs else None
            if c.ss_active:
                z1, z2 = self.projector(f1), self.projector(f2)  # un-normalised encoder output, BN per view
                p1, p2 = self.predictor(z1), self.predictor(z2)
            if c.mlm_active:
                mlm_logits, mlm_targets = self.mlm_head.selected_logits(hidden, batch["mlm_labels"], IGNORE_INDEX)

        scale = self.scale()
        i1 = normalize(f1)
        i2 = normalize(f2) if (c.use_mvs and f2 is not None) else None
        t = normalize(pooled, eps=c.text_norm_eps)
        ta = normalize(pooled_eda, eps=c.text_norm_eps) if pooled_eda is not None else None
        terms: dict[str, torch.Tensor] = {"mvs": mvs_loss(i1, i2, t, ta, scale, ctx.gather, ctx.rank)}
        logs: dict[str, Any] = {}
        if c.ss_active:
            terms["ss"] = simsiam_loss(p1, p2, z1, z2)
            with torch.no_grad():  # collapse monitor (card g): per-dim std of normalised z, times sqrt(d) (~1 healthy)
                zn = F.normalize(z1.detach().float(), dim=-1)
                logs["ss_z_std_x_sqrt_d"] = float(zn.std(dim=0).mean() * zn.shape[1] ** 0.5)
        if c.mlm_active:
            terms["mlm"] = mlm_loss(mlm_logits, mlm_targets, IGNORE_INDEX)
            with torch.no_grad():
                n_sel = mlm_targets.numel()
                logs["mlm_acc"] = float((mlm_logits.argmax(-1) == mlm_targets).float().mean()) if n_sel else 0.0
        if c.nn_active:
            labels = batch.get("label")
            n, na, nn_stats = self._query_queue(t, ta, labels)
            terms["nn"] = nn_loss(i1, i2, n, na, scale, ctx.gather, ctx.rank)
            logs["nn_cosine"] = float(nn_stats["nn_cosine"])
            logs["queue_fill"] = float(nn_stats["queue_fill"])
            if labels is not None and bool((labels >= 0).any()):
                # fraction of NN rows that are real entries of the same class (chance ~ 1/#classes)
                logs["nn_same_label"] = float((nn_stats["nn_ids"] == labels).float().mean())
        total = declip_total(terms, self.weights)
        key = {"mvs": "loss_mvs" if c.use_mvs else "loss_clip"}
        logs.update({key.get(k, f"loss_{k}"): float(v.detach()) for k, v in terms.items()})
        return total, logs

    def _query_queue(self, t: torch.Tensor, ta: torch.Tensor | None, labels: torch.Tensor | None):
        """Card order: query t, query ta (old queue), enqueue ta, enqueue t. Without ta (MVS off): query t, enqueue t."""
        if ta is not None:
            return self.queue.query_and_update(t, ta, labels, labels)
        n, cosine, index = self.queue.query(t)
        ids = self.queue.ids[index].clone()
        self.queue.enqueue(t, labels)
        return n, None, {"nn_cosine": cosine.mean(), "queue_fill": self.queue.fill.float() / self.queue.size, "nn_ids": ids}

    def train_step(self, batch: dict, ctx) -> dict[str, float]:
        total, logs = self.compute_losses(batch, ctx)
        ctx.optimize(total, "main")
        return {"loss": float(total.detach()), **logs, "temperature": 1.0 / float(self.scale().detach())}

    # ---- evaluation
    @torch.no_grad()
    def evaluate(self, eval_batches, ctx) -> dict[str, float]:
        """CLIP's zero-shot + retrieval (the same function, on the same features), a linear probe on
        the frozen image embeddings, and a retrieval example grid in TensorBoard (rank 0).

        One pass over this rank's eval shard records the features; CLIP's `evaluate_image_text`
        then runs on those recorded features (it gathers and de-duplicates exactly as for CLIP).
        Linear probe: the first zero-shot task's label field (or meta["probe_label_field"]); fit on
        the even sample indexes, tested on the odd ones (a 50/50 split of the eval features).
        """
        if self._tokenizer is None:
            self._tokenizer = BPETokenizer(self.cfg.context_length)
        tasks = ctx.meta.get("zero_shot", {})
        label_fields = [t["label_field"] for t in tasks.values()]
        probe_field = ctx.meta.get("probe_label_field") or (label_fields[0] if label_fields else None)
        keep = sorted(set(label_fields + ([probe_field] if probe_field else [])))
        recorded, examples = [], None
        for batch in eval_batches():
            rec = {"image": self.encode_image(batch["image"]).float(), "text": self.encode_text(batch["text"]).float(),
                   "ids": batch["text"], "index": batch["index"], **{f: batch[f] for f in keep if f in batch}}
            recorded.append(rec)
            if examples is None and self.cfg.retrieval_examples > 0:
                k = self.cfg.retrieval_examples
                examples = {"image": batch["image"][:k].cpu().numpy(), "index": batch["index"][:k].cpu().numpy()}

        def feature_batches():
            return iter(recorded)

        def encode_text(x: torch.Tensor) -> torch.Tensor:  # recorded features pass through; prompt ids are encoded
            return x if x.is_floating_point() else self.encode_text(x)

        metrics = evaluate_image_text(feature_batches, lambda feats: feats, encode_text, self._tokenizer, ctx.meta, ctx.device)

        feats = self._gather_recorded(recorded, keep)
        if feats is None:
            return metrics
        if self.cfg.probe and probe_field and probe_field in feats:
            metrics.update(self._linear_probe(feats, probe_field))
        if ctx.rank == 0 and examples is not None and getattr(ctx, "tb", None) is not None:
            self._log_retrieval_examples(ctx, feats, examples)
        return metrics

    @staticmethod
    def _gather_recorded(recorded: list[dict], keep: list[str]) -> dict[str, np.ndarray] | None:
        cols = ["image", "text", "ids", "index", *keep]
        # a rank that recorded nothing sends no names; embeddings travel as tensors (gather_arrays)
        local = {k: np.concatenate([r[k].cpu().numpy() for r in recorded]) for k in cols if recorded and k in recorded[0]}
        parts = [p for p in dist_utils.gather_arrays(local) if len(p.get("index", ()))]
        if not parts:
            return None
        merged = {k: np.concatenate([p[k] for p in parts]) for k in cols
                  if all(k in p and len(p[k]) == len(p["index"]) for p in parts)}
        _, first = np.unique(merged["index"], return_index=True)
        return {k: v[first] for k, v in merged.items()}

    @staticmethod
    def _linear_probe(feats: dict[str, np.ndarray], field: str) -> dict[str, float]:
        from contrastlab.platform.eval import linear_probe

        labels, index = feats[field].astype(np.int64), feats["index"]
        ok = labels >= 0
        train, test = ok & (index % 2 == 0), ok & (index % 2 == 1)
        n_classes = len(np.unique(labels[train]))
        if test.sum() < 1 or n_classes < 2 or int(np.ceil(0.2 * train.sum())) < n_classes:
            return {}  # too few samples for the probe's stratified 20% validation split
        result = None
        if dist_utils.rank() == 0:  # computed once, shared: every rank reports the same metrics
            result = linear_probe(feats["image"][train], labels[train], feats["image"][test], labels[test])
        result = dist_utils.broadcast_object(result)
        return {"linear_probe_top1": float(result["accuracy"])}

    def _log_retrieval_examples(self, ctx, feats: dict[str, np.ndarray], examples: dict[str, np.ndarray]) -> None:
        """TensorBoard: the query images (a row) and, as text, each one's top-5 captions (true one marked)."""
        row_of = {int(i): r for r, i in enumerate(feats["index"])}
        rows = [row_of[int(i)] for i in examples["index"] if int(i) in row_of]
        if not rows:
            return
        scores = feats["image"][rows] @ feats["text"].T
        lines = []
        for q, (r, s) in enumerate(zip(rows, scores)):
            true = self._tokenizer.decode(feats["ids"][r])
            lines.append(f"**query {q}** (index {int(feats['index'][r])}, caption: *{html.escape(true)}*)\n")
            for rank_, j in enumerate(np.argsort(-s, kind="stable")[:5], 1):
                mark = " ✓" if j == r else ""
                lines.append(f"{rank_}. {html.escape(self._tokenizer.decode(feats['ids'][j]))} ({s[j]:.3f}){mark}")
            lines.append("")
        images = np.ascontiguousarray(examples["image"].transpose(0, 2, 3, 1))  # (N, H, W, C) uint8
        ctx.tb.images("eval/retrieval_queries", images, ctx.step)
        ctx.tb.text("eval/retrieval_top5", "\n".join(lines), ctx.step)
