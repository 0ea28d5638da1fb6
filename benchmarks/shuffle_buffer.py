"""The Train worker's local shuffle: images/s of `ingest.py`'s Ray pipeline (decode + two MoCo-v2
views through Ray Data into one Train worker) with the platform's shuffle buffer (`data/shuffle.py`,
what training uses since session 16), with Ray's own `iter_torch_batches(local_shuffle_buffer_size=)`
(the platform's before), and with no shuffle, plus the CPU each Ray process spends per image.

All three run on the same cluster over the same shards, in alternated order (a, b, c, c, b, a, ...),
each time a warm-up epoch, then --epochs timed ones; CPU seconds per process come from /proc over the
timed epochs. JSON: `ratio_platform_vs_ray` (median images/s over median), and per variant the rates
and `<role> us/img` (data_tasks, train_worker, other_ray, raylet).

    python benchmarks/shuffle_buffer.py --quick --out results/shuffle_buffer_quick.json
    python benchmarks/shuffle_buffer.py --out results/shuffle_buffer.json
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
from _common import machine, print_table, start_ray, write_photo_shards, write_report  # noqa: E402
from ingest_block_size import cpu_by_process  # noqa: E402

from contrastlab.platform.config import DataConfig  # noqa: E402
from contrastlab.platform.data.reader import block_rows  # noqa: E402

ROLES = ("data_tasks", "train_worker", "other_ray", "raylet")


def alternate_variants(side: "ingest.RaySide", names: list[str], rounds: int, epochs: int) -> dict[str, list[dict]]:
    """Run the sets `names` of one RaySide in alternated order (a, b, c, c, b, a, ...), each time a
    warm-up epoch and `epochs` timed ones; per run, the epochs' images/s and first-batch seconds and
    the CPU us per image of each role of Ray process (/proc, over the timed epochs)."""
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for i in range(rounds):
        for name in (names if i % 2 == 0 else names[::-1]):
            side.epoch(name)  # warm-up
            before, t0 = cpu_by_process(), time.time()
            timed = [side.epoch(name) for _ in range(epochs)]
            after = cpu_by_process()
            n = sum(e["samples"] for e in timed)
            per_role: dict[str, float] = {}
            for key, seconds in after.items():
                per_role[key[1]] = per_role.get(key[1], 0.0) + seconds - before.get(key, 0.0)
            runs[name].append({"images_per_s": [e["samples"] / (e["t1"] - e["t0"]) for e in timed],
                               "first_batch_s": [e["t_first"] - e["t0"] for e in timed],
                               "wall_s": time.time() - t0, "cpu_us_per_image": {r: 1e6 * s / n for r, s in sorted(per_role.items())}})
            print(f"round {i + 1}/{rounds}, {name}: " + " ".join(f"{x:.0f}" for x in runs[name][-1]["images_per_s"]) + " img/s, "
                  + ", ".join(f"{r} {runs[name][-1]['cpu_us_per_image'].get(r, 0):.0f}" for r in ROLES) + " us/img", flush=True)
    return runs


def variant_table(runs: dict[str, list[dict]], label: str) -> list[dict]:
    """One row per variant: median, min and max images/s, median first batch, median us/img per role."""
    table = []
    for name, rs in runs.items():
        rates = [x for r in rs for x in r["images_per_s"]]
        table.append({label: name, "img/s median": float(np.median(rates)), "min": min(rates), "max": max(rates),
                      "first batch s": float(np.median([x for r in rs for x in r["first_batch_s"]])),
                      **{f"{role} us/img": float(np.median([r["cpu_us_per_image"].get(role, 0.0) for r in rs])) for role in ROLES}})
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out")
    ap.add_argument("--size", type=int, default=224, help="image and view side in px")
    ap.add_argument("--images", type=int, default=0, help="images per epoch (0: 4,096; 2,048 with --quick)")
    ap.add_argument("--rounds", type=int, default=0, help="passes over the three variants (0: 4; 2 with --quick)")
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs per variant in each round")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--buffer", type=int, default=DataConfig.shuffle_buffer, help="shuffle buffer rows (data.shuffle_buffer)")
    ap.add_argument("--procs", type=int, default=2, help="data tasks at a time (1 CPU each)")
    args = ap.parse_args()
    images = args.images or (2048 if args.quick else 4096)
    rounds = args.rounds or (2 if args.quick else 4)
    work = tempfile.mkdtemp(prefix="bench_shuffle_")
    shards = write_photo_shards(os.path.join(work, "shards"), images, args.size, per_shard=max(1, images // (2 * args.procs)), seed=1)
    variants = {"platform": (args.buffer, "platform"), "ray": (args.buffer, "ray"), "none": (0, "platform")}
    rows = block_rows(2 * 3 * args.size ** 2 + 8, DataConfig.preprocess_block_mb, DataConfig.preprocess_batch_size)
    sets = {name: (shards, ingest.make_sample_fn("moco", args.size)) for name in variants}
    start_ray(args.procs + 1, None)
    side = ingest.RaySide(sets, batch=args.batch, map_batch={name: rows for name in sets}, data_cpus=1.0,
                          storage=os.path.join(work, "ray"), shuffle_by_set=variants)
    runs = alternate_variants(side, list(variants), rounds, args.epochs)
    side.close()

    table = variant_table(runs, "shuffle")
    median = {row["shuffle"]: row["img/s median"] for row in table}
    print()
    print_table(table, list(table[0]))
    print(f"platform / ray: {median['platform'] / median['ray']:.3f}; platform / none: {median['platform'] / median['none']:.3f}")
    write_report(args.out, {"benchmark": "shuffle_buffer", "quick": args.quick, "machine": machine(),
                            "settings": {"size": args.size, "images": images, "rounds": rounds, "epochs": args.epochs, "batch": args.batch,
                                         "buffer_rows": args.buffer, "block_rows": rows, "procs": args.procs},
                            "table": table, "ratio_platform_vs_ray": median["platform"] / median["ray"],
                            "ratio_platform_vs_none": median["platform"] / median["none"], "runs": runs})


if __name__ == "__main__":
    main()
