"""UCR method: buffer labels across domains, state_dict round trip (resume mid-phase), re-id
evaluation protocol (card h.1-h.4, h.8, h.10), and a tiny end-to-end run_local."""
import contextlib
import io

import numpy as np
import pytest
import torch

from contrastlab.methods.ucr.method import UCR, UCRConfig
from contrastlab.platform.eval.reid import reid_evaluate

torch.set_num_threads(1)


# ---------------------------------------------------------------- evaluation protocol (card h.1-h.4)
def test_reid_protocol_card_cases():
    r = reid_evaluate(np.array([[0.1, 0.5, 0.9]]), [0], [0, 1, 2], [0], [1, 1, 1])
    assert r["mAP"] == 1.0 and r["rank1"] == 1.0
    r = reid_evaluate(np.array([[0.0, 0.5, 0.3, 0.7]]), [0], [0, 0, 1, 0], [0], [0, 1, 1, 1], max_rank=2)
    assert r["mAP"] == pytest.approx((1 / 2 + 2 / 3) / 2, abs=1e-5) and r["cmc"][0] == 0 and r["cmc"][1] == 1
    r = reid_evaluate(np.array([[0.1, 0.2, 0.3]]), [0], [5, 0, 0], [0], [0, 1, 1])
    assert r["mAP"] == pytest.approx(0.58333, abs=1e-5)
    r = reid_evaluate(np.array([[0.1, 0.2], [0.3, 0.1]]), [0, 7], [0, 1], [0, 0], [1, 1])
    assert r["num_valid_queries"] == 1 and r["mAP"] == 1.0


# ---------------------------------------------------------------- buffer
def _cluster(method, index, labels, centroids, scores):
    method.pl_index = torch.tensor(index)
    method.pl_label = torch.tensor(labels)
    method.pl_score = torch.tensor(scores, dtype=torch.float32)
    method.centroids = torch.tensor(centroids, dtype=torch.float32)
    n = len(centroids)
    method.proxies = torch.tensor(centroids, dtype=torch.float32)
    method.proxy_owner = torch.arange(n)


def _three_domains(label_offset):
    m = UCR(UCRConfig(label_offset=label_offset))
    d = m.online.dim
    truth = {}
    rng = np.random.default_rng(0)
    start = 0
    for n_clusters in (3, 2, 4):  # domains 1, 2, 3
        cents = rng.standard_normal((n_clusters, d)).astype(np.float32)
        labels = np.repeat(np.arange(n_clusters), 3)
        index = np.arange(start, start + len(labels))
        scores = rng.random(len(labels)).astype(np.float32)
        _cluster(m, index, labels, cents, scores)
        m._append_buffer()
        for i, l in zip(index, labels):
            truth[int(i)] = cents[l]
        start += 100
    return m, truth


def test_buffer_labels_index_their_centroid_rows():
    m, truth = _three_domains("intended")
    assert len(m.buf_index) == 2 * (3 + 2 + 4) and m.old_centroids.shape[0] == 9
    for i, label in zip(m.buf_index.tolist(), m.buf_label.tolist()):
        np.testing.assert_allclose(m.old_centroids[label].numpy(), truth[i])
    # the proxies follow their clusters too
    for row, owner in enumerate(m.old_proxy_owner.tolist()):
        np.testing.assert_allclose(m.old_proxies[row].numpy(), m.old_centroids[owner].numpy())


def test_official_label_offset_mislabels_the_oldest_domain():
    m, truth = _three_domains("official")
    wrong = [i for i, label in zip(m.buf_index.tolist(), m.buf_label.tolist()) if not np.allclose(m.old_centroids[label].numpy(), truth[i])]
    assert wrong and all(i < 200 for i in wrong) and any(i < 100 for i in wrong)  # domains 1 (and 2) only, never 3


# ---------------------------------------------------------------- state + end to end
TINY = ["method.source_domains=", "method.domains=d0,d1", "method.epochs_per_domain=1", "train.epochs=2", "method.iters_per_epoch=0",
        "train.batch_size=32", "method.k1=6", "method.k2=2",
        "data.embedded_params={n_source_domains: 0, n_seen_domains: 2, n_unseen_domains: 1, n_train_ids: 8, "
        "images_per_train_id: 6, n_test_ids: 4, images_per_test_id: 4}"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from contrastlab.platform.local import run_local

    cache = tmp_path_factory.mktemp("ucr_cache")
    return run_local("ucr", TINY + [f"data.cache_dir={cache}", "method.min_samples=2"], quiet=True)


def test_run_local_trains_and_reports_metric(tiny_run):
    hist = tiny_run.history
    assert [h["phase"] for h in hist] == ["d0", "d1"]
    assert np.isfinite(hist[-1]["mAP_seen"]) and 0 <= hist[-1]["mAP_seen"] <= 1
    assert "mAP_u1" in hist[-1] and "forgetting_d0" in hist[-1]
    m = tiny_run.method
    assert bool(m.has_old) and len(m.buf_index) > 0
    table = m.domain_phase_table(tiny_run.meta)
    assert set(table["d0"]) == {"d0", "d1"}


def test_state_dict_round_trip_restores_buffer_old_model_and_labels(tiny_run):
    m = tiny_run.method
    blob = io.BytesIO()
    torch.save(m.state_dict(), blob)
    blob.seek(0)
    state = torch.load(blob, weights_only=True)  # as the platform's checkpoint loader
    fresh = UCR(tiny_run.exp.method)
    fresh.load_state_dict(state)
    for k, v in m.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    idx = m.pl_index[:5]
    assert torch.equal(fresh._lookup_labels(idx), m._lookup_labels(idx))
    assert torch.equal(fresh._buffer_labels(m.buf_index)[1], m.buf_label)


def test_old_model_is_frozen_and_outside_the_optimiser(tiny_run):
    from contrastlab.platform.local import iter_batches

    m, ctx = tiny_run.method, tiny_run.ctx
    opt_params = {id(p) for g in ctx.optimizers["main"].param_groups for p in g["params"]}
    assert all(id(p) not in opt_params for p in list(m.old_model.parameters()) + list(m.ema.parameters()))
    before = {k: v.clone() for k, v in m.old_model.state_dict().items()}
    online_before = [p.clone() for p in m.online.parameters()]
    from contrastlab.platform.runner import plan_data

    plan = plan_data(tiny_run.exp)
    fn, required = UCR.make_preprocess(m.cfg, "train", tiny_run.meta)
    batch = next(iter_batches(plan.train, fn, required, 48, split="train", seed=0))
    m.train()
    logs = m.train_step(batch, ctx)
    assert logs["n_new"] > 0 and logs["n_old"] > 0 and logs["loss_kl"] >= 0
    for k, v in m.old_model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert any(not torch.equal(a, b) for a, b in zip(online_before, m.online.parameters()))


def test_each_phase_reads_its_domain_and_the_buffer_only(tmp_path, monkeypatch):
    """phase_data=select: phase d0 trains on d0 rows only; phase d1 on d1 rows plus buffered d0 rows,
    old:new about old_batch_ratio (1.0). phase_data=all (the first design) sees every domain."""
    from contrastlab.platform.local import run_local

    seen: list[tuple[str, np.ndarray, np.ndarray]] = []
    original = UCR.train_step

    def recording(self, batch, ctx):
        in_buf, _ = self._buffer_labels(batch["index"].long())
        seen.append((ctx.phase, batch["domain"].numpy().copy(), in_buf.numpy().copy()))
        return original(self, batch, ctx)

    monkeypatch.setattr(UCR, "train_step", recording)
    sets = TINY + [f"data.cache_dir={tmp_path}", "method.min_samples=2", "method.epochs_per_domain=2", "train.epochs=4",
                   "train.batch_size=16"]
    run = run_local("ucr", sets, quiet=True)
    names = run.meta["domain_names"]
    d0, d1 = names.index("d0"), names.index("d1")
    first = np.concatenate([dom for phase, dom, _ in seen if phase == "d0"])
    assert len(first) and set(first.tolist()) == {d0}
    second = [(dom, buf) for phase, dom, buf in seen if phase == "d1"]
    dom = np.concatenate([d for d, _ in second])
    buf = np.concatenate([b for _, b in second])
    assert set(dom.tolist()) == {d0, d1} and buf[dom == d0].all()  # old-domain rows are buffered ones only
    assert 0.3 < (dom == d0).mean() < 0.7, (dom == d0).mean()  # about 1 old row per new row
    sel = run.method.train_selection(run.ctx)
    assert sel.field == "domain" and sel.values == ("d1",) and set(sel.indices) == set(run.method.buf_index.tolist())

    seen.clear()
    run_local("ucr", sets + ["method.phase_data=all"], quiet=True)
    first_all = np.concatenate([dom for phase, dom, _ in seen if phase == "d0"])
    assert {d0, d1} <= set(first_all.tolist())  # every domain is read (and filtered in the step)


def test_iters_per_epoch_fixes_a_seen_domains_steps(tmp_path, monkeypatch):
    """card g: 40 iterations of 32 new + 32 old per epoch. With iters_per_epoch=20 and batch 16 (8 new +
    8 old), the 48-image domains are repeated to 160 new rows per epoch: d0 (no buffer yet) reads
    160 / 16 = 10 batches, each stepped as two of 8 rows (20 steps), d1 (160 new + 160 buffered) 20
    batches of 16; one pass (iters_per_epoch=0) would read 3 and 6."""
    from contrastlab.platform.local import run_local

    steps: dict[str, int] = {}
    step_rows: dict[str, set] = {}
    original, original_inner = UCR.train_step, UCR._train_step

    def counting(self, batch, ctx):
        steps[ctx.phase] = steps.get(ctx.phase, 0) + 1
        return original(self, batch, ctx)

    def inner(self, batch, ctx):  # one optimiser step
        step_rows.setdefault(ctx.phase, set()).add(int(batch["index"].shape[0]))
        return original_inner(self, batch, ctx)

    monkeypatch.setattr(UCR, "train_step", counting)
    monkeypatch.setattr(UCR, "_train_step", inner)
    sets = [s for s in TINY if not s.startswith("method.iters_per_epoch")]
    run = run_local("ucr", sets + [f"data.cache_dir={tmp_path}", "method.min_samples=2", "method.iters_per_epoch=20",
                                   "train.batch_size=16"], quiet=True)
    # fractional copies are drawn per sample, so the row count varies by a few rows around its expectation
    assert 8 <= steps["d0"] <= 12 and 17 <= steps["d1"] <= 23, steps
    # d0's batches hold no buffered rows: stepped in the card's new batch, 16 / (1 + 1) = 8 rows
    assert step_rows == {"d0": {8}, "d1": {16}}, step_rows
    m = run.method
    sel = m.train_selection(run.ctx)
    n_new, n_buf = m._domain_count, m.buf_index.numel()
    assert sel.value_copies == pytest.approx(160 / n_new) and sel.index_copies == pytest.approx(160 / n_buf)
    assert m._steps_per_epoch == 20  # the per-domain warm-up counts these steps
    assert m._chunk_sizes(16) == [8, 8] and m._chunk_sizes(15) == [8, 7]
    m.cfg.old_batch_ratio = 2.0  # near-equal chunks, no 1-row remainder (BatchNorm would skip it)
    assert m._chunk_sizes(64) == [22, 21, 21] and m._chunk_sizes(3) == [3]
    m.cfg.old_batch_ratio = 1.0
    m.cfg.rehearsal = False  # the fine-tune arm: the whole batch is new rows, one step each
    assert m._chunk_sizes(16) == [16]
    assert m.train_selection(run.ctx).value_copies == pytest.approx(20 * 16 / n_new)
    m.cfg.iters_per_epoch = 0
    assert m.train_selection(run.ctx).value_copies == 1.0


def test_a_rank_without_two_rows_joins_the_others_step():
    """With several workers a rank whose batch (or chunk) keeps fewer than two labelled rows still
    calls the optimiser with a zero loss, so the other ranks' gradient all-reduce is not left waiting;
    alone it skips the step."""
    from types import SimpleNamespace

    m = UCR(UCRConfig(source_domains="", domains="d0"))
    m.train()
    m.centroids = torch.randn(3, m.online.dim)
    calls = []
    ctx = SimpleNamespace(phase="d0", meta={"domain_names": ["d0"]}, world_size=2, autocast=lambda: contextlib.nullcontext(),
                          optimize=lambda loss, name: calls.append((loss.item(), loss.requires_grad, name)))
    batch = {"index": torch.tensor([5]), "domain": torch.tensor([0]), "camera": torch.tensor([0]),
             "image": torch.rand(1, 3, m.cfg.height, m.cfg.width), "image_weak": torch.rand(1, 3, m.cfg.height, m.cfg.width)}
    logs = m._train_step(batch, ctx)
    assert logs["loss"] == 0.0 and calls == [(0.0, True, "main")]
    ctx.world_size = 1
    m._train_step(batch, ctx)
    assert len(calls) == 1  # one process: nothing to join, no step


def test_a_run_without_evaluation_data_trains_every_phase(tmp_path):
    """data.eval=none: the loop skips evaluate(), and UCR's own phase-end evaluation (for the domain x
    phase table, on epochs the schedule does not evaluate) must not read the missing split either."""
    from contrastlab.platform.local import run_local

    sets = [s for s in TINY if not s.startswith("train.epochs")]
    run = run_local("ucr", sets + ["method.epochs_per_domain=2", f"data.cache_dir={tmp_path}", "method.min_samples=2",
                                   "train.eval_every_epochs=3", "data.eval=none"], quiet=True)
    assert [h["phase"] for h in run.history] == ["d0", "d0", "d1", "d1"]
    assert not any("mAP_seen" in h for h in run.history)
