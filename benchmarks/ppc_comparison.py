"""CAM baseline (SEAM-lite) vs CAM + PPC on the embedded fashion-scenes data (card g), written to JSON.

    # the card's small-scale protocol: 15 epochs, batch 16, 1,500 training scenes, 300 val scenes, 3 seeds
    python benchmarks/ppc_comparison.py --out ppc_comparison.json --seeds 0 1 2

    # plumbing check with the smallest settings (tiny net, 2 epochs on 160 scenes, 2 seeds)
    python benchmarks/ppc_comparison.py --quick --out /tmp/ppc_quick.json --seeds 0 1

What runs: `run_local("ppc", ...)` (the platform loop in-process, no Ray) once per (arm, seed),
with the same data, network, optimiser, schedule, batch and number of steps in both arms; the
arms differ only in `method.use_ppc` (false = the CAM baseline: L_cls + L_er + L_ecr; true = + L_nce).
`run.seed` sets the initial weights, the data order and augmentation; the dataset itself is
generated with seed 0 for every run (the same scenes for every arm and seed).

Metrics, from the method's `evaluate` on the `val` split after the last epoch: CAM seed mIoU at the
best background threshold of t = 0.00 ... 0.59 (flip inference, cam_rv, mIoU over background + the
4 classes), its threshold, per-class IoU, and the pixel-embedding class separation (mean intra-class
minus mean inter-class cosine of class mean embeddings, on backbone features and on the projection
head) the card asks for. Aggregates: mean and sample std (ddof=1) over seeds, and the paired
difference PPC - baseline per seed. The card's "working" criterion: PPC >= baseline + 3 mIoU points
(mean over 3 seeds) and higher separation.

Extra `--set key=value` overrides go to both arms (e.g. `--set method.backbone=resnet18 --set
method.output_stride=8`). Results are appended to --out after every run; rerunning with the same
--out skips finished runs (pass --fresh to start over). Cost: on a shared 2-core machine one step
of batch 16 of the default network takes about 0.3-1 s, so the full protocol (6 runs x 1,410
steps) takes roughly 1-2.5 hours; use a GPU with `--device cuda` to make it minutes.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root, for a plain checkout

import numpy as np  # noqa: E402

ARMS = {"baseline": ["method.use_ppc=false"], "ppc": ["method.use_ppc=true"]}
HEADLINE = ("seed_miou", "seed_threshold", "feat_separation", "emb_separation")
QUICK = ["method.cnn_width=8", "method.cnn_dim=32", "method.pcm_dim=16", "method.proj_dim=16"]


def run_one(arm: str, seed: int, args) -> dict:
    import torch

    from contrastlab.platform.local import run_local

    torch.set_num_threads(args.threads)
    sets = [f"train.epochs={args.epochs}", f"train.batch_size={args.batch_size}", f"run.seed={seed}",
            f"data.embedded_params={{n_train: {args.n_train}, n_val: {args.n_val}}}", "method.log_images=0"]
    sets += (QUICK if args.quick else []) + ARMS[arm] + list(args.set)
    t0 = time.time()
    r = run_local("ppc", sets, device=args.device, quiet=True)
    last = r.history[-1]
    metrics = {k: v for k, v in last.items() if isinstance(v, (int, float)) and (k in HEADLINE or k.startswith(("iou_", "train_loss")))}
    return {"arm": arm, "seed": seed, "sets": sets, "wall_s": round(time.time() - t0, 1), "metrics": metrics,
            "curve": [h.get("seed_miou") for h in r.history]}


def mean_std(values: list[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def summarise(runs: list[dict], seeds: list[int]) -> dict:
    summary = {}
    for arm in ARMS:
        rows = [r for r in runs if r["arm"] == arm and r["seed"] in seeds]
        if rows:
            keys = sorted({k for r in rows for k in r["metrics"]})
            summary[arm] = {k: mean_std([r["metrics"][k] for r in rows if k in r["metrics"]]) for k in keys}
            summary[arm]["n_seeds"] = len(rows)
    paired = []
    for s in seeds:
        by_arm = {r["arm"]: r for r in runs if r["seed"] == s}
        if set(by_arm) >= set(ARMS):
            paired.append({k: by_arm["ppc"]["metrics"][k] - by_arm["baseline"]["metrics"][k] for k in HEADLINE})
    if paired:
        summary["ppc_minus_baseline"] = {k: mean_std([p[k] for p in paired]) for k in HEADLINE}
        gain = summary["ppc_minus_baseline"]["seed_miou"][0]
        summary["card_criterion"] = {
            "miou_gain_points": 100 * gain,
            "gain_at_least_3_points": bool(100 * gain >= 3.0),
            "feat_separation_higher": bool(summary["ppc_minus_baseline"]["feat_separation"][0] > 0),
        }
    return summary


def print_table(summary: dict) -> None:
    print(f"{'arm':10s} " + " ".join(f"{k:>22s}" for k in HEADLINE))
    for arm in list(ARMS) + ["ppc_minus_baseline"]:
        if arm in summary:
            cells = " ".join(f"{summary[arm][k][0]:>13.4f} ± {summary[arm][k][1]:<6.4f}" for k in HEADLINE)
            print(f"{arm:10s} {cells}")
    if "card_criterion" in summary:
        print("card criterion:", json.dumps(summary["card_criterion"]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="JSON file (appended to after each run)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--quick", action="store_true", help="tiny network, 2 epochs on 160 scenes (plumbing check)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--n-val", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for both arms (repeatable)")
    p.add_argument("--fresh", action="store_true", help="ignore runs already in --out")
    args = p.parse_args(argv)
    args.epochs = args.epochs or (2 if args.quick else 15)
    args.n_train = args.n_train or (160 if args.quick else 1500)
    args.n_val = args.n_val or (48 if args.quick else 300)

    runs: list[dict] = []
    if os.path.exists(args.out) and not args.fresh:
        runs = json.load(open(args.out)).get("runs", [])
    config = {"epochs": args.epochs, "n_train": args.n_train, "n_val": args.n_val, "batch_size": args.batch_size,
              "quick": args.quick, "set": args.set, "device": args.device}
    runs = [r for r in runs if r.get("config") == config]
    for seed in args.seeds:
        for arm in ARMS:
            if any(r["arm"] == arm and r["seed"] == seed for r in runs):
                continue
            result = run_one(arm, seed, args)
            result["config"] = config
            runs.append(result)
            m = result["metrics"]
            print(f"[ppc-comparison] {arm} seed {seed}: seed_miou {m['seed_miou']:.4f} (t={m['seed_threshold']:.2f}), "
                  f"feat_sep {m['feat_separation']:.4f}, {result['wall_s']} s", flush=True)
            summary = summarise(runs, args.seeds)
            with open(args.out, "w") as fh:
                json.dump({"config": config, "runs": runs, "summary": summary}, fh, indent=1)
    summary = summarise(runs, args.seeds)
    with open(args.out, "w") as fh:
        json.dump({"config": config, "runs": runs, "summary": summary}, fh, indent=1)
    print_table(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
