"""UCR vs sequential fine-tuning (no rehearsal) on synthetic-reid, same budget (card g), to JSON.

    # full: default synthetic-reid (source d0 + seen d1-d3 + unseen u1-u2, 60 train ids x 8 images per
    # domain), 2 source epochs + 6 epochs per domain of 40 iterations (method.iters_per_epoch, card g),
    # 32 new-domain images per step, 3 seeds x 2 arms
    python benchmarks/ucr_comparison.py --out ucr_comparison.json --seeds 0 1 2 --jobs 2   # two runs at once on 2 cores

    # plumbing check: small data, 1 epoch per phase
    python benchmarks/ucr_comparison.py --quick --out /tmp/ucr_quick.json --seeds 0 1

Arms (identical except rehearsal and the batch it implies): `finetune` = method.rehearsal=false (no buffer, no
L_old, no L_kl: the same pseudo-label pipeline, L_ccl + L_cam only); `ucr` = the full method. Both
start from a labelled warm start on d0 with the same initial weights (same seed) and the same
source data and epochs. Each phase reads only its domain (plus, for UCR, the buffer: method.phase_data=select),
repeated to 40 x 32 new-domain images per epoch in both arms (method.iters_per_epoch=40): the
fine-tune batch is 32 new rows, UCR's is 64 = 32 new + 32 buffered (card: new batch 32, old batch
32), so both take the card's 40 steps per epoch. Where UCR's batches can hold no buffered rows (the
warm start on d0, one pass per epoch, and d1) they are all new rows, and UCR steps each 64-row batch
as two of 32 (method.split_unbuffered_batches): the two arms train alike until the buffer exists.
Before session 20 every epoch was one pass over the selection, about 7 steps at the default sizes,
and UCR took 64-row steps without a buffer (`--set method.iters_per_epoch=0 --set
method.split_unbuffered_batches=false --set method.source_cluster_model=ema`). Every run is
in-process (run_local).

Reported per arm (mean +- sample std over seeds): seen-domain mAP after the last phase
(`mAP_seen`), each seen domain's mAP, forgetting (mAP of a domain right after its own phase minus
after the last phase; mean over all but the last domain, and of d1), unseen mAP (`mAP_unseen`) and
rank-1, plus the domain x phase mAP table of every run. Card g's "working" criterion: UCR's d1 mAP
>= fine-tune + 5 points, higher seen average, unseen not lower by > 1 point, forgetting halved.
Resumable: runs already in --out are skipped (--fresh starts over).
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

# new batch 32 in both arms; UCR adds an old batch of 32 (method.old_batch_ratio=1 mixes them into one batch of 64)
ARMS = {"finetune": ["method.rehearsal=false", "train.batch_size=32"], "ucr": ["method.rehearsal=true", "train.batch_size=64"]}
# quick: fewer steps per domain, so the mean teacher uses alpha 0.99 (0.999 would barely move in ~20 steps)
QUICK = ["method.source_epochs=2", "method.epochs_per_domain=2", "train.epochs=8", "train.eval_every_epochs=2",
         "method.iters_per_epoch=10",
         "method.ema_alpha=0.99",
         "data.embedded_params={n_train_ids: 20, images_per_train_id: 8, n_test_ids: 12, images_per_test_id: 6}"]
KEYS = ("mAP_seen", "mAP_unseen", "rank1_seen", "rank1_unseen", "forgetting_mean")


def run_one(arm: str, seed: int, quick: bool, extra: list[str], device: str = "cpu") -> dict:
    import torch

    from contrastlab.platform.local import run_local

    torch.set_num_threads(1)
    sets = ARMS[arm] + [f"run.seed={seed}"] + (QUICK if quick else []) + list(extra)
    t0 = time.time()
    r = run_local("ucr", sets, quiet=True, device=device)
    last = r.history[-1]
    table = r.method.domain_phase_table(r.meta)
    seen = [d for d in r.method.cfg.domains.split(",") if d]
    out = {"arm": arm, "seed": seed, "wall_s": round(time.time() - t0, 1), "table": table,
           **{k: float(last[k]) for k in KEYS if k in last},
           **{f"mAP_{d}": float(last[f"mAP_{d}"]) for d in r.meta["domain_names"] if f"mAP_{d}" in last}}
    out["forgetting_first"] = table[seen[0]][seen[0]] - table[seen[0]][seen[-1]] if seen[0] in table else float("nan")
    return out


def summarize(runs: list[dict]) -> dict:
    summary = {}
    for arm in ARMS:
        rows = [r for r in runs if r["arm"] == arm]
        if not rows:
            continue
        keys = sorted({k for r in rows for k, v in r.items() if isinstance(v, float) and k != "wall_s"})
        summary[arm] = {k: (float(np.mean([r[k] for r in rows])), float(np.std([r[k] for r in rows], ddof=1)) if len(rows) > 1 else 0.0)
                        for k in keys}
    return summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--fresh", action="store_true")
    p.add_argument("--set", dest="extra", action="append", default=[], help="extra --set override for both arms")
    p.add_argument("--device", default="cpu", help="cuda: every run on the GPU")
    p.add_argument("--jobs", type=int, default=1, help="runs at once (processes, one torch thread each); e.g. 2 on 2 cores, 6 on a GPU box")
    args = p.parse_args(argv)
    runs = [] if args.fresh or not os.path.exists(args.out) else json.load(open(args.out)).get("runs", [])
    jobs = [(arm, seed, args.quick, args.extra, args.device) for seed in args.seeds for arm in ARMS
            if not any(r["arm"] == arm and r["seed"] == seed for r in runs)]

    def record(result: dict) -> None:
        runs.append(result)
        print(f"{result['arm']} seed {result['seed']}: " + ", ".join(f"{k}={result[k]:.4f}" for k in KEYS if k in result), flush=True)
        with open(args.out, "w") as fh:
            json.dump({"quick": args.quick, "runs": runs, "summary": summarize(runs)}, fh, indent=1)

    if jobs:
        from contrastlab.platform.datasets import ensure_dataset
        from contrastlab.platform.config import build_experiment

        exp = build_experiment("ucr", sets=list(QUICK if args.quick else []) + list(args.extra))
        ensure_dataset(exp.data.embedded or "synthetic-reid", **exp.data.embedded_params)  # once, before the worker processes
    run_jobs(run_one, jobs, args.jobs, record)
    summary = summarize(runs)
    with open(args.out, "w") as fh:
        json.dump({"quick": args.quick, "runs": runs, "summary": summary}, fh, indent=1)
    keys = ["mAP_seen", "mAP_unseen", "forgetting_mean", "forgetting_first"] + sorted(
        k for k in next(iter(summary.values()), {}) if k.startswith("mAP_d"))
    print(f"{'arm':10s} " + " ".join(f"{k:>18s}" for k in keys))
    for arm, s in summary.items():
        print(f"{arm:10s} " + " ".join(f"{s[k][0]:8.4f} ± {s[k][1]:6.4f}" if k in s else f"{'-':>18s}" for k in keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
