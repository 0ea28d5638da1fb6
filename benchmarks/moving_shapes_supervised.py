"""Is the motion class of `moving-shapes` learnable by FAME's small 3D CNN at all? A supervised check, to JSON.

    python benchmarks/moving_shapes_supervised.py --out results/moving_shapes_supervised.json
    python benchmarks/moving_shapes_supervised.py --flip-prob 0.5 --epochs 8 --out /tmp/ms_flip.json

When both arms of `fame_comparison.py` stay at chance, this tells a data problem from a method
problem: the card's encoder (`Small3DCNN` + a linear layer) is trained with cross-entropy on the
motion class, on the same clips FAME's training sample function produces (two-clip sampling, random
resized crop, flip with `--flip-prob`, the platform's normalisation; no colour augmentation), with
Adam 1e-3, batch 32, one thread. Two settings:

- `debiased`: train on the first `--n-fit` videos of the test split (background independent of the
  class) and score the rest: can motion be learned when the background does not give it away?
- `biased`: train on the training split (background = class w.p. 0.9), score the whole test split:
  how much does a supervised learner take the background shortcut?

Scoring uses the eval sample function's first centre-cropped clip. A horizontal flip turns `right`
into `left`, so any flip probability > 0 is label noise for this supervised check (the card's MoCo
pipeline uses flip 0.5: there it makes left and right motion one positive pair).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root, for a plain checkout

import numpy as np  # noqa: E402
from _common import load_decoded_samples  # noqa: E402


def train_and_score(fit: list[dict], score: list[dict], args, train_fn, eval_fn) -> list[dict]:
    import torch
    from torch import nn

    from contrastlab.methods.fame.augment import normalize_clips, uint8_clips_to_float
    from contrastlab.methods.fame.model import Small3DCNN
    from contrastlab.platform.data.reader import sample_rng

    def to_input(x: np.ndarray) -> torch.Tensor:
        return normalize_clips(uint8_clips_to_float(torch.as_tensor(x)))

    def label(s: dict) -> int:
        return int(s["json"]["motion_class"])

    torch.manual_seed(args.seed)
    net = nn.Sequential(Small3DCNN(), nn.Linear(64, 6))
    opt = torch.optim.Adam(net.parameters(), args.lr)
    curve, t0 = [], time.perf_counter()
    for epoch in range(args.epochs):
        net.train()
        order = np.random.default_rng(args.seed * 1000 + epoch).permutation(len(fit))
        losses = []
        for i in range(0, len(fit), args.batch_size):
            batch = [fit[j] for j in order[i:i + args.batch_size]]
            x = np.stack([train_fn(s, sample_rng(args.seed, epoch, s["__key__"]))["clip_q"] for s in batch])
            loss = nn.functional.cross_entropy(net(to_input(x)), torch.tensor([label(s) for s in batch]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        net.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(score), 64):
                batch = score[i:i + 64]
                x = np.stack([eval_fn(s, None)["clips"][0] for s in batch])
                correct += int((net(to_input(x)).argmax(1) == torch.tensor([label(s) for s in batch])).sum())
        curve.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "top1": correct / len(score),
                      "seconds": time.perf_counter() - t0})
        print(f"  epoch {epoch + 1:3d}  loss {curve[-1]['train_loss']:.3f}  top-1 {curve[-1]['top1']:.3f}", flush=True)
    return curve


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--n-train", type=int, default=1200)
    p.add_argument("--n-test", type=int, default=600)
    p.add_argument("--n-fit", type=int, default=400, help="test videos used for fitting in the debiased setting")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--flip-prob", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--settings", nargs="+", default=["debiased", "biased"], choices=["debiased", "biased"])
    args = p.parse_args()

    import torch

    from contrastlab.methods.fame.data import make_sample_fn
    from contrastlab.methods.fame.method import FAMEConfig
    from contrastlab.platform.datasets import ensure_dataset

    torch.set_num_threads(1)
    data = ensure_dataset("moving-shapes", n_train=args.n_train, n_test=args.n_test)
    if args.n_fit >= args.n_test:
        raise SystemExit(f"--n-fit ({args.n_fit}) must be below --n-test ({args.n_test}): the rest of the test split is scored")
    cfg = replace(FAMEConfig(), flip_prob=args.flip_prob, decode_cache=args.n_train + args.n_test)
    train_fn, eval_fn = make_sample_fn(cfg, "train"), make_sample_fn(cfg, "eval")
    test = load_decoded_samples(data.splits["test"])
    results = {"config": vars(args), "dataset": str(data.root), "chance": 1 / 6}
    for setting in args.settings:
        fit, score = (test[:args.n_fit], test[args.n_fit:]) if setting == "debiased" else (load_decoded_samples(data.splits["train"]), test)
        print(f"{setting}: fit on {len(fit)} videos, score {len(score)}", flush=True)
        curve = train_and_score(fit, score, args, train_fn, eval_fn)
        results[setting] = {"final_top1": curve[-1]["top1"], "best_top1": max(c["top1"] for c in curve), "curve": curve}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(results, fh, indent=1)
    print(json.dumps({k: {m: v[m] for m in ("final_top1", "best_top1")} for k, v in results.items() if isinstance(v, dict) and "curve" in v}))


if __name__ == "__main__":
    main()
