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


# card f: retrieval video feature = mean over clips of L2-normalised pooled clip features; probe = raw mean
def _fixed_feature_method(per_clip: torch.Tensor, **kw) -> FAME:
    """A tiny FAME whose backbone returns `per_clip` (B * n, D) whatever the input, recording the input."""
    method = FAME(FAMEConfig(embed_dim=8, colour_aug=False, clip_len=4, crop_size=16, **kw))
    method.seen_inputs = []

    def features(x):
        method.seen_inputs.append(x.clone())
        return per_clip

    method.encoder_q.features = features
    return method


def test_retrieval_features_normalise_each_clip_before_the_mean():
    # video 0: clip a points along e0 with norm 1000, clip b along e1 with norm 1; video 1: the reverse norms
    per_clip = torch.tensor([[1000.0, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1000, 0]])
    clips = torch.zeros(2, 2, 3, 4, 16, 16, dtype=torch.uint8)
    method = _fixed_feature_method(per_clip)
    retr = method.clip_features(clips, retrieval=True)
    torch.testing.assert_close(retr, torch.tensor([[0.5, 0.5, 0], [0.5, 0.5, 0]]))  # both clips weigh equally
    probe = method.clip_features(clips)  # the probe keeps the raw mean (= averaged linear logits)
    torch.testing.assert_close(probe, torch.tensor([[500.0, 0.5, 0], [0.5, 500, 0]]))
    # raw means would make the two videos near-orthogonal; normalised ones make them identical
    assert torch.nn.functional.cosine_similarity(probe[0], probe[1], dim=0) < 0.01
    both = method.eval_features(clips)  # [probe | retrieval] from one forward
    torch.testing.assert_close(both, torch.cat([probe, retr], dim=1))
    assert len(method.seen_inputs) == 3


def test_retrieval_imagenet_norm_option():
    from contrastlab.methods.fame.augment import IMAGENET_MEAN, IMAGENET_STD, VIDEO_MEAN, VIDEO_STD

    clips = torch.full((1, 1, 3, 4, 16, 16), 128, dtype=torch.uint8)
    for flag, (mean, std) in ((False, (VIDEO_MEAN, VIDEO_STD)), (True, (IMAGENET_MEAN, IMAGENET_STD))):
        method = _fixed_feature_method(torch.ones(1, 3), retrieval_imagenet_norm=flag)
        method.eval_features(clips)
        retr_input = method.seen_inputs[-1][0, :, 0, 0, 0]
        torch.testing.assert_close(retr_input, (128 / 255 - torch.tensor(mean)) / torch.tensor(std))
        probe_input = method.seen_inputs[0][0, :, 0, 0, 0]  # the probe always sees the training statistics
        torch.testing.assert_close(probe_input, (128 / 255 - torch.tensor(VIDEO_MEAN)) / torch.tensor(VIDEO_STD))
        assert len(method.seen_inputs) == (2 if flag else 1)


def test_evaluate_feeds_normalised_clip_means_to_retrieval_and_raw_means_to_probe(monkeypatch):
    import contrastlab.methods.fame.method as fame_method
    from types import SimpleNamespace

    g = torch.Generator().manual_seed(0)
    per_clip = torch.randn(8, 3, generator=g) * torch.tensor([1.0, 100.0] * 4)[:, None]  # 4 videos x 2 clips, wild norms
    method = _fixed_feature_method(per_clip, probe_bg=False)
    import contrastlab.platform.eval as platform_eval

    seen = {"probe": []}

    def recall(q, ql, gal, gl, ks):
        seen["retrieval"] = (q, gal)
        return {f"r{k}": 0.0 for k in ks}

    def probe(xtr, ytr, xte, yte, **kw):
        seen["probe"].append((xtr, xte))
        return {"accuracy": 0.0}

    monkeypatch.setattr(fame_method, "class_retrieval_recall", recall)
    monkeypatch.setattr(platform_eval, "linear_probe", probe)
    batch = {"clips": torch.zeros(4, 2, 3, 4, 16, 16, dtype=torch.uint8), "index": torch.arange(4), "label": torch.tensor([0, 1, 0, 1])}
    ctx = SimpleNamespace(datasets={"train_eval": lambda: iter([batch])}, exp=None)
    method.evaluate(lambda: iter([batch]), ctx)
    v = per_clip.view(4, 2, 3)
    expected_retr = torch.nn.functional.normalize(v, dim=-1).mean(1).numpy()
    np.testing.assert_allclose(seen["retrieval"][0], expected_retr, rtol=1e-6)
    np.testing.assert_allclose(seen["retrieval"][1], expected_retr, rtol=1e-6)
    np.testing.assert_allclose(seen["probe"][0][0], v.mean(1).numpy(), rtol=1e-6)  # the class probe: raw clip means
