"""Worker loss: SIGKILL a real Ray Train worker process mid-run; with run.max_failures=1 the worker
group restarts from the last checkpoint and the run finishes (docs/reliability.md says which
samples are seen again)."""
import os
import signal
import threading
import time

import pytest

from reliability_helpers import alive_train_workers, checkpoint_metas, registered_checkpoint, tiny_experiment, worker_logs

pytestmark = pytest.mark.slow


def test_killed_train_worker_restores_from_checkpoint_and_finishes(ray_cluster, tmp_path):
    from contrastlab.platform.runner import train

    storage, name = str(tmp_path / "runs"), "workerloss"
    exp = tiny_experiment(tmp_path, "train.epochs=3", "train.eval_every_epochs=3", "run.max_failures=1")
    killed = {}

    def killer():
        t0 = time.time()
        while time.time() - t0 < 600 and "pid" not in killed:
            if registered_checkpoint(os.path.join(storage, name)):
                try:
                    workers = alive_train_workers()
                except Exception as exc:  # noqa: BLE001 - keep trying; the state API can time out under load
                    killed.setdefault("errors", []).append(repr(exc))
                    workers = []
                if workers:
                    pid = workers[0][0]
                    os.kill(pid, signal.SIGKILL)  # a real process death, mid-run (epoch 2 of 3)
                    killed["pid"] = pid
                    return
            time.sleep(0.5)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    metrics = train(exp, name=name, storage=storage)
    thread.join(1)
    assert "pid" in killed, f"the worker was never killed (no epoch-1 checkpoint seen): {killed}"
    assert metrics["epoch"] == 3 and metrics["step"] == 30  # 3 epochs x 10 steps: nothing lost, nothing doubled
    assert worker_logs("resumed from checkpoint: epoch 1"), "the restarted worker did not restore the epoch-1 checkpoint"
    assert max(m["epoch_done"] for m in checkpoint_metas(os.path.join(storage, name))) == 3
