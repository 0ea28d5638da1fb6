"""Run a test's worker function in 2 spawned processes (real gloo collectives, no Ray), failing the test
instead of hanging when a collective mismatch would block forever."""
import time

import pytest
import torch.multiprocessing as mp


def run_ranks(worker, args: tuple, what: str, deadline_s: float = 240, nprocs: int = 2) -> None:
    """`worker(rank, *args)` on `nprocs` processes; fail if they do not all finish within `deadline_s`."""
    ctx = mp.start_processes(worker, args=args, nprocs=nprocs, start_method="spawn", join=False)
    deadline = time.monotonic() + deadline_s
    try:
        while not ctx.join(timeout=5):
            if time.monotonic() > deadline:
                pytest.fail(f"{what} did not finish within {deadline_s} s (collective mismatch / hang)")
    finally:
        for proc in ctx.processes:
            if proc.is_alive():
                proc.kill()
