"""Worker loss: SIGKILL a real Ray Train worker process mid-run; with run.max_failures=1 the worker
group restarts from the last checkpoint and the run finishes (docs/reliability.md says which
samples are seen again)."""
import os

import pytest

from reliability_helpers import alive_train_workers, checkpoint_metas, kill_once_checkpointed, tiny_experiment, worker_logs

pytestmark = pytest.mark.slow


def test_killed_train_worker_restores_from_checkpoint_and_finishes(ray_cluster, tmp_path):
    from contrastlab.platform.runner import train

    storage, name = str(tmp_path / "runs"), "workerloss"
    exp = tiny_experiment(tmp_path, "train.epochs=3", "train.eval_every_epochs=3", "run.max_failures=1")
    # kill a Train worker after epoch 1's checkpoint: a real process death, mid-run (epoch 2 of 3)
    killed = kill_once_checkpointed(os.path.join(storage, name), alive_train_workers)
    metrics = train(exp, name=name, storage=storage)
    assert "pid" in killed, f"the worker was never killed (no epoch-1 checkpoint seen): {killed}"
    assert metrics["epoch"] == 3 and metrics["step"] == 30  # 3 epochs x 10 steps: nothing lost, nothing doubled
    assert worker_logs("resumed from checkpoint: epoch 1"), "the restarted worker did not restore the epoch-1 checkpoint"
    assert max(m["epoch_done"] for m in checkpoint_metas(os.path.join(storage, name))) == 3
