"""Driver side of one training run: resolve data, plan resources, build datasets and the TorchTrainer."""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

from contrastlab.platform.config import ConfigError, Experiment


@dataclass
class DataPlan:
    train: list[str]
    eval: list[str]
    filesystem: object = None
    samples_per_epoch: int = 0
    meta: dict = field(default_factory=dict)
    mix: object = None  # data.mixing.MixPlan when several weighted training sources are mixed


def _one_store(stores: list[tuple[str, object]]) -> None:
    """A run reads every split through one filesystem (the datasets, the local backend and staging
    all take one): refuse patterns on different stores (local disk, s3, gcs, ...) with their names,
    rather than open s3 keys as local paths or local paths through S3."""
    kinds = {pattern: ("local" if fs is None else getattr(fs, "type_name", type(fs).__name__)) for pattern, fs in stores}
    remote = [fs for _, fs in stores if fs is not None]
    # same kind but another configuration (an S3 region, an endpoint_override) is another store too
    same_config = all(getattr(fs, "equals", lambda other: fs is other)(remote[0]) for fs in remote[1:])
    if len(set(kinds.values())) > 1 or not same_config:
        raise ConfigError("training and evaluation shards must be on one store (one filesystem and its options); got "
                          + ", ".join(f"{p!r} ({k})" for p, k in kinds.items())
                          + ". Copy them to one place (e.g. all on s3:// with the same options, or all local)")


def plan_data(exp: Experiment) -> DataPlan:
    """Shard paths for train/eval: the user's patterns, or the method's embedded dataset. Several
    training sources (';' in data.train, or a list of splits in the method's `dataset_splits`) are
    mixed by `data.train_weights` (data/mixing.py)."""
    from contrastlab.methods.registry import get_method
    from contrastlab.platform.data.mixing import MixError, split_sources
    from contrastlab.platform.data.paths import resolve_shards

    method_cls = get_method(exp.method_name)
    meta: dict = {}
    stores: list[tuple[str, object]] = []  # (pattern, filesystem) of every resolved pattern: one store per run
    eval_paths: list[str] = []
    if exp.data.eval and exp.data.eval != "none":  # the user's evaluation shards, whatever the training data
        eval_paths, eval_fs = resolve_shards(exp.data.eval)
        stores.append((exp.data.eval, eval_fs))
    if exp.data.train:
        sources, fs = [], None
        for pattern in split_sources(exp.data.train):
            paths, fs = resolve_shards(pattern)
            sources.append(paths)
            stores.append((pattern, fs))
        if not exp.data.eval:
            print("[contrastlab] no evaluation data: --data (data.train) was given without --eval-data (data.eval), so "
                  "epochs report training losses only; pass --eval-data SHARDS to evaluate")
        meta_file = os.path.join(os.path.dirname(sources[0][0]), "meta.json")
        if fs is None and os.path.exists(meta_file):
            with open(meta_file) as fh:
                meta = json.load(fh)
    else:
        from contrastlab.platform.datasets import ensure_dataset

        name = exp.data.embedded or method_cls.default_dataset
        ds = ensure_dataset(name, seed=exp.run.seed if getattr(method_cls, "dataset_follows_seed", False) else 0,
                            cache_dir=exp.data.cache_dir or None, **exp.data.embedded_params)
        splits = getattr(method_cls, "dataset_splits", {"train": "train", "eval": "test"})
        train_splits = splits["train"] if isinstance(splits["train"], (list, tuple)) else [splits["train"]]
        sources, fs, meta = [ds.splits[s] for s in train_splits], None, dict(ds.meta)
        stores.append((f"embedded dataset {name}", None))
        if not exp.data.eval:
            eval_paths = ds.splits[splits["eval"]]
    _one_store(stores)  # so the training sources' filesystem (`fs`) reads the evaluation shards too
    train = [p for paths in sources for p in paths]
    try:
        mix = _plan_mix(exp, sources, fs)
    except MixError as exc:
        raise ConfigError(str(exc)) from None
    if mix is not None:
        print(f"[contrastlab] {mix.describe()}")
        return DataPlan(train, eval_paths, fs, mix.epoch_size, meta, mix)
    count = exp.data.samples_per_epoch or _source_count(train, fs)
    return DataPlan(train, eval_paths, fs, count, meta)


def _source_count(paths: list[str], fs) -> int:
    from contrastlab.platform.data.paths import manifest_count

    return manifest_count(paths) or _count_samples(paths, fs)


def _plan_mix(exp: Experiment, sources: list[list[str]], fs):
    """A MixPlan when there are several training sources (or explicit weights), else None."""
    from contrastlab.platform.data.mixing import MixPlan, parse_weights

    weights = parse_weights(exp.data.train_weights, len(sources))
    if len(sources) == 1 and not weights:
        return None
    counts = [_source_count(paths, fs) for paths in sources]
    return MixPlan.build(sources, counts, weights or [float(n) for n in counts], exp.data.samples_per_epoch)


def _count_samples(paths: list[str], fs) -> int:
    """One counting pass over the shards (only when neither a manifest nor data.samples_per_epoch says)."""
    from contrastlab.platform.data.reader import iter_tar_samples
    from contrastlab.platform.data.tar_stream import TAR_READ_BUFFER

    print(f"[contrastlab] counting samples in {len(paths)} shard(s) (no manifest; set data.samples_per_epoch to skip this)")
    count = 0
    for p in paths:  # samples exactly as the reader groups them
        stream = fs.open_input_stream(p, buffer_size=TAR_READ_BUFFER) if fs is not None else open(p, "rb")
        with stream:
            count += sum(1 for _ in iter_tar_samples(stream, p, "skip"))  # what the reader can read
    return count


def plan_resources(exp: Experiment, cluster_cpus: float, concurrent_trials: int = 1, driver_cpus: float = 0.01) -> None:
    """Refuse a plan that leaves Ray Data no CPU: Train workers reserve theirs, ingest gets the rest,
    and with none left the run waits forever with only a warning (ray-notes §9)."""
    train_cpus = max(exp.run.workers, 1) * exp.run.cpus_per_worker
    per_trial = train_cpus + driver_cpus
    left = cluster_cpus - concurrent_trials * per_trial
    if left < exp.data.preprocess_cpus - 1e-9:
        raise ConfigError(
            f"resource plan starves data ingest: {concurrent_trials} concurrent trial(s) x ({exp.run.workers} worker(s) x "
            f"{exp.run.cpus_per_worker} CPU) leave {left:.2f} of {cluster_cpus:g} CPUs, but each Ray Data task needs "
            f"{exp.data.preprocess_cpus}. Lower --cpus-per-worker (fractions are fine, e.g. 0.5), use fewer --workers "
            f"or fewer concurrent trials, lower data.preprocess_cpus, or add CPUs/nodes."
        )


def run_name_ok(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
        raise ConfigError(f"run name {name!r} may only contain letters, digits, '.', '_' and '-'")
    return name


def build_datasets(exp: Experiment, plan: DataPlan, run_state_name: str | None) -> dict:
    from contrastlab.methods.registry import get_method
    from contrastlab.platform.data.reader import build_dataset

    method_cls = get_method(exp.method_name)
    import ray.data

    data_context = ray.data.DataContext.get_current()  # the datasets carry it to the Train workers
    # Here too, not only in init_ray: a sweep builds its datasets in the trial's own actor, whose context
    # had Ray Data's tqdm bars on; every Train worker then printed a bar line per second into the driver's
    # log (313 of the 460 lines of a DeCLIP demo sweep). The loop's own per-epoch lines report progress.
    data_context.enable_progress_bars = False
    if exp.data.deterministic:
        data_context.execution_options.preserve_order = True
    common = dict(policy=exp.data.bad_samples, run_state_name=run_state_name, filesystem=plan.filesystem,
                  seed=exp.run.seed, cpus=exp.data.preprocess_cpus, batch_size=exp.data.preprocess_batch_size, block_mb=exp.data.preprocess_block_mb,
                  task_output_buffer_mb=exp.data.task_output_buffer_mb, photometric=exp.data.photometric,
                  executor_poll_s=exp.data.executor_poll_s)
    fn, required = method_cls.make_preprocess(exp.method, "train", plan.meta)
    datasets = {"train": build_dataset(plan.train, fn, required=required, split="train", shuffle_files=exp.data.shuffle_files,
                                       mix=plan.mix, **common)}
    if plan.eval:
        fn, required = method_cls.make_preprocess(exp.method, "eval", plan.meta)
        datasets["eval"] = build_dataset(plan.eval, fn, required=required, split="eval", **common)
    if getattr(method_cls, "needs_train_features", False):
        fn, required = method_cls.make_preprocess(exp.method, "eval", plan.meta)
        datasets["train_eval"] = build_dataset(plan.train, fn, required=required, split="train_eval", **common)
    return datasets


def steps_per_epoch(exp: Experiment, plan: DataPlan) -> int:
    world = max(exp.run.workers, 1)
    steps = plan.samples_per_epoch // (exp.train.batch_size * world)
    if steps < 1:
        raise ConfigError(
            f"{plan.samples_per_epoch} training samples cannot fill one global batch of {exp.train.batch_size} x {world} "
            f"worker(s): lower train.batch_size or use more data"
        )
    if exp.train.max_steps_per_epoch:
        steps = min(steps, exp.train.max_steps_per_epoch)
    return steps


def make_trainer(exp: Experiment, *, name: str, storage: str, plan: DataPlan | None = None, callbacks=None, tb_dir: str | None = None):
    """A TorchTrainer for this experiment. Stable `name` + `storage` = automatic resume."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from contrastlab.platform.data.reader import get_or_create_run_state

    plan = plan or plan_data(exp)
    run_state_name = f"contrastlab-runstate-{name}"
    get_or_create_run_state(run_state_name)
    datasets = build_datasets(exp, plan, run_state_name)
    storage_path = storage if "://" in storage else os.path.abspath(os.path.expanduser(storage))
    loop_config = {
        "experiment": exp.to_dict(),
        "steps_per_epoch": steps_per_epoch(exp, plan),
        "tb_dir": tb_dir or os.path.join(storage_path, name, "tensorboard"),
        "run_state": run_state_name,
        "meta": plan.meta,
        "torch_threads": max(1, int(exp.run.cpus_per_worker)),
    }
    scaling = ray.train.ScalingConfig(
        num_workers=exp.run.workers,
        use_gpu=exp.run.gpus_per_worker > 0,
        resources_per_worker={"CPU": exp.run.cpus_per_worker, **({"GPU": exp.run.gpus_per_worker} if exp.run.gpus_per_worker else {})},
        placement_strategy=exp.run.placement_strategy,
    )
    run_config = ray.train.RunConfig(
        name=name,
        storage_path=storage_path,
        callbacks=callbacks or [],
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        failure_config=ray.train.FailureConfig(max_failures=exp.run.max_failures),
    )
    from contrastlab.platform.data.split import TrainEqualEvalCompleteConfig

    data_config = TrainEqualEvalCompleteConfig()  # eval splits keep every sample (Ray's default drops some)
    return TorchTrainer(
        _loop,
        train_loop_config=loop_config,
        scaling_config=scaling,
        run_config=run_config,
        datasets=datasets,
        dataset_config=data_config,
    )


def _loop(config: dict) -> None:
    from contrastlab.platform.train import train_loop_per_worker

    train_loop_per_worker(config)


def cluster_cpus() -> float:
    import ray

    return float(ray.cluster_resources().get("CPU", 0))


def use_full_priority_workers() -> None:
    """Ray renices every worker process to 15 (`RAY_worker_niceness`), below anything else on the
    host. Measured on a 2-core box with one other busy process: PyAV decoding ran 13x slower in a
    Ray task than in a plain process (4.5 s vs 0.35 s for 8 clips) and Ray Data ingest fell to 0.1x
    of a webdataset DataLoader; at niceness 0 the same task took 0.06-0.8 s. A training run's
    workers *are* the job, so clusters started here (and by cluster.yaml) run them at 0. Must be set
    before the cluster starts (raylets read it at start); a value the user exported wins."""
    os.environ.setdefault("RAY_worker_niceness", "0")


def init_ray(num_cpus: int | None = None) -> None:
    """Connect to RAY_ADDRESS (set by `ray job submit`; `RAY_ADDRESS=auto` picks a `ray start` cluster on
    this host), else start a private local cluster bound to 127.0.0.1. Never attach silently to some
    other cluster that happens to run on the host (a shared box has several)."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
    else:
        # address="local": always a new cluster. Plain ray.init() joins whatever `ray start` cluster
        # it finds on the host (even a dead one, or another user's); join a cluster via RAY_ADDRESS.
        use_full_priority_workers()
        ray.init(address="local", num_cpus=num_cpus, dashboard_host="127.0.0.1", include_dashboard=True)
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False


def train(exp: Experiment, *, name: str, storage: str) -> dict:
    """`contrastlab train`: one run (no sweep). Returns the final metrics."""
    plan = plan_data(exp)  # bad shard patterns are refused before any Ray work starts
    init_ray()
    plan_resources(exp, cluster_cpus())
    trainer = make_trainer(exp, name=run_name_ok(name), storage=storage, plan=plan)
    result = trainer.fit()
    if result.error:
        raise result.error
    return dict(result.metrics or {})
