"""Shared bits of the reliability tests (a distinct module name: tests/e2e already has `helpers`)."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# 320 training pairs, batch 32: 10 steps an epoch; 64 held-out pairs for the evaluation
TINY = ["data.embedded_params={n_train: 320, n_heldout: 64, n_test: 32}", "train.batch_size=32"]


def tiny_experiment(tmp_path, *extra):
    from contrastlab.platform.config import build_experiment

    return build_experiment("clip", sets=[*TINY, f"data.cache_dir={tmp_path}/cache", "data.shuffle_buffer=0",
                                          "train.log_every_steps=100", *extra])


def start(args, log_path, env=None):
    """Start a driver in its own process group (so a kill takes its whole tree)."""
    log = open(log_path, "w")
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, env={**os.environ, **(env or {})})


def kill_group(proc):
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def wait_for(predicate, timeout, proc=None, log_path=None, what="condition"):
    t0 = time.time()
    while time.time() - t0 < timeout:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"driver exited early ({proc.returncode}):\n" + open(log_path).read()[-4000:])
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}" + (":\n" + open(log_path).read()[-4000:] if log_path else ""))


def checkpoint_metas(run_dir):
    """meta.json of every complete checkpoint under a Train run directory."""
    out = []
    for meta in glob.glob(os.path.join(run_dir, "**", "checkpoint_*", "meta.json"), recursive=True):
        try:
            out.append(json.load(open(meta)))
        except ValueError:
            pass
    return out


def registered_checkpoint(run_dirs):
    """Whether Ray Train has committed a checkpoint to the snapshot of a Train run (`run_dirs` may be a
    glob over runs): the snapshot is what a restore reads. A checkpoint directory can already be
    complete in storage before that; a kill then restarts from the previous one, as it should."""
    for snapshot in glob.glob(os.path.join(run_dirs, "checkpoint_manager_snapshot.json")):
        try:
            if "checkpoint_" in open(snapshot).read():
                return True
        except OSError:
            pass
    return False


def kill_once_checkpointed(run_dirs, find, timeout=600):
    """Start a thread that waits for a registered checkpoint under `run_dirs` (a glob allowed), then
    SIGKILLs the first process `find()` lists as (pid, label). Returns the dict it fills: `pid` and
    `label` of the killed process, `errors` from `find` (the state API can time out under load)."""
    import threading

    killed: dict = {}

    def killer():
        t0 = time.time()
        while time.time() - t0 < timeout:
            if registered_checkpoint(run_dirs):
                try:
                    found = find()
                except Exception as exc:  # noqa: BLE001 - keep trying
                    killed.setdefault("errors", []).append(repr(exc))
                    found = []
                if found:
                    killed["pid"], killed["label"] = found[0]
                    os.kill(found[0][0], signal.SIGKILL)  # a real process death, mid-run
                    return
            time.sleep(0.5)

    threading.Thread(target=killer, daemon=True).start()
    return killed


def alive_train_workers():
    """(pid, node id) of this cluster's live Ray Train worker actors, from Ray's state API."""
    import ray
    from ray.util.state import list_actors

    # This cluster's dashboard, named explicitly: with no address the state API refuses to choose
    # when other Ray clusters run on the same host ("Found multiple active Ray instances").
    url = ray._private.worker._global_node.address_info["webui_url"]
    actors = list_actors(address=f"http://{url}", filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")],
                         detail=True, raise_on_missing_output=False)
    return [(a.pid, a.node_id) for a in actors if a.pid]


def worker_logs(text):
    """All worker stdout/stderr of the current Ray session that contain `text`."""
    import ray

    session = ray._private.worker._global_node.get_session_dir_path()
    hits = []
    for path in glob.glob(os.path.join(session, "logs", "worker-*")):
        try:
            if text in open(path, errors="replace").read():
                hits.append(path)
        except OSError:
            pass
    return hits
