import json
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = "data.embedded_params={n_train: 320, n_heldout: 64, n_test: 32}"


def start(args, log_path, env=None):
    """Start a driver in its own process group (so a kill takes its whole tree)."""
    log = open(log_path, "w")
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, env={**os.environ, **(env or {})})


def kill(proc):
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(20)  # a SIGKILLed driver's GCS/raylet exit within ~15 s (ray-notes §6)


def wait_for(predicate, timeout, proc=None, log_path=None, poll_s=2.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"driver exited early ({proc.returncode}):\n" + open(log_path).read()[-4000:])
        time.sleep(poll_s)
    raise AssertionError("timed out" + (":\n" + open(log_path).read()[-4000:] if log_path else ""))


def last_json(text):
    start = text.rindex("\n{")
    return json.loads(text[start:])


def registered_checkpoint_epoch(run_dir):
    """The epoch of the checkpoint Ray Train will resume `run_dir` from, or 0 if none.

    A checkpoint folder (with our meta.json) exists a moment before Ray's controller records it in
    checkpoint_manager_snapshot.json; a run killed in between resumes from the previous checkpoint
    (or from scratch), so tests that kill "after epoch N" must wait for the snapshot, not the folder."""
    try:
        with open(os.path.join(run_dir, "checkpoint_manager_snapshot.json")) as f:
            latest = json.load(f).get("latest_checkpoint_result") or {}
    except (OSError, ValueError):  # not written yet, or caught mid-write
        return 0
    return int((latest.get("metrics") or {}).get("epoch", 0))
