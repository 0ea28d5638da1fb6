import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from contrastlab.platform.eval import DEFAULT_C_GRID, linear_probe


def _blobs(n, spread, seed, offset=0.0):
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(123).normal(size=(3, 8)) * 3
    y = rng.integers(0, 3, n)
    x = centers[y] + spread * rng.normal(size=(n, 8)) + offset
    return x.astype(np.float32), y


def test_default_grid_is_log_spaced_over_1e_minus6_to_1e6():
    assert DEFAULT_C_GRID[0] == pytest.approx(1e-6) and DEFAULT_C_GRID[-1] == pytest.approx(1e6)
    assert np.allclose(np.diff(np.log10(DEFAULT_C_GRID)), 1.0)


def test_separable_data_and_ties_pick_smallest_c():
    x_tr, y_tr = _blobs(150, 0.1, 0)
    x_te, y_te = _blobs(60, 0.1, 1)
    out = linear_probe(x_tr, y_tr, x_te, y_te, grid=(100.0, 0.01, 1.0))
    assert out["accuracy"] == 1.0 and out["val_accuracy"] == 1.0
    assert out["best_C"] == 0.01  # every C scores 1.0 on validation: the strongest regularisation wins
    assert [c for c, _ in out["val_curve"]] == [0.01, 1.0, 100.0]


def test_equals_the_protocol_written_out_with_sklearn():
    # Noisy blobs, and test features shifted: the scaler must come from the training features only.
    x_tr, y_tr = _blobs(200, 3.0, 2)
    x_te, y_te = _blobs(100, 3.0, 3, offset=0.5)
    grid = (0.001, 0.01, 0.1, 1.0, 10.0)
    out = linear_probe(x_tr, y_tr, x_te, y_te, grid=grid, val_fraction=0.25, seed=7)

    idx_fit, idx_val = train_test_split(np.arange(200), test_size=0.25, random_state=7, stratify=y_tr)
    val = []
    for c in grid:
        sc = StandardScaler().fit(x_tr[idx_fit])
        clf = LogisticRegression(C=c, max_iter=1000, random_state=7).fit(sc.transform(x_tr[idx_fit]), y_tr[idx_fit])
        val.append(np.mean(clf.predict(sc.transform(x_tr[idx_val])) == y_tr[idx_val]))
    best = grid[int(np.argmax(val))]  # argmax = first maximum = smallest C among ties
    sc = StandardScaler().fit(x_tr)
    clf = LogisticRegression(C=best, max_iter=1000, random_state=7).fit(sc.transform(x_tr), y_tr)
    test_acc = np.mean(clf.predict(sc.transform(x_te)) == y_te)

    assert out["best_C"] == best
    assert out["val_accuracy"] == pytest.approx(max(val))
    assert out["accuracy"] == pytest.approx(test_acc)
    assert [a for _, a in out["val_curve"]] == pytest.approx(val)
    assert 0.4 < out["accuracy"] < 1.0


def test_torch_inputs_and_singleton_class():
    x_tr, y_tr = _blobs(60, 0.5, 4)
    x_te, y_te = _blobs(20, 0.5, 5)
    y_tr = y_tr.copy()
    y_tr[0] = 7  # a class with one sample: the split falls back to unstratified
    a = linear_probe(torch.from_numpy(x_tr), torch.from_numpy(y_tr), torch.from_numpy(x_te), torch.from_numpy(y_te), grid=(0.1, 1.0))
    b = linear_probe(x_tr, y_tr, x_te, y_te, grid=(0.1, 1.0))
    assert a == b
    assert set(a) >= {"accuracy", "best_C", "val_accuracy"}
