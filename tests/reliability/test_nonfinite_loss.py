"""A NaN loss stops that trial with the reason in its result; the rest of the sweep runs on.

The NaN is real, not mocked: `method.max_logit_scale=nan` makes CLIP's clamped logit scale NaN, so
the first loss of that trial is NaN and the loop's finiteness check stops it.
"""
import argparse
import json
import math
import os

import pytest

from reliability_helpers import TINY

pytestmark = pytest.mark.slow


def test_nan_trial_stops_with_reason_and_sweep_finishes(ray_cluster, tmp_path):
    from ray import tune

    from contrastlab.platform.sweep_cli import add_sweep_flags, build_from_args
    from contrastlab.platform.tune import run_sweep

    p = argparse.ArgumentParser()
    add_sweep_flags(p)
    args = p.parse_args(["--max-epochs", "1", *sum([["--set", s] for s in TINY], []),
                         "--set", f"data.cache_dir={tmp_path}/cache", "--set", "train.log_every_steps=100"])
    exp, _ = build_from_args("clip", args)
    assert exp.run.max_failures == 1 and exp.data.bad_samples == "skip"  # sweep defaults: fault tolerant
    storage = str(tmp_path / "results")
    summary = run_sweep(exp, name="nan", storage=storage, num_samples=1, max_concurrent=1, scheduler="fifo",
                        search_space={"method.max_logit_scale": tune.grid_search([100.0, float("nan")])},
                        max_trial_failures=exp.run.max_failures)
    rows = {("nan" if math.isnan(r["method.max_logit_scale"]) else "ok"): r for r in summary["trials"]}
    assert rows["ok"]["status"] == "OK" and math.isfinite(rows["ok"]["zeroshot_colour_shape_top1"])
    assert rows["nan"]["status"] == "STOPPED", rows["nan"]
    assert "non-finite loss/main = nan" in rows["nan"]["error"]
    # the reason is in the trial's own result file too, and best.json points at the finite trial
    nan_dir = [d for d in os.listdir(os.path.join(storage, "nan")) if d.startswith("trial_") and
               "stopped_reason" in open(os.path.join(storage, "nan", d, "result.json")).read()]
    assert len(nan_dir) == 1
    best = json.load(open(os.path.join(storage, "nan", "best.json")))
    assert best["best_config"]["method.max_logit_scale"] == 100.0
