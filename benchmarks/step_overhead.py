"""Step-overhead benchmark: steps/s of the platform's training loop (CLIP, 1 worker) against a bare
torch loop doing the same maths on the same in-memory batches.

What is compared (all on CPU, torch threads = 1, batch 64 of CLIP's default 48 px crops and
16-token captions from the embedded `shapes-captions` set):
- bare:          for batch in batches: encode_image, encode_text, clip_loss, zero_grad, backward,
                 AdamW step, loss.item() (what CLIP.train_step computes, with no platform code).
- run_epochs:    the platform loop (`train.build_context` + `train.run_epochs`, the code every
                 backend shares) fed the *same* in-memory batch list, so its ingest wait is ~0:
                 this isolates the loop's own per-step cost (StepContext.optimize: finite checks,
                 LR schedule, hooks, logging, counters).
- run_local:     `local.run_local("clip")`, reading and preprocessing the shards in-process.
- ray_trainer:   `runner.make_trainer` -> TorchTrainer(1 worker, 1 CPU) with Ray Data ingest.
For run_local and ray_trainer, ingest is excluded the way the loop itself measures it: the loop
times every `next(batches)` (ingest_wait_fraction), so compute-only steps/s =
samples_per_s / batch / (1 - ingest_wait_fraction), taken from the last epoch (steady state).
Evaluation and checkpointing happen after an epoch's clock stops and are not counted.

Fairness: the bare and run_epochs figures are interleaved epoch by epoch in one process (each
repeat: one bare epoch, one platform epoch) and compared by their medians, so slow drifts in the
machine's load hit both. The run_local and Ray figures run in other phases (Ray: in another
process while Ray Data tasks and control actors share the cores), so they are compared with the
median of bare epochs measured right before and after them; on a loaded machine their noise is
larger than 3%. overhead = 1 - platform steps/s / bare steps/s.

    python benchmarks/step_overhead.py --quick --out results/step_overhead_quick.json
    python benchmarks/step_overhead.py --out results/step_overhead.json
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import loop_epoch, machine, print_table, start_ray, write_report  # noqa: E402

import torch  # noqa: E402


def experiment(n_train: int, epochs: int, batch: int, storage: str):
    from contrastlab.platform.config import build_experiment

    return build_experiment("clip", sets=[
        f"train.epochs={epochs}", f"train.batch_size={batch}", "train.log_every_steps=10",
        f"data.embedded_params={{n_train: {n_train}, n_heldout: 64, n_test: 64}}",
        "run.workers=1", "run.cpus_per_worker=1", "data.preprocess_cpus=0.5", f"run.storage={storage}",
    ])


def in_memory_batches(exp, plan, split: str) -> list[dict]:
    from contrastlab.methods.registry import get_method
    from contrastlab.platform.local import iter_batches

    fn, required = get_method("clip").make_preprocess(exp.method, "train" if split == "train" else "eval", plan.meta)
    paths = plan.train if split == "train" else plan.eval
    return list(iter_batches(paths, fn, required, exp.train.batch_size, split=split, seed=0, drop_last=split == "train"))


class Bare:
    """CLIP.train_step's maths in a plain torch loop."""

    def __init__(self, exp):
        from contrastlab.methods.clip.method import CLIP

        torch.manual_seed(0)
        self.model = CLIP(exp.method)
        c = exp.method
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=c.lr, betas=c.betas, weight_decay=c.weight_decay)

    def epoch(self, batches) -> float:
        from contrastlab.methods.clip.loss import clip_loss

        m = self.model
        t0 = time.perf_counter()
        for b in batches:
            loss = clip_loss(m.encode_image(b["image"]), m.encode_text(b["text"]), m.scale())
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            loss.item(), m.scale().item()
        return len(batches) / (time.perf_counter() - t0)


class Platform:
    """The shared loop (build_context + run_epochs) over in-memory batches, one epoch per call."""

    def __init__(self, exp, train_batches, eval_batches, meta):
        from contrastlab.methods.clip.method import CLIP
        from contrastlab.platform.train import build_context

        torch.manual_seed(0)
        self.exp, self.train, self.eval = exp, train_batches, eval_batches
        exp.train.eval_every_epochs = 10**6
        self.ctx = build_context(exp, CLIP(exp.method), device=torch.device("cpu"),
                                 steps_per_epoch=len(train_batches), meta=meta)

    def epoch(self) -> float:
        return compute_steps_per_s(loop_epoch(self.ctx, self.train), self.exp.train.batch_size)


def compute_steps_per_s(metrics: dict, batch: int) -> float:
    """Steps/s with the loop's own ingest wait removed (see the module docstring)."""
    return metrics["samples_per_s_per_worker"] / batch / max(1e-9, 1 - metrics["ingest_wait_fraction"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--repeats", type=int, default=0, help="interleaved epochs of each (0: 5 quick, 11 full)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    n_train, repeats, ray_epochs = (1280, 5, 3) if args.quick else (3200, 11, 4)
    repeats = args.repeats or repeats
    storage = tempfile.mkdtemp(prefix="bench_step_")
    print(f"load average {os.getloadavg()}")

    from contrastlab.platform.runner import plan_data

    exp = experiment(n_train, 1, args.batch, storage)
    plan = plan_data(exp)
    train_batches, eval_batches = in_memory_batches(exp, plan, "train"), in_memory_batches(exp, plan, "eval")
    bare, loop = Bare(exp), Platform(experiment(n_train, 1, args.batch, storage), train_batches, eval_batches, plan.meta)
    bare.epoch(train_batches), loop.epoch()  # warm-up (allocator, first-call costs)
    bare_rates, loop_rates = [], []
    for _ in range(repeats):
        bare_rates.append(bare.epoch(train_batches))
        loop_rates.append(loop.epoch())
    rows = []
    bare_med = statistics.median(bare_rates)
    rows.append({"path": "bare torch loop", "steps/s": bare_med, "vs bare": 1.0, "overhead": 0.0, "epochs": repeats,
                 "spread": f"{min(bare_rates):.3g}-{max(bare_rates):.3g}"})
    loop_med = statistics.median(loop_rates)
    rows.append({"path": "run_epochs (in-memory batches, interleaved)", "steps/s": loop_med, "vs bare": loop_med / bare_med,
                 "overhead": 1 - loop_med / bare_med, "epochs": repeats, "spread": f"{min(loop_rates):.3g}-{max(loop_rates):.3g}"})

    print_table(rows, ["path", "steps/s", "vs bare", "overhead", "epochs", "spread"])
    # run_local: the real function, reading the shards in-process; last epoch, ingest wait removed
    from contrastlab.platform.local import run_local

    before = [bare.epoch(train_batches) for _ in range(3)]
    local = run_local("clip", exp=experiment(n_train, 3, args.batch, storage), quiet=True)
    after = [bare.epoch(train_batches) for _ in range(3)]
    local_rate = compute_steps_per_s(local.history[-1], args.batch)
    ref = statistics.median(before + after)
    rows.append({"path": "run_local (last of 3 epochs, ingest excluded)", "steps/s": local_rate, "vs bare": local_rate / ref,
                 "overhead": 1 - local_rate / ref, "epochs": 1, "spread": f"bare ref {ref:.3g}",
                 "ingest_wait_fraction": local.history[-1]["ingest_wait_fraction"]})

    ray_result = None
    if not args.skip_ray:
        from contrastlab.platform.runner import make_trainer

        start_ray(2)
        before = [bare.epoch(train_batches) for _ in range(3)]
        t0 = time.time()
        trainer = make_trainer(experiment(n_train, ray_epochs, args.batch, storage), name="step-overhead", storage=storage, plan=plan)
        result = trainer.fit()
        fit_s = time.time() - t0
        if result.error:
            raise result.error
        after = [bare.epoch(train_batches) for _ in range(3)]
        import ray

        ray.shutdown()
        last = result.metrics
        ray_rate = compute_steps_per_s(last, args.batch)
        ref = statistics.median(before + after)
        rows.append({"path": f"ray TorchTrainer 1 worker (last of {ray_epochs} epochs, ingest excluded)", "steps/s": ray_rate,
                     "vs bare": ray_rate / ref, "overhead": 1 - ray_rate / ref, "epochs": 1, "spread": f"bare ref {ref:.3g}",
                     "ingest_wait_fraction": last["ingest_wait_fraction"]})
        ray_result = {"fit_wall_s": fit_s, "last_epoch_metrics": {k: v for k, v in last.items() if isinstance(v, (int, float, str))},
                      "end_to_end_steps_per_s_incl_ingest": last["samples_per_s_per_worker"] / args.batch}

    print()
    print_table(rows, ["path", "steps/s", "vs bare", "overhead", "epochs", "spread", "ingest_wait_fraction"])
    report = {
        "benchmark": "step_overhead", "quick": args.quick, "machine": machine(),
        "settings": {"method": "clip", "batch": args.batch, "steps_per_epoch": len(train_batches), "torch_threads": 1,
                     "image_size": exp.method.image_size, "image_tower": exp.method.image_tower, "repeats": repeats},
        "results": rows, "bare_epoch_rates": bare_rates, "run_epochs_rates": loop_rates, "ray": ray_result,
        "overhead": {r["path"]: r["overhead"] for r in rows[1:]},
    }
    write_report(args.out, report)


if __name__ == "__main__":
    main()
