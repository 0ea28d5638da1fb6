"""The loop's collectives on 2 real gloo processes (no Ray).

`sync_gradients` with ranks that used different parameters (DDP's find_unused_parameters semantics):
no hang, identical averaged grads on both ranks (a grad missing on one rank counts as zero), and a
parameter unused on every rank keeps grad None. `broadcast_norm_statistics`: rank 0's BatchNorm
running statistics on every rank; other buffers (even of different shapes per rank) untouched."""
import datetime
import os

import pytest
import torch
import torch.distributed as dist
from torch import nn

from contrastlab.platform.train import broadcast_norm_statistics, sync_gradients
from two_ranks import run_ranks

WORLD = 2
DEADLINE_S = 240  # the whole 2-process run; a collective mismatch would otherwise hang forever


def _model() -> nn.ModuleDict:
    torch.manual_seed(0)
    return nn.ModuleDict({
        "shared": nn.Linear(4, 3),
        "only0": nn.Linear(4, 5),  # used on rank 0 only (bigger than only1: the old sync's buffers differed in size)
        "only1": nn.Linear(4, 2),  # used on rank 1 only
        "never": nn.Linear(4, 7),  # used on no rank
        "f64": nn.Linear(4, 2).double(),  # a second dtype: its own coalesced bucket
    })


def _local_grads(model: nn.ModuleDict, rank: int) -> None:
    """Rank r's backward: `shared` and `f64` always, `only{r}`; different inputs per rank."""
    x = torch.arange(8, dtype=torch.float32).view(2, 4) * (rank + 1)
    loss = model["shared"](x).pow(2).sum() + model[f"only{rank}"](x).sum() * (rank + 2)
    loss = loss + model["f64"](x.double()).sum().float() * (rank + 1)
    loss.backward()


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=60))  # a mismatch raises instead of hanging
    model = _model()
    _local_grads(model, rank)
    params = list(model.parameters())
    sync_gradients(params, WORLD)
    sync_gradients(params, WORLD)  # a second sync (now with every used grad present) keeps the average
    torch.save({n: (p.grad.clone() if p.grad is not None else None) for n, p in model.named_parameters()},
               os.path.join(out_dir, f"{rank}.pt"))
    bn = _bn_model(rank)
    bn(torch.randn(16, 3, generator=torch.Generator().manual_seed(rank)) * (rank + 1) + rank)  # own batch statistics
    torch.save({"before": _buffers(bn)}, os.path.join(out_dir, f"bn{rank}-before.pt"))
    broadcast_norm_statistics(bn)
    torch.save({"after": _buffers(bn)}, os.path.join(out_dir, f"bn{rank}.pt"))
    dist.destroy_process_group()


def _bn_model(rank: int) -> nn.Module:
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    model.register_buffer("bank", torch.full((rank + 1,), float(rank)))  # a method's own buffer: shape per rank
    return model


def _buffers(model: nn.Module) -> dict:
    return {n: b.clone() for n, b in model.named_buffers()}


def _expected() -> dict:
    """The average over ranks of each rank's local grad, zero where a rank has none; None if no rank has one."""
    per_rank = []
    for rank in range(WORLD):
        model = _model()
        _local_grads(model, rank)
        per_rank.append({n: p.grad for n, p in model.named_parameters()})
    out = {}
    for name in per_rank[0]:
        grads = [g[name] for g in per_rank if g[name] is not None]
        out[name] = None if not grads else sum(grads) / WORLD
    return out


def _run_two_ranks(tmp_path) -> None:
    run_ranks(_worker, (str(tmp_path / "init"), str(tmp_path)), "2-rank gradient sync", DEADLINE_S, WORLD)


@pytest.mark.slow  # spawns two python processes (~10 s idle, longer on the loaded shared machine)
def test_ranks_with_different_used_params_sync_to_identical_averaged_grads(tmp_path):
    _run_two_ranks(tmp_path)
    r0, r1 = (torch.load(tmp_path / f"{r}.pt") for r in range(WORLD))
    want = _expected()
    for name, expected in want.items():
        if expected is None:
            assert r0[name] is None and r1[name] is None, name  # unused on every rank: left None
            continue
        torch.testing.assert_close(r0[name], r1[name], rtol=0, atol=0)  # identical on both ranks
        torch.testing.assert_close(r0[name], expected)
    assert want["never.weight"] is None and want["only0.weight"] is not None and want["only1.weight"] is not None
    assert r0["f64.weight"].dtype == torch.float64
    # a grad that only one rank had is that rank's grad / world size on both ranks
    torch.testing.assert_close(r1["only0.bias"], torch.full((5,), 2 * 2 / WORLD))


    # BatchNorm statistics: rank 0's on both ranks after the broadcast; the bank left as each rank had it
    b0, b1 = (torch.load(tmp_path / f"bn{r}-before.pt")["before"] for r in range(WORLD))
    a0, a1 = (torch.load(tmp_path / f"bn{r}.pt")["after"] for r in range(WORLD))
    assert not torch.equal(b0["1.running_mean"], b1["1.running_mean"])  # the ranks had drifted apart
    for name in ("1.running_mean", "1.running_var", "1.num_batches_tracked"):
        assert torch.equal(a1[name], b0[name]) and torch.equal(a0[name], b0[name]), name
    assert torch.equal(a0["bank"], b0["bank"]) and torch.equal(a1["bank"], b1["bank"])


def test_single_worker_sync_is_a_no_op_and_keeps_none_grads():
    model = _model()
    _local_grads(model, 0)
    before = {n: (p.grad.clone() if p.grad is not None else None) for n, p in model.named_parameters()}
    sync_gradients(list(model.parameters()), 1)  # no process group: must not call any collective
    for n, p in model.named_parameters():
        if before[n] is None:
            assert p.grad is None, n
        else:
            assert torch.equal(p.grad, before[n]), n
