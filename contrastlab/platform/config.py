"""Typed experiment configuration: dataclasses, YAML files and `--set a.b=c` overrides.

An experiment has four sections:
- `method`: the method's own hyperparameters (its `Config` dataclass, defaults from its card);
- `train`: the loop (epochs, batch size, precision, clipping, accumulation, checkpoint cadence);
- `data`: shards, embedded dataset, bad-sample policy, preprocessing resources;
- `run`: resources per trial, storage, name, seed, failure handling.

Every key is checked against the dataclass fields before any Ray work starts; an unknown key or a
value of the wrong type raises `ConfigError` naming the key and listing the allowed keys + types.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping


class ConfigError(ValueError):
    pass


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64  # per worker; the global batch is batch_size * workers
    precision: str = "fp32"  # fp32 | bf16 (autocast, CPU and GPU) | fp16 (autocast + grad scaler, GPU only)
    grad_clip: float = 0.0  # max global grad norm; 0 = off
    accumulate: int = 1  # optimiser step every N micro-batches
    log_every_steps: int = 10
    checkpoint_every_steps: int = 0  # 0 = only at the end of each epoch
    eval_every_epochs: int = 1
    max_steps_per_epoch: int = 0  # 0 = the whole shard; >0 caps an epoch (smoke runs, benchmarks)
    scale_lr_with_world_size: bool = False  # linear LR scaling by global batch / reference batch
    reference_batch_size: int = 256
    stop_on_nonfinite: bool = True  # NaN/inf loss stops the trial with the reason in its result


@dataclass
class DataConfig:
    train: str = ""  # shard pattern(s): path, glob, brace pattern, s3:// or gs:// URI; "" = embedded dataset; ';' separates mixed sources
    train_weights: str = ""  # sampling weights of the ';'-separated training sources, e.g. "2:1:1"; "" = by size (see data/mixing.py)
    eval: str = ""  # evaluation shards; "" = the embedded dataset's evaluation split
    embedded: str = ""  # name of the embedded dataset; "" = the method's default
    embedded_params: dict = field(default_factory=dict)  # size parameters passed to the generator
    bad_samples: str = "raise"  # raise | skip
    shuffle_files: bool = True
    shuffle_buffer: int = 1000  # local shuffle buffer (rows) in each Train worker (data/shuffle.py); 0 = off
    preprocess_cpus: float = 0.5  # CPUs per Ray Data read/map task
    photometric: str = "reader"  # reader | device: where MoCo-v2 views make their colour jitter, greyscale and blur (data/device_views.py); device = batched on the Train worker's GPU, leaving the read tasks decode + crop + flip
    preprocess_block_mb: float = 64.0  # MiB of preprocessed rows per block (at most preprocess_batch_size rows): Ray pays ~10 ms per block, so small blocks cost throughput (data/reader.py block_rows); 0 = 128 rows
    preprocess_batch_size: int = 1024  # rows per preprocessed block, at most (tiny rows would otherwise make huge blocks)
    task_output_buffer_mb: float = 64.0  # finished blocks a read task may hold before the consumer takes them (Ray's default, 2 blocks, stalled 64 px tasks ~half the time)
    executor_poll_s: float = 0.0  # longest wait of Ray Data's scheduling loop for its tasks; 0 = Ray's own (0.1 s). 0.02 brings each epoch's first batch ~0.1-0.17 s sooner but cost 0-6% of images/s in 2.3 s epochs: worth it only for epochs of about a second (data/executor_poll.py)
    prefetch_batches: int = 1  # batches the Train worker's iterator fetches ahead (whole blocks for the shuffled training split, data/shuffle.py); Ray holds each back until that many more are in (2 cost ~0.6 s per epoch at 224 px; 0 made no measured difference, session 17)
    samples_per_epoch: int = 0  # 0 = read from the shard manifest or count once
    deterministic: bool = False  # preserve Ray Data row order (reproducible batches, e.g. exact resume); slower
    cache_dir: str = ""  # embedded dataset cache; "" = $CONTRASTLAB_CACHE or ~/.cache/contrastlab/datasets


@dataclass
class RunConfig:
    workers: int = 1  # Train workers per trial
    cpus_per_worker: float = 0.5
    gpus_per_worker: float = 0.0
    storage: str = "~/contrastlab_results"  # local dir or cloud URI (s3://..., gs://...)
    name: str = ""  # experiment / run name; "" = <method>-<timestamp>
    seed: int = 0
    max_failures: int = 0  # Train worker-group restarts from the last checkpoint
    placement_strategy: str = "PACK"  # PACK | SPREAD | STRICT_SPREAD


SECTION_TYPES = {"train": TrainConfig, "data": DataConfig, "run": RunConfig}


@dataclass
class Experiment:
    method_name: str
    method: Any  # the method's Config dataclass instance
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        return {
            "method_name": self.method_name,
            "method": dataclasses.asdict(self.method),
            "train": dataclasses.asdict(self.train),
            "data": dataclasses.asdict(self.data),
            "run": dataclasses.asdict(self.run),
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> "Experiment":
        from contrastlab.methods.registry import get_method

        method_cls = get_method(d["method_name"])
        exp = cls(d["method_name"], method_cls.Config())
        apply_overrides(exp, flatten({k: v for k, v in d.items() if k != "method_name"}))
        return exp


def describe_fields(dc) -> list[tuple[str, str, Any]]:
    """(name, type, default) of a dataclass, for --help and error messages."""
    out = []
    for f in dataclasses.fields(dc):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        )
        out.append((f.name, _type_name(_field_type(dc, f.name)), default))
    return out


def _field_type(dc, name: str):
    hints = typing.get_type_hints(dc if isinstance(dc, type) else type(dc))
    return hints[name]


def _type_name(tp) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _coerce(value, tp, key: str):
    """Convert `value` (from YAML or a `--set` string) to field type `tp`, or raise ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        errors = []
        if type(None) in args and (value is None or (isinstance(value, str) and value.strip() in ("null", "~", "None"))):
            return None  # `--set key=null` unsets an optional field, as `key: null` does in YAML
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}: {value!r} matches none of {_type_name(tp)} ({'; '.join(errors)})")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
    if isinstance(value, str) and tp is not str:
        value = _parse_scalar(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected bool (true/false), got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected int, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected float, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key}: expected str, got {value!r}")
        return str(value)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, key) for v, a in zip(value, args))
        inner = args[0] if args else None
        items = [_coerce(v, inner, key) if inner else v for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    return value


def _parse_scalar(text: str):
    """`--set` values: YAML scalars (1e-3, true, [1, 2], {a: 1}) so types match what a YAML file gives."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
        for number in (int, float):
            try:
                return number(value)
            except ValueError:
                pass
    return value


def flatten(d: Mapping, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and not prefix:  # only the section level nests
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out




def allowed_keys(exp: Experiment) -> list[str]:
    keys = []
    for section in ("method", "train", "data", "run"):
        for name, tname, _ in describe_fields(getattr(exp, section)):
            keys.append(f"{section}.{name} ({tname})")
    return keys


def apply_overrides(exp: Experiment, overrides: Mapping[str, Any]) -> Experiment:
    """Set `section.field` values in place, type-checked. Raises ConfigError naming the bad key."""
    for key, value in overrides.items():
        parts = key.split(".")
        if len(parts) != 2 or parts[0] not in ("method", "train", "data", "run"):
            raise ConfigError(
                f"unknown config key {key!r}: keys are <section>.<field> with section in method, train, data, run. "
                f"Allowed keys:\n  " + "\n  ".join(allowed_keys(exp))
            )
        section, name = parts
        target = getattr(exp, section)
        names = {f.name for f in dataclasses.fields(target)}
        if name not in names:
            raise ConfigError(
                f"unknown config key {key!r} for {section} of {exp.method_name}. Allowed keys in {section}:\n  "
                + "\n  ".join(f"{section}.{n} ({t}, default {d!r})" for n, t, d in describe_fields(target))
            )
        setattr(target, name, _coerce(value, _field_type(target, name), key))
    validate(exp)
    return exp


def validate(exp: Experiment) -> None:
    t, d, r = exp.train, exp.data, exp.run

    def at_least(section: str, name: str, low, meaning: str = ""):
        value = getattr({"train": t, "data": d, "run": r}[section], name)
        return value >= low, f"{section}.{name} must be >= {low}{meaning}, got {value!r}"

    checks = [
        at_least("train", "epochs", 1),
        at_least("train", "batch_size", 1),
        (t.precision in ("fp32", "bf16", "fp16"), f"train.precision must be fp32, bf16 or fp16, got {t.precision!r}"),
        at_least("train", "accumulate", 1),
        at_least("train", "grad_clip", 0, " (0 = off)"),
        at_least("train", "log_every_steps", 1),
        at_least("train", "checkpoint_every_steps", 0, " (0 = only at each epoch's end)"),
        at_least("train", "eval_every_epochs", 1),
        at_least("train", "max_steps_per_epoch", 0, " (0 = the whole shard set)"),
        at_least("train", "reference_batch_size", 1),
        (d.bad_samples in ("raise", "skip"), f"data.bad_samples must be raise or skip, got {d.bad_samples!r}"),
        (d.photometric in ("reader", "device"), f"data.photometric must be reader (views made whole in the read tasks) or device "
                                                f"(jitter, greyscale and blur batched on the Train worker's device), got {d.photometric!r}"),
        at_least("data", "shuffle_buffer", 0, " (0 = off)"),
        at_least("data", "preprocess_block_mb", 0, " (0 = 128-row blocks)"),
        at_least("data", "preprocess_batch_size", 1),
        at_least("data", "task_output_buffer_mb", 0, " (0 = Ray's default, 2 blocks)"),
        at_least("data", "prefetch_batches", 0),
        at_least("data", "samples_per_epoch", 0, " (0 = from the shard manifest)"),
        at_least("run", "workers", 0, " (0 = run in the driver process, for debugging)"),
        (r.cpus_per_worker > 0, f"run.cpus_per_worker must be > 0, got {r.cpus_per_worker!r}"),
        at_least("run", "gpus_per_worker", 0),
        at_least("run", "max_failures", -1, " (-1 = retry without limit, 0 = off)"),
        at_least("run", "seed", 0, " (numpy's seed sequences take non-negative seeds)"),
        (d.preprocess_cpus > 0, f"data.preprocess_cpus must be > 0, got {d.preprocess_cpus!r}"),
        (0 <= d.executor_poll_s <= 1, f"data.executor_poll_s must be between 0 (Ray's own wait, 0.1 s) and 1 second, got {d.executor_poll_s}"),
        (r.placement_strategy in ("PACK", "SPREAD", "STRICT_SPREAD", "STRICT_PACK"),
         f"run.placement_strategy must be PACK, SPREAD, STRICT_SPREAD or STRICT_PACK, got {r.placement_strategy!r}"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ConfigError(msg)
    if d.photometric == "device" and r.gpus_per_worker == 0:
        import warnings

        warnings.warn("data.photometric=device without a GPU (run.gpus_per_worker=0): the Train worker's CPU makes the views' "
                      "jitter/grey/blur in torch, ~45x slower per 224 px view than the read tasks' OpenCV (benchmarks/README.md); "
                      "use data.photometric=reader on CPU", stacklevel=2)
    if t.precision == "fp16" and r.gpus_per_worker == 0:
        raise ConfigError("train.precision=fp16 needs a GPU (its grad scaler is CUDA-only); use bf16 on CPU")
    check = getattr(exp.method, "validate", None)
    if callable(check):
        try:
            check()
        except ConfigError:
            raise
        except ValueError as exc:  # a method's own check: reported like every other config error
            raise ConfigError(f"method.* ({exp.method_name}): {exc}") from None


def load_yaml(path: str | Path) -> dict:
    import yaml

    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def build_experiment(method_name: str, yaml_path: str | None = None, sets: list[str] | None = None, **flag_overrides) -> Experiment:
    """Defaults from the method's Config and train_defaults, then YAML, then flags, then --set."""
    from contrastlab.methods.registry import get_method

    method_cls = get_method(method_name)
    exp = Experiment(method_name, method_cls.Config())
    defaults = {f"train.{k}": v for k, v in getattr(method_cls, "train_defaults", {}).items()}
    defaults.update({f"data.{k}": v for k, v in getattr(method_cls, "data_defaults", {}).items()})
    apply_overrides(exp, defaults)
    if yaml_path:
        y = load_yaml(yaml_path)
        y.pop("method_name", None)
        apply_overrides(exp, flatten(y))
    apply_overrides(exp, {k: v for k, v in flag_overrides.items() if v is not None})
    apply_overrides(exp, parse_sets(sets or []))
    _epochs_from_phases(exp, method_cls)
    return exp


def phase_plan(method_cls, method_cfg) -> list[tuple[str, int]]:
    """A phased method's [(phase, epochs)], evaluated on the driver from the config alone (the
    contract: `phases()` reads only `self.cfg`), so epochs, LR schedules and ASHA's max_t agree."""
    phases = getattr(method_cls, "phases", None)
    if not callable(phases):
        return []
    from types import SimpleNamespace

    return [(str(name), int(n)) for name, n in phases(SimpleNamespace(cfg=method_cfg))]


def _epochs_from_phases(exp: Experiment, method_cls) -> None:
    """For a phased method, `train.epochs` is the sum of its phases' epochs: set it, and say so when
    a different value was asked for (the phase lengths are the method's own config fields)."""
    plan = phase_plan(method_cls, exp.method)
    if not plan:
        return
    total = sum(n for _, n in plan)
    if total < 1:
        raise ConfigError(f"method {exp.method_name!r} has no training epochs: its phases are {plan}")
    if exp.train.epochs != total:
        print(f"[contrastlab] train.epochs = {total}: the sum of {exp.method_name}'s phases {plan} "
              f"(set the phase lengths in the method config to change it; train.epochs={exp.train.epochs} ignored)")
        exp.train.epochs = total


def parse_sets(sets: list[str]) -> dict:
    out = {}
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = value
    return out


def save_json(exp: Experiment, path: str | Path) -> None:
    Path(path).write_text(json.dumps(exp.to_dict(), indent=2, default=str))
