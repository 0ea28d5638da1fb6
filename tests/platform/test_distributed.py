"""2 Train workers on gloo: the gathered CLIP loss equals the single-process loss on the global batch,
and the gradient that flows back through the gathered negatives matches too."""
import numpy as np
import pytest
import torch

from contrastlab.methods.clip.loss import clip_loss, normalize

B, D, SCALE = 4, 8, 10.0


def global_batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2 * B, D, generator=g, dtype=torch.float64), torch.randn(2 * B, D, generator=g, dtype=torch.float64)


def worker_loop(config):
    import ray.train

    from contrastlab.platform import distributed as du

    rank = ray.train.get_context().get_world_rank()
    img_all, txt_all = global_batch()
    img = img_all[rank * B:(rank + 1) * B].clone().requires_grad_(True)
    txt = txt_all[rank * B:(rank + 1) * B].clone().requires_grad_(True)
    loss = clip_loss(normalize(img).double(), normalize(txt).double(), SCALE, du.gather, rank)
    loss.backward()
    # DDP semantics: average the per-rank gradients of the shared "model" (here the inputs per rank;
    # each rank owns its slice, so summing the all-gathered local gradients gives the global gradient)
    grads = du.gather(torch.cat([img.grad, txt.grad], 1), grad=False)
    losses = du.gather(loss.detach().reshape(1), grad=False)
    if rank == 0:  # Result.metrics is only filled with a checkpoint: write the numbers to a file
        import json

        with open(config["out"], "w") as fh:
            json.dump({"loss_mean": float(losses.mean()), "grads": grads.tolist()}, fh)
    ray.train.report({"done": 1})


def test_two_worker_gather_matches_single_process(ray_cluster, tmp_path):
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={"out": str(tmp_path / "out.json")},
        scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        torch_config=TorchConfig(backend="gloo"),
        run_config=ray.train.RunConfig(name="gather-test", storage_path=str(tmp_path)),
    )
    result = trainer.fit()
    assert result.error is None
    import json

    metrics = json.load(open(tmp_path / "out.json"))
    img_all, txt_all = global_batch()
    img_all.requires_grad_(True)
    txt_all.requires_grad_(True)
    ref = clip_loss(normalize(img_all).double(), normalize(txt_all).double(), SCALE)
    ref.backward()
    # each rank's local loss is the mean over its B rows; their average is the global-batch loss
    np.testing.assert_allclose(metrics["loss_mean"], ref.item(), atol=1e-5)
    # the global loss = mean of the 2 local losses, so d(global)/dx = 1/2 sum of per-rank gradients,
    # which is what DDP's averaging gives; gathered per-rank grads include the path through negatives
    got = np.array(metrics["grads"]) / 2
    want = torch.cat([img_all.grad, txt_all.grad], 1).numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)
