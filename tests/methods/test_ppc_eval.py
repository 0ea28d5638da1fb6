"""PPC seed evaluation: the card's mIoU hand case, the 60-value threshold sweep and its tie rules."""
import numpy as np
import pytest
import torch

from contrastlab.methods.ppc.evaluation import SeedSweep, overlay_strip, seed_cams, thresholds_from
from contrastlab.platform.eval.segmentation import segmentation_confusion, miou, sweep_background_threshold

torch.set_num_threads(1)

GT = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 255, 255], [2, 2, 0, 0]])
PRED = np.array([[0, 1, 1, 1], [0, 0, 1, 0], [2, 0, 1, 2], [2, 2, 0, 0]])  # the two '*' pixels are arbitrary


def test_card_miou_hand_case():
    r = miou(segmentation_confusion(PRED, GT, 3))
    assert r["iou"].tolist() == pytest.approx([0.625, 0.6, 0.75])
    assert r["miou"] == pytest.approx(0.658333, abs=1e-6)


def _cams_for(pred, low=0.1, high=0.9):
    """CAMs (2 fg classes) whose seed is `pred` for every threshold in [low, high)."""
    cams = np.full((2,) + pred.shape, low, np.float32)
    cams[0][pred == 1] = high
    cams[1][pred == 2] = high
    return cams


def test_thresholds_are_the_cards_60_values():
    ts = thresholds_from(0.0, 0.6, 0.01)
    assert len(ts) == 60 and ts[0] == 0.0 and ts[-1] == 0.59 and 0.26 in ts


def test_sweep_picks_the_best_of_60_and_the_smallest_tied_threshold():
    sweep = SeedSweep(3, thresholds_from(0.0, 0.6, 0.01))
    sweep.update(_cams_for(PRED)[None], np.ones((1, 2)), GT[None])
    r = sweep.result()
    # below 0.10 every pixel is foreground (0.1 > t); from t = 0.10 (cam == t -> background) to 0.59 the seed is PRED
    assert r["best_miou"] == pytest.approx(0.658333, abs=1e-6)
    assert r["best_threshold"] == 0.1
    assert r["iou"].tolist() == pytest.approx([0.625, 0.6, 0.75])
    curve = dict(r["curve"])
    assert curve[0.09] < curve[0.1] == curve[0.59]


def test_ties_with_the_threshold_go_to_background():
    cams = np.array([[[0.3, 0.31]]], np.float32)[None]  # one fg class, pixels at t and just above
    sweep = SeedSweep(2, [0.3])
    sweep.update(cams, np.ones((1, 1)), np.array([[[0, 1]]]))
    assert sweep.result()["best_miou"] == 1.0


def test_accumulated_batches_equal_the_platform_sweep():
    rng = np.random.default_rng(0)
    cams = rng.random((6, 3, 8, 8)).astype(np.float32)
    labels = (rng.random((6, 3)) < 0.6).astype(np.float32)
    targets = rng.integers(0, 4, (6, 8, 8))
    targets[0, 0, :3] = 255
    ts = thresholds_from(0.0, 0.6, 0.01)
    sweep = SeedSweep(4, ts)
    sweep.update(cams[:4], labels[:4], targets[:4])
    sweep.update(cams[4:], labels[4:], targets[4:])
    ours = sweep.result()
    ref = sweep_background_threshold(cams, labels, targets, 4, thresholds=ts)
    assert ours["best_miou"] == pytest.approx(ref["best_miou"]) and ours["best_threshold"] == ref["best_threshold"]
    assert [m for _, m in ours["curve"]] == pytest.approx([m for _, m in ref["curve"]])


def test_seed_cams_mask_absent_classes_and_undo_flip():
    class Net(torch.nn.Module):
        def forward(self, x):  # cam channel 1 = the image's first channel, channel 2 = its negative; bg channel 0
            return {"cam_rv": torch.cat([torch.zeros_like(x[:, :1]), x[:, :1], -x[:, :1]], dim=1)}

    x = torch.zeros(1, 3, 4, 4)
    x[0, 0, :, 0] = 2.0  # left column bright
    cams = seed_cams(Net(), x, torch.tensor([[1.0, 0.0]]), scales=(1.0,), flip=True)
    assert cams.shape == (1, 2, 4, 4)
    assert torch.allclose(cams[0, 0, :, 0], torch.full((4,), (4 - 1e-5) / (4 + 1e-5)))  # flip undone: sum of 2 passes, max-normalised
    assert cams[0, 0, :, 1:].max() < 0 and cams[0, 1].max() < 0  # absent class and background pixels normalise below 0


def test_overlay_strip_shape():
    img = np.zeros((8, 8, 3), np.uint8)
    strip = overlay_strip(img, np.random.rand(2, 8, 8), np.array([1.0, 0.0]), np.zeros((8, 8)), np.full((8, 8), 255))
    assert strip.shape == (8, 32, 3) and strip.dtype == np.uint8 and (strip[:, 24:] == 255).all()
