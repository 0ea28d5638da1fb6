"""How soon an epoch's batches reach the Train worker: images/s and first-batch seconds of `ingest.py`'s
Ray pipeline (decode + two MoCo-v2 views through Ray Data into one Train worker, the platform's
shuffle buffer) for a grid of two settings, beside Ray's own behaviour:
- `data.executor_poll_s` (`--poll-s`, data/executor_poll.py): the longest wait of Ray Data's
  scheduling loop for its tasks; Ray's own is 0.1 s;
- `data.prefetch_batches` (`--prefetch`): blocks the Train worker's iterator fetches ahead; Ray's
  iterator yields a block only once that many more are in;
- the shuffle buffer's start rule (`--shuffle-start`, data/shuffle.py's START_RULES): when an
  epoch's first batch is drawn ("first_block", the platform's, or webdataset's "tenth" of the buffer).
The reference variant `ray` is Ray's wait (0.1 s, the platform's default) with prefetch 1 (also the
platform's) and the platform's start rule. Besides the rate, the CPU each role of Ray process spends per image (the Train worker
runs the executor in a one-worker run).

All variants run on the same cluster over the same shards (one Train worker, which sets each set's
wait before its epoch: ingest.ingest_loop), in alternated order, each time a warm-up epoch, then
--epochs timed ones (shuffle_buffer.py's harness). JSON: `ratio_vs_ray` (median images/s over the
reference's median) and `first_batch_s`, per variant.

    python benchmarks/iterator_latency.py --quick --out results/iterator_latency_quick.json
    python benchmarks/iterator_latency.py --stored 375x500 --images 2400 --out results/iterator_latency_375x500.json
    python benchmarks/iterator_latency.py --images 768 --per-shard 48 --batch 32 --out results/iterator_latency_small_blocks.json
    python benchmarks/iterator_latency.py --images 768 --per-shard 48 --batch 32 --poll-s 0.1 --shuffle-start tenth \
        --out results/iterator_latency_shuffle_start.json
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy loads its BLAS

import argparse
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ingest  # noqa: E402
from _common import machine, print_table, start_ray, write_photo_shards, write_report  # noqa: E402
from shuffle_buffer import alternate_variants, variant_table  # noqa: E402

from contrastlab.platform.config import DataConfig  # noqa: E402
from contrastlab.platform.data.executor_poll import RAY_OWN_POLL_S  # noqa: E402
from contrastlab.platform.data.reader import block_rows  # noqa: E402
from contrastlab.platform.data.shuffle import DEFAULT_START, START_RULES  # noqa: E402

RAY_PREFETCH = 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out")
    ap.add_argument("--size", type=int, default=224, help="view side in px (and the stored images' side, unless --stored)")
    ap.add_argument("--stored", default="", help="stored JPEG size HxW, e.g. 375x500 (ingest.py's ImageNet-shaped set); default square at --size")
    ap.add_argument("--images", type=int, default=0,
                    help="images per epoch (0: 4,000, ingest.py's 224 px set; 1,500, its --quick set, with --quick)")
    ap.add_argument("--rounds", type=int, default=0, help="passes over the variants (0: 4; 3 with --quick)")
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs per variant in each round")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--poll-s", type=float, nargs="+", default=[0.02], help="executor waits to try (data.executor_poll_s; Ray's is 0.1)")
    ap.add_argument("--prefetch", type=int, nargs="+", default=[DataConfig.prefetch_batches], help="prefetch_batches to try (data.prefetch_batches)")
    ap.add_argument("--shuffle-start", nargs="+", choices=START_RULES, default=[DEFAULT_START],
                    help="the shuffle buffer's start rules to try (data/shuffle.py; the platform's is first_block)")
    ap.add_argument("--per-shard", type=int, default=0, help="images per shard (0: a quarter of them with 2 procs, as ingest.py); "
                    "shards smaller than a block make blocks of one shard (FAME's embedded videos: 48)")
    ap.add_argument("--procs", type=int, default=2, help="data tasks at a time (1 CPU each)")
    args = ap.parse_args()
    images = args.images or (1500 if args.quick else 4000)
    rounds = args.rounds or (3 if args.quick else 4)
    work = tempfile.mkdtemp(prefix="bench_iterator_")
    stored = tuple(int(x) for x in args.stored.split("x")) if args.stored else args.size
    per_shard = args.per_shard or max(1, images // (2 * args.procs))
    shards = write_photo_shards(os.path.join(work, "shards"), images, stored, per_shard=per_shard, seed=1)
    settings = {f"poll{s * 1000:g}ms_prefetch{k}" + ("" if r == DEFAULT_START else f"_start_{r}"): (s, k, r)
                for s in args.poll_s for k in args.prefetch for r in args.shuffle_start}
    settings["ray"] = (RAY_OWN_POLL_S, RAY_PREFETCH, DEFAULT_START)
    rows = block_rows(2 * 3 * args.size ** 2 + 8, DataConfig.preprocess_block_mb, DataConfig.preprocess_batch_size)
    sets = {name: (shards, ingest.make_sample_fn("moco", args.size)) for name in settings}
    start_ray(args.procs + 1, None)
    side = ingest.RaySide(sets, batch=args.batch, map_batch={name: rows for name in sets}, data_cpus=1.0, storage=os.path.join(work, "ray"),
                          shuffle_by_set={name: (DataConfig.shuffle_buffer, "platform", r) for name, (_, _, r) in settings.items()},
                          build_by_set={name: {"executor_poll_s": s} for name, (s, _, _) in settings.items()},
                          prefetch_by_set={name: k for name, (_, k, _) in settings.items()})
    runs = alternate_variants(side, list(settings), rounds, args.epochs)
    side.close()

    table = variant_table(runs, "variant")
    reference = next(row for row in table if row["variant"] == "ray")
    ratios = {row["variant"]: row["img/s median"] / reference["img/s median"] for row in table}
    print()
    print_table(table, list(table[0]))
    for row in table:
        print(f"{row['variant']}: {ratios[row['variant']]:.3f} of ray's img/s; first batch {row['first batch s']:.3f} s "
              f"(ray {reference['first batch s']:.3f} s)")
    write_report(args.out, {"benchmark": "iterator_latency", "quick": args.quick, "machine": machine(),
                            "settings": {"size": args.size, "stored": args.stored or args.size, "images": images, "per_shard": per_shard, "rounds": rounds,
                                         "epochs": args.epochs, "batch": args.batch, "variants": settings, "block_rows": rows,
                                         "procs": args.procs, "shuffle_buffer": DataConfig.shuffle_buffer},
                            "table": table, "ratio_vs_ray": ratios,
                            "first_batch_s": {row["variant"]: row["first batch s"] for row in table}, "runs": runs})


if __name__ == "__main__":
    main()
