"""DeCLIP on 2 real Ray Train workers: the run finishes, each worker's NN queue is its own (not
rank 0's broadcast copy) and each is saved in the checkpoint; resume gives every rank its own."""
import glob
import os

import pytest
import torch

from contrastlab.platform.config import build_experiment
from contrastlab.platform.train import local_per_rank_state, per_rank_keys, restore_per_rank_state

TINY = "data.embedded_params={n_train: 256, n_heldout: 64, n_test: 32}"


def test_per_rank_state_round_trip_in_process():
    from contrastlab.methods.declip.config import DeCLIPConfig
    from contrastlab.methods.declip.method import DeCLIP

    torch.manual_seed(0)
    model = DeCLIP(DeCLIPConfig(image_size=32))
    keys = per_rank_keys(model)
    assert keys and all(k.startswith("queue.") for k in keys)
    saved = []
    for r in range(2):  # two "ranks" with different queues
        model.queue.bank.normal_()
        saved.append(local_per_rank_state(model))
    restore_per_rank_state(model, saved, rank=0)
    torch.testing.assert_close(model.queue.bank, saved[0]["queue.bank"])
    restore_per_rank_state(model, saved, rank=3)  # resumed on 4 workers: rank 3 gets old rank 1's
    torch.testing.assert_close(model.queue.bank, saved[1]["queue.bank"])


@pytest.mark.slow
def test_declip_two_workers_saves_each_ranks_queue(ray_cluster, tmp_path):
    from contrastlab.platform.runner import train

    sets = [TINY, "method.image_size=32", "train.batch_size=16", "train.epochs=1", "train.max_steps_per_epoch=3",
            "run.workers=2", "run.cpus_per_worker=0.5", "data.preprocess_cpus=0.5", f"data.cache_dir={tmp_path / 'cache'}"]
    exp = build_experiment("declip", sets=sets)
    metrics = train(exp, name="declip2w", storage=str(tmp_path))
    assert "zeroshot_colour_shape_top1" in metrics
    states = sorted(glob.glob(os.path.join(tmp_path, "declip2w", "checkpoint_*", "state.pt")))
    assert states
    state = torch.load(states[-1], weights_only=True)
    per_rank = state["per_rank"]
    assert len(per_rank) == 2
    bank0, bank1 = per_rank[0]["queue.bank"], per_rank[1]["queue.bank"]
    assert not torch.equal(bank0, bank1)  # each worker enqueued its own texts
    torch.testing.assert_close(state["method"]["queue.bank"], bank0)  # the module state is rank 0's
    assert int(per_rank[0]["queue.fill"]) == int(per_rank[1]["queue.fill"]) == 3 * 16 * 2  # t and its EDA view per step
