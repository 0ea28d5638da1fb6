"""extract_features: in-process known answer, and on 2 real Ray Train workers over a Ray Dataset
(every sample once, index order, identical on both ranks)."""
import numpy as np
import pytest
import torch

from contrastlab.platform.eval import extract_features


def _batches():
    # uneven parts with a duplicated index (padding), out of order
    yield {"index": torch.tensor([3, 1]), "x": torch.tensor([[3.0], [1.0]]), "label": torch.tensor([30, 10])}
    yield {"index": torch.tensor([0, 2, 3]), "x": torch.tensor([[0.0], [2.0], [3.0]]), "label": torch.tensor([0, 20, 30])}


def test_single_process_sorted_deduplicated_with_columns():
    idx, feats, cols = extract_features(_batches, lambda b: b["x"] * 2)
    np.testing.assert_array_equal(idx, [0, 1, 2, 3])
    np.testing.assert_array_equal(feats[:, 0], [0, 2, 4, 6])
    np.testing.assert_array_equal(cols["label"], [0, 10, 20, 30])
    assert "x" not in cols  # 2-D columns are not carried


def test_missing_index_is_a_clear_error():
    with pytest.raises(KeyError, match="index"):
        extract_features([{"x": torch.zeros(2, 1)}], lambda b: b["x"])


def _extract_loop(config):
    import json
    import os

    import ray.train

    from contrastlab.platform.eval import extract_features

    shard = ray.train.get_dataset_shard("eval")
    idx, feats, cols = extract_features(lambda: shard.iter_torch_batches(batch_size=5), lambda b: b["value"].float()[:, None] * 10)
    ctx = ray.train.get_context()
    out = {"idx": idx.tolist(), "feats": feats[:, 0].tolist(), "label": cols["label"].tolist()}
    with open(os.path.join(config["out"], f"rank{ctx.get_world_rank()}.json"), "w") as fh:
        json.dump(out, fh)  # Result.metrics only carries checkpointed rank-0 metrics (ray-notes), so each rank writes a file


def test_two_ray_train_workers_gather_everything_in_index_order(ray_cluster, tmp_path):
    import ray.data
    import ray.train
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from contrastlab.platform.data.split import TrainEqualEvalCompleteConfig

    n = 23  # not a multiple of 2 workers x batch 5
    rows = [{"index": i, "value": (i * 7) % n, "label": i % 3} for i in np.random.default_rng(0).permutation(n)]
    ds = ray.data.from_items(rows)
    trainer = TorchTrainer(
        _extract_loop, train_loop_config={"out": str(tmp_path)}, datasets={"eval": ds},
        dataset_config=TrainEqualEvalCompleteConfig(),  # the platform's split: eval keeps every sample
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        run_config=RunConfig(name="extract", storage_path=str(tmp_path)),
    )
    trainer.fit()
    import json

    per_rank = [json.load(open(tmp_path / f"rank{r}.json")) for r in (0, 1)]
    assert per_rank[0] == per_rank[1]  # identical on every rank
    assert per_rank[0]["idx"] == list(range(n))
    assert per_rank[0]["feats"] == [float(((i * 7) % n) * 10) for i in range(n)]
    assert per_rank[0]["label"] == [i % 3 for i in range(n)]


def test_fn_must_return_one_row_per_sample():
    batches = [{"index": torch.tensor([0, 1]), "x": torch.tensor([[0.0], [1.0]])}]
    # a multi-crop fn stacking two views as rows would silently misassign features
    with pytest.raises(ValueError, match=r"batch has 2 samples.*shape \(4, 1\)"):
        extract_features(batches, lambda b: torch.cat([b["x"], b["x"]], dim=0))
    idx, feats, _ = extract_features(batches, lambda b: torch.cat([b["x"], b["x"]], dim=1))  # views side by side: fine
    assert feats.shape == (2, 2)


def test_every_column_must_have_the_batch_length():
    batches = [{"index": torch.tensor([0, 1]), "x": torch.zeros(2, 1), "label": torch.tensor([0, 1, 2])}]
    with pytest.raises(ValueError, match="column 'label' has 3 entries but the batch has 2"):
        extract_features(batches, lambda b: b["x"])
    partial = [{"index": torch.tensor([0]), "x": torch.zeros(1, 1), "label": torch.tensor([0])},
               {"index": torch.tensor([1]), "x": torch.zeros(1, 1)}]
    with pytest.raises(ValueError, match="column 'label' is missing from some batches"):
        extract_features(partial, lambda b: b["x"])


def test_shared_index_with_different_samples_raises():
    # two sources converted separately, both starting their index at 0: index 0 and 1 collide
    batches = [{"index": torch.tensor([0, 1]), "x": torch.tensor([[1.0], [2.0]]), "label": torch.tensor([0, 0])},
               {"index": torch.tensor([0, 1, 2]), "x": torch.tensor([[5.0], [2.0], [7.0]]), "label": torch.tensor([3, 0, 3])}]
    with pytest.raises(ValueError, match=r"unique across the extracted split: 1 index value.*features.*'label'.*e\.g\. index 0.*restart"):
        extract_features(batches, lambda b: b["x"])
    # same features, a different column value: still two samples
    batches[1]["x"] = torch.tensor([[1.0], [2.0], [7.0]])
    batches[1]["label"] = torch.tensor([3, 4, 3])
    with pytest.raises(ValueError, match=r"2 index value.*'label'"):
        extract_features(batches, lambda b: b["x"])


def test_identical_duplicates_are_merged_up_to_float_rounding():
    batches = [{"index": torch.tensor([1, 0]), "x": torch.tensor([[1.0, 3.0], [0.0, 0.0]]), "label": torch.tensor([10, 0])},
               {"index": torch.tensor([1]), "x": torch.tensor([[1.0 + 1e-6, 3.0]]), "label": torch.tensor([10])}]
    idx, feats, cols = extract_features(batches, lambda b: b["x"])
    np.testing.assert_array_equal(idx, [0, 1])
    np.testing.assert_array_equal(feats, [[0, 0], [1, 3]])  # the first occurrence is kept
    np.testing.assert_array_equal(cols["label"], [0, 10])
