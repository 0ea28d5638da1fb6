"""CVP method: shapes of the networks, feature kinds, config validation, and an end-to-end run_local
(both phases, SVM evaluation) on a tiny usgs-cube that must beat chance (1/9) by a wide margin."""
import numpy as np
import pytest
import torch

from contrastlab.methods.cvp.config import SMALL_SCALE, CVPConfig
from contrastlab.methods.cvp.method import CVP, cvp_sample_fn
from contrastlab.methods.cvp.model import ContrastiveNet, CrossChannelPredictor
from contrastlab.methods.cvp.svm import svm_scores

torch.set_num_threads(1)


def small_cfg(**kw):
    base = dict(n_bands=30, view_dim=16, clusters=8, encoder_hidden="32,32", predictor_hidden="16")
    return CVPConfig(**{**base, **kw})


def _conv2d_map(p: CrossChannelPredictor, x: torch.Tensor) -> torch.Tensor:
    """The stage-1 2-D map after Conv2d+BN+ReLU, before the adaptive pooling."""
    h = p.conv3d(x.unsqueeze(1))
    n, c, b, hh, ww = h.shape
    return p.conv2d[:-1](h.reshape(n, c * b, hh, ww))


def test_predictor_shapes():
    p = CrossChannelPredictor(15, 15, 9, view_dim=16)
    v, pred = p(torch.randn(4, 15, 9, 9))
    assert v.shape == (4, 16) and pred.shape == (4, 15 * 81)
    with pytest.raises(ValueError, match="13 input bands"):
        CrossChannelPredictor(12, 18, 9)


def test_predictor_default_is_card_unpadded_conv2d():  # card §c: Conv2d 3x3 unpadded, w >= 9
    p = CrossChannelPredictor(15, 15, 9, view_dim=16)
    assert p.conv2d[0].padding == (0, 0)
    x = torch.randn(4, 15, 9, 9)
    assert _conv2d_map(p, x).shape == (4, 64, 1, 1)  # 9 - 6 - 2 = 1
    v, pred = p(x)
    assert v.shape == (4, 16) and pred.shape == (4, 15 * 81)
    with pytest.raises(ValueError, match="patch_size must be >= 9"):
        CrossChannelPredictor(15, 15, 7)


def test_predictor_padding_one_restores_previous_layout():
    p = CrossChannelPredictor(15, 15, 9, view_dim=16, conv2d_padding=1)
    x = torch.randn(4, 15, 9, 9)
    assert _conv2d_map(p, x).shape == (4, 64, 3, 3)
    p7 = CrossChannelPredictor(15, 15, 7, view_dim=16, conv2d_padding=1)
    v, pred = p7(torch.randn(2, 15, 7, 7))
    assert _conv2d_map(p7, torch.randn(2, 15, 7, 7)).shape == (2, 64, 1, 1)
    assert v.shape == (2, 16) and pred.shape == (2, 15 * 49)
    m = CVP(small_cfg(patch_size=7, predictor_conv2d_padding=1))
    assert m.p12.conv2d[0].padding == (1, 1) and m.p21.conv2d[0].padding == (1, 1)


def test_config_refuses_w7_unpadded():
    with pytest.raises(ValueError, match="method.patch_size=7.*method.predictor_conv2d_padding") as e:
        CVP(small_cfg(patch_size=7))
    assert "predictor_conv2d_padding=1" in str(e.value) and ">= 9" in str(e.value)
    with pytest.raises(ValueError, match="predictor_conv2d_padding"):
        CVP(small_cfg(predictor_conv2d_padding=2))
    CVP(small_cfg(patch_size=9))  # card default accepted


def _linear_dims(seq) -> list[int]:
    lins = [m for m in seq if isinstance(m, torch.nn.Linear)]
    return [lins[0].in_features] + [m.out_features for m in lins]


def test_small_scale_decoder_is_k_256_d():  # card §g: D = K -> 256 -> d
    cfg = CVPConfig(n_bands=30, **{k.split(".", 1)[1]: v for k, v in SMALL_SCALE.items()})
    m = CVP(cfg)
    for dec in (m.contrastive.dec1, m.contrastive.dec2):
        assert _linear_dims(dec) == [32, 256, 64]
        assert sum(isinstance(x, torch.nn.BatchNorm1d) for x in dec) == 2  # BN+ReLU after each linear, last included
    assert _linear_dims(m.contrastive.enc1.body) + [32] == [64, 256, 256, 32]


def test_default_decoder_mirrors_encoder():  # card §b full scale: D mirrors E
    assert CVPConfig().decoder_hidden == ""
    m = CVP(small_cfg(encoder_hidden="32,48"))
    assert _linear_dims(m.contrastive.dec1) == [8, 48, 32, 16]
    net = ContrastiveNet(128, [1024, 1024, 1024], 128, [128])
    assert _linear_dims(net.dec2) == [128, 1024, 1024, 1024, 128]
    assert isinstance(net.dec2[-1], torch.nn.ReLU) and isinstance(net.dec2[-2], torch.nn.BatchNorm1d)


@pytest.mark.parametrize("kind,width", [("views", 32), ("hidden", 64), ("logits", 16), ("softmax", 16)])
def test_feature_kinds(kind, width):
    m = CVP(small_cfg(split_scheme="interleave"))
    patch = torch.randn(6, 30, 9, 9)
    v = torch.cat(m.views(patch), dim=1)
    f = m.features_from_views(v, kind)
    assert f.shape == (6, width)
    if kind == "softmax":
        assert torch.allclose(f[:, :8].sum(1), torch.ones(6), atol=1e-5)


def test_predict_losses_and_phases():
    m = CVP(small_cfg(predict_epochs=2, contrast_epochs=3))
    l12, l21 = m.predict_losses(torch.randn(4, 30, 9, 9))
    assert l12.item() > 0 and l21.item() > 0
    assert m.phases() == [("predict", 2), ("contrast", 3)]
    assert set(m.optimizers()) == {"predict", "contrast"}
    ablation = CVP(small_cfg(contrast_epochs=0, features="views"))
    assert ablation.phases() == [("predict", 30)] and set(ablation.optimizers()) == {"predict"}


def test_config_validation():
    with pytest.raises(ValueError, match="split_scheme"):
        CVP(small_cfg(split_scheme="thirds"))
    with pytest.raises(ValueError, match="features=views"):
        CVP(small_cfg(contrast_epochs=0))
    with pytest.raises(ValueError, match="n_bands"):
        CVP.make_preprocess(small_cfg(), "train", {"bands": 48})


def test_sample_fn_crops_centre():
    fn = cvp_sample_fn(small_cfg(patch_size=7), {})
    patch = np.arange(30 * 11 * 11, dtype=np.float16).reshape(30, 11, 11)
    out = fn({"npy": patch, "json": {"label": 2, "split": "test", "row": 1, "col": 4}}, np.random.default_rng(0))
    assert out["patch"].shape == (30, 7, 7) and out["patch"][0, 3, 3] == patch[0, 5, 5]
    assert out["svm_split"] == 1 and out["label"] == 2
    with pytest.raises(ValueError, match="smaller than method.patch_size"):
        cvp_sample_fn(small_cfg(patch_size=13), {})({"npy": patch, "json": {}}, None)


def test_svm_scores_separable():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    x = rng.normal(0, 0.1, (60, 4)) + np.eye(4)[y] * 3
    train = np.concatenate([np.flatnonzero(y == c)[:5] for c in range(3)])
    test = np.setdiff1d(np.arange(60), train)
    for mode in ("linear", "linear-fixed", "grid"):
        s, _, _ = svm_scores(x, y, train, test, mode)
        assert s["oa"] == 1.0 and s["kappa"] == 1.0


def test_run_local_learns(tmp_path):
    from contrastlab.platform.local import run_local

    sets = ["method.n_bands=32", "method.view_dim=32", "method.clusters=16", "method.encoder_hidden=64,64",
            "method.predictor_hidden=32", "method.predict_epochs=2", "method.contrast_epochs=1", "method.pre_start_epoch=0",
            "method.contrast_lr=0.001", "method.svm=linear-fixed", "train.epochs=3", "train.batch_size=64",
            f"data.cache_dir={tmp_path}", "data.embedded_params={size: 24, n_bands: 32, n_regions: 9, spectra: generated}"]
    r = run_local("cvp", sets, quiet=True)
    last = r.history[-1]
    assert [h["phase"] for h in r.history] == ["predict", "predict", "contrast"]
    assert last["oa"] > 0.35 and last["views_oa"] > 0.35  # chance = 1/9
    assert "train_loss_pre" in last and np.isfinite(last["train_loss_mi"])


def _stage1_ctx(model, predict_batch_size):
    from contrastlab.platform.config import build_experiment
    from contrastlab.platform.train import StepContext, build_optimizer

    exp = build_experiment("cvp", sets=["method.n_bands=30", f"method.predict_batch_size={predict_batch_size}"])
    spec = model.optimizers()["predict"]
    opt = build_optimizer([model.trainable()[n] for n in spec.modules], spec)
    return StepContext(exp=exp, method=model, device=torch.device("cpu"), optimizers={"predict": opt}, specs={"predict": spec},
                       base_lrs={"predict": [g["lr"] for g in opt.param_groups]}, total_steps=10, phase="predict")


def test_stage1_steps_once_per_card_sized_chunk():  # card §e, §g: stage 1 at batch 128, stage 2 at 256
    assert CVPConfig().predict_batch_size == 128
    patch = torch.randn(8, 30, 9, 9)
    torch.manual_seed(0)
    chunked = CVP(small_cfg(predict_batch_size=4))
    reference = CVP(small_cfg(predict_batch_size=4))
    reference.load_state_dict(chunked.state_dict())
    ctx = _stage1_ctx(chunked, 4)
    logs = chunked.train_step({"patch": patch}, ctx)
    assert ctx._opt_steps["predict"] == 2  # two chunks of 4 rows: two Adam steps
    # the same as two separate stage-1 steps on the halves, one after the other
    ref_ctx = _stage1_ctx(reference, 4)
    first = reference.train_step({"patch": patch[:4]}, ref_ctx)
    second = reference.train_step({"patch": patch[4:]}, ref_ctx)
    for a, b in zip(chunked.parameters(), reference.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert logs["loss"] == pytest.approx((first["loss"] + second["loss"]) / 2, rel=1e-5)
    whole = CVP(small_cfg(predict_batch_size=0))
    ctx_whole = _stage1_ctx(whole, 0)
    whole.train_step({"patch": patch}, ctx_whole)
    assert ctx_whole._opt_steps["predict"] == 1  # 0: one step per training batch
    odd = CVP(small_cfg(predict_batch_size=4))
    ctx_odd = _stage1_ctx(odd, 4)
    odd.train_step({"patch": torch.randn(9, 30, 9, 9)}, ctx_odd)  # 9 rows at 4: two chunks (5 + 4), no 1-row rest
    assert ctx_odd._opt_steps["predict"] == 2
    with pytest.raises(ValueError, match="predict_batch_size"):
        CVP(small_cfg(predict_batch_size=-1))
