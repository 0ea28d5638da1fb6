"""SCALE comparison on the embedded fashion-products data (method card scale.md, section g), to JSON.

    # full (card g: 4K train / 1K test products, batch 64, ~1,500 steps = 24 epochs, 3 seeds, 3 arms)
    python benchmarks/scale_comparison.py --out scale_comparison.json --seeds 0 1 2
    # on a GPU box: all 9 runs at once on one GPU
    python benchmarks/scale_comparison.py --out scale_comparison.json --seeds 0 1 2 --device cuda --jobs 9
    # plumbing check: 512 / 256 products, 2 epochs of 8 steps
    python benchmarks/scale_comparison.py --quick --out /tmp/scale_quick.json --seeds 0 1 2

Arms (same data, model, optimiser, batch, steps; only the weighting differs):
- unweighted:     graph_weighting=off, mask_weighting=false (plain 10-pair NT-Xent + masked tasks)
- scale:          graph_weighting=official, mask_weighting=true (self-harmonised weights, gradient through G)
- scale-detached: graph_weighting=detached, mask_weighting=true (the card's sanctioned ablation)

Each arm runs in-process with `run_local` (the platform loop without Ray). Metrics per run (the last
epoch's `evaluate`): retrieval mAP@10 and Prec@10 on the fused (tpiva) embedding with the category as
relevance (leave-one-out on the test split), the fused and per-modality linear-probe accuracies, and
the graph statistics: g_audio_noise / g_audio_clean (mean pair weight G[audio, .] on eval samples whose
audio is pure noise vs spoken), g_audio_gap = clean - noise (> 0: SCALE down-weights the noise audio),
g_offdiag (collapse monitor, card i). In the unweighted arm G is only measured, never trained through.
Prints mean ± sample std over seeds and the card's success checks. Results are written after every run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root, for a plain checkout

import numpy as np  # noqa: E402
from _common import run_jobs  # noqa: E402

ARMS = {
    "unweighted": ["method.graph_weighting=off", "method.mask_weighting=false"],
    "scale": ["method.graph_weighting=official", "method.mask_weighting=true"],
    "scale-detached": ["method.graph_weighting=detached", "method.mask_weighting=true"],
}
METRICS = ("map_at_10", "prec_at_10", "probe_fused", "probe_text", "probe_image", "probe_table", "probe_video", "probe_audio",
           "g_audio_noise", "g_audio_clean", "g_audio_gap", "g_offdiag", "train_clr_acc")


def run_arm(arm: str, seed: int, args) -> dict:
    import torch

    from contrastlab.platform.local import run_local

    torch.set_num_threads(args.threads)
    sets = [
        f"run.seed={seed}", f"train.epochs={args.epochs}", f"train.batch_size={args.batch_size}", "method.probe=last",
        f"data.embedded_params={{n_train: {args.n_train}, n_test: {args.n_test}}}", f"method.probe_max_train={args.n_train}",
        *ARMS[arm], *args.set,
    ]
    start = time.time()
    result = run_local("scale", sets, quiet=True, device=args.device)
    last = result.history[-1]
    return {"arm": arm, "seed": seed, "seconds": time.time() - start, "steps": int(last.get("step", 0)), "sets": sets,
            **{k: float(last[k]) for k in METRICS if k in last}}


def summarise(runs: list[dict]) -> dict:
    out = {}
    for arm in ARMS:
        rows = [r for r in runs if r["arm"] == arm]
        if not rows:
            continue
        out[arm] = {}
        for k in METRICS:
            vals = np.array([r[k] for r in rows if k in r], dtype=float)
            if len(vals):
                out[arm][k] = {"mean": float(np.nanmean(vals)), "std": float(np.nanstd(vals, ddof=1)) if len(vals) > 1 else 0.0,
                               "n": int(len(vals))}
    checks = {}
    if "scale" in out and "unweighted" in out:
        s, u = out["scale"], out["unweighted"]
        checks["scale_beats_unweighted_map10"] = s["map_at_10"]["mean"] > u["map_at_10"]["mean"]
        if "probe_fused" in s and "probe_fused" in u:
            checks["scale_beats_unweighted_probe"] = s["probe_fused"]["mean"] > u["probe_fused"]["mean"]
        gap = s["g_audio_gap"]
        # G[audio, .] lower on noise-audio samples than on clean ones, by more than one std over seeds
        checks["scale_downweights_noise_audio"] = gap["mean"] > 0 and gap["mean"] - gap["std"] > 0
        checks["scale_offdiag_not_collapsed"] = s["g_offdiag"]["mean"] > 0.05
    out["checks"] = checks
    return out


def print_table(summary: dict) -> None:
    cols = ("map_at_10", "probe_fused", "g_audio_noise", "g_audio_clean", "g_audio_gap", "g_offdiag")
    print(f"{'arm':<16}" + "".join(f"{c:>22}" for c in cols))
    for arm in ARMS:
        if arm not in summary:
            continue
        cells = []
        for c in cols:
            v = summary[arm].get(c)
            cells.append(f"{v['mean']:.4f} ± {v['std']:.4f}".rjust(22) if v else "-".rjust(22))
        print(f"{arm:<16}" + "".join(cells))
    for k, v in summary.get("checks", {}).items():
        print(f"{k}: {v}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="JSON file for the per-run results and the summary")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--quick", action="store_true", help="512/256 products, 2 epochs: a plumbing check")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--epochs", type=int, default=None, help="default 24 (~1,500 steps at 4K/64), 2 with --quick")
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--n-test", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--set", nargs="*", default=[], help="extra --set overrides for every arm, e.g. method.missing=mask")
    p.add_argument("--fresh", action="store_true", help="ignore runs already in --out")
    p.add_argument("--device", default="cpu", help="cuda: every run on the GPU")
    p.add_argument("--jobs", type=int, default=1, help="runs at once (processes); e.g. 9 on a GPU box")
    args = p.parse_args(argv)
    args.epochs = args.epochs or (2 if args.quick else 24)
    args.n_train = args.n_train or (512 if args.quick else 4000)
    args.n_test = args.n_test or (256 if args.quick else 1000)

    runs = []
    if os.path.exists(args.out) and not args.fresh:
        with open(args.out) as fh:
            runs = json.load(fh).get("runs", [])
    done = {(r["arm"], r["seed"]) for r in runs}
    config = {k: v for k, v in vars(args).items() if k not in ("out", "jobs", "device")}

    def record(r: dict) -> None:
        runs.append(r)
        print(f"{r['arm']} seed {r['seed']}: map@10 {r.get('map_at_10', float('nan')):.4f} probe {r.get('probe_fused', float('nan')):.4f} "
              f"g_audio noise/clean {r.get('g_audio_noise', float('nan')):.4f}/{r.get('g_audio_clean', float('nan')):.4f} "
              f"({r['seconds']:.0f} s, {r['steps']} steps)", flush=True)
        with open(args.out, "w") as fh:
            json.dump({"config": config, "runs": runs, "summary": summarise(runs)}, fh, indent=2)

    from contrastlab.platform.datasets import ensure_dataset

    ensure_dataset("fashion-products", n_train=args.n_train, n_test=args.n_test)  # once, before worker processes start
    jobs = [(arm, seed, args) for seed in args.seeds for arm in args.arms if (arm, seed) not in done]
    run_jobs(run_arm, jobs, args.jobs, record)
    summary = summarise(runs)
    with open(args.out, "w") as fh:
        json.dump({"config": config, "runs": runs, "summary": summary}, fh, indent=2)
    print_table(summary)


if __name__ == "__main__":
    main()
