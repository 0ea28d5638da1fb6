"""DeCLIP heads: layer layout and the full and small sizes (card c, g)."""
import torch
from torch import nn

from contrastlab.methods.declip.heads import MLMHead, Predictor, Projector


def layer_kinds(m):
    return [type(x).__name__ for x in m.net]


def test_projector_layout_and_small_sizes():
    p = Projector(64, 128, 128)
    assert layer_kinds(p) == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    dims = [(x.in_features, x.out_features) for x in p.net if isinstance(x, nn.Linear)]
    assert dims == [(64, 128), (128, 128), (128, 128)]
    assert p(torch.randn(5, 64)).shape == (5, 128)


def test_predictor_layout_and_small_sizes():
    q = Predictor(128, 32)
    assert layer_kinds(q) == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    dims = [(x.in_features, x.out_features) for x in q.net if isinstance(x, nn.Linear)]
    assert dims == [(128, 32), (32, 128)]
    assert q(torch.randn(5, 128)).shape == (5, 128)


def test_full_size_defaults():
    dims = [(x.in_features, x.out_features) for x in Projector(512).net if isinstance(x, nn.Linear)]
    assert dims == [(512, 1024), (1024, 1024), (1024, 1024)]
    dims = [(x.in_features, x.out_features) for x in Predictor().net if isinstance(x, nn.Linear)]
    assert dims == [(1024, 512), (512, 1024)]
    head = MLMHead(512, 49409)
    assert head.proj.in_features == 512 and head.proj.out_features == 49409
