"""`contrastlab train|sweep|eval|data ...` — the command line.

    contrastlab train --method clip --set train.epochs=2
    contrastlab train --method clip --help          # lists every config field with its default
    contrastlab sweep --method declip --smoke
    contrastlab eval --method clip --checkpoint ~/contrastlab_results/run/checkpoint_...
    contrastlab data make shapes-captions n_train=5000
    contrastlab data convert cub ~/CUB_200_2011 ~/shards/cub --crop-to-bbox
    contrastlab data inspect 'shards/train-{00000..00009}.tar'
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _method_help(method: str) -> str:
    from contrastlab.methods.registry import get_method
    from contrastlab.platform.config import SECTION_TYPES, describe_fields

    cls = get_method(method)
    lines = [f"config fields of {method} (set with --set section.field=value):"]
    for section, dc in [("method", cls.Config), *SECTION_TYPES.items()]:
        defaults = {**getattr(cls, "train_defaults", {})} if section == "train" else {}
        for name, tname, default in describe_fields(dc):
            lines.append(f"  {section}.{name:<28} {tname:<22} default {defaults.get(name, default)!r}")
    return "\n".join(lines)


def cmd_train(argv: list[str]) -> int:
    from contrastlab.methods.registry import available

    p = argparse.ArgumentParser(prog="contrastlab train", description="Train one method once (no sweep).",
                                formatter_class=argparse.RawDescriptionHelpFormatter, add_help=False)
    p.add_argument("--method", required=False, choices=available())
    p.add_argument("-h", "--help", action="store_true")
    p.add_argument("--config", help="YAML with method/train/data/run sections")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--data"), p.add_argument("--eval-data")
    p.add_argument("--workers", type=int), p.add_argument("--cpus-per-worker", type=float), p.add_argument("--gpus-per-worker", type=float)
    p.add_argument("--storage", default=os.environ.get("CONTRASTLAB_STORAGE", "~/contrastlab_results"),
                   help="results root (default $CONTRASTLAB_STORAGE, else ~/contrastlab_results), as in sweeps")
    p.add_argument("--name", help="run name; reuse it to resume from the last checkpoint")
    args = p.parse_args(argv)
    if args.help or not args.method:
        p.print_help()
        if args.method:
            print("\n" + _method_help(args.method))
        return 0
    from contrastlab.platform.config import build_experiment
    from contrastlab.platform.runner import train

    exp = build_experiment(args.method, args.config, args.set, **{
        "data.train": args.data, "data.eval": args.eval_data, "run.workers": args.workers,
        "run.cpus_per_worker": args.cpus_per_worker, "run.gpus_per_worker": args.gpus_per_worker})
    name = args.name or f"{args.method}-{time.strftime('%Y%m%d-%H%M%S')}"
    print(f"[contrastlab] run {name}; rerun with --name {name} to resume")
    metrics = train(exp, name=name, storage=args.storage)
    print(json.dumps(metrics, indent=2, default=str))
    return 0


def cmd_sweep(argv: list[str]) -> int:
    from contrastlab.methods.registry import available
    from contrastlab.platform.sweep_cli import sweep_main

    p = argparse.ArgumentParser(prog="contrastlab sweep", add_help=False)
    p.add_argument("--method", choices=available())
    args, rest = p.parse_known_args(argv)
    if not args.method:
        print("usage: contrastlab sweep --method {" + ",".join(available()) + "} [sweep flags; --help lists them]")
        return 0 if ("-h" in rest or "--help" in rest) else 2
    sweep_main(args.method, rest)
    return 0


def cmd_eval(argv: list[str]) -> int:
    from contrastlab.methods.registry import available

    p = argparse.ArgumentParser(prog="contrastlab eval", description="Evaluate a checkpoint in this process (no cluster needed).")
    p.add_argument("--method", required=True, choices=available())
    p.add_argument("--checkpoint", required=True, help="a checkpoint_* directory written by a run")
    p.add_argument("--eval-data", help="evaluation shards (default: the embedded dataset's eval split)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--batch-size", type=int, default=128)
    args = p.parse_args(argv)
    from contrastlab.platform.evaluate import evaluate_checkpoint

    print(json.dumps(evaluate_checkpoint(args.method, args.checkpoint, args.eval_data, args.set, args.batch_size), indent=2))
    return 0


def cmd_data(argv: list[str]) -> int:
    if argv and argv[0] == "inspect":
        p = argparse.ArgumentParser(prog="contrastlab data inspect", description="Count samples and members, decode a few, show one.")
        p.add_argument("pattern")
        p.add_argument("--decode", type=int, default=32, help="samples to decode as a check")
        args = p.parse_args(argv[1:])
        from contrastlab.platform.data.inspect import inspect_shards

        print(json.dumps(inspect_shards(args.pattern, args.decode), indent=2, default=str))
        return 0
    from contrastlab.platform.datasets.cli import main as datasets_main

    if not argv or argv[0] in ("-h", "--help"):
        print("usage: contrastlab data {make,convert,list,inspect} ...\n"
              "  make NAME [k=v ...]      generate an embedded dataset into the cache\n"
              "  convert KIND ...         convert a public layout to shards: cub, folder, reid, hsi, voc, video\n"
              "                           (contrastlab data convert KIND --help)\n"
              "  list                     list embedded datasets\n"
              "  inspect PATTERN          count, check and show shards")
        return 0
    return datasets_main(argv)


COMMANDS = {"train": cmd_train, "sweep": cmd_sweep, "eval": cmd_eval, "data": cmd_data}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip())
        print("\ncommands: " + ", ".join(COMMANDS))
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    from contrastlab.platform.config import ConfigError
    from contrastlab.platform.sweep_cli import input_errors

    try:
        return COMMANDS[argv[0]](argv[1:]) or 0
    except ConfigError as exc:
        print(f"contrastlab: config error: {exc}", file=sys.stderr)
        return 2
    except input_errors() as exc:  # a bad shard pattern, source mix or checkpoint: one line, no traceback
        print(f"contrastlab: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
