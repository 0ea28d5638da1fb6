"""Scaling benchmark: the cost of spreading one run's 2 Train workers over 2 Ray nodes, against the
same 2 workers on 1 node, on the same machine.

- two_nodes: `ray.cluster_utils.Cluster`, a head and one more node of 1 CPU each (two raylets and
  two object stores on this host), run.placement_strategy=STRICT_SPREAD: one worker per node, Ray
  Data tasks on either node, batches pulled across object stores, gloo all-reduce between nodes.
- one_node:  `ray.init(num_cpus=2)`, placement PACK: both workers and all data tasks on one node.
Both run the platform's real path (`runner.make_trainer`, CLIP, 2 workers x 0.5 CPU, Ray Data at
0.25 CPU per task, batch 32 per worker, all_gather InfoNCE, one gradient all-reduce per step).
Figures are from the last epoch: steps/s end to end, and compute-only steps/s with the loop's own
ingest wait removed (samples_per_s / global batch / (1 - ingest_wait_fraction)).
ratio = two_nodes / one_node (1.0 = no cost for spreading). On one host both use loopback TCP for
gloo, so this measures Ray's side of multi-node (placement, cross-node object transfer), not a
network.

    python benchmarks/scaling.py --quick --out results/scaling_quick.json
    python benchmarks/scaling.py --out results/scaling.json
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, print_table, start_ray, write_report  # noqa: E402


def experiment(n_train: int, epochs: int, batch: int, storage: str, strategy: str):
    from contrastlab.platform.config import build_experiment

    return build_experiment("clip", sets=[
        f"train.epochs={epochs}", f"train.batch_size={batch}", "train.log_every_steps=10",
        f"data.embedded_params={{n_train: {n_train}, n_heldout: 64, n_test: 64}}",
        "run.workers=2", "run.cpus_per_worker=0.5", "data.preprocess_cpus=0.25", f"run.storage={storage}",
        f"run.placement_strategy={strategy}",
    ])


def fit(exp, storage: str, name: str) -> dict:
    import ray

    from contrastlab.platform.runner import make_trainer

    t0 = time.time()
    result = make_trainer(exp, name=name, storage=storage).fit()
    wall = time.time() - t0
    if result.error:
        raise result.error
    m = result.metrics
    global_batch = exp.train.batch_size * exp.run.workers
    nodes = sorted({n["NodeID"][:8] for n in ray.nodes() if n["Alive"]})
    return {"fit_wall_s": wall, "nodes": len(nodes), "steps_per_s": m["samples_per_s"] / global_batch,
            "compute_steps_per_s": m["samples_per_s"] / global_batch / max(1e-9, 1 - m["ingest_wait_fraction"]),
            "ingest_wait_fraction": m["ingest_wait_fraction"], "last_epoch": m["epoch"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out")
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    n_train, epochs = (1280, 2) if args.quick else (3200, 3)
    storage = tempfile.mkdtemp(prefix="bench_scaling_")
    print(f"load average {os.getloadavg()}")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")

    from contrastlab.platform.runner import plan_data

    plan_data(experiment(n_train, epochs, args.batch, storage, "PACK"))  # generate the embedded data once, outside the timings
    import ray
    import ray.data
    from ray.cluster_utils import Cluster

    results = {}
    from contrastlab.platform.runner import use_full_priority_workers

    use_full_priority_workers()  # the raylets read it at start
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "dashboard_host": "127.0.0.1"})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address)
    ray.data.DataContext.get_current().enable_progress_bars = False
    results["two_nodes"] = fit(experiment(n_train, epochs, args.batch, storage, "STRICT_SPREAD"), storage, "two-nodes")
    ray.shutdown()
    cluster.shutdown()

    start_ray(2)
    results["one_node"] = fit(experiment(n_train, epochs, args.batch, storage, "PACK"), storage, "one-node")
    ray.shutdown()

    rows = [{"setup": k, **v} for k, v in results.items()]
    two, one = results["two_nodes"], results["one_node"]
    ratios = {"steps_per_s": two["steps_per_s"] / one["steps_per_s"],
              "compute_steps_per_s": two["compute_steps_per_s"] / one["compute_steps_per_s"]}
    rows.append({"setup": "ratio two/one", "steps_per_s": ratios["steps_per_s"], "compute_steps_per_s": ratios["compute_steps_per_s"]})
    print()
    print_table(rows, ["setup", "nodes", "steps_per_s", "compute_steps_per_s", "ingest_wait_fraction", "fit_wall_s", "last_epoch"])
    report = {"benchmark": "scaling", "quick": args.quick, "machine": machine(),
              "settings": {"method": "clip", "workers": 2, "cpus_per_worker": 0.5, "preprocess_cpus": 0.25, "batch_per_worker": args.batch,
                           "epochs": epochs, "n_train": n_train},
              "results": results, "ratio_two_nodes_vs_one": ratios}
    write_report(args.out, report)


if __name__ == "__main__":
    main()
