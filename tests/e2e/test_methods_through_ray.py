"""Every method end to end through real Ray: its embedded dataset generated into shards, streamed by
Ray Data into a Ray Train TorchTrainer worker, a few optimiser steps, its evaluation, a checkpoint.

Tiny on purpose (2 steps per epoch, the method's own --smoke data): this proves the contract under
Ray (preprocessing in Ray Data tasks, hooks, phases, evaluation, checkpoint), not learning; each
method's learning is shown by its own tests and its comparison benchmark.
"""
import glob
import math
import os

import pytest
import torch

from contrastlab.methods.registry import available, get_method
from contrastlab.platform.config import build_experiment

pytestmark = pytest.mark.slow
METHODS = [m for m in available() if m not in ("clip", "declip")]  # those two have their own e2e sweeps


@pytest.mark.parametrize("method", METHODS)
def test_method_trains_and_evaluates_through_ray(ray_cluster, tmp_path_factory, method):
    _train_tiny_through_ray(tmp_path_factory, method)


def test_deferred_photometric_views_train_through_ray(ray_cluster, tmp_path_factory):
    """data.photometric=device end to end: DeCLIP's MoCo-v2 views are cropped and flipped in the Ray
    Data tasks, their jitter/grey/blur parameters ride along as columns, and the Train worker finishes
    them before the step (data/device_views.py)."""
    with pytest.warns(UserWarning, match="data.photometric=device without a GPU"):  # this CPU box has none
        _train_tiny_through_ray(tmp_path_factory, "declip", ["data.photometric=device", "train.epochs=2"])


def _train_tiny_through_ray(tmp_path_factory, method: str, extra_sets: tuple[str, ...] = ()):
    from contrastlab.platform.runner import train

    cls = get_method(method)
    cache = tmp_path_factory.getbasetemp() / "method-cache"
    storage = tmp_path_factory.mktemp(f"runs-{method}")
    sets = [f"{k}={v}" for k, v in getattr(cls, "smoke_overrides", {}).items()]
    sets += ["train.max_steps_per_epoch=2", "train.eval_every_epochs=1000", "data.preprocess_cpus=0.5",
             "run.cpus_per_worker=0.5", f"data.cache_dir={cache}", *extra_sets]
    exp = build_experiment(method, sets=sets)
    metrics = train(exp, name=f"{method}-tiny", storage=str(storage))
    value = metrics.get(cls.eval_metric)
    assert value is not None, f"{method}: eval metric {cls.eval_metric!r} missing from {sorted(metrics)}"
    assert math.isfinite(float(value))
    assert metrics["epoch"] == exp.train.epochs
    states = glob.glob(os.path.join(storage, f"{method}-tiny", "checkpoint_*", "state.pt"))
    assert states, "no checkpoint written"
    state = torch.load(sorted(states)[-1], weights_only=True)  # loadable without unpickling code
    assert state["epoch_done"] == exp.train.epochs
