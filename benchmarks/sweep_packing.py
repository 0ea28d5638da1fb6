"""Sweep-packing benchmark: how well `contrastlab.platform.tune.run_sweep` packs short trials onto a
small cluster. 8 CLIP trials (1 Train worker of 0.5 CPU each, Ray Data at 0.5 CPU, FIFO, 2 at a time)
on a 2-CPU local cluster.

Each trial's wall time is taken inside the trial (the platform's trial function wrapped to write its
start and end times), so it counts the TorchTrainer start-up and teardown a trial really occupies.
    ideal wall  = sum(trial wall times) / concurrency     (perfect packing, no gaps between trials)
    efficiency  = ideal wall / measured wall of run_sweep  (target >= 0.9)
Time to first step per trial = the TensorBoard wall time of its first logged step (log every step)
minus the trial's start: what a user waits before a trial trains (Train controller, worker group,
dataset planning, first batch). Ray start-up is outside the measured wall (it is paid once).

    python benchmarks/sweep_packing.py --quick --out results/sweep_packing_quick.json
    python benchmarks/sweep_packing.py --out results/sweep_packing.json
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, print_table, start_ray, write_report  # noqa: E402


def make_timed_trial(times_dir: str):
    from contrastlab.platform import tune as platform_tune

    inner = platform_tune._trial_fn

    def timed_trial(config: dict, **params) -> None:  # params: what run_sweep binds with tune.with_parameters
        import json as _json
        import os as _os
        import time as _time

        import ray.tune

        start = _time.time()
        ok = False
        try:
            inner(config, **params)
            ok = True
        finally:
            ctx = ray.tune.get_context()
            with open(_os.path.join(times_dir, f"{ctx.get_trial_id()}.json"), "w") as fh:
                _json.dump({"trial": ctx.get_trial_id(), "start": start, "end": _time.time(), "ok": ok,
                            "trial_dir": ctx.get_trial_dir()}, fh)

    return timed_trial


def first_step_time(trial_dir: str) -> float | None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = glob.glob(os.path.join(trial_dir, "tensorboard", "**", "events.out.tfevents.*"), recursive=True)
    first = None
    for f in files:
        acc = EventAccumulator(f)
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            if tag.startswith("train/"):
                events = acc.Scalars(tag)
                if events:
                    t = min(e.wall_time for e in events)
                    first = t if first is None else min(first, t)
    return first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out")
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--concurrency", type=int, default=2)
    args = ap.parse_args()
    n_train, epochs = (256, 1) if args.quick else (1024, 2)
    work = tempfile.mkdtemp(prefix="bench_sweep_")
    times_dir = os.path.join(work, "times")
    os.makedirs(times_dir)
    print(f"load average {os.getloadavg()}")

    from ray import tune

    from contrastlab.platform import tune as platform_tune
    from contrastlab.platform.config import build_experiment

    exp = build_experiment("clip", sets=[
        f"train.epochs={epochs}", "train.batch_size=32", "train.log_every_steps=1",
        f"data.embedded_params={{n_train: {n_train}, n_heldout: 64, n_test: 64}}",
        "run.workers=1", "run.cpus_per_worker=0.5", "data.preprocess_cpus=0.5", f"run.storage={work}",
    ])
    t_init = time.time()
    start_ray(2)
    init_s = time.time() - t_init
    platform_tune._trial_fn = make_timed_trial(times_dir)  # run_sweep looks the trial function up at call time
    t0 = time.time()
    summary = platform_tune.run_sweep(exp, name="packing", storage=work, num_samples=args.trials, max_concurrent=args.concurrency,
                                      scheduler="fifo", search_space={"method.lr": tune.loguniform(3e-4, 3e-3)})
    wall = time.time() - t0
    import ray

    ray.shutdown()

    trials = []
    for f in sorted(glob.glob(os.path.join(times_dir, "*.json"))):
        with open(f) as fh:
            t = json.load(fh)
        first = first_step_time(t["trial_dir"])
        trials.append({"trial": t["trial"], "ok": t["ok"], "queued_s": t["start"] - t0, "wall_s": t["end"] - t["start"],
                       "time_to_first_step_s": (first - t["start"]) if first else None})
    trials.sort(key=lambda r: r["queued_s"])
    ideal = sum(r["wall_s"] for r in trials) / args.concurrency
    efficiency = ideal / wall
    print()
    print_table(trials, ["trial", "ok", "queued_s", "wall_s", "time_to_first_step_s"])
    firsts = [r["time_to_first_step_s"] for r in trials if r["time_to_first_step_s"] is not None]
    rows = [{"trials": len(trials), "concurrency": args.concurrency, "sweep wall s": wall, "ideal s": ideal,
             "efficiency": efficiency, "median trial s": statistics.median(r["wall_s"] for r in trials),
             "median first step s": statistics.median(firsts) if firsts else None, "ray init s": init_s}]
    print()
    print_table(rows, list(rows[0]))
    report = {
        "benchmark": "sweep_packing", "quick": args.quick, "machine": machine(),
        "settings": {"method": "clip", "trials": args.trials, "concurrency": args.concurrency, "epochs": epochs, "n_train": n_train,
                     "batch": 32, "cpus_per_worker": 0.5, "preprocess_cpus": 0.5, "cluster_cpus": 2, "scheduler": "fifo"},
        "sweep_wall_s": wall, "ideal_wall_s": ideal, "efficiency": efficiency, "ray_init_s": init_s,
        "trials": trials, "sweep_status": [r["status"] for r in summary.get("trials", [])],
    }
    write_report(args.out, report)


if __name__ == "__main__":
    main()
