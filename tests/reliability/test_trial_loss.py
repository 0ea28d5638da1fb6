"""Trial loss: SIGKILL the process that runs a sweep trial (Tune's function-trainable actor, which owns
the trial's TorchTrainer) after its first registered checkpoint. Tune restarts the trial
(max_trial_failures=1); the new attempt's Train run resumes from that checkpoint and finishes. The
summary reports the epoch the trial reached (3), not Tune's `training_iteration`, which starts again at 1
with the new attempt (here 2: epochs 2 and 3)."""
import glob
import os

import pytest

from reliability_helpers import kill_once_checkpointed, tiny_experiment

RESUMED = "resumed from checkpoint: epoch"

pytestmark = pytest.mark.slow


def _trial_actors():
    """(pid, process title) of this cluster's Tune trial actors: Ray runs a function trainable (here
    contrastlab's _trial_fn) in a worker of the raylet titled `ray::ImplicitFunc...`. Read from /proc,
    which answers at once: in one full-suite run the state API never listed the actor during the
    trial's 20 s (no error either; cause not pinned down)."""
    import ray._private.worker as w

    raylets = {info.process.pid for info in w._global_node.all_processes.get("raylet", [])}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                title = fh.read().split(b"\0")[0].decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        if ppid in raylets and title.startswith("ray::ImplicitFunc"):
            found.append((int(entry), title))
    return found


def _resume_lines():
    """How many times this Ray session's worker logs say a Train run resumed (the session is shared
    with other tests, so the test compares counts before and after its sweep)."""
    import ray

    total = 0
    for path in glob.glob(os.path.join(ray._private.worker._global_node.get_session_dir_path(), "logs", "worker-*")):
        try:
            total += open(path, errors="replace").read().count(RESUMED)
        except OSError:
            pass
    return total


def test_killed_trial_restarts_and_its_run_resumes(ray_cluster, tmp_path):
    from contrastlab.platform.tune import run_sweep

    storage, name = str(tmp_path / "sweeps"), "trialloss"
    exp = tiny_experiment(tmp_path, "train.epochs=3", "run.cpus_per_worker=1", "data.preprocess_cpus=0.5")
    resumes_before = _resume_lines()
    killed = kill_once_checkpointed(os.path.join(storage, name, "train_runs", "*"), _trial_actors)
    summary = run_sweep(exp, name=name, storage=storage, num_samples=1, max_concurrent=1, search_space={},
                        max_trial_failures=1)
    assert "pid" in killed, f"the trial was never killed: {killed}"
    [trial] = summary["trials"]
    assert trial["status"] == "OK", trial
    assert trial["epochs"] == 3, trial
    assert _resume_lines() > resumes_before, "the restarted trial's Train run did not resume from its checkpoint"
