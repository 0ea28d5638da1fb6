"""Shuffle-BN across 2 gloo processes (no Ray): keys come back to the rows they belong to, and a
queue fed with gathered keys is identical on both ranks."""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

B, D = 4, 3


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    from contrastlab.methods.fame.moco import KeyQueue, key_forward_shuffle_ddp
    from contrastlab.platform import distributed as du

    torch.manual_seed(0)
    enc = nn.Linear(D, 2)  # row-wise: the shuffled forward must equal the plain one row by row
    x = torch.arange(2 * B * D, dtype=torch.float32).view(2 * B, D)[rank * B:(rank + 1) * B]
    torch.manual_seed(100 + rank)  # different local permutations: rank 0's broadcast one must win
    keys = key_forward_shuffle_ddp(enc, x)
    queue = KeyQueue(2, 16, generator=torch.Generator().manual_seed(0))
    queue.enqueue(du.gather(nn.functional.normalize(keys, dim=1), grad=False))
    torch.save({"keys": keys, "plain": enc(x).detach(), "queue": queue.queue, "ptr": queue.ptr}, os.path.join(out_dir, f"{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.slow  # spawns two python processes (~10 s idle, ~60 s on the loaded shared machine)
def test_shuffle_bn_ddp_two_ranks(tmp_path):
    mp.start_processes(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, start_method="spawn", join=True)
    r0, r1 = (torch.load(tmp_path / f"{r}.pt") for r in (0, 1))
    for r in (r0, r1):
        torch.testing.assert_close(r["keys"], r["plain"])
    torch.testing.assert_close(r0["queue"], r1["queue"])
    assert r0["ptr"].item() == r1["ptr"].item() == 2 * B
