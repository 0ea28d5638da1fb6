"""Driver loss: SIGKILL the sweep driver (its whole process tree, the local Ray cluster included)
mid-sweep, rerun with --resume: the sweep finishes, the finished trial is not rerun, its results and
TensorBoard logs are kept as they were, and best.json is written.

This is also the platform issue's "2-trial sweep with ASHA writing best.json; driver killed and
--resume" test (sweeps/clip.py schedules with ASHA by default); tests/e2e once ran the same sweep, kill
and resume a second time."""
import glob
import json
import os
import subprocess
import sys
import time

import pytest

from reliability_helpers import ROOT, TINY, kill_group, start, wait_for

pytestmark = pytest.mark.slow


def _trials(exp_dir):
    return sorted(glob.glob(os.path.join(exp_dir, "trial_*")))


EPOCHS = 2  # two rungs, so ASHA has a decision to make about the second trial


def _finished(exp_dir):
    """Trial dirs whose result.json holds all their epochs."""
    return [d for d in _trials(exp_dir) if os.path.exists(os.path.join(d, "result.json"))
            and len(open(os.path.join(d, "result.json")).read().splitlines()) >= EPOCHS]


def _tb_files(trial_dir):
    return {p: os.path.getsize(p) for p in glob.glob(os.path.join(trial_dir, "**", "events.out.tfevents*"), recursive=True)}


def test_killed_sweep_driver_resumes_without_rerunning_finished_trials(tmp_path):
    storage, name = str(tmp_path / "results"), "drv"
    exp_dir = os.path.join(storage, name)
    args = ["sweeps/clip.py", "--storage", storage, "--name", name, "--num-samples", "2", "--max-epochs", str(EPOCHS),
            "--scheduler", "asha", "--max-concurrent", "1", *sum([["--set", s] for s in TINY], []), "--set", f"data.cache_dir={tmp_path}/cache"]
    log = str(tmp_path / "first.log")
    proc = start(args, log)
    # kill once one trial has finished and the other has started
    wait_for(lambda: len(_finished(exp_dir)) == 1 and len(_trials(exp_dir)) == 2, 400, proc, log, "trial 1 done, trial 2 started")
    time.sleep(3)
    done = _finished(exp_dir)[0]
    result_before = open(os.path.join(done, "result.json")).read()
    tb_before = _tb_files(done)
    assert any("/tensorboard/" in p for p in tb_before) and any("/tensorboard/" not in p for p in tb_before), tb_before
    kill_group(proc)
    time.sleep(15)  # the killed driver's GCS/raylet go within ~15 s (ray-notes §6)

    out = subprocess.run([sys.executable, *args, "--resume"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "resuming sweep" in out.stdout
    assert open(os.path.join(done, "result.json")).read() == result_before  # not rerun, results kept
    tb_after = _tb_files(done)
    assert all(p in tb_after and tb_after[p] >= size for p, size in tb_before.items())  # TensorBoard logs kept
    best = json.load(open(os.path.join(exp_dir, "best.json")))
    assert best["metric"] == "zeroshot_colour_shape_top1" and "best_config" in best, best
    assert len(best["trials"]) == 2 and all(t["status"] == "OK" for t in best["trials"]), best["trials"]
    # the first trial ran to the end; ASHA may stop the second after its first rung
    epochs = sorted(t["epochs"] for t in best["trials"])
    assert epochs[-1] == EPOCHS and epochs[0] >= 1, best["trials"]
