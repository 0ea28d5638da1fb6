"""The sweep summary's `epochs` column and the schedulers' time axis follow the epoch the Train loop
reports, not Tune's `training_iteration` (which counts reports and restarts at 1 with a restarted trial)."""
from types import SimpleNamespace

import pandas as pd
import pytest

from ray import tune

from contrastlab.platform.tune import build_scheduler, epochs_reached


def _result(epochs, last=None):
    frame = pd.DataFrame({"epoch": epochs, "training_iteration": range(1, len(epochs) + 1)})
    return SimpleNamespace(metrics_dataframe=frame, metrics=last if last is not None else {"epoch": epochs[-1]})


def test_restarted_trial_counts_the_epoch_it_reached():
    # first attempt reported epoch 1, Tune restarted the trial, its Train run resumed and reported 2 and 3
    # (training_iteration of the last result would say 2)
    assert epochs_reached(_result([1, 2, 3], last={"epoch": 3, "training_iteration": 2})) == 3


def test_mid_epoch_reports_do_not_count_as_epochs():
    assert epochs_reached(_result([0.5, 1, 1.5, 2])) == 2
    assert epochs_reached(_result([0.5, 1, 1.5])) == 1.5


def test_stop_report_without_epoch_keeps_the_furthest_epoch():
    assert epochs_reached(_result([1.0, 2.0, float("nan")], last={"loss": float("inf"), "stopped_reason": "nan"})) == 2


def test_no_results_gives_none():
    assert epochs_reached(SimpleNamespace(metrics_dataframe=None, metrics=None)) is None


def test_schedulers_run_on_the_reported_epoch():
    assert build_scheduler("asha", "acc", "max", 3, {})._time_attr == "epoch"
    assert build_scheduler("fifo", "acc", "max", 3, {}) is not None
    with pytest.raises(ValueError, match="'pbt' is not supported.*use asha"):
        build_scheduler("pbt", "acc", "max", 3, {"method.lr": tune.loguniform(1e-4, 1e-2)})
