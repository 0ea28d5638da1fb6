"""The DeCLIP data-efficiency benchmark's plan and summary (pure functions, no training): the
equal-compute CLIP arm runs EQUAL_COMPUTE_FACTOR times the steps, and the summary sets DeCLIP
against it beside the same-steps comparison."""
import importlib.util
import os
from types import SimpleNamespace

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load():
    spec = importlib.util.spec_from_file_location("declip_data_efficiency", os.path.join(REPO, "benchmarks", "declip_data_efficiency.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _args(**kw):
    base = dict(steps=100, batch_size=8, image_size=48, threads=1, sizes=[50, 200], n_eval=16, cache_dir=None, device="cpu",
                seeds=[0, 1], no_ablations=True, extra_variants=[])
    base.update(kw)
    return SimpleNamespace(**base)


def test_equal_compute_clip_runs_factor_times_the_steps():
    bench = _load()
    jobs = bench.plan(_args(extra_variants=["clip-3x"]))
    steps = {(j["variant"], j["size"], j["seed"]): j["steps"] for j in jobs}
    assert len(jobs) == 2 * 2 * 2 + 2 * 2  # clip + declip at every size and seed, then clip-3x
    assert {s for (v, _, _), s in steps.items() if v == "clip-3x"} == {100 * bench.EQUAL_COMPUTE_FACTOR}
    assert {s for (v, _, _), s in steps.items() if v != "clip-3x"} == {100}
    # distinct resume keys: an equal-compute run never counts as a same-steps CLIP run
    assert len({bench.job_key(j) for j in jobs}) == len(jobs)


def _run(headline, variant, size, seed, zs, r1):
    return {"variant": variant, "size": size, "seed": seed, "metrics": {headline[0]: zs, headline[1]: r1},
            "train_tail": {}, "nn_same_label_chance": 0.1, "seconds_per_step": 0.1}


def test_summary_sets_declip_against_equal_compute_clip():
    bench = _load()
    zs_metric, r1_metric = bench.HEADLINE
    runs = [_run(bench.HEADLINE, "clip", 50, s, 0.20, 0.01) for s in (0, 1)]
    runs += [_run(bench.HEADLINE, "declip", 50, s, zs, 0.02) for s, zs in ((0, 0.30), (1, 0.34))]
    runs += [_run(bench.HEADLINE, "clip-3x", 50, s, zs, 0.015) for s, zs in ((0, 0.24), (1, 0.26))]
    summary = bench.summarise(bench.aggregate(runs), [50])
    same_steps = summary["declip_minus_clip"][50][zs_metric]
    assert same_steps["delta_points"] == 12.0
    equal = summary["declip_minus_clip_equal_compute"][50]
    assert equal[zs_metric]["delta_points"] == 7.0  # 0.32 - 0.25
    assert equal[r1_metric]["delta_points"] == 0.5
    # without clip-3x runs the key is absent, not empty
    assert "declip_minus_clip_equal_compute" not in bench.summarise(bench.aggregate(runs[:4]), [50])
