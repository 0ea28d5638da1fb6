"""MoCo without FAME vs MoCo with FAME on the debiased test split of `moving-shapes` (card fame.md g).

    # the full comparison (card g: ~1,200 training videos, 30 epochs, batch 32, 3 seeds x 2 arms)
    python benchmarks/fame_comparison.py --out fame_comparison.json --seeds 0 1 2
    # on a GPU box: all 6 runs at once on one GPU (video decoding stays on the CPU cores)
    python benchmarks/fame_comparison.py --out fame_comparison.json --seeds 0 1 2 --device cuda --jobs 6

    # plumbing check: 240 videos, 3 epochs
    python benchmarks/fame_comparison.py --quick --out /tmp/fame_quick.json --seeds 0 1

Cost: one 30-epoch run on 1,200 videos takes about 4 min with two runs at a time on the quiet 2-core
machine (decoded videos are cached per run, `method.decode_cache`), so the full comparison is about
15 minutes there with `--jobs 2`.

Each arm is one `run_local("fame", ...)` with identical data, budget (epochs x steps, batch) and
seeds; the arms differ only in `method.use_fame` (false = the MoCo baseline: the query is the plain
clip). Evaluation (the method's own `evaluate`, once at the end): frozen backbone features (mean of
`eval_clips` centre-cropped clips), a logistic-regression probe fit on the background-biased
training split and scored on the test split whose backgrounds are independent of the class
(`probe_top1`), test->train class retrieval R@1/5/10 with per-set centring, and a background-family
probe (`bg_probe_top1`, lower = less background in the features) and a diagnostic probe fit and
scored within the test split (`probe_test_halves_top1`: is the class in the features at all). Mean +- sample std (ddof=1) over
seeds. The card's success criterion: FAME ahead by >= 10 points of probe top-1 and >= 5 points of R@1.

Also measured and printed: clips/s of the per-sample CPU work (MP4 decode + clip sampling + crop/flip)
of the train and eval sample functions on this machine, one process, no decode cache.

Results are written to --out after every run; rerunning with the same --out skips finished runs
(--fresh starts over).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root, for a plain checkout

import numpy as np  # noqa: E402
from _common import load_decoded_samples, run_jobs  # noqa: E402

METRICS = ("probe_top1", "retrieval_r1", "retrieval_r5", "retrieval_r10", "bg_probe_top1", "probe_test_halves_top1")
ARMS = {"moco": "false", "fame": "true"}


def measure_sample_fn(paths: list[str], n: int = 200) -> dict[str, float]:
    """clips/s of the train sample fn (2 clips per video) and the eval sample fn (eval_clips per video)."""
    import torch  # noqa: F401 - keep import cost out of the timing

    from contrastlab.methods.fame.data import make_sample_fn
    from contrastlab.methods.fame.method import FAMEConfig
    from contrastlab.platform.data.reader import sample_rng

    samples = load_decoded_samples(paths, limit=n)
    cfg = FAMEConfig()
    out = {"videos": len(samples)}
    for split, clips_per_video in (("train", 2), ("eval", cfg.eval_clips)):
        fn = make_sample_fn(cfg, split)
        t0 = time.perf_counter()
        for s in samples:
            fn(s, sample_rng(0, 0, s["__key__"]))
        dt = time.perf_counter() - t0
        out[f"{split}_clips_per_s"] = clips_per_video * len(samples) / dt
        out[f"{split}_videos_per_s"] = len(samples) / dt
    return out


def data_params(args) -> str:
    extra = f", {args.data_params}" if args.data_params else ""
    return f"n_train: {args.n_train}, n_test: {args.n_test}{extra}"


def run_arm(arm: str, seed: int, args) -> dict:
    import torch

    from contrastlab.platform.local import run_local

    torch.set_num_threads(args.threads)
    sets = [
        f"run.seed={seed}", f"method.use_fame={ARMS[arm]}", f"train.epochs={args.epochs}", f"train.eval_every_epochs={args.epochs}",
        f"train.batch_size={args.batch_size}", f"data.embedded_params={{{data_params(args)}}}",
        f"method.backbone={args.backbone}", f"method.decode_cache={args.n_train + args.n_test}", *args.set,
    ]
    t0 = time.perf_counter()
    result = run_local("fame", sets, quiet=True, device=args.device)
    last = result.history[-1]
    return {"arm": arm, "seed": seed, **{m: last.get(m) for m in METRICS}, "train_loss": last.get("train_loss"),
            "steps": last.get("step"), "wall_s": time.perf_counter() - t0, "sets": sets}


def summarise(runs: list[dict]) -> dict:
    summary = {}
    for arm in ARMS:
        rows = [r for r in runs if r["arm"] == arm]
        if not rows:
            continue
        summary[arm] = {}
        for m in METRICS:
            vals = [r[m] for r in rows if r.get(m) is not None]
            if vals:
                summary[arm][m] = {"mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0, "n": len(vals)}
    if "moco" in summary and "fame" in summary:
        d = lambda m: summary["fame"][m]["mean"] - summary["moco"][m]["mean"]  # noqa: E731
        summary["fame_minus_moco"] = {m: d(m) for m in METRICS if m in summary["fame"] and m in summary["moco"]}
        gaps = summary["fame_minus_moco"]
        summary["card_g_criterion_met"] = bool(gaps.get("probe_top1", 0) >= 0.10 and gaps.get("retrieval_r1", 0) >= 0.05)
    return summary


def print_table(summary: dict, throughput: dict | None) -> None:
    head = f"{'arm':<6}" + "".join(f"{m:>22}" for m in METRICS)
    print(head)
    for arm in ARMS:
        if arm in summary:
            cells = "".join(f"{summary[arm][m]['mean'] * 100:>13.1f} ± {summary[arm][m]['std'] * 100:<5.1f}" if m in summary[arm] else f"{'-':>22}"
                            for m in METRICS)
            print(f"{arm:<6}{cells}")
    if "fame_minus_moco" in summary:
        print("fame - moco (points): " + ", ".join(f"{m} {v * 100:+.1f}" for m, v in summary["fame_minus_moco"].items()))
        print(f"card g criterion (>= +10 probe top-1 and >= +5 R@1): {'met' if summary['card_g_criterion_met'] else 'NOT met'}")
    if throughput:
        print(f"sample_fn throughput (decode + clip sampling + crop/flip, 1 process, no cache, {throughput['videos']} videos): "
              f"train {throughput['train_clips_per_s']:.0f} clips/s ({throughput['train_videos_per_s']:.0f} videos/s, 2 clips each), "
              f"eval {throughput['eval_clips_per_s']:.0f} clips/s")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="fame_comparison.json")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--quick", action="store_true", help="240 videos, 3 epochs: a plumbing check, not a result")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--n-test", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--backbone", default="small")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--data-params", default="", help="extra moving-shapes generator params, e.g. 'blob_size: 10, n_frames: 32'")
    p.add_argument("--set", action="append", default=[], help="extra --set overrides for both arms")
    p.add_argument("--fresh", action="store_true")
    p.add_argument("--device", default="cpu", help="cuda: every run on the GPU")
    p.add_argument("--jobs", type=int, default=1, help="runs at once (processes); e.g. 6 on a GPU box")
    args = p.parse_args(argv)
    args.epochs = args.epochs or (3 if args.quick else 30)
    args.n_train = args.n_train or (240 if args.quick else 1200)
    args.n_test = args.n_test or (120 if args.quick else 600)

    from contrastlab.platform.datasets import ensure_dataset

    import yaml

    ds = ensure_dataset("moving-shapes", **yaml.safe_load("{" + data_params(args) + "}"))
    done = []
    if os.path.exists(args.out) and not args.fresh:
        done = json.load(open(args.out)).get("runs", [])
    throughput = measure_sample_fn(ds.splits["train"])
    config = {k: v for k, v in vars(args).items() if k not in ("out", "fresh", "jobs", "device")}

    def record(row: dict) -> None:
        row["config"] = config
        done.append(row)
        print(f"{row['arm']} seed {row['seed']}: " + ", ".join(f"{m} {row[m]:.3f}" for m in METRICS if row[m] is not None)
              + f" ({row['wall_s']:.0f} s)", flush=True)
        with open(args.out, "w") as fh:
            json.dump({"runs": done, "throughput": throughput}, fh, indent=1)

    jobs = [(arm, seed, args) for seed in args.seeds for arm in ARMS
            if not any(r["arm"] == arm and r["seed"] == seed and r.get("config") == config for r in done)]
    run_jobs(run_arm, jobs, args.jobs, record)
    runs = [r for r in done if r.get("config") == config]
    summary = summarise(runs)
    with open(args.out, "w") as fh:
        json.dump({"runs": done, "throughput": throughput, "summary": summary}, fh, indent=1)
    print_table(summary, throughput)
    return 0


if __name__ == "__main__":
    sys.exit(main())
