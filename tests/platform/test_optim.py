"""The loop's optimiser building: weight-decay groups, per-layer lr multipliers, LR schedules."""
import math

import pytest
import torch
from torch import nn

from contrastlab.methods.base import OptimSpec
from contrastlab.platform.train import build_optimizer, lr_factor


class TwoPart(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
        self.head = nn.Linear(4, 2)


def lr_of(opt, param) -> tuple[float, float]:
    for g in opt.param_groups:
        if any(p is param for p in g["params"]):
            return g["lr"], g["weight_decay"]
    raise AssertionError("parameter not in any group")


def test_without_multipliers_two_groups_decay_and_no_decay():
    m = TwoPart()
    opt = build_optimizer([m], OptimSpec(["m"], "sgd", lr=0.1, weight_decay=0.01))
    assert len(opt.param_groups) == 2
    assert lr_of(opt, m.head.weight) == (0.1, 0.01)
    assert lr_of(opt, m.head.bias) == (0.1, 0.0)
    assert lr_of(opt, m.backbone[1].weight) == (0.1, 0.0)  # LayerNorm weight: 1-d, no decay


def test_lr_multipliers_first_matching_prefix_wins_weights_and_biases_apart():
    m = TwoPart()
    spec = OptimSpec(["m"], "sgd", lr=0.1, weight_decay=0.01, lr_multipliers=(("head.", 10.0, 20.0), ("", 1.0, 2.0)))
    opt = build_optimizer([m], spec, lr_scale=0.5)  # world-size scaling multiplies every group
    assert lr_of(opt, m.head.weight) == (pytest.approx(0.5), 0.01)
    assert lr_of(opt, m.head.bias) == (pytest.approx(1.0), 0.0)
    assert lr_of(opt, m.backbone[0].weight) == (pytest.approx(0.05), 0.01)
    assert lr_of(opt, m.backbone[0].bias) == (pytest.approx(0.1), 0.0)
    n_params = sum(len(g["params"]) for g in opt.param_groups)
    assert n_params == len(list(m.parameters()))  # every parameter exactly once


def test_unmatched_parameters_keep_the_base_lr():
    m = TwoPart()
    opt = build_optimizer([m], OptimSpec(["m"], "adam", lr=1e-3, lr_multipliers=(("head.", 10.0, 10.0),)))
    assert lr_of(opt, m.backbone[0].weight)[0] == pytest.approx(1e-3)
    assert lr_of(opt, m.head.bias)[0] == pytest.approx(1e-2)


def test_schedule_keeps_the_multiplier_ratios():
    """The StepContext scales each group's own base lr, so a 10x group stays 10x at every step."""
    from contrastlab.platform.config import build_experiment
    from contrastlab.platform.train import build_context

    exp = build_experiment("ppc", sets=["method.layer_lr=official", "train.epochs=1"])
    from contrastlab.methods.registry import get_method

    method = get_method("ppc")(exp.method)
    ctx = build_context(exp, method, device=torch.device("cpu"), steps_per_epoch=10)
    opt = ctx.optimizers["main"]
    net = method.net
    head_w = lr_of(opt, net.cam_head.weight)[0]
    backbone_w = lr_of(opt, next(p for n, p in net.backbone.named_parameters() if p.ndim > 1))[0]
    assert head_w == pytest.approx(10 * backbone_w)
    assert ctx.lr("main") == pytest.approx(backbone_w)  # ctx.lr reports the base lr


def test_poly_schedule_matches_the_formula():
    spec = OptimSpec(["m"], schedule="poly", poly_power=0.9)
    for step in (0, 25, 50, 99, 100):
        assert lr_factor(step, 100, spec) == pytest.approx((1 - step / 100) ** 0.9)
    floored = OptimSpec(["m"], schedule="poly", min_lr_factor=0.05)
    assert lr_factor(100, 100, floored) == pytest.approx(0.05)


def test_cosine_and_warmup_unchanged():
    spec = OptimSpec(["m"], warmup_fraction=0.1, warmup_start_factor=0.0)
    assert lr_factor(0, 100, spec) == 0.0
    assert lr_factor(5, 100, spec) == pytest.approx(0.5)
    assert lr_factor(10, 100, spec) == pytest.approx(1.0)
    assert lr_factor(55, 100, spec) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


def test_unknown_schedule_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown LR schedule 'step'"):
        lr_factor(50, 100, OptimSpec(["m"], schedule="step"))
