"""DeCLIP vs CLIP data efficiency on the embedded shapes-captions data (card g), written to JSON.

    # the full experiment: 2 training-set sizes (500, 2000) x 3 seeds x {CLIP, DeCLIP} + 4 leave-one-out
    # ablations x 3 seeds at 500: 24 runs of 1,500 steps of batch 64. Measured on a shared 2-core
    # machine, one torch thread per run: CLIP 0.24 s/step, DeCLIP 0.62 s/step, ablations ~0.5 s/step,
    # so ~4.6 h in one process, ~2.5 h with --jobs 2 on two otherwise idle cores.
    python benchmarks/declip_data_efficiency.py --out declip_data_efficiency.json --jobs 2

    # plumbing check with the smallest settings (16 runs of 12 steps; 2 min 44 s on 2 shared cores)
    python benchmarks/declip_data_efficiency.py --quick --out /tmp/declip_quick.json

    # --device cuda runs every run on the GPU (--jobs N processes share it); there the per-step time
    # is bound by each process's own CPU preprocessing. Measured on one H200 with 16 cores (session 7):
    # all 24 runs in 6.5 min, CLIP 0.044 s/step, DeCLIP 0.157 s/step (results/declip_data_efficiency.json)
    python benchmarks/declip_data_efficiency.py --out declip_data_efficiency.json --device cuda --jobs 14

What runs: every training is in-process (no Ray) with the platform's own pieces: the methods'
classes (`CLIP`, `DeCLIP`), their `make_preprocess` per-sample functions fed with samples decoded
from the shards (`reader.iter_tar_samples` + `decode_member`, per-sample RNG `reader.sample_rng`, as
the Ray Data reader does), the loop's `StepContext` (optimiser stepping, warm-up + cosine schedule,
the DeCLIP theta-clamp hooks) and the methods' own `evaluate` (CLIP's zero-shot + retrieval).

Protocol (card g):
- Data: shapes-captions (seed 0), training subsets = the first N training pairs (nested: the small
  set is part of the large one); evaluation on the `heldout` split (colour x shape combinations never
  seen in training: compositional zero-shot) and the in-distribution `test` split.
- Same encoders (4-layer CNN 32-64-64-128 -> 64-d, 2-layer BPE text transformer width 64, context 16 (the card says word-level)),
  same batch (64), same number of steps (1,500) and the same optimiser schedule (AdamW 1e-3, betas
  (0.9, 0.98), wd 0.1, 5% linear warm-up from 0, cosine) for every variant. So every variant sees
  the same number of pairs; DeCLIP spends about 2.5-3x CLIP's compute per step (two image views,
  three text passes, the heads); the JSON records each run's wall time. One difference stays: CLIP's
  temperature is learned freely from tau 0.07, while DeCLIP's theta is clamped into [3, 6] (card b),
  which lifts it to tau 0.0498 at the first step (both arms cap the logit scale at 100).
- Variants: clip; declip (all four signals, weights 0.4/0.2/0.2/0.2, queue 1,024); and at the
  small size declip-mvs / -ss / -mlm / -nn (one signal switched off; its weight is given back to the
  contrastive term, the card's "CLIP weight = 1 - the others"). Optional (--extra-variants):
  declip-crop, DeCLIP with CLIP's crop + flip views. The card's MoCo-v2 views jitter hue and turn
  20% of views grey while every caption names colours, a confound CLIP's views do not have;
  clip-3x, CLIP run for 3x the steps (about DeCLIP's compute per run), which asks whether DeCLIP's
  gain is more than its extra compute (summary key `declip_minus_clip_equal_compute`).
- Metrics: heldout zero-shot top-1 over all 24 colour x shape classes (`zeroshot_colour_shape_top1`,
  the sweep metric), colour (6-way) and shape (4-way) zero-shot, text->image and image->text R@1;
  test-split zero-shot and t2i R@1; a linear probe (colour x shape label, 50/50 split of the test
  split by index parity) on frozen image embeddings, the same for every variant; for DeCLIP the
  training-time NN same-class hit rate and the SimSiam collapse monitor (per-dim std of normalised
  z times sqrt(d); ~1 healthy, card threshold 0.3), averaged over the last 10% of steps.
- Aggregates: mean and sample standard deviation (ddof=1) over seeds; the summary checks the card's
  success criteria (DeCLIP ahead by >= 3 points with non-overlapping +-1 std intervals; MVS the
  most important signal; no SimSiam collapse; NN hit rate above chance = sum_c p_c^2 of the
  training labels).

Resumable: results are appended to --out after every run; rerunning with the same --out skips the
runs already there (pass --fresh to start over).
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

SIGNALS = ("mvs", "ss", "mlm", "nn")
# clip-3x runs CLIP for this many times the steps: about DeCLIP's compute per run (a DeCLIP step costs
# 2.6x a CLIP step on 2 CPU cores and 3.5x on an H200 fed by in-process CPU preprocessing)
EQUAL_COMPUTE_FACTOR = 3
FLAG = {"mvs": "use_mvs", "ss": "use_simsiam", "mlm": "use_mlm", "nn": "use_nn"}
HEADLINE = ("heldout/zeroshot_colour_shape_top1", "heldout/t2i_r1")


# --------------------------------------------------------------------------- data
def load_split(paths: list[str]) -> list[dict]:
    """Decode every sample of the shards, sorted by index (what the Ray Data reader hands a sample fn)."""
    from contrastlab.platform.data.reader import decode_member, iter_tar_samples, sample_index

    out = []
    for path in paths:
        with open(path, "rb") as fh:
            for raw in iter_tar_samples(fh, path, "raise"):
                sample = {"__key__": raw["__key__"]}
                sample.update({k: decode_member(k, v) for k, v in raw.items() if not k.startswith("__")})
                sample["index"] = sample_index(raw["__key__"], sample.get("json"), path)
                out.append(sample)
    return sorted(out, key=lambda s: s["index"])


def to_device(batch: dict, device) -> dict:
    """The batch with its torch tensors moved to `device` (other values as they are)."""
    import torch

    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def preprocess(fn, samples: list[dict], seed: int, epoch: int) -> dict:
    import torch

    from contrastlab.platform.data.reader import sample_rng

    rows = []
    for s in samples:
        row = fn(s, sample_rng(seed, epoch, s["__key__"]))
        row["index"] = np.int64(s["index"])
        rows.append(row)
    return {k: torch.from_numpy(np.stack([r[k] for r in rows])) for k in rows[0]}


_EVAL_CACHE: dict = {}


def eval_batches(method_cls, cfg, meta, samples, split: str, batch_size=128, device="cpu") -> list[dict]:
    """Preprocessed evaluation batches on `device` (deterministic; DeCLIP's eval preprocessing is CLIP's), cached."""
    key = (split, len(samples), cfg.image_size, cfg.context_length, str(device))
    if key not in _EVAL_CACHE:
        fn, _ = method_cls.make_preprocess(cfg, "eval", meta)
        _EVAL_CACHE[key] = [to_device(preprocess(fn, samples[i : i + batch_size], 0, 0), device)
                            for i in range(0, len(samples), batch_size)]
    return _EVAL_CACHE[key]


# --------------------------------------------------------------------------- variants
def variant_config(variant: str, image_size: int):
    """(method class, its config) of a variant: clip, declip, declip-<signal> (that signal off)."""
    from contrastlab.methods.clip.method import CLIP, CLIPConfig
    from contrastlab.methods.declip.method import DeCLIP, DeCLIPConfig

    if variant in ("clip", "clip-3x"):  # clip-3x: the same model, run for 3x the steps (see plan())
        return CLIP, CLIPConfig(image_size=image_size)
    # warm-up from 0 as CLIP's (the card's 0.1 start factor would be a second difference); the probe
    # is computed by this benchmark for every variant alike
    cfg = DeCLIPConfig(image_size=image_size, warmup_start_factor=0.0, probe=False, retrieval_examples=0)
    if variant == "declip":
        return DeCLIP, cfg
    if variant == "declip-crop":  # DeCLIP with CLIP's crop + flip views (no colour jitter / grey / blur)
        return DeCLIP, replace(cfg, view_augmentation="crop")
    signal = variant.split("-", 1)[1]
    if signal not in SIGNALS:
        raise ValueError(f"unknown variant {variant!r}")
    return DeCLIP, replace(cfg, **{FLAG[signal]: False})


# --------------------------------------------------------------------------- one run
def run_one(job: dict) -> dict:
    """Train one variant on the first `size` training pairs for `steps` steps, then evaluate."""
    import torch

    from contrastlab.platform.config import build_experiment
    from contrastlab.platform.eval import linear_probe
    from contrastlab.platform.train import StepContext, build_optimizer, lr_factor, seed_everything

    torch.set_num_threads(job["threads"])
    device = torch.device(job.get("device", "cpu"))
    data = _data(job)
    meta, train = data["meta"], data["train"][: job["size"]]
    method_cls, cfg = variant_config(job["variant"], job["image_size"])
    exp = build_experiment(method_cls.name, sets=[f"train.batch_size={job['batch_size']}"])
    exp.method = cfg
    seed_everything(job["seed"])
    model = method_cls(cfg).to(device)
    spec = model.optimizers()["main"]
    opt = build_optimizer([model], spec)
    ctx = StepContext(exp=exp, method=model, device=device, optimizers={"main": opt}, specs={"main": spec},
                      base_lrs={"main": [g["lr"] for g in opt.param_groups]}, total_steps=job["steps"], meta=meta)
    for group, base in zip(opt.param_groups, ctx.base_lrs["main"]):
        group["lr"] = base * lr_factor(0, job["steps"], spec)
    fn, _ = method_cls.make_preprocess(cfg, "train", meta)

    bs, steps = job["batch_size"], job["steps"]
    per_epoch = max(1, len(train) // bs)
    tail_from = steps - max(1, steps // 10)
    tail: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    model.train()
    for step in range(steps):
        epoch, k = divmod(step, per_epoch)
        if k == 0:
            order = np.random.default_rng([job["seed"], epoch, 17]).permutation(len(train))
        batch = to_device(preprocess(fn, [train[i] for i in order[k * bs : (k + 1) * bs]], job["seed"], epoch), device)
        ctx.epoch = epoch
        logs = model.train_step(batch, ctx)
        ctx.check_finite({n: v for n, v in logs.items() if n.startswith("loss")})
        ctx.step += 1
        if step >= tail_from:
            for n, v in logs.items():
                tail.setdefault(n, []).append(float(v))
    train_s = time.perf_counter() - t0

    model.eval()
    metrics: dict[str, float] = {}
    with torch.no_grad():
        for split in ("heldout", "test"):
            batches = eval_batches(method_cls, cfg, meta, data[split], split, device=device)
            for n, v in model.evaluate(lambda b=batches: iter(b), ctx).items():
                metrics[f"{split}/{n}"] = float(v)
        feats = np.concatenate([model.encode_image(b["image"]).float().cpu().numpy() for b in batches])
    labels = np.array([s["json"]["label"] for s in data["test"]])
    index = np.array([s["index"] for s in data["test"]])
    try:
        probe = linear_probe(feats[index % 2 == 0], labels[index % 2 == 0], feats[index % 2 == 1], labels[index % 2 == 1])
        metrics["test/linear_probe_top1"] = float(probe["accuracy"])
    except ValueError:  # too few samples per class for the probe's stratified validation split (tiny --n-eval)
        metrics["test/linear_probe_top1"] = float("nan")
    train_labels = np.array([s["json"]["label"] for s in train])
    p = np.bincount(train_labels) / len(train_labels)
    return {
        **{k: job[k] for k in ("variant", "size", "seed", "steps", "batch_size", "n_eval", "image_size")},
        "device": str(device),
        "metrics": metrics,
        "train_tail": {n: float(np.mean(v)) for n, v in tail.items()},
        "nn_same_label_chance": float((p**2).sum()),
        "train_seconds": round(train_s, 2),
        "seconds_per_step": round(train_s / steps, 4),
        "epochs": round(steps * bs / len(train), 2),
    }


_DATA_CACHE: dict = {}


def _data(job: dict) -> dict:
    key = (job["n_train"], job["n_eval"], job["cache_dir"])
    if key not in _DATA_CACHE:
        from contrastlab.platform.datasets import ensure_dataset

        ds = ensure_dataset("shapes-captions", seed=0, cache_dir=job["cache_dir"], n_train=job["n_train"],
                            n_test=job["n_eval"], n_heldout=job["n_eval"])
        _DATA_CACHE[key] = {"meta": ds.meta, **{s: load_split(ds.splits[s]) for s in ("train", "test", "heldout")}}
    return _DATA_CACHE[key]


# --------------------------------------------------------------------------- aggregation
def mean_std(values: list[float]) -> dict:
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": int(len(v))}


def aggregate(runs: list[dict]) -> dict:
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["variant"], r["size"]), []).append(r)
    table = {}
    for (variant, size), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        keys = sorted(set().union(*(r["metrics"] for r in rs)))
        tail_keys = sorted(set().union(*(r["train_tail"] for r in rs)))
        table[f"{variant}@{size}"] = {
            "variant": variant, "size": size, "seeds": sorted(r["seed"] for r in rs),
            "metrics": {k: mean_std([r["metrics"][k] for r in rs if k in r["metrics"]]) for k in keys},
            "train_tail": {k: mean_std([r["train_tail"][k] for r in rs if k in r["train_tail"]]) for k in tail_keys},
            "nn_same_label_chance": float(np.mean([r["nn_same_label_chance"] for r in rs])),
            "seconds_per_step": mean_std([r["seconds_per_step"] for r in rs]),
        }
    return table


def summarise(table: dict, sizes: list[int]) -> dict:
    """The card's success criteria and the data-efficiency reading, from the aggregated table."""
    out: dict = {"declip_minus_clip": {}, "ablation_drop_at_small_size": {}}
    for size in sizes:
        c, d = table.get(f"clip@{size}"), table.get(f"declip@{size}")
        if not (c and d):
            continue
        row = {}
        for m in HEADLINE:
            cm, dm = c["metrics"][m], d["metrics"][m]
            seeds_ok = min(cm["n"], dm["n"]) >= 2  # +-1 std intervals need at least two seeds
            row[m] = {
                "clip": cm, "declip": dm,
                "delta_points": round(100 * (dm["mean"] - cm["mean"]), 2),
                "intervals_disjoint": bool(dm["mean"] - dm["std"] > cm["mean"] + cm["std"]) if seeds_ok else None,
            }
            row[m]["card_criterion_met"] = bool(row[m]["delta_points"] >= 3 and row[m]["intervals_disjoint"]) if seeds_ok else None
        out["declip_minus_clip"][size] = row
    for size in sizes:  # DeCLIP against CLIP given about DeCLIP's compute (clip-3x), where it was run
        c, d = table.get(f"clip-3x@{size}"), table.get(f"declip@{size}")
        if c and d:
            out.setdefault("declip_minus_clip_equal_compute", {})[size] = {
                m: {"clip_3x": c["metrics"][m], "declip": d["metrics"][m],
                    "delta_points": round(100 * (d["metrics"][m]["mean"] - c["metrics"][m]["mean"]), 2)} for m in HEADLINE}
    both = [s for s in sizes if s in out["declip_minus_clip"]]
    if len(both) >= 2:
        small, large = min(both), max(both)
        m = HEADLINE[0]
        gap_small = out["declip_minus_clip"][small][m]["delta_points"]
        gap_large = out["declip_minus_clip"][large][m]["delta_points"]
        out["advantage_grows_as_data_shrinks"] = {"metric": m, f"delta_at_{small}": gap_small, f"delta_at_{large}": gap_large,
                                                  "grows": bool(gap_small > gap_large)}
    small = min(sizes)
    full = table.get(f"declip@{small}")
    if full:
        for sig in SIGNALS:
            ab = table.get(f"declip-{sig}@{small}")
            if ab:
                out["ablation_drop_at_small_size"][f"-{sig.upper()}"] = {
                    m: round(100 * (full["metrics"][m]["mean"] - ab["metrics"][m]["mean"]), 2) for m in HEADLINE
                }
        drops = out["ablation_drop_at_small_size"]
        if drops:
            worst = max(drops, key=lambda k: drops[k][HEADLINE[0]])
            out["most_important_signal"] = worst
            out["removing_mvs_hurts_most"] = worst == "-MVS"
        tail = full["train_tail"]
        if "ss_z_std_x_sqrt_d" in tail:
            out["simsiam_no_collapse"] = {"std_x_sqrt_d": round(tail["ss_z_std_x_sqrt_d"]["mean"], 3), "threshold": 0.3,
                                          "ok": bool(tail["ss_z_std_x_sqrt_d"]["mean"] > 0.3)}
        if "nn_same_label" in tail:
            out["nn_hit_rate_above_chance"] = {"hit_rate": round(tail["nn_same_label"]["mean"], 3),
                                               "chance": round(full["nn_same_label_chance"], 3),
                                               "ok": bool(tail["nn_same_label"]["mean"] > full["nn_same_label_chance"])}
    return out


# --------------------------------------------------------------------------- main
def plan(args) -> list[dict]:
    jobs = []
    common = {"steps": args.steps, "batch_size": args.batch_size, "image_size": args.image_size, "threads": args.threads,
              "n_train": max(args.sizes), "n_eval": args.n_eval, "cache_dir": args.cache_dir, "device": args.device}
    for size in args.sizes:
        for seed in args.seeds:
            for variant in ("clip", "declip"):
                jobs.append({**common, "variant": variant, "size": size, "seed": seed})
    if not args.no_ablations:
        for seed in args.seeds:
            for sig in SIGNALS:
                jobs.append({**common, "variant": f"declip-{sig}", "size": min(args.sizes), "seed": seed})
    for variant in args.extra_variants:
        steps = args.steps * EQUAL_COMPUTE_FACTOR if variant == "clip-3x" else args.steps
        for size in args.sizes:
            for seed in args.seeds:
                jobs.append({**common, "variant": variant, "size": size, "seed": seed, "steps": steps})
    return jobs


def job_key(r: dict) -> tuple:
    # not the device: a CPU and a GPU run of the same protocol are the same experiment
    return tuple(r.get(k) for k in ("variant", "size", "seed", "steps", "batch_size", "n_eval", "image_size"))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="declip_data_efficiency.json", help="JSON output (also the resume file)")
    p.add_argument("--quick", action="store_true", help="smallest settings: sizes 200 400, seeds 0 1, 12 steps of 32, 128 eval pairs")
    p.add_argument("--steps", type=int, default=None, help="training steps per run (default 1500; 12 with --quick)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default 0 1 2; 0 1 with --quick)")
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="training-set sizes (default 500 2000; 200 400 with --quick)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default 64; 32 with --quick)")
    p.add_argument("--n-eval", type=int, default=None, help="pairs in each evaluation split (default 500; 128 with --quick)")
    p.add_argument("--image-size", type=int, default=48)
    p.add_argument("--no-ablations", action="store_true", help="skip the leave-one-out ablations")
    p.add_argument("--extra-variants", nargs="*", default=[], choices=["declip-crop", "clip-3x"],
                   help="more variants at every size: declip-crop = DeCLIP with CLIP's crop+flip views instead of MoCo-v2 "
                        "(colour jitter and greyscale blur the colour words the captions are about); clip-3x = CLIP with "
                        f"{EQUAL_COMPUTE_FACTOR}x the steps, about DeCLIP's compute per run (is DeCLIP's gain only compute?)")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (processes); each uses --threads torch threads")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--device", default="cpu", help="cuda: every run on the GPU (--jobs N runs share it)")
    p.add_argument("--cache-dir", default=None, help="embedded dataset cache (default: the platform's)")
    p.add_argument("--fresh", action="store_true", help="ignore runs already in --out")
    args = p.parse_args(argv)
    q = args.quick
    args.steps = args.steps or (12 if q else 1500)
    args.seeds = args.seeds or ([0, 1] if q else [0, 1, 2])
    args.sizes = sorted(args.sizes or ([200, 400] if q else [500, 2000]))
    args.batch_size = args.batch_size or (32 if q else 64)
    args.n_eval = args.n_eval or (128 if q else 500)
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            p.error(f"--device {args.device}: CUDA is not available here (torch.cuda.is_available() is False); "
                    "run on a GPU machine or pass --device cpu")

    jobs = plan(args)
    done: list[dict] = []
    if os.path.exists(args.out) and not args.fresh:
        done = json.load(open(args.out)).get("runs", [])
    have = {job_key(r) for r in done}
    todo = [j for j in jobs if job_key(j) not in have]
    print(f"[declip-bench] {len(jobs)} runs planned, {len(jobs) - len(todo)} already in {args.out}, {len(todo)} to do", flush=True)
    _data({**jobs[0]})  # generate the data once, before any worker process starts
    t_start = time.perf_counter()

    def record(result: dict) -> None:
        done.append(result)
        write(args, done, time.perf_counter() - t_start)
        m = result["metrics"]
        print(f"[declip-bench] {result['variant']:>10} n={result['size']:<5} seed={result['seed']} "
              f"heldout zs={m['heldout/zeroshot_colour_shape_top1']:.3f} t2i@1={m['heldout/t2i_r1']:.3f} "
              f"probe={m['test/linear_probe_top1']:.3f} ({result['train_seconds']:.0f}s, {result['seconds_per_step']:.3f}s/step)", flush=True)

    if args.jobs > 1 and len(todo) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(args.jobs) as pool:
            for result in pool.imap_unordered(run_one, todo):
                record(result)
    else:
        for job in todo:
            record(run_one(job))
    summary = write(args, done, time.perf_counter() - t_start)
    print(json.dumps(summary["summary"], indent=2))
    print(f"[declip-bench] wrote {args.out}")
    return summary


def write(args, runs: list[dict], elapsed: float) -> dict:
    table = aggregate(runs)
    out = {
        "benchmark": "declip_data_efficiency",
        "command": "python benchmarks/declip_data_efficiency.py " + " ".join(sys.argv[1:]),
        "settings": {k: getattr(args, k) for k in ("quick", "steps", "seeds", "sizes", "batch_size", "n_eval", "image_size", "threads", "jobs", "device")},
        "protocol": __doc__.split("Protocol (card g):")[1].split("Resumable:")[0].strip(),
        "elapsed_seconds_this_invocation": round(elapsed, 1),
        "summary": summarise(table, args.sizes),
        "table": table,
        "runs": runs,
    }
    tmp = args.out + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(out, fh, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    os.replace(tmp, args.out)
    return out


if __name__ == "__main__":
    main()
