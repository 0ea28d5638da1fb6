"""The platform's split of a run's datasets between Train workers (data/split.py): with one worker
the datasets are iterated directly in the worker (no streaming_split coordinator); every epoch of
every dataset must still deliver each sample exactly once."""
import json
import os


def _epochs_loop(config):
    import ray.train

    seen = {}
    for name in ("train", "eval"):
        shard = ray.train.get_dataset_shard(name)
        seen[name] = [sorted(int(i) for b in shard.iter_torch_batches(batch_size=5) for i in b["index"]) for _ in range(2)]
    with open(os.path.join(config["out"], "seen.json"), "w") as fh:
        json.dump(seen, fh)


def test_one_worker_sees_every_sample_every_epoch(ray_cluster, tmp_path):
    import ray.data
    import ray.train
    from ray.train.torch import TorchTrainer

    from contrastlab.platform.data.split import TrainEqualEvalCompleteConfig

    n = 23  # not a multiple of the batch
    datasets = {name: ray.data.from_items([{"index": i} for i in range(n)]) for name in ("train", "eval")}
    trainer = TorchTrainer(
        _epochs_loop, train_loop_config={"out": str(tmp_path)}, datasets=datasets,
        dataset_config=TrainEqualEvalCompleteConfig(),
        scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 0.5}),
        run_config=ray.train.RunConfig(name="split1", storage_path=str(tmp_path)),
    )
    trainer.fit()
    seen = json.load(open(tmp_path / "seen.json"))
    assert seen == {name: [list(range(n))] * 2 for name in ("train", "eval")}


def test_one_worker_gets_a_plain_iterator_not_a_split(ray_cluster):
    import ray.data

    from contrastlab.platform.data.split import TrainEqualEvalCompleteConfig

    ds = ray.data.range(4)
    (out,) = TrainEqualEvalCompleteConfig().configure({"train": ds}, world_size=1, worker_handles=None, worker_node_ids=None)
    assert type(out["train"]).__name__ == "DataIteratorImpl"  # streaming_split would give a StreamSplitDataIterator
