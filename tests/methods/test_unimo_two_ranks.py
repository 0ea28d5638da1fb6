"""UNIMO on 2 gloo processes (no Ray) where one rank's batch has no image-text pair rows: both ranks
still run the CMCL gathers (forward and backward) and the platform's gradient sync, so the step ends
(no collective mismatch / hang) with identical averaged gradients on both ranks."""
import datetime
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
from two_ranks import run_ranks

DEADLINE_S = 300


def _worker(rank: int, init_file: str, out_dir: str, variant: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=90))  # a mismatch raises instead of hanging
    from test_unimo_method import FakeCtx, _batch, _fake_samples, tiny_cfg

    from contrastlab.methods.unimo.method import UNIMO, unimo_train_sample_fn
    from contrastlab.platform import distributed as du
    from contrastlab.platform.train import sync_gradients

    cfg = tiny_cfg(cmcl_variant=variant)
    torch.manual_seed(0)
    method = UNIMO(cfg)
    samples = _fake_samples(cfg, 12)
    # rank 0: pair, text and image rows; rank 1: text-only and image-only rows (same local batch size)
    local = samples[:6] if rank == 0 else [s for s in samples if s["json"]["stream"] != 0][:6]
    batch = _batch(cfg, local, unimo_train_sample_fn(cfg, {}))

    class Ctx(FakeCtx):
        def __init__(self):
            super().__init__(method, 0.0)
            self.rank, self.world_size = rank, 2

        @staticmethod
        def gather(x, grad=True):
            return du.gather(x, grad=grad)

    total, logs = method.compute_losses(batch, Ctx())
    total.backward()
    params = [p for p in method.parameters() if p.requires_grad]
    sync_gradients(params, 2)
    torch.save({"logs": logs, "pairs": int((batch["stream"] == 0).sum()),
                "grads": {n: (p.grad.clone() if p.grad is not None else None) for n, p in method.named_parameters()}},
               os.path.join(out_dir, f"{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.slow  # spawns two python processes (~15 s idle, longer on the loaded shared machine)
@pytest.mark.parametrize("variant", ["card", "unimo2"])
def test_rank_without_pair_rows_does_not_hang_and_grads_agree(tmp_path, variant):
    run_ranks(_worker, (str(tmp_path / "init"), str(tmp_path), variant), "2-rank UNIMO step", DEADLINE_S)
    r0, r1 = (torch.load(tmp_path / f"{r}.pt") for r in (0, 1))
    assert r0["pairs"] > 0 and r1["pairs"] == 0
    assert r1["logs"]["loss_cmcl"] == 0.0 and np.isfinite(r0["logs"]["loss_cmcl"]) and r0["logs"]["loss_cmcl"] > 0
    assert r0["grads"].keys() == r1["grads"].keys()
    for name, g0 in r0["grads"].items():
        g1 = r1["grads"][name]
        assert (g0 is None) == (g1 is None), name
        if g0 is not None:
            assert torch.isfinite(g0).all(), name
            torch.testing.assert_close(g0, g1, rtol=0, atol=0)
    for name in ("model.pool_text.0.weight", "model.pool_image.0.weight", "temperature"):
        assert r0["grads"][name] is not None, name
    # (the fake pairs are all alike, so UNIMO-2's symmetric CE has zero gradient on the pooled heads)
    if variant == "card":
        assert r0["grads"]["model.pool_text.0.weight"].abs().sum() > 0
