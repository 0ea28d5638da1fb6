"""Checkpoints: atomic writes (a process SIGKILLed while saving never leaves a checkpoint that
loads torn), `torch.load(weights_only=True)`, and refusal of another method's or config's
checkpoint with a message that says which."""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from contrastlab.platform.config import build_experiment
from contrastlab.platform.train import META_FILE, STATE_FILE, CheckpointMismatchError, StepContext, load_checkpoint_state, save_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _ctx(method="clip", sets=(), size=8):
    exp = build_experiment(method, sets=list(sets))
    module = torch.nn.Linear(size, size)
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    return StepContext(exp=exp, method=module, device=torch.device("cpu"), optimizers={"main": opt})


def test_round_trip_uses_weights_only(tmp_path):
    ctx = _ctx()
    save_checkpoint(str(tmp_path), ctx, epoch_done=2, step_in_epoch=0, rng_states=[])
    state = load_checkpoint_state(str(tmp_path), ctx.exp)
    assert state["epoch_done"] == 2 and torch.equal(state["method"]["weight"], ctx.method.weight.detach())
    assert json.load(open(tmp_path / META_FILE))["state_bytes"] == os.path.getsize(tmp_path / STATE_FILE)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


class Boom:
    def __reduce__(self):
        return (os.system, ("touch /tmp/contrastlab-pwned",))


def test_arbitrary_pickle_is_refused_not_executed(tmp_path):
    ctx = _ctx()
    save_checkpoint(str(tmp_path), ctx, epoch_done=1, step_in_epoch=0, rng_states=[])
    torch.save({"method": Boom()}, tmp_path / STATE_FILE)
    meta = json.load(open(tmp_path / META_FILE))
    meta["state_bytes"] = os.path.getsize(tmp_path / STATE_FILE)
    json.dump(meta, open(tmp_path / META_FILE, "w"))
    with pytest.raises(CheckpointMismatchError, match="weights_only=True"):
        load_checkpoint_state(str(tmp_path), ctx.exp)
    assert not os.path.exists("/tmp/contrastlab-pwned")


def test_other_method_or_config_is_refused_saying_which(tmp_path):
    ctx = _ctx("clip", ["method.embed_dim=32"])
    save_checkpoint(str(tmp_path), ctx, epoch_done=1, step_in_epoch=0, rng_states=[])
    with pytest.raises(CheckpointMismatchError, match=r"from method 'clip', this run is 'declip'"):
        load_checkpoint_state(str(tmp_path), build_experiment("declip"))
    with pytest.raises(CheckpointMismatchError, match=r"embed_dim: checkpoint 32 vs now 64"):
        load_checkpoint_state(str(tmp_path), build_experiment("clip"))
    # the loop's own settings (epochs, batch size) may change on resume: only the method's config counts
    assert load_checkpoint_state(str(tmp_path), build_experiment("clip", sets=["method.embed_dim=32", "train.epochs=3"]))
    # a checkpoint older than an option: said so, not "checkpoint None"
    meta_path = tmp_path / META_FILE
    meta = json.loads(meta_path.read_text())
    del meta["method"]["init_temperature"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointMismatchError, match=r"init_temperature: absent from the checkpoint \(an option newer than it"):
        load_checkpoint_state(str(tmp_path), build_experiment("clip", sets=["method.embed_dim=32"]))


def test_torn_copies_are_refused(tmp_path):
    ctx = _ctx()
    good = tmp_path / "good"
    good.mkdir()
    save_checkpoint(str(good), ctx, epoch_done=1, step_in_epoch=0, rng_states=[])
    data = (good / STATE_FILE).read_bytes()
    # a copy cut short: the state file is shorter than meta.json says
    torn = tmp_path / "torn"
    shutil.copytree(good, torn)
    (torn / STATE_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointMismatchError, match="torn checkpoint"):
        load_checkpoint_state(str(torn), ctx.exp)
    # a copy that stopped before meta.json (written last)
    (torn / STATE_FILE).write_bytes(data)
    os.unlink(torn / META_FILE)
    with pytest.raises(CheckpointMismatchError, match="torn one"):
        load_checkpoint_state(str(torn), ctx.exp)
    # a half-written meta.json
    (torn / META_FILE).write_text((good / META_FILE).read_text()[:20])
    with pytest.raises(CheckpointMismatchError, match="unreadable"):
        load_checkpoint_state(str(torn), ctx.exp)


SAVER = textwrap.dedent("""
    import os, sys, torch
    from tests.reliability.test_checkpoints import _ctx
    from contrastlab.platform.train import save_checkpoint
    ctx = _ctx(size=1500)   # ~9 MB of weights + ~18 MB of SGD momentum: saving takes a while
    ctx.optimizers["main"] = torch.optim.Adam(ctx.method.parameters())
    ctx.method.weight.grad = torch.ones_like(ctx.method.weight); ctx.optimizers["main"].step()
    print("ready", flush=True)
    i = 0
    while True:
        i += 1
        with torch.no_grad():
            ctx.method.weight.fill_(float(i))
        save_checkpoint(sys.argv[1], ctx, epoch_done=i, step_in_epoch=0, rng_states=[])
""")


def test_sigkill_while_saving_never_leaves_a_torn_checkpoint(tmp_path):
    """SIGKILL a real process at several moments while it rewrites a checkpoint in place: what is
    left is always either a complete checkpoint (loads, weights equal epoch_done) or refused."""
    target = tmp_path / "ck"
    target.mkdir()
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    outcomes = []
    for delay in (0.4, 1.5):  # each start re-imports torch (~10 s on a loaded box): two kills
        proc = subprocess.Popen([sys.executable, str(script), str(target)], cwd=ROOT, stdout=subprocess.PIPE,
                                env={**os.environ, "PYTHONPATH": ROOT})
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        try:
            state = load_checkpoint_state(str(target), build_experiment("clip"))
        except CheckpointMismatchError as exc:
            outcomes.append(f"refused: {exc}")
            continue
        assert float(state["method"]["weight"][0, 0]) == state["epoch_done"]  # weights and counters of one save
        outcomes.append("complete")
    assert "complete" in outcomes, outcomes
