import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, cohen_kappa_score

from contrastlab.platform.eval import hsi_scores


def _from_table(table):
    """y_true, y_pred with table[t][p] pixels of class t predicted as p."""
    t, p = [], []
    for i, row in enumerate(table):
        for j, n in enumerate(row):
            t += [i] * n
            p += [j] * n
    return np.array(t), np.array(p)


def test_kappa_table_by_hand():
    # confusion (rows true, cols pred):   row sums
    #   [4 1 0]                            5
    #   [1 3 1]                            5
    #   [0 0 2]                            2     N = 12, column sums 5, 4, 3
    # OA = p_o = (4 + 3 + 2) / 12 = 0.75
    # p_e = (5*5 + 5*4 + 2*3) / 12^2 = 51 / 144
    # kappa = (108/144 - 51/144) / (93/144) = 57 / 93 = 19 / 31 = 0.612903...
    # AA = (4/5 + 3/5 + 2/2) / 3 = 0.8
    y_true, y_pred = _from_table([[4, 1, 0], [1, 3, 1], [0, 0, 2]])
    s = hsi_scores(y_true, y_pred)
    assert s["oa"] == pytest.approx(0.75)
    assert s["kappa"] == pytest.approx(19 / 31)
    assert s["aa"] == pytest.approx(0.8)
    assert s["per_class"] == pytest.approx({0: 0.8, 1: 0.6, 2: 1.0})
    assert s["kappa"] == pytest.approx(cohen_kappa_score(y_true, y_pred))


def test_class_absent_from_truth_is_left_out_of_aa():
    # y_true = [0,0,1,1], y_pred = [0,3,1,1]: recalls class 0 = 1/2, class 1 = 1; class 3 only predicted.
    # AA = 0.75 (not (0.5 + 1 + 0) / 3). Row sums (0,1,3) = 2,2,0; column sums 1,2,1:
    # p_e = (2*1 + 2*2 + 0*1) / 16 = 0.375, kappa = (0.75 - 0.375) / 0.625 = 0.6.
    s = hsi_scores([0, 0, 1, 1], [0, 3, 1, 1])
    assert s["oa"] == pytest.approx(0.75)
    assert s["aa"] == pytest.approx(0.75)
    assert s["kappa"] == pytest.approx(0.6)
    assert set(s["per_class"]) == {0, 1}


def test_agrees_with_sklearn_and_accepts_torch():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 6, 500)
    y_pred = np.where(rng.random(500) < 0.6, y_true, rng.integers(0, 6, 500))
    s = hsi_scores(torch.from_numpy(y_true), torch.from_numpy(y_pred))
    assert s["oa"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert s["aa"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert s["kappa"] == pytest.approx(cohen_kappa_score(y_true, y_pred))
    assert s == hsi_scores(y_true, y_pred)


def test_perfect_and_degenerate():
    s = hsi_scores([1, 2, 3], [1, 2, 3])
    assert (s["oa"], s["aa"], s["kappa"]) == (1.0, 1.0, 1.0)
    assert np.isnan(hsi_scores([4, 4], [4, 4])["kappa"])  # p_e = 1: undefined, as in sklearn
