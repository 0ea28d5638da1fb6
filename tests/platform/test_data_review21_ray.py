"""Review 21 fixes in data/reader.py that need a real Ray cluster: the epoch-keyed shard order and
a RunState actor replaced under the same name (a restarted Tune trial)."""
import time

import numpy as np

from contrastlab.platform.data import reader
from contrastlab.platform.data.reader import PreprocessBatches, build_dataset, get_or_create_run_state
from contrastlab.platform.data.shards import write_shards


def _index(sample, rng):
    return {"one": np.int64(1)}


def _shard_order(ds) -> list[int]:
    """The order the shards were read in: shard s holds the samples with index 10*s, 10*s+1."""
    return list(dict.fromkeys(int(r["index"]) // 10 for r in ds.take_all()))


def test_shuffled_file_order_is_keyed_by_epoch_not_by_execution_count(ray_cluster, tmp_path):
    import ray

    samples = ((f"{10 * s + j:05d}", {"txt": "x", "json": {"index": 10 * s + j}}) for s in range(6) for j in range(2))
    paths = write_shards(samples, tmp_path, maxcount=2)
    assert len(paths) == 6
    name = "test-review21-file-order"
    state = get_or_create_run_state(name)

    def dataset():
        ds = build_dataset(paths, _index, split="train", run_state_name=name, shuffle_files=True, seed=3, cpus=0.25)
        ds.context.execution_options.preserve_order = True  # rows in read-task (= file) order
        return ds

    ds, orders = dataset(), []
    for epoch in range(3):  # one Dataset executed once per epoch, as a run that never stopped
        ray.get(state.set_epoch.remote(epoch))
        orders.append(_shard_order(ds))
    assert all(sorted(o) == list(range(6)) for o in orders)
    assert orders[0] != orders[1] and orders[1] != orders[2] and orders[0] != orders[2]  # a fresh order each epoch
    ray.get(state.set_epoch.remote(2))
    assert _shard_order(dataset()) == orders[2]  # a resumed run (a new Dataset, executed first at epoch 2)
    ray.get(state.set_epoch.remote(1))
    assert _shard_order(ds) == orders[1]  # executed a 4th time, at epoch 1 again
    # evaluation splits stay unshuffled
    ev = build_dataset(paths, _index, split="eval", run_state_name=name, shuffle_files=True, seed=3, cpus=0.25)
    ev.context.execution_options.preserve_order = True
    assert _shard_order(ev) == list(range(6))


def _wait_until_gone(name: str, timeout_s: float = 60) -> None:
    import ray

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get_actor(name)
        except ValueError:
            return
        time.sleep(0.2)
    raise AssertionError(f"actor {name} still registered after {timeout_s} s")


def test_a_dead_cached_run_state_is_looked_up_again(ray_cluster):
    import ray

    name = "test-review21-restarted-trial"
    fn = PreprocessBatches(_index, (), "raise", name, 0, "train")
    try:
        old = get_or_create_run_state(name)
        ray.get(old.set_epoch.remote(1))
        assert fn.current_state()[0] == 1  # the handle is now cached in this process
        ray.kill(old, no_restart=True)  # the trial ends; its restart creates a new actor under the same name
        _wait_until_gone(name)
        new = get_or_create_run_state(name)
        ray.get(new.set_epoch.remote(4))
        assert fn.current_state()[0] == 4
        ray.kill(new, no_restart=True)
        _wait_until_gone(name)
        assert fn.current_state() == (0, None)  # nothing has the name: as a run without a RunState
    finally:
        reader._ACTOR_CACHE.pop(name, None)
