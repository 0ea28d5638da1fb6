"""Driver for the 2-node tests, run as its own process (it owns its Ray cluster):

    python node_loss_driver.py spread STORAGE   # one TorchTrainer, 2 workers STRICT_SPREAD over 2 nodes
    python node_loss_driver.py sweep STORAGE    # 2 trials, one per node; the second node is removed mid-sweep

Both nodes are raylets on 127.0.0.1 (`ray.cluster_utils.Cluster`), sharing the local disk, so a
local storage path works (a real cluster needs s3:// or NFS). Prints `RESULT {json}` last.
"""
import json
import os
import sys
import threading
import time

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [ROOT, HERE]
# the raylets started below inherit this: their workers import contrastlab and the helpers too
os.environ["PYTHONPATH"] = os.pathsep.join([ROOT, HERE, *filter(None, [os.environ.get("PYTHONPATH")])])

from reliability_helpers import alive_train_workers, tiny_experiment  # noqa: E402


def main(mode: str, storage: str) -> dict:
    import ray
    import ray.data
    from ray.cluster_utils import Cluster

    import socket

    with socket.socket() as sock:  # a free port: 8265 may belong to another cluster on this host
        sock.bind(("127.0.0.1", 0))
        dashboard_port = sock.getsockname()[1]
    from contrastlab.platform.runner import use_full_priority_workers

    use_full_priority_workers()  # the raylets read it at start
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "dashboard_host": "127.0.0.1", "include_dashboard": True,
                                                            "dashboard_port": dashboard_port})
    second = cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address)
    ray.data.DataContext.get_current().enable_progress_bars = False
    cluster.wait_for_nodes()
    out = {"nodes": len([n for n in ray.nodes() if n["Alive"]])}
    seen: set = set()
    stop = threading.Event()

    def watch(on_both=None):
        while not stop.is_set():
            try:
                nodes = {node for _, node in alive_train_workers()}
            except Exception:  # noqa: BLE001 - the state API may blip while a node goes away
                nodes = set()
            seen.update(nodes)
            if on_both is not None and len(nodes) == 2 and on_both():
                on_both = None
            time.sleep(1)

    if mode == "spread":
        from contrastlab.platform.runner import make_trainer

        exp = tiny_experiment(storage, "train.epochs=1", "run.workers=2", "run.cpus_per_worker=0.4",
                              "run.placement_strategy=STRICT_SPREAD", "data.preprocess_cpus=0.2", "train.batch_size=16")
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        result = make_trainer(exp, name="spread", storage=storage).fit()
        out.update(worker_nodes=len(seen), epoch=result.metrics["epoch"], step=result.metrics["step"])
    else:
        from contrastlab.platform.tune import run_sweep

        # 0.7 CPU per Train worker on 1-CPU nodes: two trials cannot share a node, so they spread.
        exp = tiny_experiment(storage, "train.epochs=3", "run.cpus_per_worker=0.7", "data.preprocess_cpus=0.1",
                              "run.max_failures=2")
        removed = {}

        def remove_second_node():
            ckpts = [r for r, ds, fs in os.walk(storage) if "meta.json" in fs and "checkpoint_" in r]
            if not ckpts:
                return False  # wait for a first checkpoint, so the lost trial has something to restore
            cluster.remove_node(second)
            removed["t"] = time.time()
            return True

        watcher = threading.Thread(target=watch, args=(remove_second_node,), daemon=True)
        watcher.start()
        summary = run_sweep(exp, name="nodes", storage=storage, num_samples=2, max_concurrent=2, scheduler="fifo",
                            max_trial_failures=2)
        out.update(worker_nodes=len(seen), removed="t" in removed,
                   trials=[{k: t[k] for k in ("status", "epochs", "error")} for t in summary["trials"]],
                   alive_nodes_after=len([n for n in ray.nodes() if n["Alive"]]))
    stop.set()
    ray.shutdown()
    cluster.shutdown()
    return out


if __name__ == "__main__":
    print("RESULT " + json.dumps(main(sys.argv[1], sys.argv[2])), flush=True)
