"""PPC method: gradient paths (checklist 2), preprocessing, config, search space, reproducible sampling, run_local."""
import json
import os

import numpy as np
import pytest
import torch

from contrastlab.methods.ppc.loss import ppc_losses
from contrastlab.methods.ppc.method import PPC, PPCConfig, ppc_sample_fn
from contrastlab.platform.datasets import fashion_mnist as fm

torch.set_num_threads(1)

SMALL = dict(cnn_width=8, cnn_dim=32, pcm_dim=16, proj_dim=8)


def _batch(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randint(0, 256, (n, 3, 64, 64), generator=g, dtype=torch.uint8),
            "labels": (torch.rand(n, 4, generator=g) < 0.5).float()}


def test_contrast_path_gives_no_grad_to_cam_head_and_pcm():
    # checklist 2: L_nce.backward() reaches the projection head (and backbone), never the CAM head or PCM
    method = PPC(PPCConfig(**SMALL))
    o1, o2 = method.forward_views(_batch()["image"])
    out = ppc_losses(o1["cam_rv"], o2["cam_rv"], o1["emb"], o2["emb"], _batch()["labels"], torch.Generator().manual_seed(0),
                     method.loss_cfg)
    out["loss_nce"].backward()
    net = method.net
    assert net.cam_head.weight.grad is None
    assert all(p.grad is None for p in net.pcm.parameters())
    assert net.proj.weight.grad is not None and net.proj.weight.grad.abs().sum() > 0
    assert torch.allclose(out["protos1"].norm(dim=1), torch.ones(5))


def test_baseline_has_no_ppc_terms_and_ppc_adds_them():
    base = PPC(PPCConfig(use_ppc=False, **SMALL))
    out = base.losses(_batch())
    assert "loss_nce" not in out
    assert out["loss"].item() == pytest.approx((out["loss_cls"] + out["loss_er"] + out["loss_ecr"]).item(), rel=1e-6)
    torch.manual_seed(0)
    ppc = PPC(PPCConfig(**SMALL))
    out = ppc.losses(_batch(), generator=torch.Generator().manual_seed(1))
    seam = out["loss_cls"] + out["loss_er"] + out["loss_ecr"]
    assert out["loss"].item() == pytest.approx((seam + out["loss_nce"]).item(), rel=1e-6)
    assert out["loss_nce"].item() == pytest.approx(0.1 * (out["loss_cp"] + out["loss_cl"] + out["loss_intra"]).item(), rel=1e-6)


def test_sampling_generator_is_reproducible_per_step():
    class Ctx:
        class exp:
            class run:
                seed = 3
        step, rank = 7, 0

    method = PPC(PPCConfig(**SMALL))
    a = method.losses(_batch(), generator=method.sampling_generator(Ctx))["loss_intra"].item()
    b = method.losses(_batch(), generator=method.sampling_generator(Ctx))["loss_intra"].item()
    assert a == b


def test_preprocess_train_and_eval():
    cfg = PPCConfig(train_scale_range=(1.0, 1.5), eval_size=64)
    train_fn, required = ppc_sample_fn(cfg, "train")
    assert required == ("jpg", "json")
    rng = np.random.default_rng(0)
    img = np.random.default_rng(1).integers(0, 255, (40, 80, 3), dtype=np.uint8)
    out = train_fn({"jpg": img, "json": {"labels": [1, 4]}}, rng)
    assert out["image"].shape == (3, 64, 64) and out["labels"].tolist() == [1, 0, 0, 1]
    eval_fn, required = ppc_sample_fn(cfg, "eval")
    assert required == ("jpg", "json", "png")
    mask = np.zeros((40, 80), np.uint8)
    mask[:, 40:] = 2
    out = eval_fn({"jpg": img, "json": {"labels": [2]}, "png": mask}, rng)
    assert out["image"].shape == (3, 64, 64) and out["mask"].shape == (64, 64)
    assert (out["mask"][32:] == 255).all() and set(np.unique(out["mask"][:32])) == {0, 2}  # padded rows are ignored
    with pytest.raises(ValueError, match="outside"):
        train_fn({"jpg": img, "json": {"labels": [5]}}, rng)
    with pytest.raises(ValueError, match="num_classes"):
        PPC.make_preprocess(cfg, "train", {"classes": ["a"] * 20})


@pytest.mark.parametrize("field, value, match", [
    ("semi_hard_window", (3, 10), "semi_hard_window"), ("hard_start", 0.4, "hard_start"), ("backbone", "vgg", "backbone"),
    ("output_stride", 8, "output_stride"), ("optimizer", "lamb", "optimizer"), ("seed_map", "x", "seed_map"),
])
def test_config_validation(field, value, match):
    with pytest.raises(ValueError, match=match):
        PPCConfig(**{field: value}).validate()


class _Domain:
    def __init__(self, kind, *args):
        self.kind, self.args = kind, args
        self.categories = args[0] if kind == "choice" else None


def test_search_space_follows_the_card(monkeypatch):
    # a stand-in for ray.tune (importing Ray costs seconds); the method only calls tune.choice / tune.uniform
    import sys
    import types

    tune = types.SimpleNamespace(choice=lambda c: _Domain("choice", list(c)), uniform=lambda a, b: _Domain("uniform", a, b))
    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(tune=tune))
    monkeypatch.setitem(sys.modules, "ray.tune", tune)
    space = PPC.search_space(PPCConfig())
    assert space["method.bg_threshold"].args == (0.1, 0.3)
    assert set(space) == {"method.nce_weight", "method.tau", "method.bg_threshold", "method.topk_fraction",
                          "method.semi_hard_window", "method.hard_start"}
    assert sorted(space["method.topk_fraction"].categories) == [1 / 32, 1 / 16, 1 / 8, 1 / 4]
    assert space["method.semi_hard_window"].categories == [[0, 2], [1, 2], [1, 1]]  # scaled to 5 prototypes
    voc = PPC.search_space(PPCConfig(num_classes=20, semi_hard_window=(3, 10)))
    assert voc["method.semi_hard_window"].categories == [[0, 10], [3, 10], [3, 5]]
    for window in space["method.semi_hard_window"].categories:
        PPCConfig(semi_hard_window=tuple(window)).validate()


@pytest.mark.skipif(not (fm.fashion_mnist_dir() / "t10k-labels-idx1-ubyte.gz").is_file(), reason="dataset-fashion-mnist not installed")
def test_run_local_trains_and_evaluates(tmp_path):
    from contrastlab.platform.local import run_local

    sets = ["train.epochs=1", "train.batch_size=16", f"data.cache_dir={tmp_path / 'cache'}",
            "data.embedded_params={n_train: 48, n_val: 16}", "method.log_images=2"] + [f"method.{k}={v}" for k, v in SMALL.items()]
    r = run_local("ppc", sets, tb_dir=str(tmp_path / "tb"), quiet=True)
    last = r.history[-1]
    assert r.method.eval_metric == "seed_miou" and 0.0 <= last["seed_miou"] <= 1.0
    assert {"iou_background", "iou_t_shirt_top", "iou_bag", "seed_threshold", "feat_separation"} <= set(last)
    assert np.isfinite(last["train_loss_nce"]) and last["step"] == 3
    assert any(f.startswith("events") for f in os.listdir(tmp_path / "tb"))  # scalars + CAM overlays
