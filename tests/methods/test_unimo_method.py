"""UNIMO model and method: [IMG] token (h.9), pair attention (h.7), tau clipping (h.6), stream
columns, and a tiny end-to-end run_local."""
import contextlib

import numpy as np
import pytest
import torch

from contrastlab.methods.unimo.config import UNIMOConfig
from contrastlab.methods.unimo.method import UNIMO, unimo_eval_sample_fn, unimo_train_sample_fn
from contrastlab.methods.unimo.model import GLOBAL_BOX, UnifiedTransformer, text_padding_mask
from contrastlab.platform.data.codecs import encode_jpeg

torch.set_num_threads(1)


def tiny_cfg(**kw):
    base = dict(layers=1, hidden=32, heads=2, region_dim=16, image_size=24, patch_size=8, context_length=16, dropout=0.0)
    base.update(kw)
    return UNIMOConfig(**base)


def test_img_token_is_the_mean_of_region_features_with_the_global_box():
    m = UnifiedTransformer(tiny_cfg())
    feats = torch.randn(2, 9, 16)
    x, boxes = m.image_inputs(feats)
    assert torch.allclose(x[:, 0], feats.mean(1)) and torch.equal(x[:, 1:], feats)
    assert boxes[:, 0].tolist() == [list(GLOBAL_BOX)] * 2
    assert torch.allclose(boxes[0, 1], torch.tensor([0, 0, 1 / 3, 1 / 3, 1 / 9]))
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[:, 4] = True
    xm, _ = m.image_inputs(feats, mask)
    assert (xm[:, 5] == 0).all() and torch.allclose(xm[:, 0], (feats.sum(1) - feats[:, 4]) / 9)


def test_text_sees_image_in_pairs_and_padding_mask():
    m = UnifiedTransformer(tiny_cfg()).eval()
    ids = torch.tensor([[49407, 320, 736, 49408, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]])
    assert text_padding_mask(ids)[0].tolist() == [False] * 4 + [True] * 12
    img = torch.randint(0, 255, (1, 3, 24, 24), dtype=torch.uint8)
    _, t1, _ = m.encode_pair_hidden(img, ids)
    _, t2, _ = m.encode_pair_hidden(255 - img, ids)
    assert not torch.allclose(t1[:, 0], t2[:, 0])  # the text's [CLS] changes with the image


def test_inputs_stay_distinguishable_at_init():
    """Regression: a default N(0,1) type embedding drowned every token after the LayerNorm, so all
    captions pooled to the same vector (cos 0.99999) and CMCL could not leave log(2N-1)."""
    torch.manual_seed(0)
    m = UnifiedTransformer(UNIMOConfig()).eval()
    ids = torch.zeros(2, 24, dtype=torch.long)
    ids[0, :6] = torch.tensor([49407, 320, 736, 2445, 539, 49408])
    ids[1, :6] = torch.tensor([49407, 320, 1901, 3999, 539, 49408])
    h = m.encode_text_hidden(ids)[:, 0]
    assert torch.nn.functional.cosine_similarity(h[0], h[1], dim=0) < 0.999


class FakeCtx:
    rank, world_size, device = 0, 1, torch.device("cpu")
    meta: dict = {}

    def __init__(self, method, lr):
        self.method = method
        self.opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=lr)

    @staticmethod
    def gather(x, grad=True):
        return x

    def autocast(self):
        return contextlib.nullcontext()

    def optimize(self, loss, name):
        self.opt.zero_grad()
        loss.backward()
        self.method.before_optimizer_step(name, self)
        self.opt.step()
        self.method.after_optimizer_step(name, self)


def _fake_samples(cfg, n=6):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (cfg.image_size, cfg.image_size, 3), dtype=np.uint8)
    samples = []
    for i in range(n):
        stream = i % 3
        info = {"index": i, "stream": stream}
        s = {"json": info, "index": i, "__key__": f"{i:08d}"}
        if stream != 1:
            s["jpg"] = img
        if stream != 2:
            s["txt"] = "a red circle left of a blue square."
        if stream == 0:
            info.update(pos_texts=["a blue square right of a red circle."], ret_texts=[],
                        neg_texts=[{"text": "a red circle above a blue square.", "level": "phrase"},
                                   {"text": "a green circle left of a blue square.", "level": "word"}], n_ret_images=1)
            s["ret0.jpg"] = encode_jpeg(img)
        samples.append(s)
    return samples


def _batch(cfg, samples, fn):
    rows = [fn(s, np.random.default_rng(k)) for k, s in enumerate(samples)]
    return {k: torch.as_tensor(np.stack([r[k] for r in rows])) for k in rows[0]}


def test_train_columns_mask_missing_members():
    cfg = tiny_cfg(hard_negatives=3, n_paraphrases=2, n_ret_texts=1, n_ret_images=2, rewrite_levels="phrase")
    b = _batch(cfg, _fake_samples(cfg), unimo_train_sample_fn(cfg, {}))
    assert b["stream"].tolist() == [0, 1, 2, 0, 1, 2]
    assert b["pos_text_mask"][0].tolist() == [True, False, False] and not b["pos_text_mask"][1].any()
    assert b["neg_text_mask"][0].tolist() == [True, False, False]  # only the phrase-level rewrite is allowed
    assert b["ret_image_mask"][0].tolist() == [True, False]
    assert (b["image"][1] == 0).all() and (b["text"][2] == 0).all()
    assert not b["region_mask"][1].any() and b["region_mask"][2].any()
    assert ((b["mlm_labels"][2] == -100).all()) and (b["mlm_labels"][1] != -100).any()


@pytest.mark.parametrize("variant", ["card", "unimo2"])
def test_steps_keep_tau_clipped_and_losses_finite(variant):
    cfg = tiny_cfg(cmcl_variant=variant, init_temperature=0.5, n_ret_images=1)
    torch.manual_seed(0)
    method = UNIMO(cfg)
    ctx = FakeCtx(method, lr=5.0)  # a huge step throws tau far out; the hooks must pull it back
    b = _batch(cfg, _fake_samples(cfg), unimo_train_sample_fn(cfg, {}))
    for _ in range(3):
        logs = method.train_step(b, ctx)
        assert cfg.temperature_min <= method.temperature.item() <= cfg.temperature_max
        assert np.isfinite(logs["loss_cmcl"]) and np.isfinite(logs["loss"])
    assert {"loss_mlm_text", "loss_mrm_image", "loss_mlm_pair", "loss_mrm_pair"} <= set(logs)
    method.temperature.data.fill_(9.0)
    method.after_optimizer_step("main", ctx)
    assert method.temperature.item() == pytest.approx(0.5)


def test_no_unimodal_mix_skips_unimodal_losses():
    cfg = tiny_cfg(stream_mix="1:0:0")
    method = UNIMO(cfg)
    b = _batch(cfg, _fake_samples(cfg), unimo_train_sample_fn(cfg, {}))
    _, logs = method.compute_losses(b, FakeCtx(method, 0.0))
    assert "loss_mlm_text" not in logs and "loss_mrm_image" not in logs and "loss_cmcl" in logs
    with pytest.raises(ValueError, match="stream_mix"):
        tiny_cfg(stream_mix="0:1:1").validate()


def test_evaluate_reports_retrieval_hard_negatives_and_mlm():
    cfg = tiny_cfg()
    method = UNIMO(cfg)
    meta = {"zero_shot": {"colour_shape": {"classnames": ["red circle", "blue square"], "templates": ["a {}."], "label_field": "label"}}}
    samples = _fake_samples(cfg, 3)
    for k, s in enumerate(samples):
        s["jpg"], s["txt"] = samples[0]["jpg"], "a red circle left of a blue square."
        s["json"] = {"index": k, "label": 0, "hard_negatives": ["a red circle above a blue square."] * 3}
    b = _batch(cfg, samples, unimo_eval_sample_fn(cfg, meta))
    b["index"] = torch.arange(3)
    ctx = FakeCtx(method, 0.0)
    ctx.meta = meta
    out = method.evaluate(lambda: iter([b]), ctx)
    for key in ("hardneg_acc", "hardneg_acc_relation", "i2t_r1", "t2i_r10", "zeroshot_colour_shape_top1", "mlm_acc"):
        assert key in out


@pytest.mark.slow
def test_run_local_trains_and_reports_the_eval_metric(tmp_path, monkeypatch):
    monkeypatch.setenv("CONTRASTLAB_CACHE", str(tmp_path))
    from contrastlab.platform.local import run_local

    r = run_local("unimo", ["train.epochs=1", "train.batch_size=32", "data.embedded_params={n_train: 96, n_test: 8, n_heldout: 24}",
                            "method.layers=1", "method.hidden=32", "method.heads=2"], quiet=True)
    last = r.history[-1]
    assert UNIMO.eval_metric in last and 0 <= last[UNIMO.eval_metric] <= 1
    assert np.isfinite(last["train_loss"])


def test_stream_comes_from_the_members_without_a_json_field():
    cfg = tiny_cfg()
    fn = unimo_train_sample_fn(cfg, {})
    s = _fake_samples(cfg, 1)[0]
    jpg, txt = s["jpg"], s["txt"]
    streams = [int(fn(sample, np.random.default_rng(0))["stream"]) for sample in
               ({"jpg": jpg, "txt": txt}, {"txt": txt}, {"jpg": jpg})]
    assert streams == [0, 1, 2]


@pytest.mark.slow
def test_separate_pair_text_image_sources_mix_by_weight(tmp_path, monkeypatch):
    """Three shard sets (pairs, text-only, image-only; no `stream` field) mixed 2:1:1 by the data layer:
    training batches hold the streams in those proportions and every loss runs."""
    monkeypatch.setenv("CONTRASTLAB_CACHE", str(tmp_path / "cache"))
    from contrastlab.platform.data.reader import iter_tar_samples
    from contrastlab.platform.data.shards import write_shards
    from contrastlab.platform.datasets import ensure_dataset
    from contrastlab.platform.local import run_local

    ds = ensure_dataset("shapes-relations", n_train=90, n_test=8, n_heldout=24)
    by_stream: dict[int, list] = {0: [], 1: [], 2: []}
    for path in ds.splits["train"]:
        with open(path, "rb") as fh:
            for s in iter_tar_samples(fh, path, "raise"):
                stream = 0 if "jpg" in s and "txt" in s else (1 if "txt" in s else 2)
                by_stream[stream].append((s["__key__"], {k: v for k, v in s.items() if k in ("jpg", "txt")}))
    dirs = []
    for stream, name in enumerate(("pairs", "text", "images")):
        write_shards(by_stream[stream], tmp_path / name, maxcount=10)
        dirs.append(str(tmp_path / name / "*.tar"))
    counts = []
    original = UNIMO.train_step

    def recording(self, batch, ctx):
        counts.append(np.bincount(batch["stream"].numpy(), minlength=3))
        return original(self, batch, ctx)

    monkeypatch.setattr(UNIMO, "train_step", recording)
    r = run_local("unimo", ["train.epochs=3", "train.batch_size=16", f"data.train={'; '.join(dirs)}", "data.train_weights=2:1:1",
                            f"data.eval={ds.splits['test'][0]}", "method.layers=1", "method.hidden=32", "method.heads=2"], quiet=True)
    share = np.sum(counts, axis=0) / np.sum(counts)
    assert np.allclose(share, [0.5, 0.25, 0.25], atol=0.08), share
    assert np.isfinite(r.history[-1]["train_loss_mlm_text"]) and np.isfinite(r.history[-1]["train_loss_mrm_image"])


@pytest.mark.parametrize("variant", ["card", "unimo2"])
def test_batch_without_pair_rows_gives_a_zero_cmcl_that_still_backprops(variant):
    """A rank whose batch has no image-text pair must still run the CMCL term (its gather is a
    collective): the term is 0, and it is connected to the graph through the pooled heads."""
    cfg = tiny_cfg(cmcl_variant=variant)
    torch.manual_seed(0)
    method = UNIMO(cfg)
    samples = [s for s in _fake_samples(cfg) if s["json"]["stream"] != 0]  # text-only and image-only rows
    b = _batch(cfg, samples, unimo_train_sample_fn(cfg, {}))
    assert not (b["stream"] == 0).any()
    calls = []

    class Ctx(FakeCtx):
        def gather(self, x, grad=True):
            calls.append(tuple(x.shape))
            return x

    ctx = Ctx(method, 0.0)
    cmcl = method.cmcl_term(b, b["stream"] == 0, ctx)
    assert cmcl.item() == 0.0 and cmcl.requires_grad
    if variant == "card":  # the in-batch gathers run as on a rank with pairs: text, image, row mask
        assert calls == [(len(samples), method.model.hidden)] * 2 + [(len(samples),)]
    cmcl.backward()
    for head in (method.model.pool_text, method.model.pool_image):
        for p in head.parameters():
            assert p.grad is not None and (p.grad == 0).all()
    method.zero_grad(set_to_none=True)
    total, logs = method.compute_losses(b, ctx)
    assert logs["loss_cmcl"] == 0.0
    total.backward()
    assert method.model.pool_text[0].weight.grad is not None and method.model.pool_image[0].weight.grad is not None


def test_unimo2_variant_uses_the_pair_rows_only():
    """The unimo2 loss of a mixed batch is UNIMO-2's loss on the pair rows alone: text-only and
    image-only rows are neither extra (zero-vector) negatives nor counted in the mean."""
    cfg = tiny_cfg(cmcl_variant="unimo2")
    torch.manual_seed(0)
    method = UNIMO(cfg).eval()
    b = _batch(cfg, _fake_samples(cfg, 9), unimo_train_sample_fn(cfg, {}))
    rows = (b["stream"] == 0).nonzero().squeeze(1)
    assert 0 < len(rows) < len(b["stream"])
    from contrastlab.methods.unimo.loss import unimo2_inbatch_loss

    with torch.no_grad():
        got = method.cmcl_term(b, b["stream"] == 0, FakeCtx(method, 0.0))
        img = method.model.embed_image(b["image"][rows])
        txt = method.model.embed_text(b["text"][rows])
        want = unimo2_inbatch_loss(img, txt, method.tau(), None, cfg.unimo2_normalize_text)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_lr_schedule_is_linear_decay_by_default_and_cosine_selectable():
    from contrastlab.platform.train import lr_factor

    spec = UNIMO(tiny_cfg()).optimizers()["main"]
    assert (spec.schedule, spec.poly_power, spec.warmup_fraction) == ("poly", 1.0, 0.05)  # card e
    total, warm = 200, 10
    for step in (warm, 60, 105, 150, total):
        assert lr_factor(step, total, spec) == pytest.approx(1 - (step - warm) / (total - warm))
    assert UNIMO(tiny_cfg(lr_schedule="cosine")).optimizers()["main"].schedule == "cosine"
    with pytest.raises(ValueError, match="lr_schedule"):
        tiny_cfg(lr_schedule="step").validate()
