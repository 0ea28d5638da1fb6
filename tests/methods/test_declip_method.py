"""DeCLIP as a platform method (no Ray): all-off equals CLIP exactly, preprocessing, the step, the
theta clamp hooks, the queue in state_dict, evaluation (CLIP's metrics + probe + retrieval grid)."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch

from contrastlab.methods.clip.evaluation import evaluate_image_text
from contrastlab.methods.clip.method import CLIP, CLIPConfig
from contrastlab.methods.declip.config import DeCLIPConfig, real_run_sets
from contrastlab.methods.declip.method import DeCLIP
from contrastlab.platform.text import BPETokenizer
from contrastlab.platform.train import build_optimizer

torch.set_num_threads(1)
SIZE = 32  # small crops keep the test fast
CAPTIONS = [
    "a big crimson ring on the left side.", "a photo of a small blue box.", "there is a golden star at the top edge.",
    "an image of a green triangle on a noisy background.", "a picture showing a huge violet disc.", "a red square.",
    "a tiny orange wedge on the right.", "a photo of a lemon pentagram and an azure block.",
]
ALL_OFF = dict(use_mvs=False, use_simsiam=False, use_mlm=False, use_nn=False)


class FakeCtx:
    """The parts of StepContext a method uses; `optimize` backprops, runs the clamp hooks around an AdamW step."""

    def __init__(self, method, step_optimizer: bool = True, meta: dict | None = None):
        self.method, self.rank, self.step, self.device = method, 0, 0, torch.device("cpu")
        self.meta, self.tb, self.logged, self.losses = meta or {}, None, [], []
        self.step_optimizer = step_optimizer
        self.opt = build_optimizer([method], method.optimizers()["main"])

    def autocast(self):
        return contextlib.nullcontext()

    def gather(self, x, grad=True):
        return x

    def log(self, values, prefix="train/"):
        self.logged.append(dict(values))

    def optimize(self, loss, name="main"):
        self.losses.append(loss.detach().clone())
        loss.backward()
        if not self.step_optimizer:
            return
        for hook in ("before_optimizer_step", "after_optimizer_step"):
            if hook == "after_optimizer_step":
                self.opt.step()
                self.opt.zero_grad(set_to_none=True)
            if hasattr(self.method, hook):
                getattr(self.method, hook)(name, self)
        self.step += 1


def image(seed: int, side: int = 48) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(60, 190, (side, side, 3)).astype(np.uint8)
    y, x = rng.integers(4, side // 2, 2)
    img[y : y + side // 3, x : x + side // 3] = rng.integers(0, 255, 3)  # a coloured block, so crops differ
    return img


def samples(n: int = 8) -> list[dict]:
    return [{"jpg": image(i), "txt": CAPTIONS[i % len(CAPTIONS)], "json": {"label": i % 3, "index": i}, "__key__": f"{i:08d}"}
            for i in range(n)]


def batch_from(cfg, split="train", n=8, seed=0, meta=None) -> dict:
    fn, required = DeCLIP.make_preprocess(cfg, split, meta or {})
    assert required == ("jpg", "txt")
    rows = []
    for i, s in enumerate(samples(n)):
        out = fn(s, np.random.default_rng([seed, i]))
        out["index"] = np.int64(s["json"]["index"])
        rows.append(out)
    return {k: torch.from_numpy(np.stack([r[k] for r in rows])) for k in rows[0]}


def small_cfg(**kw) -> DeCLIPConfig:
    return DeCLIPConfig(**{"image_size": SIZE, "queue_size": 32, **kw})


# --------------------------------------------------------------------------- all off == CLIP
@pytest.mark.parametrize("variant", ["flags_off", "weights_zero"])
def test_all_signals_off_equals_clip_exactly(variant):
    kw = ALL_OFF if variant == "flags_off" else dict(use_mvs=False, weight_ss=0.0, weight_mlm=0.0, weight_nn=0.0)
    cfg = small_cfg(**kw)
    batch = batch_from(cfg)
    torch.manual_seed(0)
    clip = CLIP(CLIPConfig(image_size=SIZE))
    torch.manual_seed(0)
    declip = DeCLIP(cfg)
    for name in ("image_encoder", "text_encoder"):
        a, b = getattr(clip, name).state_dict(), getattr(declip, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert set(batch) == {"image", "text", "label", "index"}  # nothing extra is preprocessed when all is off
    c_ctx, d_ctx = FakeCtx(clip, step_optimizer=False), FakeCtx(declip, step_optimizer=False)
    c_logs = clip.train_step(batch, c_ctx)
    d_logs = declip.train_step(batch, d_ctx)
    assert torch.equal(c_ctx.losses[0], d_ctx.losses[0])
    assert d_logs["loss"] == c_logs["loss"] == d_logs["loss_clip"]
    # same gradients too
    for (n1, p1), (n2, p2) in zip(clip.named_parameters(), declip.named_parameters()):
        assert n1 == n2 and torch.equal(p1.grad, p2.grad), n1


def test_mvs_with_identical_views_and_zero_aux_weights_reduces_to_clip():
    """Checklist 9: auxiliary weights 0 and identical views (image2 = image, EDA = caption) give C(i, t)."""
    cfg = small_cfg(weight_ss=0.0, weight_mlm=0.0, weight_nn=0.0)
    batch = batch_from(cfg)
    batch["image2"], batch["text_eda"] = batch["image"].clone(), batch["text"].clone()
    torch.manual_seed(0)
    clip = CLIP(CLIPConfig(image_size=SIZE))
    torch.manual_seed(0)
    declip = DeCLIP(cfg)
    c_ctx, d_ctx = FakeCtx(clip, False), FakeCtx(declip, False)
    clip.train_step({k: batch[k] for k in ("image", "text")}, c_ctx)
    declip.train_step(batch, d_ctx)
    assert torch.equal(c_ctx.losses[0], d_ctx.losses[0])


# --------------------------------------------------------------------------- preprocessing
def test_preprocess_views_eda_and_masking():
    cfg = small_cfg(mlm_select_prob=0.5)  # more masking, so every caption gets some
    tok = BPETokenizer(cfg.context_length)
    fn, _ = DeCLIP.make_preprocess(cfg, "train", {"synonyms": {"red": ["crimson"]}})
    out = [fn(s, np.random.default_rng(i)) for i, s in enumerate(samples(8))]
    assert set(out[0]) == {"image", "image2", "text", "text_eda", "text_masked", "mlm_labels", "label"}
    for o, s in zip(out, samples(8)):
        assert o["image"].shape == o["image2"].shape == (3, SIZE, SIZE) and o["image"].dtype == np.uint8
        assert not np.array_equal(o["image"], o["image2"])  # checklist 12: the two views differ
        assert np.array_equal(o["text"], tok.encode([s["txt"]])[0])
        assert tok.decode(o["text_eda"]).strip()  # checklist 12: EDA never empty
        sel = o["mlm_labels"] != -100
        assert np.array_equal(o["mlm_labels"][sel], o["text"][sel])  # labels are the original ids
        assert not np.isin(o["text"][sel], tok.special_ids).any()  # SOT/EOT/pad never selected
        assert np.array_equal(o["text_masked"][~sel], o["text"][~sel])
        assert o["label"] == s["json"]["label"]
    assert sum(int((o["text_masked"] == tok.mask_id).sum()) for o in out) > 0
    assert any(tok.decode(o["text_eda"]) != tok.decode(o["text"]) for o in out)  # EDA changes some captions
    # deterministic per rng
    again = fn(samples(1)[0], np.random.default_rng(0))
    assert all(np.array_equal(again[k], out[0][k]) for k in again)
    # eval split: exactly CLIP's preprocessing
    meta = {"zero_shot": {"t": {"classnames": ["a"], "templates": ["{}"], "label_field": "label"}}}
    efn, _ = DeCLIP.make_preprocess(cfg, "eval", meta)
    cfn, _ = CLIP.make_preprocess(CLIPConfig(image_size=SIZE), "eval", meta)
    e, c = efn(samples(1)[0], np.random.default_rng(0)), cfn(samples(1)[0], np.random.default_rng(0))
    assert set(e) == set(c) == {"image", "text", "label"} and all(np.array_equal(e[k], c[k]) for k in e)


def test_eda_uses_dataset_synonyms():
    cfg = small_cfg(eda_weight_rs=0.0, eda_weight_rd=0.0)  # synonym replacement only
    fn, _ = DeCLIP.make_preprocess(cfg, "train", {"synonyms": {"zorble": ["quux"]}})
    tok = BPETokenizer(cfg.context_length)
    s = {"jpg": image(0), "txt": "zorble", "json": {}}
    assert tok.decode(fn(s, np.random.default_rng(0))["text_eda"]) == "quux"


# --------------------------------------------------------------------------- the step
def test_train_step_all_on_finite_logs_and_theta_clamped():
    torch.manual_seed(0)
    cfg = small_cfg()
    model = DeCLIP(cfg)
    ctx = FakeCtx(model)
    assert model.log_scale.item() == pytest.approx(np.log(1 / 0.07))
    for step in range(3):
        logs = model.train_step(batch_from(cfg, seed=step), ctx)
        assert 3.0 <= model.log_scale.item() <= 6.0
    expected = {"loss", "loss_mvs", "loss_ss", "loss_mlm", "loss_nn", "temperature", "queue_fill", "nn_cosine",
                "nn_same_label", "ss_z_std_x_sqrt_d", "mlm_acc"}
    assert expected <= set(logs)
    assert all(np.isfinite(v) for v in logs.values())
    assert -1.0 <= logs["loss_ss"] <= 1.0
    assert logs["queue_fill"] == pytest.approx(min(1.0, 3 * 2 * 8 / 32))
    w = 0.4 * logs["loss_mvs"] + 0.2 * (logs["loss_ss"] + logs["loss_mlm"] + logs["loss_nn"])
    assert logs["loss"] == pytest.approx(w, rel=1e-5)
    assert logs["temperature"] == pytest.approx(np.exp(-model.log_scale.item()), rel=1e-5)


def test_theta_upper_clamp_and_rn50_style_lower_only():
    torch.manual_seed(0)
    cfg = small_cfg(**ALL_OFF, init_temperature=1e-3, lr=0.5)  # theta = 6.9 > 6
    model = DeCLIP(cfg)
    ctx = FakeCtx(model)
    model.train_step(batch_from(cfg), ctx)
    assert ctx.losses[0].item() > 0 and model.log_scale.item() <= 6.0
    cfg = small_cfg(**ALL_OFF, init_temperature=1e-3, theta_clamp_high=None)
    model = DeCLIP(cfg)
    model.train_step(batch_from(cfg), FakeCtx(model))
    assert model.log_scale.item() > 6.0  # from below only (the RN50 configs)


def test_real_step_context_drives_the_hooks():
    from contrastlab.platform.config import build_experiment
    from contrastlab.platform.train import StepContext

    exp = build_experiment("declip", sets=[f"method.image_size={SIZE}", "method.queue_size=32"])
    torch.manual_seed(0)
    model = DeCLIP(exp.method)
    spec = model.optimizers()["main"]
    opt = build_optimizer([model], spec)
    ctx = StepContext(exp=exp, method=model, device=torch.device("cpu"), optimizers={"main": opt}, specs={"main": spec},
                      base_lrs={"main": [g["lr"] for g in opt.param_groups]}, total_steps=10)
    logs = model.train_step(batch_from(exp.method), ctx)
    assert np.isfinite(logs["loss"]) and model.log_scale.item() == pytest.approx(3.0, abs=1e-3)


def test_mvs_off_nn_uses_caption_only():
    torch.manual_seed(0)
    cfg = small_cfg(use_mvs=False)
    model = DeCLIP(cfg)
    batch = batch_from(cfg)
    assert "text_eda" not in batch and "image2" in batch  # SimSiam still needs two views
    logs = model.train_step(batch, FakeCtx(model))
    assert "loss_clip" in logs and logs["queue_fill"] == pytest.approx(8 / 32)


# --------------------------------------------------------------------------- state
def test_queue_state_survives_state_dict_round_trip():
    torch.manual_seed(0)
    cfg = small_cfg(queue_size=40)  # 2B = 16 per step: the official overflow drops at the end
    model = DeCLIP(cfg)
    ctx = FakeCtx(model)
    for step in range(3):
        model.train_step(batch_from(cfg, seed=step), ctx)
    assert {"queue.bank", "queue.ptr", "queue.fill", "queue.ids"} <= set(model.state_dict())
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)  # as a checkpoint does
    buf.seek(0)
    restored = DeCLIP(small_cfg(queue_size=40, queue_seed=123))  # a different initial queue
    restored.load_state_dict(torch.load(buf, weights_only=True))
    for k in ("bank", "ptr", "fill", "ids"):
        assert torch.equal(getattr(model.queue, k), getattr(restored.queue, k)), k
    # enqueues of 8: ta, t | ta, t | ta (fills 32..40, pointer reset to 0), t (0..8)
    assert int(restored.queue.ptr) == 8 and int(restored.queue.fill) == 40
    probe = torch.nn.functional.normalize(torch.randn(5, cfg.embed_dim), dim=-1)
    assert torch.equal(model.queue.query(probe)[0], restored.queue.query(probe)[0])


# --------------------------------------------------------------------------- evaluation
def test_evaluate_matches_clip_metrics_and_logs_probe_and_grid():
    meta = {"zero_shot": {
        "colour_shape": {"classnames": ["ring", "box", "star"], "templates": ["a photo of a {}.", "a {}."], "label_field": "label"},
        "six": {"classnames": ["ring", "box", "star", "red", "blue", "dot"], "templates": ["a {}."], "label_field": "label"},
    }}
    torch.manual_seed(0)
    cfg = small_cfg(retrieval_examples=3)
    model = DeCLIP(cfg).eval()
    batches = [batch_from(cfg, "eval", n=16, seed=0, meta=meta)]
    b2 = batch_from(cfg, "eval", n=16, seed=1, meta=meta)
    b2["index"] = b2["index"] + 16
    batches.append(b2)
    calls = {"images": [], "text": []}

    class TB:
        def images(self, tag, imgs, step):
            calls["images"].append((tag, np.asarray(imgs)))

        def text(self, tag, text, step):
            calls["text"].append((tag, text))

    ctx = FakeCtx(model, meta=meta)
    ctx.tb = TB()
    metrics = model.evaluate(lambda: iter(batches), ctx)
    with torch.no_grad():
        reference = evaluate_image_text(lambda: iter(batches), model.encode_image, model.encode_text, BPETokenizer(cfg.context_length), meta, ctx.device)
    assert {k: metrics[k] for k in reference} == reference  # CLIP's protocol, exactly
    assert {"zeroshot_colour_shape_top1", "t2i_r1", "i2t_r10", "linear_probe_top1"} <= set(metrics)
    assert 0.0 <= metrics["linear_probe_top1"] <= 1.0
    # card f: top-5 as well, where a task has more than 5 classes
    n_classes = {task: len(spec["classnames"]) for task, spec in meta["zero_shot"].items()}
    for task, n in n_classes.items():
        assert (f"zeroshot_{task}_top5" in metrics) == (n > 5), (task, n)
        if n > 5:
            assert metrics[f"zeroshot_{task}_top1"] <= metrics[f"zeroshot_{task}_top5"] <= 1.0
    assert any(n > 5 for n in n_classes.values())
    (tag, imgs), = calls["images"]
    assert imgs.shape == (3, SIZE, SIZE, 3) and imgs.dtype == np.uint8
    (ttag, text), = calls["text"]
    assert text.count("**query") == 3 and text.count("\n1. ") == 3 and text.count("\n5. ") == 3


# --------------------------------------------------------------------------- config surface
def test_config_validation_search_space_and_presets():
    from contrastlab.platform.config import ConfigError, build_experiment

    with pytest.raises((ValueError, ConfigError), match="sum to"):
        build_experiment("declip", sets=["method.weight_ss=0.5", "method.weight_nn=0.4", "method.weight_mlm=0.2"])
    with pytest.raises((ValueError, ConfigError), match="queue_overflow"):
        build_experiment("declip", sets=["method.queue_overflow=lifo"])
    exp = build_experiment("declip", sets=[f"{k}={v}" for k, v in DeCLIP.smoke_overrides.items()] + real_run_sets("RN50"))
    assert exp.method.image_tower == "RN50" and exp.method.theta_clamp_high == float("inf") and exp.method.queue_size == 65536
    space = DeCLIP.search_space()
    fields = set(DeCLIPConfig.__dataclass_fields__)
    assert all(k.startswith("method.") and k[7:] in fields for k in space)
    assert {"method.lr", "method.weight_decay", "method.weight_nn", "method.weight_ss", "method.weight_mlm",
            "method.queue_size", "method.crop_scale_min", "method.init_temperature"} == set(space)
