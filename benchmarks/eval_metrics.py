"""Benchmark of the chunked evaluation metrics: weighted kNN and image-text retrieval recall.

Random clustered features (10 classes, 512-d) stand in for a frozen encoder's output:
    kNN:       100,000 train x 10,000 test rows (quick: 20,000 x 2,000)
    retrieval: 100,000 captions of 20,000 images, 5 each (quick: 20,000 captions of 4,000 images)
For each call it records wall seconds, the peak resident-memory growth during the call (Linux
VmHWM reset through /proc/self/clear_refs, else the getrusage peak, a lower bound), the chunk
size and the size of one similarity block, and the metric values, prints a table and writes JSON.

    python benchmarks/eval_metrics.py --quick --out results/eval_metrics_quick.json
    python benchmarks/eval_metrics.py --out results/eval_metrics.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time

import numpy as np
import torch

from contrastlab.platform.eval import knn_accuracy, retrieval_recall


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) to the current RSS; False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure(fn):
    """(result, wall seconds, peak RSS growth in MiB, how the peak was measured)."""
    if _reset_peak() and _status_kib("VmHWM") is not None:
        before = _status_kib("VmRSS")
        t0 = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - t0
        return result, seconds, (_status_kib("VmHWM") - before) / 1024, "VmHWM"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    return result, seconds, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024, "ru_maxrss (lower bound)"


def clustered(n: int, centers: torch.Tensor, spread: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.randint(len(centers), (n,), generator=gen)
    return centers[labels] + spread * torch.randn(n, centers.shape[1], generator=gen), labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="20,000-row sizes instead of 100,000")
    ap.add_argument("--out", help="write the results as JSON to this file")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--knn-chunk", type=int, default=256, help="test rows per similarity block")
    ap.add_argument("--retrieval-chunk", type=int, default=256, help="images per similarity block")
    ap.add_argument("--captions-per-image", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    n_train = 20_000 if args.quick else 100_000
    n_test = n_train // 10
    n_captions = n_train
    n_images = n_captions // args.captions_per_image
    gen = torch.Generator().manual_seed(args.seed)
    # Class centers of norm ~1; noise norms chosen so that accuracies are well below 1
    # (kNN: noise norm 7 per sample; retrieval: images = center + noise of norm 2, captions = their
    # image + noise of norm 15, so a caption is closer to its own image than to its classmates').
    centers = torch.randn(args.classes, args.dim, generator=gen) / args.dim**0.5
    rows = []

    train, train_y = clustered(n_train, centers, 7.0 / args.dim**0.5, gen)
    test, test_y = clustered(n_test, centers, 7.0 / args.dim**0.5, gen)
    acc, sec, mib, how = measure(lambda: knn_accuracy(train, train_y, test, test_y, k=200, temperature=0.1, chunk_size=args.knn_chunk))
    rows.append({
        "metric": "knn_accuracy", "sizes": f"{n_train}x{args.dim} train, {n_test} test", "k": 200,
        "chunk_size": args.knn_chunk, "block_mib": args.knn_chunk * n_train * 4 / 2**20,
        "features_mib": (n_train + n_test) * args.dim * 4 / 2**20,
        "seconds": sec, "peak_rss_growth_mib": mib, "peak_measured_by": how, "values": {"top1": acc},
    })
    del train, test, train_y, test_y

    images, _ = clustered(n_images, centers, 2.0 / args.dim**0.5, gen)
    owner = torch.arange(n_images).repeat_interleave(args.captions_per_image)
    captions = images[owner] + 15.0 / args.dim**0.5 * torch.randn(n_captions, args.dim, generator=gen)
    rec, sec, mib, how = measure(lambda: retrieval_recall(images, captions, owner, ks=(1, 5, 10), chunk_size=args.retrieval_chunk))
    rows.append({
        "metric": "retrieval_recall", "sizes": f"{n_captions}x{args.dim} captions, {n_images} images",
        "k": "1,5,10", "chunk_size": args.retrieval_chunk, "block_mib": args.retrieval_chunk * n_captions * 4 / 2**20,
        "features_mib": (n_captions + n_images) * args.dim * 4 / 2**20,
        "seconds": sec, "peak_rss_growth_mib": mib, "peak_measured_by": how, "values": rec,
    })

    print(f"{'metric':<17} {'sizes':<36} {'chunk':>6} {'block MiB':>10} {'feats MiB':>10} {'seconds':>8} {'peak +MiB':>10}  values")
    for r in rows:
        vals = ", ".join(f"{k}={v:.3f}" for k, v in r["values"].items())
        print(f"{r['metric']:<17} {r['sizes']:<36} {r['chunk_size']:>6} {r['block_mib']:>10.1f} {r['features_mib']:>10.1f} "
              f"{r['seconds']:>8.2f} {r['peak_rss_growth_mib']:>10.1f}  {vals}")
    report = {
        "benchmark": "eval_metrics",
        "quick": args.quick,
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version(), "load_avg_1m": os.getloadavg()[0]},
        "results": rows,
    }
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
