"""Node loss on a 2-node local Ray cluster (two raylets on 127.0.0.1, `ray.cluster_utils.Cluster`):
a TorchTrainer spreads its workers over both nodes; a sweep spreads its trials over both, and
removing one node (its raylet and every process on it, killed) mid-sweep lets the sweep finish.
Each test runs its own driver process, which owns its cluster."""
import json
import os
import subprocess
import sys

import pytest

from reliability_helpers import ROOT

pytestmark = pytest.mark.slow
DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node_loss_driver.py")


def _run(mode, tmp_path, timeout):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, DRIVER, mode, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                         timeout=timeout, env=env)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-5000:]
    return json.loads(next(l for l in out.stdout.splitlines() if l.startswith("RESULT "))[7:])


def test_one_trainer_spreads_workers_over_two_nodes(tmp_path):
    res = _run("spread", tmp_path, 400)
    assert res["nodes"] == 2
    assert res["worker_nodes"] == 2  # the two Train workers ran on different nodes (gloo across them)
    assert res["epoch"] == 1 and res["step"] == 10  # 320 pairs / (16 x 2 workers)


def test_sweep_spreads_trials_and_survives_removing_a_node(tmp_path):
    res = _run("sweep", tmp_path, 600)
    assert res["nodes"] == 2 and res["worker_nodes"] == 2  # trials ran on both nodes
    assert res["removed"] and res["alive_nodes_after"] == 1
    assert [t["status"] for t in res["trials"]] == ["OK", "OK"], res["trials"]
    assert all(t["epochs"] == 3 for t in res["trials"]), res["trials"]
