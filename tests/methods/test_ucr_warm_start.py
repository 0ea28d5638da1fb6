"""UCR warm start (card c, g): the labelled source phase's weights reach both the online and the EMA
model before the first seen domain starts, also across a resume at the phase boundary."""
from types import SimpleNamespace

import torch

from contrastlab.methods.ucr.method import UCR, UCRConfig

torch.set_num_threads(1)


def _clone(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _differs(a: dict, b: dict) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


def test_first_seen_domain_starts_from_the_warm_start(tmp_path, monkeypatch):
    from contrastlab.platform.local import run_local

    snap: dict[str, dict] = {}
    start, end = UCR.on_phase_start, UCR.on_epoch_end

    def on_phase_start(self, ctx):
        if ctx.phase == "d0":
            snap["init"] = _clone(self.online)
        start(self, ctx)
        if ctx.phase == "d1":
            snap["online_d1"], snap["ema_d1"] = _clone(self.online), _clone(self.ema)

    def on_epoch_end(self, ctx):
        if ctx.phase == "d0":
            snap["warm"], snap["ema_before"] = _clone(self.online), _clone(self.ema)
        end(self, ctx)

    monkeypatch.setattr(UCR, "on_phase_start", on_phase_start)
    monkeypatch.setattr(UCR, "on_epoch_end", on_epoch_end)
    run_local("ucr", [
        "method.source_domains=d0", "method.domains=d1", "method.source_epochs=1", "method.epochs_per_domain=1",
        "method.iters_per_epoch=0", "train.batch_size=16", "method.k1=6", "method.k2=2", "method.min_samples=2", f"data.cache_dir={tmp_path}",
        "data.embedded_params={n_source_domains: 1, n_seen_domains: 1, n_unseen_domains: 1, n_train_ids: 8, "
        "images_per_train_id: 6, n_test_ids: 4, images_per_test_id: 4}"], quiet=True)
    assert _differs(snap["warm"], snap["init"])  # the source phase trained the online model
    assert _differs(snap["ema_before"], snap["warm"])  # ... and the EMA had not followed it
    _assert_same(snap["online_d1"], snap["warm"])  # parameters and BN buffers
    _assert_same(snap["ema_d1"], snap["warm"])


def _ctx(epoch: int, phase: str):
    return SimpleNamespace(epoch=epoch, phase=phase, exp=SimpleNamespace(train=SimpleNamespace(eval_every_epochs=1)))


def _trained(cfg: UCRConfig) -> UCR:
    m = UCR(cfg)
    m.train()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in m.online.parameters():
            p.add_(torch.randn(p.shape, generator=gen))
        m.online(torch.randn(4, 3, cfg.height, cfg.width, generator=gen))  # BN running statistics move
    return m


def test_warm_start_copy_survives_a_resume_at_the_phase_boundary():
    """The loop's order: last source epoch -> on_epoch_end -> checkpoint -> on_phase_end(d0) ->
    on_phase_start(d1). A run resumed from that checkpoint calls on_phase_end(d0) again (the restored
    phase is d0): the copy is in the checkpoint and repeating it changes nothing."""
    cfg = UCRConfig(source_domains="d0", domains="d1,d2", source_epochs=2, epochs_per_domain=1)
    m = _trained(cfg)
    warm = _clone(m.online)
    m.on_epoch_end(_ctx(0, "d0"))  # not the phase's last epoch: EMA untouched
    assert _differs(_clone(m.ema), warm)
    m.on_epoch_end(_ctx(1, "d0"))
    _assert_same(_clone(m.ema), warm)
    checkpoint = m.state_dict()

    resumed = UCR(cfg)
    resumed.load_state_dict(checkpoint)
    for model in (m, resumed):  # uninterrupted and resumed runs
        model.on_phase_end(_ctx(1, "d0"))
        model.on_phase_start(_ctx(2, "d1"))
        _assert_same(_clone(model.online), warm)
        _assert_same(_clone(model.ema), warm)

    # a mid-epoch checkpoint of the last source epoch (before on_epoch_end): the resumed run finishes
    # the epoch, and its on_epoch_end does the copy
    early = _trained(cfg)
    mid = UCR(cfg)
    mid.load_state_dict(early.state_dict())
    mid.on_epoch_end(_ctx(1, "d0"))
    _assert_same(_clone(mid.ema), _clone(early.online))


def test_seen_domains_keep_the_mean_teacher():
    """Only source phases copy online -> EMA; at a seen domain's end the EMA stays the mean teacher."""
    cfg = UCRConfig(source_domains="d0", domains="d1,d2", source_epochs=1, epochs_per_domain=1, rehearsal=False)
    m = _trained(cfg)
    ema = _clone(m.ema)
    m.on_epoch_end(_ctx(1, "d1"))
    m.on_phase_end(_ctx(1, "d1"))
    _assert_same(_clone(m.ema), ema)
    assert _differs(_clone(m.online), ema)


def _centroids_after_epoch_start(model_name: str, phase: str) -> tuple[UCR, torch.Tensor]:
    """on_epoch_start over a fixed 8-image batch of two ids (domain d0 = source, d1 = seen)."""
    torch.manual_seed(0)
    m = UCR(UCRConfig(source_domains="d0", domains="d1", source_cluster_model=model_name, min_samples=2, k1=3, k2=1))
    with torch.no_grad():  # the EMA differs from the online model, as it does during a warm start
        for p in m.ema.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    m.train()
    images = torch.rand(8, 3, m.cfg.height, m.cfg.width)
    batch = {"image": images, "domain": torch.full((8,), 0 if phase == "d0" else 1)}
    cols = {"domain": batch["domain"].numpy(), "camera": torch.arange(8).remainder(2).numpy(),
            "pid": torch.arange(8).div(4, rounding_mode="floor").numpy()}

    def extract(split, fn):  # ctx.extract's contract: fn over the split without grad, numpy out
        with torch.no_grad():
            return torch.arange(8).numpy(), fn(batch).numpy(), cols

    ctx = SimpleNamespace(phase=phase, rank=0, is_main=True, meta={"domain_names": ["d0", "d1"]}, log=lambda *a, **k: None,
                          extract=extract)
    m.on_epoch_start(ctx)
    assert m.online.training and m.ema.training  # restored after the extraction
    return m, images


def _class_means(model, images) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        from contrastlab.platform.data.augment import normalize_batch

        f = model(normalize_batch(images))
    model.train()
    return torch.stack([f[:4].mean(0), f[4:].mean(0)])


def test_source_phase_centroids_use_the_online_model():
    m, images = _centroids_after_epoch_start("online", "d0")
    assert torch.allclose(m.centroids, _class_means(m.online, images), atol=1e-5)  # ground-truth ids, online features
    old, images = _centroids_after_epoch_start("ema", "d0")
    assert torch.allclose(old.centroids, _class_means(old.ema, images), atol=1e-5)  # the behaviour before session 20
    assert not torch.allclose(old.centroids, _class_means(old.online, images), atol=1e-3)
