"""Video and multimodal ingest: clips/s (FAME: H.264 MP4 decoded with PyAV, two clips per video)
and product records/s (SCALE: JPEG + title + table JSON + MP4 + WAV per record) through Ray Data into
a Ray Train worker, against a plain torch DataLoader over webdataset.WebDataset doing the same
per-sample work with the same number of CPU processes, and against that work in bare processes.

The per-sample work is the method's own training preprocessing (`make_preprocess(cfg, "train",
meta)`) on its embedded dataset's shards (FAME: `moving-shapes`; SCALE: `fashion-products`), so
this measures exactly what `sweeps/fame.py` and `sweeps/scale.py` ingest. The pipelines and the
timing rules are those of `ingest.py`: alternated rounds of a DataLoader block and a Ray block (a
cluster started and stopped per block), whole-epoch rates after a warm-up epoch, the ratio being the
median over rounds; 1 CPU per Ray Data task; preprocessing blocks of --block-mb, sized as the platform sizes them;
both pipelines shuffle as training does (--shuffle-buffer, as in `ingest.py`).

    python benchmarks/media_ingest.py --quick --out results/media_ingest_quick.json
    python benchmarks/media_ingest.py --out results/media_ingest.json
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy loads its BLAS

import argparse
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ingest  # noqa: E402
from _common import machine, print_table, write_report  # noqa: E402

from contrastlab.platform.config import DataConfig  # noqa: E402
from contrastlab.platform.data.reader import block_rows  # noqa: E402

WORKLOADS = {
    # workload: (method, embedded params for --quick, for the full run, unit)
    "video": ("fame", {"n_train": 96, "n_test": 32}, {"n_train": 384, "n_test": 32}, "videos"),
    "product": ("scale", {"n_train": 256, "n_test": 64}, {"n_train": 1024, "n_test": 64}, "records"),
}


def workload_inputs(workload: str, quick: bool):
    """(train shard paths, the method's per-sample train fn, required members)."""
    from contrastlab.methods.registry import get_method
    from contrastlab.platform.config import build_experiment
    from contrastlab.platform.runner import plan_data

    method, quick_params, full_params, _ = WORKLOADS[workload]
    params = quick_params if quick else full_params
    exp = build_experiment(method, sets=["data.embedded_params={" + ", ".join(f"{k}: {v}" for k, v in params.items()) + "}"])
    plan = plan_data(exp)
    fn, required = get_method(method).make_preprocess(exp.method, "train", plan.meta)
    return plan.train, fn, tuple(required)


def workload_fn(workload: str, quick: bool):
    """The workload's per-sample fn (for the DataLoader helper process, which builds its own)."""
    return workload_inputs(workload, quick)[1]


def row_bytes(raw: dict, fn) -> int:
    out = ingest.full_sample(raw, fn)
    return sum(np.asarray(v).nbytes for v in out.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out")
    ap.add_argument("--workloads", nargs="+", choices=sorted(WORKLOADS), default=sorted(WORKLOADS))
    ap.add_argument("--procs", type=int, default=2, help="CPU processes doing per-sample work in every pipeline")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5,
                    help="alternated rounds, each a DataLoader block and a Ray block; 5 since session 18: the videos' 0.65 s epochs swing "
                         "0.78-1.06 per round, and a 3-round median read 0.86 where the 5-round run after it read 1.00")
    ap.add_argument("--epochs", type=int, default=0, help="timed epochs per workload in each block, after a warm-up epoch (0: 1 quick, 2 full)")
    ap.add_argument("--block-mb", type=float, default=DataConfig.preprocess_block_mb,
                    help="MiB of preprocessed rows per block (default: the platform's data.preprocess_block_mb; 0: 128 rows)")
    ap.add_argument("--object-store-mb", type=int, default=0, help="0: Ray's default (30%% of RAM), as ingest.py's timed rounds")
    ap.add_argument("--ray-prefetch", type=int, default=DataConfig.prefetch_batches,
                    help="prefetch_batches of the Train worker's iterator (default: the platform's data.prefetch_batches)")
    ap.add_argument("--shuffle-buffer", type=int, default=DataConfig.shuffle_buffer,
                    help="rows of shuffle buffer in both pipelines, as ingest.py (0 = neither shuffles, the figures before session 16)")
    args = ap.parse_args()
    epochs = args.epochs or (1 if args.quick else 2)
    report = {"benchmark": "media_ingest", "quick": args.quick, "machine": machine(),
              "settings": {"procs": args.procs, "batch": args.batch, "rounds": args.rounds, "epochs": epochs, "block_mb": args.block_mb,
                           "object_store_mb": args.object_store_mb, "shuffle_buffer": args.shuffle_buffer,
                           "ray_prefetch": args.ray_prefetch}, "results": {}}
    print(f"load average {os.getloadavg()}")
    sets, required_of, map_batch, rows = {}, {}, {}, []
    for w in args.workloads:  # the work ceilings fork from this process, so they run before Ray starts
        paths, fn, required = workload_inputs(w, args.quick)
        raw = ingest.read_raw(paths)
        per_row = row_bytes(raw[0], fn)
        map_batch[w] = block_rows(per_row, args.block_mb, DataConfig.preprocess_batch_size)  # as the platform sizes blocks
        ingest._RAW, ingest._FN = raw, fn
        work = ingest.pool_rate(ingest._work_range, len(raw), args.procs, repeats=2)
        sets[w], required_of[w] = (paths, fn), required
        report["results"][w] = {"method": WORKLOADS[w][0], "samples": len(raw), "shards": len(paths), "row_bytes": per_row,
                                "map_rows": map_batch[w], "work_ceiling_images_per_s": work}
        print(f"{w}: {len(raw)} {WORKLOADS[w][3]} in {len(paths)} shards, work ceiling {work:.1f}/s")
    ingest._RAW = []

    names = list(sets)
    wds_side = ingest.WebDatasetSide({w: (sets[w][0], ["media_ingest", "workload_fn", [w, args.quick]]) for w in names},
                                     args.batch, args.procs, shuffle=args.shuffle_buffer)
    storage = tempfile.mkdtemp(prefix="bench_media_ingest_")
    blocks = ingest.alternated_rounds(
        args.rounds,
        lambda i: ingest.ray_block(sets, names, epochs, os.path.join(storage, f"ray{i}"), cpus=args.procs + 1,
                                   object_store_mb=args.object_store_mb, batch=args.batch, map_batch=map_batch, block_mb=args.block_mb, data_cpus=1.0,
                                   required_of=required_of, shuffle=args.shuffle_buffer, prefetch=args.ray_prefetch),
        lambda i: ingest.wds_block(wds_side, names, epochs), names)
    wds_side.close()
    for w in names:
        r = report["results"][w]
        ingest.summarize(r, blocks, w)
        rows.append({"workload": f"{w} ({WORKLOADS[w][0]})", "unit": WORKLOADS[w][3], "samples": r["samples"],
                     "ray /s": r["ray_images_per_s_median"], "wds /s": r["webdataset_images_per_s_median"],
                     "work ceil /s": r["work_ceiling_images_per_s"], "ray/wds": r["ratio_vs_webdataset"],
                     "per round": " ".join(f"{x:.2f}" for x in r["ratio_rounds"]), "ray/work": r["ratio_vs_work_ceiling"],
                     "wds/work": r["webdataset_vs_work_ceiling"]})
    print()
    print_table(rows, list(rows[0]))
    report["table"] = rows
    write_report(args.out, report)


if __name__ == "__main__":
    main()
