"""Video and multimodal ingest: clips/s (FAME: H.264 MP4 decoded with PyAV, two clips per video)
and product records/s (SCALE: JPEG + title + table JSON + MP4 + WAV per record) through Ray Data into
a Ray Train worker, against a plain torch DataLoader over webdataset.WebDataset doing the same
per-sample work with the same number of CPU processes, and against that work in bare processes.

The per-sample work is the method's own training preprocessing (`make_preprocess(cfg, "train",
meta)`) on its embedded dataset's shards (FAME: `moving-shapes`; SCALE: `fashion-products`), so
this measures exactly what `sweeps/fame.py` and `sweeps/scale.py` ingest. The pipelines and the
timing rules are those of `ingest.py` (whole-epoch rates of the last epoch; 1 CPU per Ray Data
task; preprocessing blocks of about --block-mb).

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
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ingest  # noqa: E402
from _common import machine, print_table, start_ray, write_report  # noqa: E402

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
    ap.add_argument("--epochs", type=int, default=0, help="epochs per pipeline (0: 2 quick, 3 full)")
    ap.add_argument("--block-mb", type=float, default=8.0)
    ap.add_argument("--object-store-mb", type=int, default=512)
    args = ap.parse_args()
    epochs = args.epochs or (2 if args.quick else 3)
    report = {"benchmark": "media_ingest", "quick": args.quick, "machine": machine(),
              "settings": {"procs": args.procs, "batch": args.batch, "epochs": epochs, "block_mb": args.block_mb,
                           "object_store_mb": args.object_store_mb}, "results": {}}
    print(f"load average {os.getloadavg()}")
    inputs, rows = {}, []
    for w in args.workloads:
        paths, fn, required = workload_inputs(w, args.quick)
        raw = ingest.read_raw(paths)
        per_row = row_bytes(raw[0], fn)
        map_rows = max(4, min(args.batch, int(args.block_mb * 2**20 // per_row)))
        ingest._RAW, ingest._FN = raw, fn
        work = ingest.pool_rate(ingest._work_range, len(raw), args.procs, repeats=2)
        wds = ingest.run_webdataset(paths, fn, args.batch, args.procs, epochs)
        inputs[w] = (paths, fn, required, map_rows)
        report["results"][w] = {"method": WORKLOADS[w][0], "samples": len(raw), "shards": len(paths), "row_bytes": per_row,
                                "map_rows": map_rows, "work_ceiling_per_s": work, "webdataset": [ingest.rates(e) for e in wds]}
        print(f"{w}: {len(raw)} {WORKLOADS[w][3]} in {len(paths)} shards, work ceiling {work:.1f}/s, "
              f"webdataset {report['results'][w]['webdataset'][-1]['epoch_images_per_s']:.1f}/s")
    ingest._RAW = []

    start_ray(args.procs + 1, args.object_store_mb)
    storage = tempfile.mkdtemp(prefix="bench_media_ingest_")
    for w, (paths, fn, required, map_rows) in inputs.items():
        t0 = time.time()
        epochs_out = ingest.run_ray({w: (paths, fn)}, [(w, epochs)], args.batch, {w: map_rows}, 1.0,
                                    os.path.join(storage, w), required=required)
        r = report["results"][w]
        r["ray"] = [ingest.rates(e) for e in epochs_out]
        r["ray_fit_s"] = time.time() - t0
        ray_rate, wds_rate = r["ray"][-1]["epoch_images_per_s"], r["webdataset"][-1]["epoch_images_per_s"]
        r["ratio_vs_webdataset"] = ray_rate / wds_rate
        r["ratio_vs_work_ceiling"] = ray_rate / r["work_ceiling_per_s"]
        r["webdataset_vs_work_ceiling"] = wds_rate / r["work_ceiling_per_s"]
        rows.append({"workload": f"{w} ({WORKLOADS[w][0]})", "unit": WORKLOADS[w][3], "samples": r["samples"],
                     "ray /s": ray_rate, "wds /s": wds_rate, "work ceil /s": r["work_ceiling_per_s"],
                     "ray/wds": r["ratio_vs_webdataset"], "ray/work": r["ratio_vs_work_ceiling"],
                     "wds/work": r["webdataset_vs_work_ceiling"]})
    import ray

    ray.shutdown()
    print()
    print_table(rows, list(rows[0]))
    report["table"] = rows
    write_report(args.out, report)


if __name__ == "__main__":
    main()
