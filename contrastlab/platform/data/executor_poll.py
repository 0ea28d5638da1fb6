"""How often Ray Data's streaming executor looks at its running tasks (`data.executor_poll_s`).

Ray Data's scheduling loop waits in `ray.wait` on all of its running tasks at once (`num_returns` =
all of them) with a 0.1 s timeout. While its read tasks run, it therefore sees a finished block, or a
finished task whose CPU could go to the next one, up to 0.1 s late (ray-project/ray#42377 and #45934,
both open). Timed in the Train worker, 224 px MoCo-v2 views, 222-row blocks on 2 cores: the read tasks
started 0.03 s into an epoch and had their first block made by 0.21-0.25 s, yet it arrived at 0.44 s.

A shorter wait costs CPU: each look runs the executor's whole scheduling step, ~0.45 ms, in the process
running the executor. Measured side by side (benchmarks/iterator_latency.py, session 17; one cluster,
alternated, medians of 8 epochs per variant; images/s relative to Ray's 0.1 s in the same run):

| wait | 224 px, 0.9 s epochs: first batch / img/s | 375x500 viewed at 224, 2.3 s epochs: first batch / img/s | Train worker CPU |
|---|---|---|---|
| 0.1 s (Ray's) | 0.35-0.45 s / 1 | 0.55-0.61 s / 1 | - |
| 0.02 s | 0.27-0.28 s / 1.02, 0.95 | 0.45-0.47 s / 0.99, 0.94 | -5 to +23 us/img |
| 0.01 s | 0.29 s / 1.02, 0.96 | 0.44 s / 0.97, 0.95 | +10 to +46 us/img |

So the default leaves Ray's wait alone (`data.executor_poll_s` = 0): a faster look brings each epoch's
first batch 0.1-0.17 s sooner, which pays only where an epoch lasts about a second (small embedded
sets; `ingest.py --quick`'s 224 px set read 0.92 of webdataset with 20 ms, 0.85-0.90 without), and
costs up to 6% of the rate in longer ones. Looking fast only until an epoch's first block arrives
(tried in session 17) read 0.87 there: an epoch's end pays the wait too, when the executor notices its
last task's end.

The timeout is a module constant of Ray's, read at each wait, in the process that runs the executor:
the driver for its own `ds.iter_*`; for a run's shards the Train worker itself when the run has one,
else a SplitCoordinator actor. The platform's datasource carries the setting and applies it wherever
it is unpickled (reader.py), which includes every such process.
"""
from __future__ import annotations

import warnings

RAY_POLL_CONSTANT = "WAIT_FOR_TASK_COMPLETION_TIMEOUT_S"  # ray.data._internal.execution.streaming_executor_state
RAY_OWN_POLL_S = 0.1  # its value in Ray 2.60
_warned: list[bool] = []


def set_executor_poll(seconds: float) -> bool:
    """Make this process's Ray Data executors wait at most `seconds` between looks at their tasks; 0
    leaves the process as it is (Ray's own 0.1 s, unless a dataset unpickled here before set another).
    Returns whether a setting was made. A Ray without the constant (it is internal, so a later Ray may
    rename it) keeps its own polling, with one warning."""
    if seconds <= 0:
        return False
    try:
        from ray.data._internal.execution import streaming_executor_state as state
    except ImportError:
        state = None
    if not isinstance(getattr(state, RAY_POLL_CONSTANT, None), (int, float)):
        if not _warned:
            _warned.append(True)
            import ray

            warnings.warn(f"data.executor_poll_s: Ray {ray.__version__} has no streaming_executor_state.{RAY_POLL_CONSTANT}, "
                          "so Ray Data keeps its own polling (up to 0.1 s late per finished block)", stacklevel=2)
        return False
    setattr(state, RAY_POLL_CONSTANT, float(seconds))
    return True
