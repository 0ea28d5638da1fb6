"""Trial loss: SIGKILL the process that runs a sweep trial (Tune's function-trainable actor, which owns
the trial's TorchTrainer) after its first registered checkpoint. Tune restarts the trial
(max_trial_failures=1); the new attempt's Train run resumes from that checkpoint and finishes. The
summary reports the epoch the trial reached (3), not Tune's `training_iteration`, which starts again at 1
with the new attempt (here 2: epochs 2 and 3)."""
import glob
import os
import signal
import threading
import time

import pytest

from reliability_helpers import tiny_experiment, worker_logs

pytestmark = pytest.mark.slow


def _registered_checkpoint(train_runs):
    """A checkpoint Ray Train has committed to its snapshot (what a restore reads) under any run."""
    for snapshot in glob.glob(os.path.join(train_runs, "*", "checkpoint_manager_snapshot.json")):
        try:
            if "checkpoint_" in open(snapshot).read():
                return True
        except OSError:
            pass
    return False


def _trial_actors():
    """(pid, class name) of this cluster's live Tune trial actors (the function trainable)."""
    import ray
    from ray.util.state import list_actors

    url = ray._private.worker._global_node.address_info["webui_url"]
    # Tune runs a function trainable (here contrastlab's _trial_fn) as an actor of class ImplicitFunc
    actors = list_actors(address=f"http://{url}", filters=[("class_name", "=", "ImplicitFunc"), ("state", "=", "ALIVE")],
                         detail=True, raise_on_missing_output=False)
    return [(a.pid, a.class_name) for a in actors if a.pid]


def test_killed_trial_restarts_and_its_run_resumes(ray_cluster, tmp_path):
    from contrastlab.platform.tune import run_sweep

    storage, name = str(tmp_path / "sweeps"), "trialloss"
    exp = tiny_experiment(tmp_path, "train.epochs=3", "run.cpus_per_worker=1", "data.preprocess_cpus=0.5")
    killed = {}

    def killer():
        t0 = time.time()
        while time.time() - t0 < 600 and "pid" not in killed:
            if _registered_checkpoint(os.path.join(storage, name, "train_runs")):
                try:
                    actors = _trial_actors()
                except Exception as exc:  # noqa: BLE001 - the state API can time out under load
                    killed.setdefault("errors", []).append(repr(exc))
                    actors = []
                if actors:
                    killed["pid"], killed["class"] = actors[0]
                    os.kill(actors[0][0], signal.SIGKILL)
                    return
            time.sleep(0.5)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    summary = run_sweep(exp, name=name, storage=storage, num_samples=1, max_concurrent=1, search_space={},
                        max_trial_failures=1)
    thread.join(1)
    assert "pid" in killed, f"the trial was never killed: {killed}"
    [trial] = summary["trials"]
    assert trial["status"] == "OK", trial
    assert trial["epochs"] == 3, trial
    assert worker_logs("resumed from checkpoint: epoch"), "the restarted trial's Train run did not resume"
