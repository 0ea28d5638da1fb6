"""CVP losses and band splits against the card's checklist (cvp.md §h items 1-5, 8)."""
import math

import numpy as np
import pytest
import torch

from contrastlab.methods.cvp.bands import SCHEMES, split_bands
from contrastlab.methods.cvp.loss import joint_matrix, mi_loss, pre_weight, prediction_loss, reconstruction_loss, stage2_total
from contrastlab.platform.eval.hsi import hsi_scores

torch.set_num_threads(1)


def one_hot_batch(k, per_class=3):
    return torch.eye(k).repeat_interleave(per_class, dim=0)


def test_mi_perfect_balanced_agreement():  # §h.1: -(1+2 alpha) ln K = -19 ln 4
    z = one_hot_batch(4)
    assert mi_loss(z, z.clone(), alpha=9.0).item() == pytest.approx(-19 * math.log(4), abs=1e-4)
    assert -19 * math.log(4) == pytest.approx(-26.339, abs=1e-3)


def test_mi_uniform_outputs():  # §h.2: -2 alpha ln K = -18 ln 5 = -28.970
    z = torch.full((7, 5), 0.2)
    assert mi_loss(z, z, alpha=9.0).item() == pytest.approx(-18 * math.log(5), abs=1e-4)
    assert -18 * math.log(5) == pytest.approx(-28.970, abs=1e-3)


def test_mi_perfect_beats_uniform_by_ln_k_and_alpha_zero():
    k = 5
    perfect, uniform = one_hot_batch(k), torch.full((10, k), 1 / k)
    gap = mi_loss(uniform, uniform, 9.0) - mi_loss(perfect, perfect, 9.0)
    assert gap.item() == pytest.approx(math.log(k), abs=1e-4)
    assert mi_loss(uniform, uniform, 0.0).item() == pytest.approx(0.0, abs=1e-6)
    assert mi_loss(perfect, perfect, 0.0).item() == pytest.approx(-math.log(k), abs=1e-4)


def test_joint_matrix_properties_and_swap_symmetry():  # §h.3
    g = torch.Generator().manual_seed(0)
    z1 = torch.softmax(torch.randn(32, 6, generator=g), 1)
    z2 = torch.softmax(torch.randn(32, 6, generator=g), 1)
    p = joint_matrix(z1, z2)
    assert torch.allclose(p, p.t())
    assert (p >= 0).all()
    assert p.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert mi_loss(z1, z2).item() == pytest.approx(mi_loss(z2, z1).item(), abs=1e-5)


def test_prediction_loss_zero_and_switch():  # §h.4
    z = torch.softmax(torch.randn(8, 4), 1)
    assert prediction_loss(z, z, z, z).item() == 0.0
    assert prediction_loss(torch.zeros(2, 2), torch.ones(2, 2), torch.zeros(2, 2), torch.zeros(2, 2)).item() == pytest.approx(1.0)
    assert pre_weight(29, 0.1, 30) == 0.0 and pre_weight(30, 0.1, 30) == 0.1
    l_mi, l_rec, l_pre = torch.tensor(-5.0), torch.tensor(2.0), torch.tensor(3.0)
    assert stage2_total(l_mi, l_rec, l_pre, 0.1, pre_weight(0, 0.1, 100)).item() == pytest.approx(-4.8)
    assert stage2_total(l_mi, l_rec, l_pre, 0.1, pre_weight(100, 0.1, 100)).item() == pytest.approx(-4.5)
    assert reconstruction_loss(torch.ones(2, 3), torch.ones(2, 3), torch.zeros(2, 3), torch.ones(2, 3)).item() == pytest.approx(1.0)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("n", [6, 48, 61, 200])
def test_band_splits_partition(scheme, n):  # §h.5
    g1, g2 = split_bands(n, scheme, seed=3)
    assert len(np.intersect1d(g1, g2)) == 0
    assert sorted(np.concatenate([g1, g2]).tolist()) == list(range(n))
    a, b = split_bands(n, scheme, seed=3)
    assert np.array_equal(a, g1) and np.array_equal(b, g2)


def test_band_split_definitions():
    g1, g2 = split_bands(6, "interleave")
    assert g1.tolist() == [0, 2, 4] and g2.tolist() == [1, 3, 5]
    g1, g2 = split_bands(7, "halves")
    assert g1.tolist() == [0, 1, 2] and g2.tolist() == [3, 4, 5, 6]
    g1, g2 = split_bands(8, "blocks4")
    assert g1.tolist() == [0, 1, 4, 5] and g2.tolist() == [2, 3, 6, 7]
    r1, _ = split_bands(20, "random", seed=1)
    r2, _ = split_bands(20, "random", seed=2)
    assert len(r1) == 10 and not np.array_equal(r1, r2)
    with pytest.raises(ValueError, match="unknown band split"):
        split_bands(10, "thirds")


def test_scores_checklist():  # §h.8 through the platform's hsi_scores, which evaluate() uses
    s = hsi_scores([0, 0, 0, 0, 1, 1, 2, 2, 2, 2], [0, 0, 0, 1, 1, 1, 2, 2, 0, 2])
    assert s["oa"] == pytest.approx(0.8) and s["aa"] == pytest.approx(0.8333, abs=1e-4)
    assert s["kappa"] == pytest.approx(0.69697, abs=1e-5)
    p = hsi_scores([0, 1, 2], [0, 1, 2])
    assert (p["oa"], p["aa"], p["kappa"]) == (1.0, 1.0, 1.0)
