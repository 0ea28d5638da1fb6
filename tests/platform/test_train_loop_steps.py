"""The epoch loop's reports and the fp16 loss scale with several optimisers (no Ray: `run_epochs` and
`StepContext` in-process, as every backend uses them)."""
import torch
from torch import nn

from contrastlab.methods.base import OptimSpec
from contrastlab.platform.config import build_experiment
from contrastlab.platform.train import build_context, run_epochs


class CountingMethod(nn.Module):
    """One linear layer; evaluate() returns how many epochs had been trained when it ran."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(2, 1)
        self.epochs_done = 0

    def trainable(self):
        return {"layer": self.layer}

    def optimizers(self):
        return {"main": OptimSpec(["layer"], "sgd", lr=0.0, schedule="constant")}

    def train_step(self, batch, ctx):
        loss = self.layer(batch["x"]).sum()
        ctx.optimize(loss, "main")
        return {"loss": float(loss.detach())}

    def on_epoch_end(self, ctx):
        self.epochs_done += 1

    def evaluate(self, eval_fn, ctx):
        return {"acc": float(self.epochs_done)}


def test_mid_epoch_reports_stay_below_the_next_epoch():
    """ASHA reads `epoch` as time: a mid-epoch report carries the previous epoch's evaluation, so it
    must never claim epoch e + 1 (not even at an epoch's last batch, or when the driver's estimate of
    steps per epoch is short), or that old score lands on the next rung and max_t stops the trial."""
    exp = build_experiment("clip", sets=["train.epochs=3", "train.checkpoint_every_steps=2", "train.batch_size=4"])
    method = CountingMethod()
    estimate = 2  # the driver's estimate; the epochs below have 4 batches
    ctx = build_context(exp, method, device=torch.device("cpu"), steps_per_epoch=estimate)
    data = [{"x": torch.ones(4, 2)} for _ in range(4)]
    reports = []
    run_epochs(ctx, lambda split, **kw: iter(data if split == "train" else []),
               lambda metrics, epoch_done, step_in_epoch, with_checkpoint=True: reports.append(dict(metrics)))
    whole = [r for r in reports if r["epoch"] == int(r["epoch"])]
    assert [(r["epoch"], r["acc"]) for r in whole] == [(1, 1.0), (2, 2.0), (3, 3.0)]  # every whole epoch: its own score
    mid = [r for r in reports if r["epoch"] != int(r["epoch"])]
    assert len(mid) == 6  # checkpoints at batches 2 and 4 of each epoch
    for r in mid:
        assert r.get("acc", 0.0) <= int(r["epoch"])  # an older evaluation ...
        assert int(r["epoch"]) < r["epoch"] < int(r["epoch"]) + 1  # ... at a time short of the next epoch


class TwoOptimisers(nn.Module):
    """C3-GAN's pattern: two optimisers stepped one after the other in each train_step."""

    def __init__(self):
        super().__init__()
        self.d, self.g = nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)
        nn.init.ones_(self.d.weight)
        nn.init.ones_(self.g.weight)

    def trainable(self):
        return {"d": self.d, "g": self.g}

    def optimizers(self):
        return {n: OptimSpec([n], "sgd", lr=1.0, momentum=0.0, schedule="constant") for n in ("d", "g")}


def test_fp16_scale_is_updated_once_per_iteration_with_two_optimisers():
    """With accumulation, G's micro-batches must be unscaled by the scale they were scaled with: an
    update() between D's and G's steps (when D's step grows the scale) gave G 0.75x its gradient."""
    exp = build_experiment("clip", sets=["train.accumulate=2"])
    model = TwoOptimisers()
    ctx = build_context(exp, model, device=torch.device("cpu"))
    ctx.scaler = torch.amp.GradScaler("cpu", init_scale=4.0, growth_interval=1)  # grows at every update
    x = torch.ones(1, 1)
    for _ in range(2):  # two iterations of (D step, G step): the second one steps both
        ctx.optimize(0.5 * model.d(x).sum(), "d")  # d loss / d w = 0.5 per micro-batch
        ctx.optimize(0.5 * model.g(x).sum(), "g")
        ctx.end_iteration()
    # each weight: 1 - lr * (0.5 / 2 + 0.5 / 2) = 0.5 (two micro-batches of gradient 0.5, averaged).
    # Updating the scale (4 -> 8) between D's step and G's backward gave G (4 + 8) / 8 / 4 = 0.375: 0.625
    assert model.d.weight.item() == 0.5
    assert model.g.weight.item() == 0.5
    assert ctx.scaler.get_scale() == 8.0  # one growth for the one iteration that stepped


def test_an_optimiser_stepped_twice_in_one_iteration_gets_its_own_update():
    """A method that steps the same optimiser twice in one train_step (n critic steps) must not hit
    GradScaler's "unscale_() already called": the second step first closes the first one's update."""
    exp = build_experiment("clip", sets=[])
    model = TwoOptimisers()
    ctx = build_context(exp, model, device=torch.device("cpu"))
    ctx.scaler = torch.amp.GradScaler("cpu", init_scale=4.0, growth_interval=1)
    x = torch.ones(1, 1)
    ctx.optimize(model.d(x).sum(), "d")
    ctx.optimize(model.d(x).sum(), "d")
    ctx.end_iteration()
    assert model.d.weight.item() == -1.0  # two SGD steps of gradient 1
    assert ctx.scaler.get_scale() == 16.0


class CountsAfterSteps(TwoOptimisers):
    def __init__(self):
        super().__init__()
        self.after_steps = 0

    def after_optimizer_step(self, name, ctx):
        self.after_steps += 1


def test_a_step_the_fp16_scaler_skips_moves_neither_the_schedule_nor_the_after_step_hook():
    """fp16 overflow: GradScaler.step leaves the weights as they were, so the LR schedule, the
    method's after-step work (momentum encoders, UCR's phase counter) must not advance either; the
    skip is counted (TensorBoard `train/fp16_skipped_steps/<optimiser>`) and survives a checkpoint."""
    import tempfile

    from contrastlab.platform.train import load_checkpoint_state, restore_context, save_checkpoint

    exp = build_experiment("clip", sets=[])
    model = CountsAfterSteps()
    ctx = build_context(exp, model, device=torch.device("cpu"))
    # scale 2**127 x gradient 2 = 2**128 overflows fp32: skipped, and update() halves the scale;
    # 2**126 x 2 is finite: the next step goes through
    ctx.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 127, growth_interval=1000)
    x = torch.ones(1, 1)
    ctx.optimize(2 * model.d(x).sum(), "d")
    ctx.end_iteration()
    assert model.d.weight.item() == 1.0 and model.d.weight.grad is None
    assert ctx._opt_steps.get("d", 0) == 0 and model.after_steps == 0
    assert ctx.fp16_skipped_steps == {"d": 1}
    assert ctx.scaler.get_scale() == 2.0 ** 126
    ctx.optimize(2 * model.d(x).sum(), "d")
    ctx.end_iteration()
    assert model.d.weight.item() == -1.0  # 1 - lr 1 x gradient 2
    assert ctx._opt_steps["d"] == 1 and model.after_steps == 1
    assert ctx.fp16_skipped_steps == {"d": 1}
    with tempfile.TemporaryDirectory() as d:
        save_checkpoint(d, ctx, epoch_done=0, step_in_epoch=1, rng_states=[])
        fresh = build_context(exp, CountsAfterSteps(), device=torch.device("cpu"))
        restore_context(fresh, load_checkpoint_state(d, exp))
    assert fresh.fp16_skipped_steps == {"d": 1} and fresh._opt_steps == {"d": 1}


def test_a_run_without_evaluation_data_never_calls_evaluate():
    """`data.eval=none`, or --data without --eval-data: no evaluation split, so evaluate() (which
    would read an empty split: some methods raise on it) is skipped; epochs report losses only."""
    exp = build_experiment("clip", sets=["train.epochs=2", "train.batch_size=4"])
    method = CountingMethod()
    ctx = build_context(exp, method, device=torch.device("cpu"))
    data = [{"x": torch.ones(4, 2)} for _ in range(2)]
    reports = []
    history = run_epochs(ctx, lambda split, **kw: iter(data if split == "train" else []),
                         lambda metrics, epoch_done, step_in_epoch, with_checkpoint=True: reports.append(dict(metrics)),
                         has_eval=False)
    assert len(history) == 2 and all("acc" not in h and "train_loss" in h for h in history)
    assert method.epochs_done == 2


def test_a_mid_epoch_resume_skips_rows_not_batches_when_the_global_batch_changed(tmp_path):
    """Batch size and workers may change on resume: skipping the checkpoint's count of batches of the
    new size would leave rows out (larger batches) or train them twice (smaller); it skips the rows."""
    from contrastlab.platform.train import load_checkpoint_state, restore_context, save_checkpoint

    exp = build_experiment("clip", sets=["train.batch_size=4"])
    ctx = build_context(exp, CountingMethod(), device=torch.device("cpu"))
    save_checkpoint(str(tmp_path), ctx, epoch_done=0, step_in_epoch=3, rng_states=[])  # 12 rows taken
    for batch_size, skip in ((4, 3), (6, 2), (2, 6), (5, 2)):
        later = build_experiment("clip", sets=[f"train.batch_size={batch_size}"])
        fresh = build_context(later, CountingMethod(), device=torch.device("cpu"))
        assert restore_context(fresh, load_checkpoint_state(str(tmp_path), later)) == (0, skip)


def test_a_resume_past_the_capped_epoch_trains_none_of_it(tmp_path):
    """train.max_steps_per_epoch=2; the checkpoint took 2 batches of 4 (8 rows); resumed with batches of
    2 it skips 4 batches, which is past the cap: the epoch trains no further batch."""
    from contrastlab.platform.train import load_checkpoint_state, restore_context, save_checkpoint

    exp = build_experiment("clip", sets=["train.batch_size=4", "train.max_steps_per_epoch=2", "train.epochs=1"])
    ctx = build_context(exp, CountingMethod(), device=torch.device("cpu"))
    save_checkpoint(str(tmp_path), ctx, epoch_done=0, step_in_epoch=2, rng_states=[])
    later = build_experiment("clip", sets=["train.batch_size=2", "train.max_steps_per_epoch=2", "train.epochs=1"])
    fresh = build_context(later, CountingMethod(), device=torch.device("cpu"))
    start_epoch, skip = restore_context(fresh, load_checkpoint_state(str(tmp_path), later))
    assert (start_epoch, skip) == (0, 4)
    data = [{"x": torch.ones(2, 2)} for _ in range(8)]
    run_epochs(fresh, lambda split, **kw: iter(data if split == "train" else []), lambda *a, **k: None,
               start_epoch=start_epoch, skip_steps=skip, resumed=True)
    assert fresh.step == 0  # the restored step count: nothing trained after the resume
