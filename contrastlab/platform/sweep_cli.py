"""The common flags of every `sweeps/<method>.py` entry point (DESIGN §5), and `contrastlab sweep`."""
from __future__ import annotations

import argparse
import os
import sys
import time


def add_sweep_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, help="training shards: path, glob, brace pattern or s3:// / gs:// URI (default: the method's embedded dataset)")
    p.add_argument("--eval-data", default=None, help="evaluation shards (default: the embedded dataset's evaluation split; "
                   "required with --data, since trials are ranked on it)")
    p.add_argument("--num-samples", type=int, default=None, help="trials to sample from the search space (default 4; 2 with --smoke)")
    p.add_argument("--max-epochs", type=int, default=None, help="epochs per trial (ASHA's max_t); phased methods (cvp, ucr) "
                   "take theirs from their phase lengths, method.*_epochs, instead")
    p.add_argument("--workers", type=int, default=None, help="Train workers per trial (default 1)")
    p.add_argument("--cpus-per-worker", type=float, default=None, help="CPUs reserved per Train worker (fractions allowed; default 0.5)")
    p.add_argument("--gpus-per-worker", type=float, default=None, help="GPUs per Train worker (fractions allowed; default 0)")
    p.add_argument("--max-concurrent", type=int, default=0, help="trials at once (default: as many as the cluster's CPUs/GPUs allow)")
    p.add_argument("--scheduler", default="asha", choices=["asha", "fifo", "pbt"],
                   help="trial scheduler (default asha; pbt is refused, with the reason)")
    p.add_argument("--storage", default=None, help="results root: local dir or cloud URI (default ~/contrastlab_results)")
    p.add_argument("--name", default=None, help="experiment name (default <method>[-smoke]; reuse it with --resume)")
    p.add_argument("--config", default=None, help="YAML file with method/train/data/run sections")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field, e.g. --set method.lr=3e-4 (repeatable)")
    p.add_argument("--smoke", action="store_true", help="tiny sweep that finishes in a few minutes on 2 CPU cores")
    p.add_argument("--resume", action="store_true", help="restore an interrupted sweep of the same --name: finished trials are kept")
    p.add_argument("--max-failures", type=int, default=None,
                   help="restarts of a trial after a worker, driver-actor or node loss, each from its last checkpoint "
                        "(run.max_failures; default 1 in sweeps, 0 turns fault tolerance off)")


def build_from_args(method: str, args) -> tuple:
    from contrastlab.methods.registry import get_method
    from contrastlab.platform.config import build_experiment

    method_cls = get_method(method)
    sets = []
    if args.smoke:
        sets += [f"{k}={v}" for k, v in getattr(method_cls, "smoke_overrides", {}).items()]
    sets += list(args.set)
    exp = build_experiment(
        method,
        yaml_path=args.config,
        sets=sets,
        **{
            "data.train": args.data, "data.eval": args.eval_data, "train.epochs": args.max_epochs,
            "run.workers": args.workers, "run.cpus_per_worker": args.cpus_per_worker, "run.gpus_per_worker": args.gpus_per_worker,
            **({"data.bad_samples": "skip"} if not any(s.startswith("data.bad_samples") for s in args.set) else {}),
            # fault tolerance on by default in sweeps: a lost worker/node restarts from the last checkpoint
            **({"run.max_failures": args.max_failures if args.max_failures is not None else 1}
               if not any(s.startswith("run.max_failures") for s in args.set) else {}),
        },
    )
    return exp, method_cls


def sweep_main(method: str, argv: list[str] | None = None) -> dict:
    from contrastlab.platform.tune import run_sweep

    p = argparse.ArgumentParser(prog=f"sweeps/{method}.py", description=f"Ray Tune sweep of {method} (ASHA by default).")
    add_sweep_flags(p)
    args = p.parse_args(argv)
    exp, method_cls = build_from_args(method, args)  # config errors surface here, before any Ray work
    if exp.data.eval == "none" or (exp.data.train and not exp.data.eval):
        from contrastlab.platform.config import ConfigError

        raise ConfigError(
            f"a sweep ranks its trials by {method_cls.eval_metric} on evaluation data, and this one has none ("
            + ("data.eval=none" if exp.data.eval == "none" else "--data was given without --eval-data")
            + "): pass --eval-data with the evaluation shards for your data")
    storage = args.storage or os.environ.get("CONTRASTLAB_STORAGE", "~/contrastlab_results")
    name = args.name or f"{method}{'-smoke' if args.smoke else ''}"
    root = storage if "://" in storage else os.path.expanduser(storage)
    if not args.resume and "://" not in root and os.path.exists(os.path.join(root, name)):
        name = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    num_samples = args.num_samples or (2 if args.smoke else 4)
    print(f"[contrastlab] sweep {name}: {num_samples} trial(s) of {method}, results in {os.path.join(root, name)}")
    print(f"[contrastlab] watch: tensorboard --logdir {os.path.join(root, name)} --host 127.0.0.1   (Ray dashboard: http://127.0.0.1:8265)")
    return run_sweep(exp, name=name, storage=storage, num_samples=num_samples, max_concurrent=args.max_concurrent,
                     scheduler=args.scheduler, resume=args.resume, max_trial_failures=exp.run.max_failures)


def input_errors() -> tuple[type[Exception], ...]:
    """The errors that name a bad input and its fix: the command line prints them as one line and
    exits with status 2, without a traceback."""
    from contrastlab.platform.config import ConfigError
    from contrastlab.platform.data.mixing import MixError
    from contrastlab.platform.data.paths import ShardPatternError
    from contrastlab.platform.train import CheckpointMismatchError

    return ConfigError, ShardPatternError, MixError, CheckpointMismatchError


def script_main(method: str, argv: list[str] | None = None) -> None:
    """`sweeps/<method>.py`: the sweep, with input errors reported as one line (exit 2)."""
    try:
        sweep_main(method, argv)
    except input_errors() as exc:
        print(f"contrastlab: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    script_main(sys.argv[1], sys.argv[2:])
