"""Ingest by preprocessed block size: images/s of `ingest.py`'s Ray pipeline (decode + two MoCo-v2
views through Ray Data into one Train worker) for several rows per block, with the CPU each Ray
process spends per image. It is the measurement behind `data.preprocess_block_mb`
(docs/design-notes.md): Ray spends a fixed ~10 ms of CPU per block, so small blocks cost throughput.

Every block size runs on the same cluster and the same shards, in alternated order (a, b, c, a, b, c, ...),
each time a warm-up epoch, then --epochs timed ones; CPU seconds per process come from /proc over the
timed epochs. Rows per block are set through the dataset's row cap (`build_dataset(batch_size=rows)`)
with a block budget large enough never to cut sooner.

    python benchmarks/ingest_block_size.py --quick --out results/ingest_block_size_quick.json
    python benchmarks/ingest_block_size.py --size 224 --rows 27 55 --out results/ingest_block_size_224.json
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy loads its BLAS

import argparse
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ingest  # noqa: E402
from _common import (_proc_status, cpu_seconds, machine, print_table, ray_process_pids, start_ray,  # noqa: E402
                     write_photo_shards, write_report)


def cpu_by_process() -> dict[tuple[int, str], float]:
    """CPU seconds so far of every process of the local cluster and of this driver, keyed by (pid, role)."""
    out = {}
    for pid in ray_process_pids() + [os.getpid()]:
        status = _proc_status(pid)
        if status is not None:
            out[(pid, role_of(status[0], pid))] = cpu_seconds([pid])
    return out


def role_of(title: str, pid: int) -> str:
    if pid == os.getpid():
        return "driver"
    if "TrainWorker" in title:
        return "train_worker"
    if title.startswith("ray::IDLE") or "ReadShard" in title:
        return "data_tasks"
    if "raylet" in title:
        return "raylet"
    return "other_ray"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out")
    ap.add_argument("--size", type=int, default=64, help="image side in px")
    ap.add_argument("--rows", type=int, nargs="+", default=[128, 256, 682, 1024], help="rows per preprocessed block to compare")
    ap.add_argument("--images", type=int, default=0, help="images per epoch (0: 8,000 at 64 px, 2,000 at 224; a quarter with --quick)")
    ap.add_argument("--rounds", type=int, default=0, help="passes over all block sizes (0: 1 quick, 2 full)")
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs per block size in each round")
    ap.add_argument("--procs", type=int, default=2, help="data tasks at a time (1 CPU each)")
    ap.add_argument("--object-store-mb", type=int, default=0, help="0: Ray's default (30%% of RAM); a small one spills at 224 px")
    args = ap.parse_args()
    images = args.images or (8000 if args.size <= 64 else 2000) // (4 if args.quick else 1)
    rounds = args.rounds or (1 if args.quick else 2)
    work = tempfile.mkdtemp(prefix="bench_block_size_")
    per_shard = max(1, images // (2 * args.procs))
    shards = write_photo_shards(os.path.join(work, "shards"), images, args.size, per_shard=per_shard, seed=args.size)
    fn = ingest.make_sample_fn("moco", args.size)
    sets = {f"rows{r}": (shards, fn) for r in args.rows}
    start_ray(args.procs + 1, args.object_store_mb)
    side = ingest.RaySide(sets, batch=128, map_batch={f"rows{r}": r for r in args.rows}, data_cpus=1.0,
                          storage=os.path.join(work, "ray"), block_mb=1 << 20)
    runs: dict[int, list[dict]] = {r: [] for r in args.rows}
    for i in range(rounds):
        for rows in args.rows:
            name = f"rows{rows}"
            side.epoch(name)  # warm-up
            before, t0 = cpu_by_process(), time.time()
            epochs = [side.epoch(name) for _ in range(args.epochs)]
            after, wall = cpu_by_process(), time.time() - t0
            n = sum(e["samples"] for e in epochs)
            per_role: dict[str, float] = {}
            for key, seconds in after.items():
                per_role[key[1]] = per_role.get(key[1], 0.0) + seconds - before.get(key, 0.0)
            runs[rows].append({
                "images_per_s": [e["samples"] / (e["t1"] - e["t0"]) for e in epochs],
                "first_batch_s": [e["t_first"] - e["t0"] for e in epochs],
                "cores_used": sum(per_role.values()) / wall,
                "cpu_us_per_image": {role: 1e6 * s / n for role, s in sorted(per_role.items())},
            })
            print(f"round {i + 1}/{rounds}, {rows} rows: " + " ".join(f"{x:.0f}" for x in runs[rows][-1]["images_per_s"]) + " img/s", flush=True)
    side.close()

    table = []
    for rows, rs in runs.items():
        rates = [x for r in rs for x in r["images_per_s"]]
        roles = {role: float(np.median([r["cpu_us_per_image"].get(role, 0.0) for r in rs])) for role in rs[0]["cpu_us_per_image"]}
        block_mib = min(rows, per_shard) * (2 * 3 * args.size ** 2 + 8) / 2**20  # a block never spans shards
        table.append({"rows": rows, "block MiB": block_mib, "img/s median": float(np.median(rates)),
                      "min": min(rates), "max": max(rates), "first batch s": float(np.median([x for r in rs for x in r["first_batch_s"]])),
                      **{f"{role} us/img": v for role, v in roles.items()}})
    print()
    print_table(table, list(table[0]))
    write_report(args.out, {"benchmark": "ingest_block_size", "quick": args.quick, "machine": machine(),
                            "settings": {"size": args.size, "images": images, "rows_per_shard": per_shard, "rounds": rounds, "epochs": args.epochs, "procs": args.procs},
                            "table": table, "runs": {str(k): v for k, v in runs.items()}})


if __name__ == "__main__":
    main()
