"""Sweeps: a Ray Tune `Tuner` whose trials each run a TorchTrainer (the Train V2 pattern:
`Tuner(trainer)` is gone; a function trainable builds the trainer, ray-notes §2).

- Search space: the method's `search_space()` (keys `section.field`), applied as config overrides.
- Scheduler: ASHA on the method's evaluation metric, `time_attr="epoch"` (the epoch the Train loop
  reports, fractional for mid-epoch checkpoints); FIFO for plain grids. No PBT (see build_scheduler).
  Not Tune's `training_iteration`: that counts reports, so mid-epoch checkpoints inflate it, and it
  starts again at 1 when Tune restarts a trial (say after losing its node) whose Train run then
  resumes at a later epoch from its own checkpoint.
- Each trial's Train run is named after the trial id (stable): a restarted trial resumes its run.
- `resume=True` restores an interrupted sweep with `Tuner.restore`: finished trials are not rerun,
  errored/unfinished ones resume from their last checkpoint.
- Writes `best.json` (best config + metrics) and prints a trial table.
"""
from __future__ import annotations

import json
import os
from typing import Any

from contrastlab.platform.config import ConfigError, Experiment, apply_overrides
from contrastlab.platform.runner import init_ray, make_trainer, plan_data, plan_resources, cluster_cpus


def _trial_fn(config: dict, experiment: dict, storage: str, name: str) -> None:
    """One trial: the sweep's experiment with this trial's sampled overrides, run as a TorchTrainer.
    The experiment travels by `tune.with_parameters` (not in the param space), so Tune's progress
    lines and result files show only the sampled hyperparameters."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    exp = apply_overrides(Experiment.from_dict(experiment), dict(config))
    trial_id = ray.tune.get_context().get_trial_id()
    trial_dir = ray.tune.get_context().get_trial_dir()
    exp_root = f"{storage.rstrip('/')}/{name}"  # local path or URI alike
    tb_dir = os.path.join(trial_dir, "tensorboard") if "://" not in exp_root else f"{exp_root}/tensorboard/{trial_id}"
    trainer = make_trainer(exp, name=f"{name}-train-{trial_id}", storage=f"{exp_root}/train_runs",
                           callbacks=[TuneReportCallback()], tb_dir=tb_dir)
    try:
        result = trainer.fit()
    except Exception as exc:  # noqa: BLE001 - only a non-finite loss is handled here
        reason = _nonfinite_reason(exc)
        if reason is None:
            raise
        # A NaN/inf loss is the trial's outcome, not a fault to retry (Tune's max_failures would rerun it):
        # stop this trial with the reason and the worst metric in its last result; the sweep goes on.
        from contrastlab.methods.registry import get_method

        method_cls = get_method(exp.method_name)
        worst = float("-inf") if getattr(method_cls, "eval_mode", "max") == "max" else float("inf")
        ray.tune.report({method_cls.eval_metric: worst, "stopped_reason": reason})
        return
    if result.error:
        raise result.error


def _nonfinite_reason(exc: BaseException) -> str | None:
    """The NonFiniteLossError message inside a Train failure (worker errors arrive wrapped), else None."""
    text = str(exc)
    for failure in getattr(exc, "worker_failures", {}).values():
        text += "\n" + str(failure)
    if "NonFiniteLossError" not in text:
        return None
    line = next((l for l in text.splitlines() if "non-finite" in l), "non-finite loss")
    return line.split("NonFiniteLossError:", 1)[-1].strip()[:500]


def build_scheduler(kind: str, metric: str, mode: str, max_t: int, search_space: dict):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if kind == "asha":
        return ASHAScheduler(time_attr="epoch", max_t=max_t, grace_period=1, reduction_factor=2)
    if kind == "fifo":
        return FIFOScheduler()
    if kind == "pbt":
        # PBT exploits by cloning a better trial's Tune checkpoint into a worse one, with mutated
        # hyperparameters. A trial here is a Train run that checkpoints and resumes itself (named by
        # trial id, refusing a changed config on resume), so PBT's exploit step never had a checkpoint
        # to clone and the sweep was random search in disguise (found in session 19). Refused rather
        # than left silently inert.
        raise ConfigError("scheduler 'pbt' is not supported: a trial's Train run keeps its own checkpoints, which "
                          "PBT cannot clone between trials; use asha (early stopping) or fifo")
    raise ConfigError(f"unknown scheduler {kind!r}: use asha or fifo")


def run_sweep(
    exp: Experiment,
    *,
    name: str,
    storage: str,
    num_samples: int = 4,
    max_concurrent: int = 0,
    scheduler: str = "asha",
    search_space: dict | None = None,
    resume: bool = False,
    max_trial_failures: int = 0,
) -> dict:
    import ray.tune
    from contrastlab.methods.registry import get_method

    method_cls = get_method(exp.method_name)
    metric, mode = method_cls.eval_metric, getattr(method_cls, "eval_mode", "max")
    space = dict(search_space if search_space is not None else method_cls.search_space(None))
    trial_scheduler = build_scheduler(scheduler, metric, mode, exp.train.epochs, space)  # refuses pbt before Ray starts
    plan_data(exp)  # generate embedded data / refuse bad shard patterns before any Ray work starts
    init_ray()
    cpus = cluster_cpus()
    trial_cpus = max(exp.run.workers, 1) * exp.run.cpus_per_worker + 0.01 + exp.data.preprocess_cpus
    if not max_concurrent:
        max_concurrent = max(1, int(cpus // trial_cpus))
        if exp.run.gpus_per_worker:
            import ray

            gpus = ray.cluster_resources().get("GPU", 0)
            max_concurrent = max(1, min(max_concurrent, int(gpus // (exp.run.gpus_per_worker * max(1, exp.run.workers)))))
    plan_resources(exp, cpus, concurrent_trials=max_concurrent)
    storage_path = storage if "://" in storage else os.path.abspath(os.path.expanduser(storage))
    exp_dir = os.path.join(storage_path, name)
    param_space: dict[str, Any] = dict(space)
    trainable = ray.tune.with_resources(
        ray.tune.with_parameters(_trial_fn, experiment=exp.to_dict(), storage=storage_path, name=name), {"CPU": 0.01})
    if resume and ray.tune.Tuner.can_restore(exp_dir):
        print(f"[contrastlab] resuming sweep {exp_dir}")
        tuner = ray.tune.Tuner.restore(exp_dir, trainable=trainable, resume_unfinished=True, resume_errored=True, param_space=param_space)
    else:
        if resume:
            print(f"[contrastlab] nothing to resume at {exp_dir}; starting a new sweep")
        tuner = ray.tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=ray.tune.TuneConfig(
                metric=metric, mode=mode, num_samples=num_samples, max_concurrent_trials=max_concurrent,
                scheduler=trial_scheduler,
                trial_dirname_creator=lambda t: f"trial_{t.trial_id}",
            ),
            run_config=ray.tune.RunConfig(name=name, storage_path=storage_path,
                                          failure_config=ray.tune.FailureConfig(max_failures=max_trial_failures)),
        )
    # Methods may evaluate every k epochs (train.eval_every_epochs, e.g. UCR's 2): the epochs between
    # report no metric. ASHA skips such results by itself; Tune's strict check would instead fail the
    # trial, so it is off (a metric a method never reports still shows up as best_error in best.json).
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    results = tuner.fit()
    return summarise(results, metric, mode, exp_dir, experiment=exp)


def epochs_reached(result) -> float | int | None:
    """The furthest epoch a trial's Train loop reported, over all its results (a restarted trial's
    history included; its last result may be a non-finite-loss stop report without an epoch)."""
    frame = getattr(result, "metrics_dataframe", None)
    epochs = [] if frame is None or "epoch" not in frame else [e for e in frame["epoch"].tolist() if e == e]
    epochs.append((result.metrics or {}).get("epoch"))
    epochs = [e for e in epochs if isinstance(e, (int, float))]
    if not epochs:
        return None
    furthest = max(epochs)
    return int(furthest) if float(furthest).is_integer() else furthest


def summarise(results, metric: str, mode: str, exp_dir: str, experiment: Experiment | None = None) -> dict:
    """Print the trial table and write best.json into the experiment folder."""
    rows = []
    for r in results:
        cfg = {k: v for k, v in (r.config or {}).items() if not k.startswith("__")}
        m = r.metrics or {}
        rows.append({"trial": os.path.basename(r.path or ""),
                     "status": "ERROR" if r.error else ("STOPPED" if m.get("stopped_reason") else "OK"),
                     "epochs": epochs_reached(r), metric: m.get(metric), **cfg,
                     "error": str(r.error).splitlines()[0][:120] if r.error else m.get("stopped_reason", "")})
    keys = list(dict.fromkeys(k for row in rows for k in row))
    print("\n" + " | ".join(keys))
    for row in rows:
        print(" | ".join(f"{row.get(k):.4g}" if isinstance(row.get(k), float) else str(row.get(k, "")) for k in keys))
    summary = {"metric": metric, "mode": mode, "trials": rows}
    try:
        best = results.get_best_result(metric=metric, mode=mode, scope="all")
        best_cfg = {k: v for k, v in best.config.items() if not k.startswith("__")}
        summary.update({
            "best_config": best_cfg,
            "best_metrics": {k: v for k, v in (best.metrics or {}).items() if isinstance(v, (int, float, str))},
            "best_trial_dir": best.path,
            # the best trial's whole resolved config: rerun it with `contrastlab train --config` (YAML/JSON)
            "experiment": (apply_overrides(Experiment.from_dict(experiment.to_dict()), dict(best_cfg)).to_dict()
                           if experiment is not None else None),
        })
    except (RuntimeError, ValueError, KeyError) as exc:
        summary["best_error"] = str(exc)
    if "://" not in exp_dir:
        os.makedirs(exp_dir, exist_ok=True)
        with open(os.path.join(exp_dir, "best.json"), "w") as fh:
            json.dump(summary, fh, indent=2, default=str)
        print(f"[contrastlab] best.json written to {os.path.join(exp_dir, 'best.json')}")
    else:
        import pyarrow.fs as pafs

        fs, path = pafs.FileSystem.from_uri(exp_dir)
        with fs.open_output_stream(path + "/best.json") as fh:
            fh.write(json.dumps(summary, indent=2, default=str).encode())
    return summary
