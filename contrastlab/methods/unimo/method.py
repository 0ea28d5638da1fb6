"""UNIMO on the platform: one unified Transformer, cross-modal contrastive learning (CMCL) with
rewritten hard negatives and retrieved/paraphrased positives, plus unimodal MLM and masked region
modelling (card `unimo.md`).

Streams (card d says "one modality type per batch; three Ray datasets, round-robin"; the platform
has one training dataset): every training sample carries a `stream` field (0 pair, 1 text-only,
2 image-only) set by the dataset generator in the card's proportions (shapes-relations
`stream_mix`, default 1:1:1). Every sample has the same fixed-shape columns; members a stream lacks
are zeros and masked out (a sample without the field gets its stream from its members: txt + jpg
pair, txt only text, jpg only image; so separate pair / text / image shard sets can be mixed by
weight with `--data 'pairs/*.tar; text/*.tar; images/*.tar' --set data.train_weights=1:1:1`,
platform/data/mixing.py). So each batch mixes the three streams and each loss is computed on its
rows only. `method.stream_mix` weights the streams' losses relative to the pair stream ("1:0:0"
switches the unimodal streams off; the samples are then still read).

Multi-worker (card i, "mixed batch types under DDP"): a rank's batch may lack a stream (no pair,
text-only or image-only rows), so a parameter may be unused on some rank and step (e.g. the MLM
head when no row has a masked token, the candidate encodings when no pair row has one). Two rules
keep the workers in step:
- the CMCL term runs on every rank whenever `weight_cmcl > 0`, even with no local pair rows: its
  collectives (the in-batch gather of text, image and row mask) are then called by every rank in
  the same order, forward and backward. With no pair rows it is 0 and still backprops (zero
  gradients) through the pooled heads, tau and the gathers;
- the platform's gradient sync (platform/train.py `sync_gradients`) agrees across ranks on which
  parameters have a gradient and zero-fills the ones this rank lacks, as DDP with
  `find_unused_parameters=True` does.

One training step, local batch B with pair rows P, text rows T, image rows I:

    L_CMCL  = cmcl_loss over anchors P (loss.py), candidates encoded separately (card b)
    L_lang  = MLM CE on T (text only) [+ on P's text, jointly encoded with P's masked image]
    L_vis   = masked-region regression on I [+ on P's regions, jointly encoded with P's masked text]
    L       = w_cmcl L_CMCL + w_l (L_mlm_pair + m_t L_mlm_text) + w_v (L_mrm_pair + m_i L_mrm_image)

with (1, m_t, m_i) = `stream_mix` / its pair part. tau is clipped to [0.001, 0.5] before and after
every optimiser step. Optimiser: AdamW, 5% warm-up then linear decay (card e; `lr_schedule`).

Deviation: the language loss is card b's task (a) only (MLM); the seq2seq task (b) is not built
(config.py).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from contrastlab.methods.base import OptimSpec
from contrastlab.methods.clip.evaluation import evaluate_image_text
from contrastlab.methods.declip.mlm import mask_tokens
from contrastlab.methods.unimo.config import UNIMOConfig
from contrastlab.methods.unimo.loss import clamp_temperature_, cmcl_loss, masked_region_loss, mlm_loss, unimo2_inbatch_loss
from contrastlab.methods.unimo.masking import IGNORE_INDEX, mask_regions, region_boxes_grid, span_mask_tokens
from contrastlab.methods.unimo.model import UnifiedTransformer, normalize
from contrastlab.platform import distributed as dist_utils
from contrastlab.platform.data.augment import resize_shorter_center_crop, to_chw
from contrastlab.platform.data.codecs import decode_jpeg
from contrastlab.platform.text import BPETokenizer

HARD_NEGATIVE_KINDS = ("attribute", "object", "relation")


# --------------------------------------------------------------------------- CPU preprocessing
def _image(img: np.ndarray | None, size: int) -> np.ndarray:
    """No augmentation (card d; a flip would also break left/right relations)."""
    if img is None:
        return np.zeros((3, size, size), np.uint8)
    if img.shape[0] != size or img.shape[1] != size:
        img = resize_shorter_center_crop(img, size, size)
    return to_chw(img)


def _mask_text(ids: np.ndarray, cfg: UNIMOConfig, tok: BPETokenizer, rng: np.random.Generator):
    if cfg.mlm_masking == "span":
        return span_mask_tokens(ids, rng=rng, mask_id=tok.mask_id, vocab_size=tok.vocab_size, special_ids=tok.special_ids,
                                ratio=cfg.txt_mask_ratio, geometric_p=cfg.span_geometric_p, mask_prob=cfg.mlm_mask_prob,
                                random_prob=cfg.mlm_random_prob)
    return mask_tokens(ids, rng=rng, mask_id=tok.mask_id, vocab_size=tok.vocab_size, special_ids=tok.special_ids,
                       select_prob=cfg.txt_mask_ratio, mask_prob=cfg.mlm_mask_prob, random_prob=cfg.mlm_random_prob)


def _texts(tok: BPETokenizer, texts: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to k texts -> ((k, L) ids, (k,) mask); missing rows are zeros with mask False."""
    ids = np.zeros((k, tok.context_length), np.int64)
    mask = np.zeros(k, bool)
    texts = texts[:k]
    if texts:
        ids[: len(texts)] = tok.encode(texts)
        mask[: len(texts)] = True
    return ids, mask


def unimo_train_sample_fn(cfg: UNIMOConfig, meta: dict, tokenizer: BPETokenizer | None = None):
    """Per-sample columns: stream, image, text, text_masked, mlm_labels, region_mask, pos_text(+_mask)
    (paraphrases then retrieved texts), ret_image(+_mask), neg_text(+_mask). Negatives are a fresh
    random draw of `hard_negatives` among the mined ones of the allowed `rewrite_levels` each epoch."""
    tok = tokenizer or BPETokenizer(cfg.context_length)
    size, levels = cfg.image_size, set(cfg.levels)
    boxes = region_boxes_grid(cfg.image_size // cfg.patch_size)
    streams = meta.get("streams", {"pair": 0, "text": 1, "image": 2})

    def fn(sample: dict, rng: np.random.Generator) -> dict:
        info = sample.get("json") or {}
        if "stream" in info:
            stream = int(info["stream"])
        else:  # shards without the field (e.g. separate text / image corpora mixed by data.train_weights)
            stream = streams["pair"] if "txt" in sample and "jpg" in sample else streams["text" if "txt" in sample else "image"]
        has_text, has_image = "txt" in sample and stream != streams["image"], "jpg" in sample and stream != streams["text"]
        ids = tok.encode([str(sample["txt"])])[0] if has_text else np.zeros(tok.context_length, np.int64)
        masked, labels = _mask_text(ids, cfg, tok, rng) if has_text else (ids.copy(), np.full_like(ids, IGNORE_INDEX))
        out = {
            "stream": np.int64(stream),
            "image": _image(sample["jpg"] if has_image else None, size),
            "text": ids, "text_masked": masked, "mlm_labels": labels,
            "region_mask": mask_regions(boxes, rng, cfg.vl_mask_ratio, cfg.overlap_ratio) if has_image else np.zeros(len(boxes), bool),
        }
        pair = stream == streams["pair"]
        pos = (list(info.get("pos_texts", []))[: cfg.n_paraphrases] + list(info.get("ret_texts", []))[: cfg.n_ret_texts]) if pair else []
        out["pos_text"], out["pos_text_mask"] = _texts(tok, pos, cfg.n_paraphrases + cfg.n_ret_texts)
        negs = [n["text"] for n in info.get("neg_texts", []) if n.get("level") in levels] if pair else []
        negs = [negs[j] for j in rng.permutation(len(negs))[: cfg.hard_negatives]]
        out["neg_text"], out["neg_text_mask"] = _texts(tok, negs, cfg.hard_negatives)
        ret = np.zeros((cfg.n_ret_images, 3, size, size), np.uint8)
        ret_mask = np.zeros(cfg.n_ret_images, bool)
        n_ret = min(int(info.get("n_ret_images", 0)), cfg.n_ret_images) if pair else 0
        for k in range(n_ret):
            ret[k] = _image(decode_jpeg(sample[f"ret{k}.jpg"]), size)
            ret_mask[k] = True
        out["ret_image"], out["ret_image_mask"] = ret, ret_mask
        return out

    return fn


def unimo_eval_sample_fn(cfg: UNIMOConfig, meta: dict, tokenizer: BPETokenizer | None = None):
    """Eval columns: image, text, hn_text (3 hard negatives: attribute, object, relation swap),
    text_masked + mlm_labels (text-only MLM accuracy), and the zero-shot label fields."""
    tok = tokenizer or BPETokenizer(cfg.context_length)
    label_fields = sorted({t["label_field"] for t in meta.get("zero_shot", {}).values()} | {"relation_id"})

    def fn(sample: dict, rng: np.random.Generator) -> dict:
        info = sample.get("json") or {}
        ids = tok.encode([str(sample["txt"])])[0]
        masked, labels = _mask_text(ids, cfg, tok, rng)
        hn, hn_mask = _texts(tok, list(info.get("hard_negatives", [])), len(HARD_NEGATIVE_KINDS))
        out = {"image": _image(sample["jpg"], cfg.image_size), "text": ids, "hn_text": hn, "hn_mask": hn_mask,
               "text_masked": masked, "mlm_labels": labels}
        for f in label_fields:
            out[f] = np.int64(info.get(f, -1))
        return out

    return fn


# --------------------------------------------------------------------------- the method
class UNIMO(nn.Module):
    Config = UNIMOConfig
    name = "unimo"
    modality = "image-text"
    default_dataset = "shapes-relations"
    dataset_splits = {"train": "train", "eval": "heldout"}
    eval_metric = "hardneg_acc"  # true caption vs its attribute/object/relation swap on held-out compositions
    eval_mode = "max"
    train_defaults = {"batch_size": 64, "epochs": 10, "log_every_steps": 10}
    smoke_overrides = {"train.epochs": 2, "data.embedded_params": "{n_train: 768, n_test: 64, n_heldout: 128}"}

    def __init__(self, cfg: UNIMOConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.model = UnifiedTransformer(cfg)
        self.temperature = nn.Parameter(torch.tensor(float(cfg.init_temperature)), requires_grad=cfg.learn_temperature)
        self._tokenizer: BPETokenizer | None = None

    # ---- contract
    @staticmethod
    def make_preprocess(cfg: UNIMOConfig, split: str, meta: dict):
        if split == "train":
            return unimo_train_sample_fn(cfg, meta), ()  # the json (mined positives/negatives) is optional
        return unimo_eval_sample_fn(cfg, meta), ("jpg", "txt", "json")

    def trainable(self) -> dict[str, nn.Module]:
        return {"model": self}

    def optimizers(self) -> dict[str, OptimSpec]:
        c = self.cfg
        # card e: warm-up then linear decay = the platform's poly schedule with power 1; cosine selectable
        schedule = {"schedule": "poly", "poly_power": 1.0} if c.lr_schedule == "linear" else {"schedule": "cosine"}
        return {"main": OptimSpec(["model"], "adamw", lr=c.lr, weight_decay=c.weight_decay, betas=c.betas, eps=c.eps,
                                  warmup_fraction=c.warmup_fraction, **schedule)}

    @staticmethod
    def search_space(cfg=None) -> dict:
        """Card e's sweep: lr, tau init x learnable, K hard negatives, rewrite levels, CMCL weight, stream mix."""
        from ray import tune

        return {
            "method.lr": tune.loguniform(3e-5, 5e-4),
            "method.init_temperature": tune.choice([0.03, 0.07, 0.1]),
            "method.learn_temperature": tune.choice([True, False]),
            "method.hard_negatives": tune.choice([0, 2, 4, 8]),
            "method.rewrite_levels": tune.choice(["sent", "sent,phrase", "sent,phrase,word"]),
            "method.weight_cmcl": tune.uniform(0.5, 2.0),
            "method.stream_mix": tune.choice(["1:1:1", "2:1:1", "1:0:0"]),
        }

    # ---- temperature
    def tau(self) -> torch.Tensor:
        return self.temperature.float().clamp(self.cfg.temperature_min, self.cfg.temperature_max)

    def before_optimizer_step(self, name: str, ctx) -> None:
        clamp_temperature_(self.temperature, self.cfg.temperature_min, self.cfg.temperature_max)

    def after_optimizer_step(self, name: str, ctx) -> None:
        clamp_temperature_(self.temperature, self.cfg.temperature_min, self.cfg.temperature_max)

    # ---- encoders (projected, not normalised; evaluation normalises)
    def encode_image(self, images_uint8: torch.Tensor) -> torch.Tensor:
        return normalize(self.model.embed_image(images_uint8))

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return normalize(self.model.embed_text(ids))

    def _embed_candidates(self, items: torch.Tensor, mask: torch.Tensor, embed) -> torch.Tensor:
        """(n, K, ...) candidates, (n, K) mask -> (n, K, H): only valid ones are encoded, the rest are 0."""
        n, k = mask.shape
        out = torch.zeros(n, k, self.model.hidden, device=mask.device)
        if mask.any():
            out = out.to(torch.float32)
            out[mask] = embed(items[mask]).float()
        return out

    # ---- losses
    def _zero(self) -> torch.Tensor:
        return self.temperature * 0.0

    def _zero_through(self, *modules: nn.Module) -> torch.Tensor:
        """0, connected to the graph through tau and every parameter of `modules` (zero gradients):
        a term with no rows on this rank still backprops, like the same term on the other ranks."""
        z = self._zero()
        for module in modules:
            for p in module.parameters():
                z = z + p.sum() * 0.0
        return z

    def cmcl_term(self, batch: dict, pair: torch.Tensor, ctx) -> torch.Tensor:
        """CMCL over the local pair rows. Called on every rank whatever its pair count (the card
        variant gathers across ranks), so with no pair row it returns 0 connected to the graph
        (the encoders are not run on an empty batch: attention rejects one)."""
        c, m = self.cfg, self.model
        b = pair.shape[0]
        rows = pair.nonzero().squeeze(1)
        if len(rows):
            img_p = m.embed_image(batch["image"][rows]).float()
            txt_p = m.embed_text(batch["text"][rows]).float()
        else:
            link = self._zero_through(m.pool_image, m.pool_text)
        if c.cmcl_variant == "unimo2":
            # UNIMO-2's in-batch CE on the pair rows only (text-/image-only rows would be zero vectors
            # acting as extra negatives and would shrink the mean); every row of the slice is valid,
            # so the mean is over the P pair rows. Local in-batch negatives only: no collective.
            if not len(rows):
                return link
            return unimo2_inbatch_loss(img_p, txt_p, self.tau(), None, c.unimo2_normalize_text)
        # card variant: full local batch with zero rows for non-pairs (masked out by row_mask), so
        # every rank gathers the same (B, H) shapes; the anchors must require grad on every rank for
        # the gather's backward (a collective) to run on every rank.
        if len(rows):
            img = img_p.new_zeros(b, m.hidden).index_copy(0, rows, img_p)
            txt = txt_p.new_zeros(b, m.hidden).index_copy(0, rows, txt_p)
        else:
            img = torch.zeros(b, m.hidden, device=pair.device) + link
            txt = torch.zeros(b, m.hidden, device=pair.device) + link
        pos_mask = batch["pos_text_mask"].bool() & pair[:, None]
        neg_mask = batch["neg_text_mask"].bool() & pair[:, None]
        ret_mask = batch["ret_image_mask"].bool() & pair[:, None]
        return cmcl_loss(
            img, txt, self.tau(), row_mask=pair, in_batch=c.in_batch, gather=ctx.gather, rank=ctx.rank,
            pos_text=self._embed_candidates(batch["pos_text"], pos_mask, m.embed_text), pos_text_mask=pos_mask,
            pos_image=self._embed_candidates(batch["ret_image"], ret_mask, m.embed_image), pos_image_mask=ret_mask,
            neg_text=self._embed_candidates(batch["neg_text"], neg_mask, m.embed_text), neg_text_mask=neg_mask,
        )

    def _mlm(self, hidden: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, float]:
        sel = labels != IGNORE_INDEX
        logits = self.model.mlm_logits(hidden[sel])
        targets = labels[sel]
        acc = float((logits.argmax(-1) == targets).float().mean()) if targets.numel() else 0.0
        return mlm_loss(logits, targets), acc

    def _mrm(self, image_hidden: torch.Tensor, images: torch.Tensor, feats: torch.Tensor, region_mask: torch.Tensor) -> torch.Tensor:
        pred = self.model.region_head(image_hidden[:, 1:])
        return masked_region_loss(pred, self.model.region_targets(images, feats), region_mask)

    def compute_losses(self, batch: dict, ctx) -> tuple[torch.Tensor, dict]:
        c, m = self.cfg, self.model
        stream = batch["stream"]
        pair, text_only, image_only = stream == 0, stream == 1, stream == 2
        _, mix_text, mix_image = c.mix
        logs: dict = {"pair_rows": float(pair.sum())}
        terms: dict[str, torch.Tensor] = {}
        with ctx.autocast():
            # on every rank, even without local pair rows: the card variant's gather is a collective
            terms["cmcl"] = self.cmcl_term(batch, pair, ctx) if c.weight_cmcl > 0 else self._zero()
            if c.pair_masked_modelling and pair.any() and (c.weight_language > 0 or c.weight_visual > 0):
                rows = pair.nonzero().squeeze(1)
                ih, th, feats = m.encode_pair_hidden(batch["image"][rows], batch["text_masked"][rows], batch["region_mask"][rows])
                terms["mlm_pair"], logs["mlm_acc_pair"] = self._mlm(th, batch["mlm_labels"][rows])
                terms["mrm_pair"] = self._mrm(ih, batch["image"][rows], feats, batch["region_mask"][rows])
            if mix_text > 0 and c.weight_language > 0 and text_only.any():
                rows = text_only.nonzero().squeeze(1)
                terms["mlm_text"], logs["mlm_acc_text"] = self._mlm(m.encode_text_hidden(batch["text_masked"][rows]), batch["mlm_labels"][rows])
            if mix_image > 0 and c.weight_visual > 0 and image_only.any():
                rows = image_only.nonzero().squeeze(1)
                ih, feats = m.encode_image_hidden(batch["image"][rows], batch["region_mask"][rows])
                terms["mrm_image"] = self._mrm(ih, batch["image"][rows], feats, batch["region_mask"][rows])
        weights = {"cmcl": c.weight_cmcl, "mlm_pair": c.weight_language, "mrm_pair": c.weight_visual,
                   "mlm_text": c.weight_language * mix_text, "mrm_image": c.weight_visual * mix_image}
        total = sum(weights[k] * v.float() for k, v in terms.items())
        logs.update({f"loss_{k}": float(v.detach()) for k, v in terms.items()})
        return total, logs

    def train_step(self, batch: dict, ctx) -> dict[str, float]:
        total, logs = self.compute_losses(batch, ctx)
        ctx.optimize(total, "main")
        return {"loss": float(total.detach()), **logs, "temperature": float(self.tau().detach())}

    # ---- evaluation
    @torch.no_grad()
    def evaluate(self, eval_batches, ctx) -> dict[str, float]:
        """Dual-encoder evaluation on the eval split (held-out compositions), card f:
        - retrieval R@1/5/10 both ways and zero-shot top-1 (CLIP's `evaluate_image_text`, replayed on
          the features recorded here);
        - hard-negative discrimination: fraction of (image, true caption, rewrite) triples with
          cos(image, true) > cos(image, rewrite); per kind (attribute / object / relation) too; chance 0.5;
        - text-only MLM accuracy on the eval captions (no image)."""
        if self._tokenizer is None:
            self._tokenizer = BPETokenizer(self.cfg.context_length)
        was_training = self.training
        self.eval()
        records, cached = [], []
        for batch in eval_batches():
            img, txt = self.encode_image(batch["image"]), self.encode_text(batch["text"])
            hn_mask = batch["hn_mask"].bool()
            hn = self._embed_candidates(batch["hn_text"], hn_mask, self.model.embed_text)
            hn = torch.nn.functional.normalize(hn, dim=-1)
            true = (img * txt).sum(-1, keepdim=True)
            wins = (true > torch.einsum("nd,nkd->nk", img, hn)).float()
            hidden = self.model.encode_text_hidden(batch["text_masked"])
            sel = batch["mlm_labels"] != IGNORE_INDEX
            correct = (self.model.mlm_logits(hidden[sel]).argmax(-1) == batch["mlm_labels"][sel]).float()
            counts = torch.zeros(len(img), 2)
            counts[:, 0] = torch.zeros(len(img)).index_add_(0, sel.nonzero()[:, 0].cpu(), correct.cpu())
            counts[:, 1] = sel.sum(1).float().cpu()
            records.append({"index": batch["index"].cpu().numpy(), "wins": wins.cpu().numpy(), "hn_mask": hn_mask.cpu().numpy(),
                            "mlm": counts.numpy()})
            cached.append({**batch, "image": img, "text": txt})
        metrics = self._replay_clip_eval(cached, ctx)
        metrics.update(self._hardneg_metrics(records))
        if was_training:
            self.train()
        return metrics

    def _replay_clip_eval(self, cached: list[dict], ctx) -> dict[str, float]:
        """CLIP's evaluation on recorded features: batches carry the features themselves, and the
        encoders pass them through (2-D float rows), except prompt token ids, which are encoded."""
        def enc_img(x):
            return x

        def enc_txt(x):
            return x if x.is_floating_point() else self.encode_text(x)

        return evaluate_image_text(lambda: iter(cached), enc_img, enc_txt, self._tokenizer, ctx.meta, ctx.device)

    @staticmethod
    def _hardneg_metrics(records: list[dict]) -> dict[str, float]:
        parts = [rec for rank_records in dist_utils.gather_objects(records) for rec in rank_records]
        if not parts:
            return {}
        merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        _, first = np.unique(merged["index"], return_index=True)
        wins, mask, mlm = merged["wins"][first], merged["hn_mask"][first], merged["mlm"][first]
        out = {"hardneg_acc": float(wins[mask].mean()) if mask.any() else 0.0}
        for k, kind in enumerate(HARD_NEGATIVE_KINDS):
            if mask[:, k].any():
                out[f"hardneg_acc_{kind}"] = float(wins[mask[:, k], k].mean())
        sub = mask[:, [0, 2]]
        if sub.any():
            out["hardneg_acc_attr_rel"] = float(wins[:, [0, 2]][sub].mean())
        out["mlm_acc"] = float(mlm[:, 0].sum() / max(mlm[:, 1].sum(), 1))
        return out
