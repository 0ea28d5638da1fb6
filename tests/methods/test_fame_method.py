"""FAME method: config validation, sample functions, retrieval protocol (checklist 10), search space,
and an end-to-end run_local on a tiny moving-shapes dataset."""
import numpy as np
import pytest
import torch

from contrastlab.methods.fame.data import two_clip_starts, uniform_clip_starts
from contrastlab.methods.fame.evaluation import class_retrieval_recall
from contrastlab.methods.fame.method import FAME, FAMEConfig
from contrastlab.methods.fame.model import VideoEncoder

torch.set_num_threads(1)


@pytest.mark.parametrize("field,value", [("beta", 0.0), ("beta", 1.0), ("backbone", "i3d"), ("shuffle_bn", "sync"),
                                         ("clip_len", 1), ("temperature", 0.0), ("momentum", 1.0)])
def test_config_validation(field, value):
    cfg = FAMEConfig(**{field: value})
    with pytest.raises(ValueError, match=f"method.{field}"):
        cfg.validate()


def test_clip_starts():
    rng = np.random.default_rng(0)
    for _ in range(50):
        a, b = two_clip_starts(24, 8, 2, rng)  # span 15 -> starts 0..9, two distinct
        assert a != b and 0 <= a <= 9 and 0 <= b <= 9
    assert two_clip_starts(15, 8, 2, rng) == (0, 0)  # only one position: the same start
    assert two_clip_starts(5, 8, 2, rng) == (0, 0)
    assert uniform_clip_starts(24, 8, 2, 3).tolist() == [0, 4, 9]  # linspace(0, 9, 3) = 0, 4.5, 9; 4.5 rounds to even
    assert uniform_clip_starts(24, 8, 2, 1).tolist() == [4]


# 10. retrieval: per-set centring, then normalisation; hand-computed R@k
def test_retrieval_centres_each_set_and_matches_hand_values():
    gallery = np.array([[1.0, 0], [-1, 0], [0, 1], [0, -1]])  # mean 0
    g_labels = np.array([0, 1, 1, 2])
    query = np.array([[1.0, 0.2], [-1, 0.1], [0.1, -1]])
    q_labels = np.array([1, 1, 2])
    # centred queries: (.967, .433) -> g0 (label 0) first, g2 (label 1) second; (-1.033, .333) -> g1; (.067, -.767) -> g3
    expected = {"r1": 2 / 3, "r2": 1.0, "r5": 1.0}
    assert class_retrieval_recall(query, q_labels, gallery, g_labels, ks=(1, 2, 5)) == pytest.approx(expected)
    # each set is centred by its own mean: offsets added to a whole set change nothing
    shifted = class_retrieval_recall(query + [5.0, 5.0], q_labels, gallery + [-3.0, 7.0], g_labels, ks=(1, 2, 5))
    assert shifted == pytest.approx(expected)
    # without centring the offsets do matter (all gallery items point up)
    raw = class_retrieval_recall(query + [5.0, 5.0], q_labels, gallery + [-3.0, 7.0], g_labels, ks=(1, 2, 5), centre=False)
    assert raw != pytest.approx(expected)


@pytest.mark.parametrize("backbone,dim", [("small", 64), ("r3d_18", 512), ("r2plus1d_18", 512)])
def test_backbones(backbone, dim):
    enc = VideoEncoder(backbone, out_dim=16)
    x = torch.randn(2, 3, 4, 16, 16)
    with torch.no_grad():
        assert enc.features(x).shape == (2, dim)
        z = enc(x)
    assert z.shape == (2, 16)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(2))


def test_search_space_matches_card():
    pytest.importorskip("ray")
    space = FAME.search_space()
    assert set(space) == {"method.beta", "method.temperature", "method.lr", "method.queue_size", "method.fg_seed", "method.bg_seed",
                          "method.momentum"}
    assert sorted(space["method.beta"].categories) == [0.3, 0.4, 0.5, 0.6, 0.7]
    assert all(k % (2 * FAME.train_defaults["batch_size"]) == 0 for k in space["method.queue_size"].categories)


@pytest.mark.slow
def test_run_local_trains_and_evaluates(tmp_path, monkeypatch):
    monkeypatch.setenv("CONTRASTLAB_CACHE", str(tmp_path / "cache"))
    from contrastlab.platform.local import run_local

    r = run_local("fame", ["train.epochs=1", "train.batch_size=16", "data.embedded_params={n_train: 64, n_test: 32, n_frames: 16}",
                           "method.queue_size=64", "method.eval_clips=1"], quiet=True, tb_dir=str(tmp_path / "tb"))
    last = r.history[-1]
    assert np.isfinite(last["train_loss"]) and last["step"] == 4
    for key in ("probe_top1", "retrieval_r1", "retrieval_r5", "retrieval_r10", "bg_probe_top1", "probe_test_halves_top1"):
        assert 0.0 <= last[key] <= 1.0
    assert r.method.queue.ptr.item() == (4 * 2 * 16) % 64
    assert any(p.name.startswith("events") for p in (tmp_path / "tb").rglob("*"))
