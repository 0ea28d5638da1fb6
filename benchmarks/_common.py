"""Shared helpers for the platform benchmarks (ingest, step_overhead, sweep_packing, scaling).

Machine description, table printing, JSON output, JPEG shards cut from real photos, a local Ray
start for benchmarks, and a sampler of the resident memory of a Ray cluster's processes.
"""
from __future__ import annotations

import json
import os
import platform
import threading
import time
from typing import Iterable

import sys

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:  # `python benchmarks/x.py` from anywhere, and Ray workers (PYTHONPATH)
    sys.path.insert(0, REPO_ROOT)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (REPO_ROOT, os.environ.get("PYTHONPATH", "")) if p)


def machine() -> dict:
    import torch

    return {
        "cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
        "ray": _version("ray"), "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
        "host": platform.node(), "processor": platform.processor() or platform.machine(),
    }


def _version(name: str) -> str:
    try:
        return __import__(name).__version__
    except Exception:  # noqa: BLE001
        return "?"


def print_table(rows: list[dict], columns: list[str]) -> None:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.0f}"
        return "" if v is None else str(v)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def write_report(path: str | None, report: dict) -> None:
    report.setdefault("machine", {})["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as fh:
            json.dump(report, fh, indent=2, default=str)
        print(f"wrote {path}")


# --------------------------------------------------------------------------- real images -> shards
def photo_crops(n: int, size: int | tuple[int, int], seed: int = 0) -> Iterable[np.ndarray]:
    """`n` random crops (height 1/4..full height) of sklearn's two sample photos, resized to size x size
    or to (height, width) = size, the crop taking the aspect of the result."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images  # china.jpg, flower.jpg: 427 x 640 RGB, shipped with sklearn
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = photos[i % len(photos)]
        h, w = img.shape[:2]
        out_h, out_w = (size, size) if isinstance(size, int) else size
        side = int(rng.integers(h // 4, h + 1))
        side_w = min(w, round(side * out_w / out_h))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side_w + 1))
        crop = Image.fromarray(img[y : y + side, x : x + side_w]).resize((out_w, out_h), Image.BILINEAR)
        yield np.asarray(crop)


def write_photo_shards(directory: str, n: int, size: int | tuple[int, int], per_shard: int, seed: int = 0, prefix: str = "bench") -> list[str]:
    """JPEG (quality 90) + json shards written with the platform's `write_shards`."""
    from contrastlab.platform.data.codecs import encode_jpeg
    from contrastlab.platform.data.shards import write_shards

    samples = ((f"{i:07d}", {"jpg": encode_jpeg(img), "json": {"index": i}}) for i, img in enumerate(photo_crops(n, size, seed)))
    return write_shards(samples, directory, prefix=prefix, maxcount=per_shard)


# --------------------------------------------------------------------------- Ray
def start_ray(num_cpus: int, object_store_mb: int | None = None, dashboard: bool = True) -> None:
    """A local cluster for a benchmark: 127.0.0.1, no auth token, no progress bars."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    from contrastlab.platform.runner import use_full_priority_workers

    use_full_priority_workers()  # as the platform's own clusters: workers at niceness 0, not Ray's 15
    import ray

    kwargs = {"object_store_memory": object_store_mb * 2**20} if object_store_mb else {}
    # address="local": a new cluster even where another one (e.g. a cluster_utils head) is registered on this host
    ray.init(address="local", num_cpus=num_cpus, dashboard_host="127.0.0.1", include_dashboard=dashboard, log_to_driver=True, **kwargs)
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False


def raylet_pids() -> list[int]:
    """Process ids of this driver's raylet(s); Ray worker processes are their children."""
    import ray._private.worker as w

    node = w._global_node
    pids = []
    for info in node.all_processes.get("raylet", []):
        pids.append(info.process.pid)
    return pids


def _proc_status(pid: int) -> tuple[str, int] | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            title = fh.read().split(b"\0")[0].decode(errors="replace")
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return title, int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


def ray_process_pids() -> list[int]:
    """Every process of this driver's local cluster (GCS, raylet, dashboard, their agents, and all
    Ray workers), the driver excluded."""
    import ray._private.worker as w

    todo = [info.process.pid for infos in w._global_node.all_processes.values() for info in infos]
    seen: set[int] = set()
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo.extend(_children(pid))
    seen.discard(os.getpid())
    return sorted(seen)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the given live processes have used so far (/proc/PID/stat)."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / tick


class RSSSampler:
    """Samples every `interval` s the RSS of this process and of every child of the given raylets
    (the Ray worker processes: Train workers, Ray Data tasks, controller actors). Keeps
    (time, pid, title, rss) samples so that peaks can be taken over any time window."""

    def __init__(self, parents: list[int], interval: float = 0.25):
        self.parents, self.interval = parents, interval
        self.samples: list[tuple[float, int, str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            now = time.time()
            pids = [me] + [c for p in self.parents for c in _children(p)]
            for pid in pids:
                st = _proc_status(pid)
                if st:
                    self.samples.append((now, pid, "driver" if pid == me else st[0], st[1]))
            self._stop.wait(self.interval)

    def __enter__(self) -> "RSSSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def peaks(self, t0: float, t1: float) -> dict[int, tuple[str, int]]:
        """{pid: (last title seen, peak RSS bytes)} over [t0, t1]."""
        out: dict[int, tuple[str, int]] = {}
        for t, pid, title, rss in self.samples:
            if t0 <= t <= t1:
                prev = out.get(pid, (title, 0))[1]
                out[pid] = (title, max(prev, rss))
        return out


def loop_epoch(ctx, train_batches: list) -> dict:
    """One epoch of the platform's shared loop (`train.run_epochs`) over in-memory batches, with
    evaluation stubbed out (it is not a step) and the loop's prints swallowed; its metrics."""
    import contextlib
    import io

    from contrastlab.platform.train import run_epochs

    def batches(split, shuffle=False, epoch=0, drop_last=False):
        return iter(train_batches if split == "train" else [])

    ctx.method.evaluate = lambda *a, **k: {}
    ctx.exp.train.epochs = 1
    with contextlib.redirect_stdout(io.StringIO()):
        return run_epochs(ctx, batches, lambda *a, **k: None, start_epoch=0)[-1]


def _call_star(item):
    fn, args = item
    return fn(*args)


def run_jobs(fn, jobs: list[tuple], parallel: int = 1, on_result=None) -> list:
    """`fn(*job)` for every job (a tuple of arguments), `parallel` at a time in spawned processes
    (1 = in this process); `on_result(result)` as each finishes (to write results as they come).
    Results in finishing order.

    For comparisons with many independent runs: on a GPU box with many cores, `--jobs 9 --device
    cuda` runs every (arm, seed) at once on one GPU; `fn` must be a module-level function."""
    results = []
    if parallel > 1 and len(jobs) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(min(parallel, len(jobs))) as pool:
            for result in pool.imap_unordered(_call_star, [(fn, job) for job in jobs]):
                results.append(result)
                if on_result is not None:
                    on_result(result)
    else:
        for job in jobs:
            result = fn(*job)
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results


def load_decoded_samples(paths: list[str], limit: int | None = None) -> list[dict]:
    """Samples of local shards with their members decoded as the platform's reader does (in this
    process, no Ray), for benchmarks that time or train on a method's sample function directly."""
    from contrastlab.platform.data.reader import decode_member, iter_tar_samples

    samples: list[dict] = []
    for path in paths:
        with open(path, "rb") as fh:
            for raw in iter_tar_samples(fh, path, "raise"):
                samples.append({"__key__": raw["__key__"], **{k: decode_member(k, v) for k, v in raw.items() if not k.startswith("__")}})
                if limit is not None and len(samples) >= limit:
                    return samples
    return samples
