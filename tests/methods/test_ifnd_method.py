"""IFND method class: acceptance 0 = base loss exactly, FN handling through the method, the clustering
hook, pseudo-labels in state_dict across a resume, queue lookups, schedule wiring, preprocessing, run_local."""
import contextlib
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from contrastlab.methods.ifnd.clustering import labels_digest
from contrastlab.methods.ifnd.loss import ifnd_inbatch_loss, ifnd_queue_loss
from contrastlab.methods.ifnd.method import IFND, IFNDConfig, evaluate_features, make_sample_fn

torch.set_num_threads(1)


class FakeCtx:
    """The parts of StepContext the method uses; `extract` runs fn over fixed eval batches."""

    def __init__(self, images, index, labels=None, epoch=0, epochs=10, seed=0):
        self.images, self.index, self.labels = images, index, labels
        self.epoch, self.rank, self.world_size, self.is_main = epoch, 0, 1, True
        self.device = torch.device("cpu")
        self.exp = SimpleNamespace(run=SimpleNamespace(seed=seed), train=SimpleNamespace(epochs=epochs))
        self.meta = {"classes": [str(i) for i in range(10)]}
        self.losses, self.extract_calls, self.logged = [], 0, []

    def extract(self, split, fn):
        assert split == "train_eval"
        self.extract_calls += 1
        batch = {"image": self.images, "index": self.index}
        cols = {} if self.labels is None else {"label": self.labels.numpy()}
        return self.index.numpy(), fn(batch).numpy(), cols

    def gather(self, x, grad=True):
        return x

    def autocast(self):
        return contextlib.nullcontext()

    def optimize(self, loss, name):
        self.losses.append(loss)

    def log(self, values, prefix=""):
        self.logged.append(values)


def _build(seed=0, **kw):
    torch.manual_seed(seed)
    kw.setdefault("cluster_counts", (6, 3))
    return IFND(IFNDConfig(**kw)).eval()  # eval: BN uses running stats, so repeated forwards agree bit for bit


def _data(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(n, 1, 8, 8, generator=g) * 255).to(torch.uint8)
    return images, torch.arange(100, 100 + n), torch.arange(n) % 3


def _batch(images, index):
    g = torch.Generator().manual_seed(1)
    x = images.float() / 255
    return {"view1": x + 0.05 * torch.randn(x.shape, generator=g), "view2": x + 0.05 * torch.randn(x.shape, generator=g), "index": index}


@pytest.mark.parametrize("variant", ["inbatch", "queue"])
@pytest.mark.parametrize("strategy", ["elim", "attr"])
def test_acceptance_zero_equals_base_loss_exactly(variant, strategy):  # checklist 1, method level
    images, index, _ = _data()
    batch = _batch(images[:8], index[:8])
    base, ifnd = _build(variant=variant, strategy="none", queue_size=16), _build(variant=variant, strategy=strategy, queue_size=16)
    if variant == "queue":  # queue entries that would be FN if anything were accepted
        for m in (base, ifnd):
            m.queue.enqueue(F.normalize(torch.randn(16, 64, generator=torch.Generator().manual_seed(5)), dim=1), index[8:24])
    ctx = FakeCtx(images, index, epoch=3)
    ifnd.clustering_pass(ctx, rate=0.0)  # a real pass, nothing accepted
    assert ifnd.pl_labels.shape == (2, 24) and not ifnd.pl_accepted.any()
    ctx_b, ctx_i = FakeCtx(images, index), FakeCtx(images, index)
    base.train_step(batch, ctx_b)
    ifnd.train_step(batch, ctx_i)
    assert torch.equal(ctx_i.losses[0], ctx_b.losses[0])
    # and the loss functions themselves: 3 levels, all unaccepted, equal the no-label call bit for bit
    z = F.normalize(torch.randn(10, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    lab, none = torch.zeros(3, 5, dtype=torch.long), torch.zeros(3, 5, dtype=torch.bool)
    assert torch.equal(ifnd_inbatch_loss(z, lab, none, strategy), ifnd_inbatch_loss(z, strategy=strategy))
    q, k, qu = z[:4], z[4:8], F.normalize(torch.randn(6, 8), dim=1)
    assert torch.equal(ifnd_queue_loss(q, k, qu, lab[:, :4], none[:, :4], lab[:, :1].expand(3, 6), none[:, :1].expand(3, 6), strategy),
                       ifnd_queue_loss(q, k, qu, strategy=strategy))


def _inbatch_reference(z, labels, accepted, strategy, tau):
    """Per-anchor loss by explicit loops over candidate sets (the card-b formulas)."""
    n, b = z.shape[0], z.shape[0] // 2
    sim = (z @ z.T / tau).double()
    total = 0.0
    for a in range(n):
        pos = (a + b) % n
        cands = [j for j in range(n) if j != a]
        fn = [j for j in cands if j != pos and accepted[a % b] and accepted[j % b] and labels[a % b] == labels[j % b]]
        if strategy == "elim":
            denom = sum(math.exp(sim[a, j]) for j in cands if j not in fn)
            total += -(sim[a, pos] - math.log(denom))
        else:
            denom = sum(math.exp(sim[a, j]) for j in cands)
            total += -sum(sim[a, p] - math.log(denom) for p in [pos] + fn) / (1 + len(fn))
    return total / n


@pytest.mark.parametrize("strategy", ["elim", "attr"])
def test_method_fn_leave_denominator_or_join_positives(strategy):  # checklist 2/5 through the method
    images, index, _ = _data(n=6)
    m = _build(strategy=strategy, temperature=0.5)
    # pseudo-labels: images 100, 101, 103 share cluster 0 (accepted); 102 shares it but is not accepted
    labels = torch.tensor([[0, 0, 0, 0, 1, 2], [0, 0, 0, 0, 1, 1]])
    accepted = torch.tensor([[True, True, False, True, True, True]] * 2)
    m.set_pseudo_labels(index, labels, torch.ones(2, 6), accepted, epoch=1, rate=0.5)
    batch = _batch(images, index)
    ctx = FakeCtx(images, index)
    m.train_step(batch, ctx)
    with torch.no_grad():
        z = m.encoder(torch.cat([batch["view1"], batch["view2"]]))
    ref = np.mean([_inbatch_reference(z, labels[lv].tolist(), accepted[lv].tolist(), strategy, 0.5) for lv in range(2)])
    assert ctx.losses[0].item() == pytest.approx(ref, rel=1e-5)
    base = FakeCtx(images, index)
    _build(strategy="none", temperature=0.5).train_step(batch, base)
    assert abs(ctx.losses[0].item() - base.losses[0].item()) > 1e-4  # FN changed the loss


def test_queue_hand_case_through_lookup():  # checklist 2 hand values via dataset-index lookup
    m = _build(variant="queue", queue_size=2, cluster_counts=(2,), proj_dim=2)
    m.set_pseudo_labels(torch.tensor([7, 8, 9]), torch.tensor([[3, 3, 3]]), torch.ones(1, 3), torch.tensor([[True, True, False]]), 0, 1.0)
    m.queue.enqueue(torch.tensor([[0.6, 0.8], [0.0, 1.0]]), torch.tensor([8, 9]))  # entry 1 (id 9) not accepted
    a_lab, a_acc = m.lookup(torch.tensor([7]))
    q_lab, q_acc = m.lookup(m.queue.indices)
    q = k = torch.tensor([[1.0, 0.0]])
    args = (q, k, m.queue.keys, a_lab, a_acc, q_lab, q_acc)
    assert ifnd_queue_loss(*args, "elim", 1.0).item() == pytest.approx(0.31326, abs=5e-6)
    assert ifnd_queue_loss(*args, "attr", 1.0).item() == pytest.approx(0.91207, abs=5e-6)
    assert ifnd_queue_loss(q, k, m.queue.keys, temperature=1.0).item() == pytest.approx(0.71207, abs=5e-6)


def test_lookup_unknown_and_empty_ids_never_fn():
    m = _build()
    lab, acc = m.lookup(torch.tensor([1, -1]))
    assert (lab == -1).all() and not acc.any()  # before any pass
    m.set_pseudo_labels(torch.tensor([2, 5]), torch.tensor([[0, 0], [1, 1]]), torch.ones(2, 2), torch.ones(2, 2, dtype=torch.bool), 0, 1.0)
    lab, acc = m.lookup(torch.tensor([5, 3, -1, 9, 2]))
    assert lab[0].tolist() == [0, -1, -1, -1, 0] and acc[0].tolist() == [True, False, False, False, True]


def test_queue_lookup_uses_newest_pass():  # checklist 9, method level
    images, index, _ = _data()
    m = _build(variant="queue", queue_size=8)
    m.queue.enqueue(F.normalize(torch.randn(8, 64), dim=1), index[:8])
    ctx = FakeCtx(images, index, epoch=2)
    m.clustering_pass(ctx, rate=1.0)
    first = m.lookup(m.queue.indices)[0].clone()
    assert torch.equal(first, m.pl_labels[:, :8])
    new = torch.stack([torch.arange(24), torch.arange(24) // 2])  # a re-clustering with different ids
    m.set_pseudo_labels(index, new, torch.ones(2, 24), torch.ones(2, 24, dtype=torch.bool), 3, 1.0)
    assert torch.equal(m.lookup(m.queue.indices)[0], new[:, :8])


def test_pseudo_labels_survive_state_dict_resume():  # issue: labels after resume = labels before the stop
    images, index, y = _data()
    m = _build(variant="queue", queue_size=8)
    ctx = FakeCtx(images, index, labels=y, epoch=4, epochs=10)
    m.on_epoch_start(ctx)  # epoch 4 >= e_w = 2: a clustering pass at rate (4-2+1)/8
    assert ctx.extract_calls == 1 and int(m.pl_epoch) == 4 and float(m.pl_rate) == pytest.approx(3 / 8)
    assert int(m.pl_accepted[0].sum()) == math.floor(3 / 8 * 24)
    before = labels_digest(m.pl_index, m.pl_labels, m.pl_accepted)
    state = m.state_dict()
    assert {"pl_index", "pl_labels", "pl_confidence", "pl_accepted", "pl_epoch", "pl_rate"} <= set(state)
    fresh = _build(seed=1, variant="queue", queue_size=8)
    assert fresh.pl_labels.shape == (2, 0)
    fresh.load_state_dict(state)
    assert labels_digest(fresh.pl_index, fresh.pl_labels, fresh.pl_accepted) == before
    assert torch.equal(fresh.pl_confidence, m.pl_confidence) and fresh._active
    # resumed mid-epoch 4: the hook keeps the stored labels instead of re-clustering
    ctx2 = FakeCtx(images, index, labels=y, epoch=4, epochs=10)
    fresh.on_epoch_start(ctx2)
    assert ctx2.extract_calls == 0 and labels_digest(fresh.pl_index, fresh.pl_labels, fresh.pl_accepted) == before
    assert torch.equal(fresh.lookup(index)[0], m.lookup(index)[0])


def test_schedule_and_interval_wiring():  # checklist 7 through the hook
    images, index, _ = _data()
    m = _build(cluster_every=2, warmup_fraction=0.2)
    assert m.warmup_epochs(10) == 2 and m.warmup_epochs(2) == 0
    assert [e for e in range(10) if m.is_cluster_epoch(e, 10)] == [2, 4, 6, 8]
    calls, rates = [], []
    for e in range(10):
        ctx = FakeCtx(images, index, epoch=e, epochs=10)
        m.on_epoch_start(ctx)
        calls.append(ctx.extract_calls)
        rates.append(float(m.pl_rate))
    assert calls == [0, 0, 1, 0, 1, 0, 1, 0, 1, 0]
    assert rates[:2] == [0.0, 0.0] and rates[2] == pytest.approx(1 / 8) and rates[-1] == 1.0
    assert all(b >= a for a, b in zip(rates, rates[1:]))
    # epochs without a pass re-rank the stored confidences at the new rate
    assert int(m.pl_accepted[0].sum()) == 24 and int(m.pl_epoch) == 8
    none = _build(strategy="none")
    ctx = FakeCtx(images, index, epoch=5, epochs=10)
    none.on_epoch_start(ctx)
    assert ctx.extract_calls == 0 and none.pl_index.numel() == 0


def test_clustering_pass_stats_and_identical_across_ranks():  # checklist 10 + FN precision logging
    images, index, y = _data()
    a, b = _build(), _build()
    ctx_a = FakeCtx(images, index, labels=y, epoch=3)
    # "another rank": same gathered features delivered in another order -> extract sorts by index
    perm = torch.randperm(24, generator=torch.Generator().manual_seed(3))
    ctx_b = FakeCtx(images, index, labels=y, epoch=3)
    ctx_b.extract = lambda split, fn: (index.numpy(), fn({"image": images[perm], "index": index[perm]}).numpy()[torch.argsort(perm).numpy()], {"label": y.numpy()})
    stats = a.clustering_pass(ctx_a, rate=0.5)
    b.clustering_pass(ctx_b, rate=0.5)
    assert labels_digest(a.pl_labels, a.pl_accepted) == labels_digest(b.pl_labels, b.pl_accepted)
    assert stats["n_accepted"] == 12 and stats["acceptance_rate"] == 0.5
    assert 0.0 <= stats["fn_precision_l1"] <= 1.0 and "fn_recall_l2" in stats and ctx_a.logged == [stats]
    # checklist 8 on the installed tables (nested default)
    for c in a.pl_labels[0].unique():
        assert len(a.pl_labels[1][a.pl_labels[0] == c].unique()) == 1
    with pytest.raises(ValueError, match="k=30"):
        _build(cluster_counts=(30, 3)).clustering_pass(FakeCtx(images, index), rate=0.5)


def test_preprocessing_train_has_no_label_and_handles_png_jpg():
    cfg = IFNDConfig()
    rng = np.random.default_rng(0)
    grey = np.random.default_rng(1).integers(0, 256, (8, 8), dtype=np.uint8)
    fn, req = make_sample_fn(cfg, "train", {"image_format": "png"})
    assert req == ("png",)
    out = fn({"png": grey, "json": {"label": 3, "index": 5}, "index": 5}, rng)
    assert set(out) == {"view1", "view2"} and out["view1"].shape == (1, 8, 8) and out["view1"].dtype == np.float32
    efn, req = make_sample_fn(cfg, "eval", {})
    assert req == ("jpg",)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    ev = efn({"jpg": rgb, "json": {"label": 3}}, rng)
    assert ev["image"].dtype == np.uint8 and np.array_equal(ev["image"][0], grey) and ev["label"] == 3
    fn3, _ = make_sample_fn(IFNDConfig(in_channels=3, augmentation="mocov2", image_size=16), "train", {})
    assert fn3({"jpg": rgb}, rng)["view2"].shape == (3, 16, 16)


def test_config_validation_and_search_space():
    with pytest.raises(ValueError, match="method.strategy"):
        IFNDConfig(strategy="attract").validate()
    with pytest.raises(ValueError, match="non-increasing"):
        IFNDConfig(cluster_counts=(10, 20)).validate()
    assert IFNDConfig(cluster_counts=(20, 10), cluster_multiplier=0.5).ks() == (10, 5)
    pytest.importorskip("ray.tune")
    space = IFND.search_space()
    assert set(space) == {"method.temperature", "method.warmup_fraction", "method.schedule", "method.cluster_multiplier",
                          "method.strategy", "method.lr"}


def test_evaluate_features_on_separable_data():
    g = np.random.default_rng(0)
    centers = g.normal(size=(3, 16)) * 5
    ytr, yte = np.arange(90) % 3, np.arange(30) % 3
    out = evaluate_features(centers[ytr] + g.normal(size=(90, 16)), ytr, centers[yte] + g.normal(size=(30, 16)), yte, knn_k=10)
    assert out["knn_top1"] == 1.0 and out["kmeans_acc"] == 1.0 and out["kmeans_nmi"] == pytest.approx(1.0) and out["linear_probe"] == 1.0


def test_run_local_trains_and_evaluates(tmp_path, monkeypatch):
    from contrastlab.platform.local import run_local

    monkeypatch.setenv("CONTRASTLAB_CACHE", str(tmp_path))
    r = run_local("ifnd", ["data.embedded=digits", "train.epochs=2", "train.batch_size=128", "train.max_steps_per_epoch=3",
                           "method.cluster_counts=[20, 10]", "method.eval_kmeans_n_init=2"], quiet=True)
    last = r.history[-1]
    assert IFND.eval_metric in last and last["knn_top1"] > 0.3  # chance 0.1
    assert last["acceptance_rate"] == 1.0 and last["fn_precision"] > 0.1 and "linear_probe" in last
    assert r.history[0]["acceptance_rate"] == 0.5  # e_w = round(0.2 * 2) = 0: the first epoch clusters at 1/2


# card c: ShuffleBN (or SyncBN) in the key encoder of the queue variant (shared helper with FAME)
def _split_keys_reference(enc, x, seed, splits):
    """Keys as the split shuffle-BN defines them: permutation from the global RNG after manual_seed(seed),
    each sub-batch through the key encoder alone (its own BN statistics), rows put back in place."""
    torch.manual_seed(seed)
    perm = torch.randperm(x.shape[0])
    out = torch.empty(x.shape[0], enc(x[:2]).shape[1])
    with torch.no_grad():
        for chunk in perm.chunk(splits):
            out[chunk] = enc(x[chunk])
    return out, perm.chunk(splits)


def test_queue_key_encoder_uses_split_shuffle_bn_by_default():
    assert IFNDConfig().shuffle_bn == "auto"  # auto = split on one worker, cross-worker shuffle under DDP
    torch.manual_seed(0)
    m = IFND(IFNDConfig(variant="queue", strategy="none", queue_size=16, bn_splits=2)).train()  # train mode: batch statistics
    images, index, _ = _data(n=8)
    batch = _batch(images, index)
    ctx = FakeCtx(images, index)
    torch.manual_seed(5)
    m.train_step(batch, ctx)
    enc = m.momentum_encoder.encoder
    expected, _ = _split_keys_reference(enc, batch["view2"], 5, 2)
    torch.testing.assert_close(m.queue.keys[:8], expected, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        whole = enc(batch["view2"])  # one BN over the whole batch: what the key encoder used to do
    assert (m.queue.keys[:8] - whole).abs().max() > 1e-3


@pytest.mark.parametrize("mode", ["split", "off"])
def test_split_keys_do_not_see_the_other_sub_batch(mode):
    """With "split" a key's BN statistics come only from its own random sub-batch: changing the images of
    the other sub-batch leaves it unchanged. With "off" (one BN over the batch) every key moves."""
    torch.manual_seed(0)
    m = IFND(IFNDConfig(variant="queue", strategy="none", queue_size=16, shuffle_bn=mode, bn_splits=2)).train()
    ctx = FakeCtx(*_data(n=8)[:2])
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    _, (mine, other) = _split_keys_reference(m.momentum_encoder.encoder, x, 3, 2)
    x2 = x.clone()
    x2[other] = torch.rand(len(other), 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 3
    torch.manual_seed(3)
    k = m.keys(x, ctx)
    torch.manual_seed(3)
    k2 = m.keys(x2, ctx)
    assert not k.requires_grad and torch.allclose(k.norm(dim=1), torch.ones(8), atol=1e-5)
    if mode == "split":
        torch.testing.assert_close(k2[mine], k[mine])
    else:
        assert (k2[mine] - k[mine]).abs().max() > 1e-3


def test_shuffle_bn_config_validation():
    with pytest.raises(ValueError, match="method.shuffle_bn"):
        IFNDConfig(shuffle_bn="sync").validate()


# card c/g: encoder-dependent head and channel presets; ResNet-50 needs 3 input channels
def test_encoder_presets():
    small, r50 = IFNDConfig(), IFNDConfig(encoder="resnet50")
    assert (small.channels(), small.dims()) == (1, (128, 64))
    assert (r50.channels(), r50.dims()) == (3, (2048, 128))
    assert IFNDConfig(encoder="resnet50", hidden_dim=512, proj_dim=32).dims() == (512, 32)  # explicit values win
    assert IFNDConfig(in_channels=3).channels() == 3
    torch.manual_seed(0)
    m = IFND(IFNDConfig(encoder="resnet50", variant="queue", queue_size=8)).eval()
    head = [l for l in m.encoder.head if isinstance(l, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in head] == [(2048, 2048), (2048, 128)]
    assert m.queue.keys.shape == (8, 128) and m.encoder.backbone.conv1.in_channels == 3
    # grey data reaches ResNet-50 as 3 equal channels (the loader repeats the grey channel)
    grey = np.random.default_rng(1).integers(0, 256, (16, 16), dtype=np.uint8)
    efn, _ = make_sample_fn(m.cfg, "eval", {"image_format": "png"})
    img = efn({"png": grey, "json": {"label": 1}}, np.random.default_rng(0))["image"]
    assert img.shape == (3, 16, 16) and all(np.array_equal(img[c], grey) for c in range(3))
    tfn, _ = make_sample_fn(m.cfg, "train", {"image_format": "png"})
    views = tfn({"png": grey}, np.random.default_rng(0))
    assert views["view1"].shape == (3, 16, 16)
    with torch.no_grad():
        z = m.encoder(torch.from_numpy(np.stack([views["view1"], views["view2"]])).float())
    assert z.shape == (2, 128)
    assert IFND(IFNDConfig()).encoder.backbone.body[0].in_channels == 1  # the small CNN keeps grey input


def test_resnet50_with_one_channel_is_rejected_by_name():
    with pytest.raises(ValueError, match=r"resnet50 needs method.in_channels=3"):
        IFNDConfig(encoder="resnet50", in_channels=1).validate()
    with pytest.raises(ValueError, match="method.in_channels"):
        IFNDConfig(in_channels=2).validate()
    with pytest.raises(ValueError, match="method.hidden_dim"):
        IFNDConfig(proj_dim=-1).validate()
