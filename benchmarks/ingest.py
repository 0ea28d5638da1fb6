"""Ingest benchmark: decode + two-view augmentation through Ray Data into a Ray Train worker, against
a plain torch DataLoader over webdataset.WebDataset with the same number of CPU processes, and
against the decode-only ceiling of the decoder the pipeline uses; plus the peak RSS of the driver
and of every Ray process while streaming shard sets larger than the object store.

Data: JPEG (quality 90) + json shards written with `write_shards`, cut from sklearn's two sample
photos (random square crops resized to 64 and 224 px). Each sample is decoded with
`codecs.decode_jpeg` (simplejpeg), its json parsed, and two views made at the stored size:
`--views moco` = `augment.moco_v2_view` (crop, jitter, grey, blur, flip), `--views crop` = random
resized crop + flip (CLIP's train view). Views leave as uint8 CHW (converted to float on the worker).

Pipelines, each with P = --procs CPU processes doing the per-sample work:
- ray:        `reader.build_dataset` (one operator: each read task decodes and preprocesses its
              shard a batch at a time; P concurrent tasks of 1 CPU) -> TorchTrainer(1 worker, 1 CPU) ->
              `iter_torch_batches(batch_size, prefetch_batches=data.prefetch_batches)` as in `train_loop_per_worker`.
- webdataset: DataLoader(WebDataset(shards).map(same per-sample work), num_workers=P, batch_size).
- decode ceiling: P forked processes doing `decode_jpeg` only over the same JPEG bytes in memory.
- work ceiling:   P forked processes doing the same per-sample work (decode + json + two views)
                  with no framework, in memory (the most any pipeline could reach).
Throughput = source images per second (each gives two views). Headline figures are whole-epoch
rates of the last epoch (warm: the first epoch pays imports and worker start-up; every later epoch
still pays its own task/worker start, as a real run does). Rates counted from each epoch's first
batch are in the JSON too, but they flatter a pipeline that runs ahead while the consumer waits
for its first batch (Ray Data does), so they are not the headline.
Preprocessing batches are sized by output bytes (--block-mb, default 8 MiB: 128 rows at 64 px,
28 at 224 px): 128 rows of two 224 px views are a 38 MiB block, and with a small object store
those blocks spill to disk (seen here: restore workers, 224 px at 0.4x of webdataset).
OMP/BLAS threads are pinned to 1 in every process (Ray does this for 1-CPU tasks; DataLoader
workers would otherwise let numpy's BLAS spawn threads, over-subscribing the cores).

Memory: the cluster runs with a small object store (--object-store-mb); the 224 px set and a
set --rss-factor times larger are streamed one after the other, and a sampler records the RSS of
the driver and of every Ray worker process (children of the raylet) every 0.25 s.

    python benchmarks/ingest.py --quick --out results/ingest_quick.json
    python benchmarks/ingest.py --out results/ingest.json
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy loads its BLAS

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RSSSampler, machine, print_table, raylet_pids, start_ray, write_photo_shards, write_report  # noqa: E402

from contrastlab.platform.config import DataConfig  # noqa: E402
from contrastlab.platform.data.augment import hflip, moco_v2_view, random_resized_crop, to_chw  # noqa: E402
from contrastlab.platform.data.codecs import decode_jpeg  # noqa: E402
from contrastlab.platform.data.reader import preprocess_sample  # noqa: E402

SEED = 0


def make_sample_fn(views: str, size: int):
    """The per-sample work after decoding: two views at `size`, uint8 CHW (what a method's fn does)."""

    def view(img, rng):
        if views == "moco":
            return moco_v2_view(img, size, rng)
        return hflip(random_resized_crop(img, size, rng, scale=(0.2, 1.0)), rng)

    def fn(sample: dict, rng: np.random.Generator) -> dict:
        img = sample["jpg"]
        return {"view1": to_chw(view(img, rng)), "view2": to_chw(view(img, rng))}

    return fn


def full_sample(raw: dict, fn) -> dict:
    """What the platform's reader does per sample (`reader.preprocess_sample`), outside Ray."""
    members = {k: v for k, v in raw.items() if not k.startswith("__")}
    return preprocess_sample(members, raw["__key__"], raw.get("__url__", ""), fn, (), SEED, 0)


# --------------------------------------------------------------------------- ceilings (forked pools)
_RAW: list[dict] = []
_FN = None


def _noop(_):
    return 0


def _decode_range(bounds):
    for raw in _RAW[bounds[0]:bounds[1]]:
        decode_jpeg(raw["jpg"])
    return bounds[1] - bounds[0]


def _work_range(bounds):
    for raw in _RAW[bounds[0]:bounds[1]]:
        full_sample(raw, _FN)
    return bounds[1] - bounds[0]


def read_raw(paths: list[str]) -> list[dict]:
    from contrastlab.platform.data.reader import iter_tar_samples

    out = []
    for p in paths:
        with open(p, "rb") as fh:
            out.extend(iter_tar_samples(fh, p, "raise"))
    return out


def pool_rate(job, n: int, procs: int, repeats: int) -> float:
    """Images/s of `job` over n in-memory samples split across `procs` forked processes (best of repeats)."""
    bounds = [(i * n // procs, (i + 1) * n // procs) for i in range(procs)]
    best = 0.0
    with mp.get_context("fork").Pool(procs) as pool:
        pool.map(_noop, range(procs))  # start the workers before timing
        for _ in range(repeats):
            t0 = time.perf_counter()
            done = sum(pool.map(job, bounds))
            best = max(best, done / (time.perf_counter() - t0))
    return best


# --------------------------------------------------------------------------- webdataset DataLoader
class _WdsMap:
    def __init__(self, fn):
        self.fn = fn

    def __call__(self, raw):
        return full_sample(raw, self.fn)


def run_webdataset(paths: list[str], fn, batch: int, procs: int, epochs: int) -> list[dict]:
    import torch
    import webdataset as wds

    ds = wds.WebDataset(paths, shardshuffle=False, empty_check=False).map(_WdsMap(fn))
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=procs, prefetch_factor=2,
                                         multiprocessing_context="fork")
    epochs_out = []
    for ep in range(epochs):
        t0 = time.time()
        first, n, n_first = None, 0, 0
        for b in loader:
            k = len(b["index"])
            n += k
            if first is None:
                first, n_first = time.time(), k
        epochs_out.append({"epoch": ep, "t0": t0, "t_first": first, "t1": time.time(), "samples": n, "first_batch": n_first})
    return epochs_out


# --------------------------------------------------------------------------- Ray Data -> Train worker
def ingest_loop(config: dict) -> None:
    """The Train worker: iterate each dataset as `train_loop_per_worker` does, record timings."""
    import time as _time

    import ray.train

    out = []
    for name, epochs in config["plan"]:
        shard = ray.train.get_dataset_shard(name)
        for ep in range(epochs):
            t0 = _time.time()
            first, n, n_first = None, 0, 0
            for b in shard.iter_torch_batches(batch_size=config["batch"], prefetch_batches=config.get("prefetch", 2), device="cpu"):
                k = len(b["index"])
                n += k
                if first is None:
                    first, n_first = _time.time(), k
            out.append({"dataset": name, "epoch": ep, "t0": t0, "t_first": first, "t1": _time.time(), "samples": n, "first_batch": n_first})
    with open(config["out"], "w") as fh:
        json.dump(out, fh)


def run_ray(sets: dict, plan: list, batch: int, map_batch: dict, data_cpus: float, storage: str,
            required: tuple[str, ...] = ("jpg", "json"), prefetch: int = DataConfig.prefetch_batches,
            task_buffer_mb: float = DataConfig.task_output_buffer_mb) -> list[dict]:
    import ray.train
    from ray.train.torch import TorchTrainer

    from contrastlab.platform.data.reader import build_dataset
    from contrastlab.platform.data.split import TrainEqualEvalCompleteConfig

    datasets = {name: build_dataset(paths, fn, required=required, split="train", cpus=data_cpus, batch_size=map_batch[name],
                                    task_output_buffer_mb=task_buffer_mb)
                for name, (paths, fn) in sets.items()}
    out_file = os.path.join(storage, "ray_epochs.json")
    trainer = TorchTrainer(
        ingest_loop,
        train_loop_config={"plan": plan, "batch": batch, "out": out_file, "prefetch": prefetch},
        scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
        run_config=ray.train.RunConfig(name="ingest", storage_path=storage),
        datasets=datasets,
        dataset_config=TrainEqualEvalCompleteConfig(tuple(datasets)),  # as the platform splits its train set
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    with open(out_file) as fh:
        return json.load(fh)


def rates(e: dict) -> dict:
    after_first = (e["samples"] - e["first_batch"]) / max(e["t1"] - e["t_first"], 1e-9)
    return {"from_first_batch_images_per_s": after_first, "epoch_images_per_s": e["samples"] / max(e["t1"] - e["t0"], 1e-9),
            "first_batch_s": e["t_first"] - e["t0"], "samples": e["samples"]}


def rss_roles(peaks: dict, sampler: RSSSampler, t0: float, t1: float) -> dict:
    """Peak RSS (MiB) by role over [t0, t1]; 'all_processes' is the peak of the summed RSS."""
    roles: dict[str, float] = {}
    for _pid, (title, rss) in peaks.items():
        if title == "driver":
            role = "driver"
        elif "TrainWorker" in title or "RayTrainWorker" in title:
            role = "train_worker"
        elif "SplitCoordinator" in title:
            role = "split_coordinator"
        elif "ReadDatasource" in title or "MapBatches" in title or "IDLE" in title or "ray::" not in title:
            role = "data_task_worker (max)"
        else:
            role = title.split(" ")[0].replace("ray::", "")[:40]
        roles[role] = max(roles.get(role, 0.0), rss / 2**20)
    totals: dict[float, int] = {}
    for t, _pid, _title, rss in sampler.samples:
        if t0 <= t <= t1:
            totals[t] = totals.get(t, 0) + rss
    roles["all_processes (sum)"] = max(totals.values(), default=0) / 2**20
    return roles


def main() -> None:
    global _RAW, _FN
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out")
    ap.add_argument("--views", choices=("moco", "crop"), default="moco")
    ap.add_argument("--procs", type=int, default=2, help="CPU processes doing per-sample work in every pipeline")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=0, help="epochs per pipeline (0: 2 quick, 3 full)")
    ap.add_argument("--object-store-mb", type=int, default=256)
    ap.add_argument("--rss-factor", type=int, default=4, help="the large RSS set is this many times the 224 px set")
    ap.add_argument("--ray-prefetch", type=int, default=DataConfig.prefetch_batches,
                    help="prefetch_batches of the Train worker's iterator (default: the platform's data.prefetch_batches; "
                         "the DataLoader keeps prefetch_factor=2, which does not hold back its first batch)")
    ap.add_argument("--task-buffer-mb", type=float, default=DataConfig.task_output_buffer_mb,
                    help="finished blocks a read task may hold ahead of the consumer, in MiB (default: the platform's "
                         "data.task_output_buffer_mb; 0 = Ray's own default of 2 blocks)")
    ap.add_argument("--no-dashboard", action="store_true", help="start Ray without its dashboard (to measure what the dashboard's processes cost)")
    ap.add_argument("--block-mb", type=float, default=8.0, help="target output MiB per preprocessing batch (0: --batch rows)")
    ap.add_argument("--data-cpus", type=float, default=1.0,
                    help="CPUs per Ray Data task (1.0: --procs tasks at a time; the platform default 0.5 runs 2x--procs)")
    args = ap.parse_args()
    n64, n224 = (1500, 400) if args.quick else (8000, 2000)
    epochs = args.epochs or (2 if args.quick else 3)
    work = tempfile.mkdtemp(prefix="bench_ingest_")
    report = {"benchmark": "ingest", "quick": args.quick, "machine": machine(), "settings": {
        "views": args.views, "procs": args.procs, "batch": args.batch, "epochs": epochs, "object_store_mb": args.object_store_mb,
        "images": {"64": n64, "224": n224}, "rss_factor": args.rss_factor,
        "ray_prefetch": args.ray_prefetch, "task_buffer_mb": args.task_buffer_mb}}
    print(f"load average {os.getloadavg()}; shards in {work}")

    sizes = {64: n64, 224: n224}
    shards = {s: write_photo_shards(os.path.join(work, f"s{s}"), n, s, per_shard=max(1, n // (2 * args.procs)), seed=s)
              for s, n in sizes.items()}
    big = write_photo_shards(os.path.join(work, "big224"), n224 * args.rss_factor, 224,
                             per_shard=max(1, n224 * args.rss_factor // (2 * args.procs)), seed=999)
    fns = {s: make_sample_fn(args.views, s) for s in sizes}

    rows, results = [], {}
    for s in sizes:
        _RAW, _FN = read_raw(shards[s]), fns[s]
        n = len(_RAW)
        results[s] = {
            "decode_ceiling_images_per_s": pool_rate(_decode_range, n, args.procs, repeats=3),
            "work_ceiling_images_per_s": pool_rate(_work_range, n, args.procs, repeats=2),
            "jpeg_kib_mean": float(np.mean([len(r["jpg"]) for r in _RAW]) / 1024),
        }
        wds_epochs = run_webdataset(shards[s], fns[s], args.batch, args.procs, epochs)
        results[s]["webdataset"] = [rates(e) for e in wds_epochs]
        print(f"{s}px: ceilings done, webdataset {results[s]['webdataset'][-1]['epoch_images_per_s']:.0f} images/s")
    _RAW = []

    def rows_for(size):  # preprocessing batch rows so that one output block is about --block-mb
        per_sample = 2 * 3 * size * size
        return args.batch if not args.block_mb else max(8, min(args.batch, int(args.block_mb * 2**20 // per_sample)))

    map_batch = {"s64": rows_for(64), "s224": rows_for(224), "big224": rows_for(224)}
    report["settings"]["map_batch_rows"] = map_batch
    report["settings"]["data_cpus"] = args.data_cpus
    start_ray(args.procs + 1, args.object_store_mb, dashboard=not args.no_dashboard)
    sets = {f"s{s}": (shards[s], fns[s]) for s in sizes}
    sets["big224"] = (big, fns[224])
    plan = [(f"s{s}", epochs) for s in sizes] + [("big224", 1)]
    with RSSSampler(raylet_pids()) as sampler:
        ray_epochs = run_ray(sets, plan, args.batch, map_batch, args.data_cpus, os.path.join(work, "ray"), prefetch=args.ray_prefetch,
                             task_buffer_mb=args.task_buffer_mb)
    import ray

    ray.shutdown()

    for s in sizes:
        mine = [e for e in ray_epochs if e["dataset"] == f"s{s}"]
        r = results[s]
        r["ray"] = [rates(e) for e in mine]
        ray_rate, wds_rate = r["ray"][-1]["epoch_images_per_s"], r["webdataset"][-1]["epoch_images_per_s"]
        r["ratio_vs_webdataset"] = ray_rate / wds_rate
        r["ratio_vs_decode_ceiling"] = ray_rate / r["decode_ceiling_images_per_s"]
        r["ratio_vs_work_ceiling"] = ray_rate / r["work_ceiling_images_per_s"]
        r["webdataset_vs_work_ceiling"] = wds_rate / r["work_ceiling_images_per_s"]
        rows.append({"size": f"{s}px", "images": sizes[s], "ray img/s": ray_rate, "wds img/s": wds_rate,
                     "decode ceil": r["decode_ceiling_images_per_s"], "work ceil": r["work_ceiling_images_per_s"],
                     "ray/wds": r["ratio_vs_webdataset"], "ray/decode": r["ratio_vs_decode_ceiling"],
                     "ray/work": r["ratio_vs_work_ceiling"], "wds/work": r["webdataset_vs_work_ceiling"]})
    print()
    print_table(rows, ["size", "images", "ray img/s", "wds img/s", "decode ceil", "work ceil", "ray/wds", "ray/decode", "ray/work", "wds/work"])

    # memory: the whole s224 phase (all epochs) vs the big set's epoch
    windows = {}
    for name in ("s224", "big224"):
        mine = [e for e in ray_epochs if e["dataset"] == name]
        windows[name] = (mine[0]["t0"], mine[-1]["t1"])
    view_bytes = 2 * 3 * 224 * 224
    mem = {"object_store_mb": args.object_store_mb, "sets": {}}
    for name, (t0, t1) in windows.items():
        n = sum(e["samples"] for e in ray_epochs if e["dataset"] == name and e["epoch"] == 0)
        mem["sets"][name] = {"images": n, "preprocessed_mib": n * view_bytes / 2**20,
                             "peak_rss_mib": rss_roles(sampler.peaks(t0, t1), sampler, t0, t1)}
    small, large = mem["sets"]["s224"]["peak_rss_mib"], mem["sets"]["big224"]["peak_rss_mib"]
    mem["growth_ratio_large_vs_small"] = {k: large[k] / small[k] for k in large if small.get(k)}
    mrows = [{"process": k, f"s224 ({mem['sets']['s224']['preprocessed_mib']:.0f} MiB out)": small.get(k),
              f"big224 ({mem['sets']['big224']['preprocessed_mib']:.0f} MiB out)": large.get(k),
              "large/small": mem["growth_ratio_large_vs_small"].get(k)} for k in large]
    print(f"\npeak RSS (MiB) while streaming, object store {args.object_store_mb} MiB")
    print_table(mrows, list(mrows[0]))

    report["results"] = {f"{s}px": results[s] for s in sizes}
    report["memory"] = mem
    report["ratio_vs_webdataset"] = {f"{s}px": results[s]["ratio_vs_webdataset"] for s in sizes}
    report["ratio_vs_decode_ceiling"] = {f"{s}px": results[s]["ratio_vs_decode_ceiling"] for s in sizes}
    report["ratio_vs_work_ceiling"] = {f"{s}px": results[s]["ratio_vs_work_ceiling"] for s in sizes}
    write_report(args.out, report)


if __name__ == "__main__":
    main()
