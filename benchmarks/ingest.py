"""Ingest benchmark: decode + two-view augmentation through Ray Data into a Ray Train worker, against
a plain torch DataLoader over webdataset.WebDataset with the same number of CPU processes, and
against the decode-only ceiling of the decoder the pipeline uses; plus the peak RSS of the driver
and of every Ray process while streaming shard sets larger than the object store.

Data: JPEG (quality 90) + json shards written with `write_shards`, cut from sklearn's two sample
photos (random square crops resized to 64 and 224 px, and 4:3 crops resized to 375x500, ImageNet's
commonest shape, viewed at 224; `--no-imagenet-shape` leaves that set out). Each sample is decoded with
`codecs.decode_jpeg` (simplejpeg), its json parsed, and two views made at the view size:
`--views moco` = `augment.moco_v2_view` (crop, jitter, grey, blur, flip), `--views crop` = random
resized crop + flip (CLIP's train view), `--views none` = no views, the decoded image itself (the
pipelines' own ceiling when only the decode is left on the CPU). Views leave as uint8 CHW (converted to float on the worker).
`--photometric device` (the platform's data.photometric): MoCo-v2 views leave the read side cropped and
flipped with their drawn parameters, and each pipeline's consumer finishes them batched on `--device`
(`device_views.finish_views`); the work ceiling then covers the read side only. On a CPU that is ~45x
slower per 224 px view than OpenCV; it is meant for `--device cuda` (benchmarks/gpu_views_check.sh).

Pipelines, each with P = --procs CPU processes doing the per-sample work:
- ray:        `reader.build_dataset` (one operator: each read task decodes and preprocesses its
              shard a batch at a time; P concurrent tasks of 1 CPU) -> TorchTrainer(1 worker, 1 CPU) ->
              the training loop's batches: `shuffle.iter_shuffled_torch_batches` (a --shuffle-buffer of
              data.shuffle_buffer = 1,000 rows), or `iter_torch_batches` with --shuffle-buffer 0.
- webdataset: DataLoader(WebDataset(shards).shuffle(--shuffle-buffer).map(same per-sample work),
              num_workers=P, batch_size): webdataset's recipe, its buffer of raw samples in each worker.
- decode ceiling: P forked processes doing `decode_jpeg` only over the same JPEG bytes in memory.
- work ceiling:   P forked processes doing the same per-sample work (decode + json + two views)
                  with no framework, in memory (the most any pipeline could reach).
Throughput = source images per second (each gives two views), as whole-epoch rates: every epoch
pays its own task/worker start, as a real run does. Rates counted from each epoch's first batch are
in the JSON too, but they flatter a pipeline that runs ahead while the consumer waits for its first
batch (Ray Data does), so they are not the headline.

Side by side, in alternated rounds: the run is --rounds rounds, each a DataLoader block and a Ray
block in the order AB, BA, AB, ... Each block runs, per size, one warm-up epoch (the first pays
imports and worker start) and --epochs timed ones. A Ray block starts a local cluster and shuts it
down again, so none of Ray's processes run while the DataLoader is timed (they would take CPU from
it); the DataLoader runs in a helper process of its own (a DataLoader forked from a driver with Ray
threads is unsafe). `ratio_vs_webdataset` is the median over rounds of Ray Data's rate over the
DataLoader's rate in the same round: the machine's speed drifts by +-20% within minutes (other
tenants), and the first version of this script, all DataLoader epochs then all Ray epochs, measured
the drift as much as the pipelines. `ray_idle_cores` is the CPU Ray's own processes (GCS, raylet,
dashboard, Train's and Data's actors, idle workers) use while the Train worker waits between epochs:
Ray's fixed cost, which the DataLoader does not pay.
Preprocessing blocks are sized by output bytes as the platform sizes them (`reader.block_rows`;
--block-mb, default the platform's data.preprocess_block_mb = 64 MiB, at most 1,024 rows: 1,024 rows
at 64 px, 222 at 224 px). Ray pays ~10 ms of CPU per block, so small blocks cost throughput (128-row
blocks: 13-20% at 64 px; 55-row 224 px blocks 25% once the OpenCV views made rows cheap).
`--block-mb 0` gives 128-row blocks, the platform's size before 2026-12-07.
OMP/BLAS threads are pinned to 1 in every process (Ray does this for 1-CPU tasks; DataLoader
workers would otherwise let numpy's BLAS spawn threads, over-subscribing the cores).

Object store: the timed rounds run with Ray's default store (30% of RAM; --object-store-mb), as a
user's cluster does. A small store costs Ray throughput through spilling, not the DataLoader, which
has none: with 256 MiB, two 224 px views per image spilled 0.7-1.0 GiB per round to disk and read
0.75 of the DataLoader (2026-12-07, after the OpenCV views made the tasks 4-8x faster).
Memory: after the rounds, a cluster of its own with a small store (--memory-store-mb, 256 MiB) runs a
warm-up epoch of the 224 px set, then streams the 224 px set and a set --rss-factor times larger (18x
the store) one after the other, while a sampler records the RSS of the driver and of every Ray worker
process (children of the raylet) every 0.25 s (not during timed epochs: the sampler takes CPU too).

    python benchmarks/ingest.py --quick --out results/ingest_quick.json
    python benchmarks/ingest.py --out results/ingest.json
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy loads its BLAS

import argparse
import itertools
import json
import multiprocessing as mp
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (RSSSampler, cpu_seconds, machine, print_table, ray_process_pids, raylet_pids, start_ray,  # noqa: E402
                     write_photo_shards, write_report)

from contrastlab.platform.config import DataConfig  # noqa: E402
from contrastlab.platform.data.augment import PHOTOMETRIC_SUFFIX, hflip, moco_v2_view, random_resized_crop, to_chw  # noqa: E402
from contrastlab.platform.data.codecs import decode_jpeg  # noqa: E402
from contrastlab.platform.data.executor_poll import RAY_OWN_POLL_S, set_executor_poll  # noqa: E402
from contrastlab.platform.data.reader import block_rows, preprocess_sample  # noqa: E402
from contrastlab.platform.data.shuffle import DEFAULT_START, iter_shuffled_torch_batches  # noqa: E402

SEED = 0


def make_sample_fn(views: str, size: int, photometric: str = "reader"):
    """The per-sample work after decoding: two views at `size`, uint8 CHW (what a method's fn does).
    photometric="device": MoCo-v2 views leave their jitter/grey/blur to the consumer (data.photometric).
    views="none": no views, the decoded image leaves as it is (how close a pipeline comes to the decode
    ceiling when nothing but the decode is left on the CPU)."""

    def view(img, rng):
        if views == "moco":
            return moco_v2_view(img, size, rng, photometric=photometric)
        return hflip(random_resized_crop(img, size, rng, scale=(0.2, 1.0)), rng)

    def fn(sample: dict, rng: np.random.Generator) -> dict:
        img = sample["jpg"]
        if views == "none":  # the decoded image as it is: what views made whole on the device would leave here
            return {"image": to_chw(img)}
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


def make_wds_loader(paths: list[str], fn, batch: int, procs: int, shuffle: int = 0):
    """webdataset's recipe; `shuffle` > 0: its sample buffer of that many raw samples in each worker, before the decode."""
    import torch
    import webdataset as wds

    ds = wds.WebDataset(paths, shardshuffle=False, empty_check=False)
    if shuffle:
        ds = ds.shuffle(shuffle)
    ds = ds.map(_WdsMap(fn))
    return torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=procs, prefetch_factor=2,
                                       multiprocessing_context="fork")


def time_epoch(batches, device: str = "cpu") -> dict:
    """Wall-clock timings of one pass over an iterable of batches (wall clock: comparable across
    processes). Batches are moved to `device`, and deferred views (--photometric device) finished there
    as the platform's loop does (`device_views.finish_views`), so their cost is inside the epoch."""
    from contrastlab.platform.data.device_views import finish_views

    t0 = time.time()
    first, n, n_first = None, 0, 0
    for b in batches:
        if device != "cpu":  # both pipelines hand the step device tensors (a no-op for Ray's, already there)
            b = {k: v.to(device, non_blocking=True) if hasattr(v, "to") else v for k, v in b.items()}
        if any(k.endswith(PHOTOMETRIC_SUFFIX) for k in b):
            b = finish_views(b)
        if device != "cpu":
            torch_sync(device)
        k = len(b["index"])
        n += k
        if first is None:
            first, n_first = time.time(), k
    return {"t0": t0, "t_first": first, "t1": time.time(), "samples": n, "first_batch": n_first}


def torch_sync(device: str) -> None:
    import torch

    torch.cuda.synchronize(device)


class WebDatasetSide:
    """The DataLoader pipeline in a fresh process of its own, run one epoch at a time on request, so
    that its epochs can alternate with Ray Data's in one run. (A DataLoader forked from the driver
    would inherit Ray's threads and locks once Ray is up.) `sets` maps a name to (shard paths,
    fn spec), where the spec [module, function, args] names a function of a module in benchmarks/
    that returns the per-sample fn (the helper builds it itself: fns are closures, not picklable)."""

    def __init__(self, sets: dict[str, tuple[list[str], list]], batch: int, procs: int, device: str = "cpu", shuffle: int = 0):
        config = json.dumps({"sets": sets, "batch": batch, "procs": procs, "device": device, "shuffle": shuffle})
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--wds-helper", config],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def epoch(self, name: str) -> dict:
        self.proc.stdin.write(name + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith("EPOCH "):
                return json.loads(line[len("EPOCH "):])
        raise RuntimeError(f"the webdataset helper exited ({self.proc.wait()}) during an epoch of {name}")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def wds_helper_main(config_json: str) -> None:
    import importlib

    config = json.loads(config_json)
    loaders = {}
    for name, (paths, (module, function, fn_args)) in config["sets"].items():
        fn = getattr(importlib.import_module(module), function)(*fn_args)
        loaders[name] = make_wds_loader(paths, fn, config["batch"], config["procs"], config.get("shuffle", 0))
    for line in sys.stdin:
        print("EPOCH " + json.dumps(time_epoch(loaders[line.strip()], config["device"])), flush=True)


# --------------------------------------------------------------------------- Ray Data -> Train worker
def ingest_loop(config: dict) -> None:
    """The Train worker: iterates one epoch of a dataset, as `train_loop_per_worker` does, each time the
    driver asks (a `go_K` file naming the dataset; `stop` ends), and writes its timings to `done_K.json`."""
    import ray.train

    control = config["control"]
    shards = {name: ray.train.get_dataset_shard(name) for name in config["datasets"]}
    for k in itertools.count():
        go = os.path.join(control, f"go_{k}")
        while not os.path.exists(go):  # between epochs only: its cost lands in no timed epoch
            time.sleep(0.05)
        with open(go) as fh:
            name = fh.read().strip()
        if name == "stop":
            return
        # One Train worker runs its datasets' executor itself (no SplitCoordinator), and took the
        # data.executor_poll_s of whichever set it unpickled last: apply this set's.
        set_executor_poll(config["executor_poll_s"][name] or RAY_OWN_POLL_S)
        device = config["device"]
        # data.shuffle_buffer rows; drawn as the platform's training loop draws them (its first batch by
        # the start rule `start`), or by Ray
        shuffle, impl, start = config["shuffle"][name]
        if shuffle and impl == "platform":
            batches = iter_shuffled_torch_batches(shards[name], config["batch"], shuffle, seed=k, drop_last=False, device=device,
                                                  prefetch_batches=config["prefetch"][name], start=start)
        else:  # Ray's own local shuffle buffer (what the platform used before session 16), or none
            batches = shards[name].iter_torch_batches(batch_size=config["batch"], prefetch_batches=config["prefetch"][name], device=device,
                                                      local_shuffle_buffer_size=shuffle or None, local_shuffle_seed=k if shuffle else None)
        e = time_epoch(batches, device)
        _write_atomic(os.path.join(control, f"done_{k}.json"), json.dumps({"dataset": name, **e}))


def _write_atomic(path: str, text: str) -> None:
    with open(path + ".tmp", "w") as fh:
        fh.write(text)
    os.replace(path + ".tmp", path)


def _with_start(rows: int, impl: str, start: str = DEFAULT_START) -> tuple[int, str, str]:
    """A set's shuffle setting with the platform buffer's start rule made explicit (its default unless named)."""
    return rows, impl, start


class RaySide:
    """One TorchTrainer (1 worker, 1 CPU) over the platform's `reader.build_dataset` datasets
    (`sets`: name -> (shard paths, per-sample fn); `required_of`: name -> required members, default
    jpg + json), kept running in a driver thread and asked for one epoch at a time. Each set's epochs
    are shuffled by `shuffle_by_set[name]` = (buffer rows, "platform" | "ray"[, the platform buffer's
    start rule]), else by (`shuffle`, `shuffle_impl`); 0 rows = unshuffled. `build_by_set[name]`: keyword arguments of that set's
    `build_dataset` (e.g. its executor_poll_s, which the Train worker applies before each of its epochs);
    `prefetch_by_set[name]`: that set's prefetch_batches, else `prefetch`."""

    def __init__(self, sets: dict, batch: int, map_batch: dict, data_cpus: float, storage: str,
                 prefetch: int = DataConfig.prefetch_batches, task_buffer_mb: float = DataConfig.task_output_buffer_mb,
                 required_of: dict | None = None, block_mb: float = DataConfig.preprocess_block_mb, device: str = "cpu",
                 shuffle: int = 0, shuffle_impl: str = "platform", shuffle_by_set: dict | None = None,
                 executor_poll_s: float = DataConfig.executor_poll_s, build_by_set: dict | None = None, prefetch_by_set: dict | None = None):
        import ray.train
        from ray.train.torch import TorchTrainer

        from contrastlab.platform.data.reader import build_dataset
        from contrastlab.platform.data.split import TrainEqualEvalCompleteConfig

        build_kwargs = {name: {"executor_poll_s": executor_poll_s, **(build_by_set or {}).get(name, {})} for name in sets}
        datasets = {name: build_dataset(paths, fn, required=(required_of or {}).get(name, ("jpg", "json")), split="train", cpus=data_cpus,
                                        batch_size=map_batch[name], block_mb=block_mb, task_output_buffer_mb=task_buffer_mb, **build_kwargs[name])
                    for name, (paths, fn) in sets.items()}
        os.makedirs(storage, exist_ok=True)
        self.control = tempfile.mkdtemp(prefix="control_", dir=storage)  # fresh: stale done_K files would answer for the worker
        self.k, self.outcome = 0, {}
        self.trainer = TorchTrainer(
            ingest_loop,
            train_loop_config={"datasets": list(datasets), "batch": batch, "control": self.control, "device": device,
                               "prefetch": {name: (prefetch_by_set or {}).get(name, prefetch) for name in datasets},
                               "shuffle": {name: _with_start(*(shuffle_by_set or {}).get(name, (shuffle, shuffle_impl))) for name in datasets},
                               "executor_poll_s": {name: build_kwargs[name]["executor_poll_s"] for name in datasets}},
            scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1, **({"GPU": 1} if device != "cpu" else {})}),
            run_config=ray.train.RunConfig(name="ingest", storage_path=storage),
            datasets=datasets,
            dataset_config=TrainEqualEvalCompleteConfig(tuple(datasets)),  # as the platform splits its train set
        )
        self.thread = threading.Thread(target=self._fit, daemon=True)
        self.thread.start()

    def _fit(self) -> None:
        try:
            self.outcome["error"] = self.trainer.fit().error
        except BaseException as exc:  # noqa: BLE001 - reported by epoch()/close()
            self.outcome["error"] = exc

    def _ask(self, name: str) -> None:
        _write_atomic(os.path.join(self.control, f"go_{self.k}"), name)

    def epoch(self, name: str, timeout: float = 900.0) -> dict:
        self._ask(name)
        done, t0 = os.path.join(self.control, f"done_{self.k}.json"), time.time()
        while not os.path.exists(done):
            if not self.thread.is_alive() or time.time() - t0 > timeout:
                raise RuntimeError(f"the Train worker stopped before finishing an epoch of {name}: {self.outcome.get('error')!r}")
            time.sleep(0.1)  # the driver polls during timed Ray epochs: rarely, so it takes next to no CPU from them
        self.k += 1
        with open(done) as fh:
            return json.load(fh)

    def close(self) -> None:
        self._ask("stop")
        self.thread.join(timeout=300)
        if self.outcome.get("error"):
            raise self.outcome["error"]


def ray_block(sets: dict, names: list[str], epochs: int, storage: str, *, cpus: int, object_store_mb: int, dashboard: bool = True,
              measure_idle: bool = False, memory_sets: tuple[str, ...] = (), **side_kwargs) -> dict:
    """Start a local cluster, run a warm-up epoch and `epochs` timed epochs of each named set through
    Ray Data into one Train worker (`RaySide(sets, **side_kwargs)`), and shut the cluster down, so that
    none of Ray's processes run while the DataLoader is timed. With `measure_idle`, then measure the
    CPU Ray's processes use while the Train worker waits (Ray's fixed cost); with `memory_sets`, then
    stream each of them once more under the RSS sampler."""
    import ray

    start_ray(cpus, object_store_mb, dashboard=dashboard)
    side = RaySide(sets, storage=storage, **side_kwargs)
    out = {name: [side.epoch(name) for _ in range(1 + epochs)] for name in names}
    if measure_idle:
        time.sleep(2)
        pids = ray_process_pids()
        c0, t0 = cpu_seconds(pids), time.time()
        time.sleep(5)
        out["idle_cores"] = (cpu_seconds(pids) - c0) / (time.time() - t0)
    if memory_sets:
        with RSSSampler(raylet_pids()) as sampler:
            out["memory_epochs"] = {name: side.epoch(name) for name in memory_sets}
        out["sampler"] = sampler
    side.close()
    ray.shutdown()
    return out


def wds_block(wds_side: WebDatasetSide, names: list[str], epochs: int) -> dict:
    return {name: [wds_side.epoch(name) for _ in range(1 + epochs)] for name in names}


def alternated_rounds(rounds: int, run_ray_block, run_wds_block, names: list[str]) -> list[dict]:
    """`rounds` rounds of a DataLoader block and a Ray block, in the order AB, BA, AB, ... so that a
    drift in the machine's speed weighs on both pipelines alike. Prints each round's median rates."""
    blocks = []
    for i in range(rounds):
        block = {}
        for side in (("webdataset", "ray") if i % 2 == 0 else ("ray", "webdataset")):
            block[side] = run_ray_block(i) if side == "ray" else run_wds_block(i)
        blocks.append(block)
        print(f"round {i + 1}/{rounds}: " + ", ".join(
            f"{n} ray {median_rate(block['ray'][n]):.1f} / webdataset {median_rate(block['webdataset'][n]):.1f} per s" for n in names), flush=True)
    return blocks


def median_rate(block_epochs: list[dict]) -> float:
    """The median whole-epoch rate of a block's timed epochs (its first epoch is the warm-up)."""
    return float(np.median([rates(e)["epoch_images_per_s"] for e in block_epochs[1:]]))


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


def summarize(r: dict, blocks: list[dict], name: str) -> None:
    """Headline figures of one set: in each round, each pipeline's median timed epoch rate; the ratio
    is the median over rounds of Ray Data's rate over the DataLoader's in the same round."""
    r["rounds"] = [{side: [rates(e) for e in b[side][name]] for side in ("ray", "webdataset")} for b in blocks]
    ray_rates, wds_rates = [median_rate(b["ray"][name]) for b in blocks], [median_rate(b["webdataset"][name]) for b in blocks]
    r["ratio_rounds"] = [a / b for a, b in zip(ray_rates, wds_rates)]
    r["ratio_vs_webdataset"] = float(np.median(r["ratio_rounds"]))
    r["ray_images_per_s_median"] = ray_rate = float(np.median(ray_rates))
    r["webdataset_images_per_s_median"] = wds_rate = float(np.median(wds_rates))
    r["ratio_of_medians"] = ray_rate / wds_rate
    if "decode_ceiling_images_per_s" in r:
        r["ratio_vs_decode_ceiling"] = ray_rate / r["decode_ceiling_images_per_s"]
    r["ratio_vs_work_ceiling"] = ray_rate / r["work_ceiling_images_per_s"]
    r["webdataset_vs_work_ceiling"] = wds_rate / r["work_ceiling_images_per_s"]


def main() -> None:
    global _RAW, _FN
    if len(sys.argv) == 3 and sys.argv[1] == "--wds-helper":
        return wds_helper_main(sys.argv[2])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out")
    ap.add_argument("--views", choices=("moco", "crop", "none"), default="moco",
                    help="moco: two MoCo-v2 views; crop: two crop+flip views; none: the decoded image only (the pipelines' own "
                         "ceiling with nothing but the decode on the CPU, as if the views were made on a device)")
    ap.add_argument("--procs", type=int, default=2, help="CPU processes doing per-sample work in every pipeline")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=0, help="alternated rounds, each a DataLoader block and a Ray block (0: 5 quick, 4 full; quick epochs last ~1 s, so their ratios swing more)")
    ap.add_argument("--epochs", type=int, default=0, help="timed epochs per size in each block, after one warm-up epoch (0: 2)")
    ap.add_argument("--object-store-mb", type=int, default=0,
                    help="object store of the timed rounds' clusters (0: Ray's default, 30%% of RAM, what a user gets)")
    ap.add_argument("--memory-store-mb", type=int, default=256,
                    help="object store of the memory phase's cluster, far smaller than the sets streamed through it")
    ap.add_argument("--rss-factor", type=int, default=4, help="the large RSS set is this many times the 224 px set")
    ap.add_argument("--ray-prefetch", type=int, default=DataConfig.prefetch_batches,
                    help="prefetch_batches of the Train worker's iterator (default: the platform's data.prefetch_batches; "
                         "the DataLoader keeps prefetch_factor=2, which does not hold back its first batch)")
    ap.add_argument("--task-buffer-mb", type=float, default=DataConfig.task_output_buffer_mb,
                    help="finished blocks a read task may hold ahead of the consumer, in MiB (default: the platform's "
                         "data.task_output_buffer_mb; 0 = Ray's own default of 2 blocks)")
    ap.add_argument("--no-dashboard", action="store_true", help="start Ray without its dashboard (to measure what the dashboard's processes cost)")
    ap.add_argument("--block-mb", type=float, default=DataConfig.preprocess_block_mb,
                    help="MiB of preprocessed rows per block (default: the platform's data.preprocess_block_mb; 0: 128 rows)")
    ap.add_argument("--max-block-rows", type=int, default=DataConfig.preprocess_batch_size,
                    help="rows per block, at most (default: the platform's data.preprocess_batch_size)")
    ap.add_argument("--data-cpus", type=float, default=1.0,
                    help="CPUs per Ray Data task (1.0: --procs tasks at a time; the platform default 0.5 runs 2x--procs)")
    ap.add_argument("--photometric", choices=("reader", "device"), default="reader",
                    help="where MoCo-v2 views make their jitter/grey/blur (the platform's data.photometric): device = "
                         "the consumer finishes them batched (Train worker / DataLoader's main process) on --device")
    ap.add_argument("--device", default="cpu", help="the consumer's torch device (cuda: the Train worker gets a GPU)")
    ap.add_argument("--no-imagenet-shape", action="store_true", help="skip the 375x500 -> 224 set")
    ap.add_argument("--shuffle-buffer", type=int, default=DataConfig.shuffle_buffer,
                    help="rows of shuffle buffer in both pipelines, as a training run shuffles: the Train worker's local shuffle buffer "
                         f"(the platform's data.shuffle_buffer, default {DataConfig.shuffle_buffer}, data/shuffle.py) and webdataset's "
                         ".shuffle(N) of raw samples in each DataLoader worker; 0 = neither shuffles (the figures before session 16)")
    ap.add_argument("--executor-poll-s", type=float, default=DataConfig.executor_poll_s,
                    help="longest wait of Ray Data's executor loop for its tasks (the platform's data.executor_poll_s; 0 = Ray's own 0.1 s)")
    ap.add_argument("--ray-shuffle", choices=("platform", "ray"), default="platform",
                    help="the Train worker's shuffle: the platform's (data/shuffle.py, what training uses) or Ray's own "
                         "iter_torch_batches(local_shuffle_buffer_size=) (the platform's before session 16)")
    args = ap.parse_args()
    n64, n224, n_in = (4000, 1500, 800) if args.quick else (16000, 4000, 2400)
    # Epochs of ~1 s (quick) and ~2-3 s (full) on 2 cores. Whole-epoch rates charge each epoch its
    # start (Ray's first batch 0.45-0.56 s, most of it a read task's first whole block; the
    # DataLoader's 0.1-0.3 s); since the OpenCV views (2026-12-07)
    # made the per-sample work 3-8x cheaper, the old sets (1,500 / 400 quick) gave 0.3 s epochs that
    # measured little but that start. --quick: 5 rounds of 2 epochs.
    rounds = args.rounds or (5 if args.quick else 4)
    epochs = args.epochs or 2
    work = tempfile.mkdtemp(prefix="bench_ingest_")
    # name -> (stored JPEG size: side or (height, width), view size, images). 375x500 is ImageNet's
    # commonest shape (its mean is ~400x350): there the decode, not the views, is most of the work.
    workloads = {"64px": (64, 64, n64), "224px": (224, 224, n224)}
    if not args.no_imagenet_shape:
        workloads["375x500px_to_224"] = ((375, 500), 224, n_in)
    report = {"benchmark": "ingest", "quick": args.quick, "machine": machine(), "settings": {
        "views": args.views, "procs": args.procs, "batch": args.batch, "rounds": rounds, "epochs": epochs, "object_store_mb": args.object_store_mb or "ray default",
        "memory_store_mb": args.memory_store_mb, "images": {k: w[2] for k, w in workloads.items()}, "rss_factor": args.rss_factor,
        "ray_prefetch": args.ray_prefetch, "task_buffer_mb": args.task_buffer_mb, "block_mb": args.block_mb,
        "photometric": args.photometric, "device": args.device, "shuffle_buffer": args.shuffle_buffer,
        "ray_shuffle": args.ray_shuffle, "executor_poll_s": args.executor_poll_s}}
    print(f"load average {os.getloadavg()}; shards in {work}")

    def set_name(k):
        return "s" + k.split("px")[0]

    shards = {k: write_photo_shards(os.path.join(work, set_name(k)), n, src, per_shard=max(1, n // (2 * args.procs)),
                                    seed=src if isinstance(src, int) else src[0])
              for k, (src, _view, n) in workloads.items()}
    big = write_photo_shards(os.path.join(work, "big224"), n224 * args.rss_factor, 224,
                             per_shard=max(1, n224 * args.rss_factor // (2 * args.procs)), seed=999)
    fn_specs = {k: [args.views, view, args.photometric] for k, (_src, view, _n) in workloads.items()}
    fns = {k: make_sample_fn(*spec) for k, spec in fn_specs.items()}

    results = {}
    for k in workloads:  # the ceilings fork from this process, so they run before Ray starts
        _RAW, _FN = read_raw(shards[k]), fns[k]
        n = len(_RAW)
        results[k] = {
            "decode_ceiling_images_per_s": pool_rate(_decode_range, n, args.procs, repeats=3),
            "work_ceiling_images_per_s": pool_rate(_work_range, n, args.procs, repeats=2),
            "jpeg_kib_mean": float(np.mean([len(r["jpg"]) for r in _RAW]) / 1024),
        }
    _RAW = []

    def rows_for(view, src):  # rows per preprocessed block, as the platform sizes them: two uint8 views (or the image) + the int64 index
        h, w = (src, src) if isinstance(src, int) else src
        return block_rows((3 * h * w if args.views == "none" else 2 * 3 * view * view) + 8, args.block_mb, args.max_block_rows)

    map_batch = {set_name(k): rows_for(view, src) for k, (src, view, _n) in workloads.items()}
    map_batch["big224"] = rows_for(224, 224)
    report["settings"]["map_batch_rows"] = map_batch
    report["settings"]["data_cpus"] = args.data_cpus
    sets = {set_name(k): (shards[k], fns[k]) for k in workloads}
    sets["big224"] = (big, fns["224px"])
    names = [set_name(k) for k in workloads]
    wds_side = WebDatasetSide({set_name(k): (shards[k], ["ingest", "make_sample_fn", fn_specs[k]]) for k in workloads}, args.batch, args.procs,
                              device=args.device, shuffle=args.shuffle_buffer)
    side_kwargs = {"batch": args.batch, "map_batch": map_batch, "block_mb": args.block_mb, "data_cpus": args.data_cpus, "prefetch": args.ray_prefetch,
                   "task_buffer_mb": args.task_buffer_mb, "device": args.device,
                   "shuffle": args.shuffle_buffer, "shuffle_impl": args.ray_shuffle, "executor_poll_s": args.executor_poll_s}
    blocks = alternated_rounds(
        rounds,
        lambda i: ray_block(sets, names, epochs, os.path.join(work, f"ray{i}"), cpus=args.procs + 1, object_store_mb=args.object_store_mb,
                            dashboard=not args.no_dashboard, measure_idle=i == rounds - 1, **side_kwargs),
        lambda i: wds_block(wds_side, names, epochs), names)
    wds_side.close()
    # Memory on a cluster of its own with a small store: after one warm-up epoch of the 224 px set, the
    # 224 px set and the large one are streamed under the RSS sampler.
    last = ray_block(sets, ["s224"], 0, os.path.join(work, "ray_memory"), cpus=args.procs + 1, object_store_mb=args.memory_store_mb,
                     dashboard=not args.no_dashboard, memory_sets=("s224", "big224"), **side_kwargs)
    for k in workloads:
        summarize(results[k], blocks, set_name(k))
    report["ray_idle_cores"] = blocks[-1]["ray"]["idle_cores"]

    rows = [{"set": k, "images": workloads[k][2], "ray img/s": r["ray_images_per_s_median"], "wds img/s": r["webdataset_images_per_s_median"],
             "decode ceil": r["decode_ceiling_images_per_s"], "work ceil": r["work_ceiling_images_per_s"],
             "ray/wds": r["ratio_vs_webdataset"], "per round": " ".join(f"{x:.2f}" for x in r["ratio_rounds"]),
             "ray/decode": r["ratio_vs_decode_ceiling"], "ray/work": r["ratio_vs_work_ceiling"],
             "wds/work": r["webdataset_vs_work_ceiling"]} for k, r in results.items()]
    print()
    print_table(rows, list(rows[0]))
    print(f"Ray's processes while the Train worker waits between epochs: {report['ray_idle_cores']:.3f} cores")

    # memory: an epoch of the 224 px set vs one of the large set, on the small-store cluster
    view_bytes = 2 * 3 * 224 * 224
    mem = {"object_store_mb": args.memory_store_mb, "sets": {}}
    sampler = last["sampler"]
    for name, e in last["memory_epochs"].items():
        mem["sets"][name] = {"images": e["samples"], "preprocessed_mib": e["samples"] * view_bytes / 2**20,
                             "peak_rss_mib": rss_roles(sampler.peaks(e["t0"], e["t1"]), sampler, e["t0"], e["t1"])}
    small, large = mem["sets"]["s224"]["peak_rss_mib"], mem["sets"]["big224"]["peak_rss_mib"]
    mem["growth_ratio_large_vs_small"] = {k: large[k] / small[k] for k in large if small.get(k)}
    mrows = [{"process": k, f"s224 ({mem['sets']['s224']['preprocessed_mib']:.0f} MiB out)": small.get(k),
              f"big224 ({mem['sets']['big224']['preprocessed_mib']:.0f} MiB out)": large.get(k),
              "large/small": mem["growth_ratio_large_vs_small"].get(k)} for k in large]
    print(f"\npeak RSS (MiB) while streaming, object store {args.memory_store_mb} MiB")
    print_table(mrows, list(mrows[0]))

    report["results"] = results
    report["memory"] = mem
    for key in ("ratio_vs_webdataset", "ratio_rounds", "ratio_vs_decode_ceiling", "ratio_vs_work_ceiling"):
        report[key] = {k: results[k][key] for k in workloads}
    write_report(args.out, report)


if __name__ == "__main__":
    main()
