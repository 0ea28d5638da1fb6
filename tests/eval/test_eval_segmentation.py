import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix

from contrastlab.platform.eval import cam_to_mask, miou, segmentation_confusion, sweep_background_threshold


def test_confusion_and_miou_by_hand_with_absent_class():
    target = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 0, 2]])  # the last pixel is ignored
    # pixels (target, pred): (0,0) (0,1) (1,1) (1,1) (2,0)
    m = segmentation_confusion(pred, target, num_classes=4)
    expected = np.array([[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(m, expected)
    assert m.dtype == np.int64
    keep = target != 255
    np.testing.assert_array_equal(m, confusion_matrix(target[keep], pred[keep], labels=range(4)))
    # IoU_0 = 1 / (2 + 2 - 1) = 1/3, IoU_1 = 2 / (2 + 3 - 2) = 2/3, IoU_2 = 0 / (1 + 0 - 0) = 0,
    # class 3 is in neither target nor prediction: nan, left out -> mIoU = (1/3 + 2/3 + 0) / 3 = 1/3
    s = miou(m)
    np.testing.assert_allclose(s["iou"][:3], [1 / 3, 2 / 3, 0])
    assert np.isnan(s["iou"][3])
    assert s["miou"] == pytest.approx(1 / 3)
    assert s["pixel_accuracy"] == pytest.approx(3 / 5)
    # official VOC averaging over all 4 classes counts the absent one as 0: (1/3 + 2/3) / 4
    assert miou(m, count_absent_as_zero=True)["miou"] == pytest.approx(0.25)


def test_class_only_predicted_counts_as_zero():
    # target [0, 0], pred [0, 1]: IoU_0 = 1/2, IoU_1 = 0 / (0 + 1 - 0) = 0, IoU_2 nan -> 0.25
    s = miou(segmentation_confusion(torch.tensor([0, 1]), torch.tensor([0, 0]), 3))
    assert s["miou"] == pytest.approx(0.25)


def test_out_of_range_raises():
    with pytest.raises(ValueError):
        segmentation_confusion(np.array([0, 5]), np.array([0, 1]), 3)
    with pytest.raises(ValueError):
        segmentation_confusion(np.array([0, 1]), np.array([0, 7]), 3)


# One image, 3 foreground classes, 1 x 4 pixels; class 2 is not in the image (its CAM is high).
CAMS = np.array(
    [
        [[0.9, 0.3, 0.1, 0.5]],  # class 0 -> mask id 1
        [[0.2, 0.6, 0.05, 0.5]],  # class 1 -> mask id 2
        [[1.0, 1.0, 1.0, 1.0]],  # class 2, absent: never chosen
    ]
)
LABELS = np.array([1, 1, 0])
TARGET = np.array([[1, 2, 0, 0]])


def test_cam_to_mask_by_hand():
    # t = 0.4: px0 0.9 -> 1; px1 0.6 -> 2; px2 0.1 <= t -> bg; px3 classes 0, 1 tie at 0.5 -> first -> 1
    np.testing.assert_array_equal(cam_to_mask(CAMS, LABELS, 0.4), [[1, 2, 0, 1]])
    # t = 0.5: px3's best score equals the background score -> background (arg-max takes the first)
    np.testing.assert_array_equal(cam_to_mask(CAMS, LABELS, 0.5), [[1, 2, 0, 0]])
    np.testing.assert_array_equal(cam_to_mask(CAMS, LABELS, 0.7), [[1, 0, 0, 0]])
    # batched and torch: (N, C_fg, H, W) -> (N, H, W)
    batch = cam_to_mask(torch.from_numpy(np.stack([CAMS, CAMS])), torch.tensor([[1, 1, 0], [0, 0, 1]]), 0.4)
    np.testing.assert_array_equal(batch, [[[1, 2, 0, 1]], [[3, 3, 3, 3]]])
    assert batch.dtype == np.int64
    # no class present: all background
    np.testing.assert_array_equal(cam_to_mask(CAMS, [0, 0, 0], 0.0), [[0, 0, 0, 0]])


def test_threshold_sweep_on_known_cam():
    # target [1, 2, 0, 0], num_classes = 4 (bg + 3):
    # t = 0.4: pred [1, 2, 0, 1]: IoU bg = 1/(2+1-1) = 1/2, IoU 1 = 1/(1+2-1) = 1/2, IoU 2 = 1 -> 2/3
    # t = 0.5: pred = target -> 1
    # t = 0.7: pred [1, 0, 0, 0]: IoU bg = 2/(2+3-2) = 2/3, IoU 1 = 1, IoU 2 = 0 -> 5/9
    out = sweep_background_threshold(CAMS[None], LABELS[None], TARGET[None], 4, thresholds=[0.4, 0.5, 0.7])
    assert out["best_threshold"] == 0.5 and out["best_miou"] == 1.0
    assert [t for t, _ in out["curve"]] == [0.4, 0.5, 0.7]
    np.testing.assert_allclose([m for _, m in out["curve"]], [2 / 3, 1, 5 / 9])
    # per-image lists of different sizes give the dataset-level (accumulated) result
    parts = sweep_background_threshold(
        [CAMS[:, :, :1], CAMS[:, :, 1:]], [LABELS, LABELS], [TARGET[:, :1], TARGET[:, 1:]], 4, thresholds=[0.4, 0.5, 0.7]
    )
    assert parts == out
    # default thresholds 0.05, 0.10, ..., 0.95: the seeds are perfect for t in [0.5, 0.6) (px3's 0.5
    # must fall to background, px1's 0.6 must not); the smallest such grid value is 0.5. At 0.05 px2
    # becomes class 0 too: IoU bg 0, IoU 1 = 1/3, IoU 2 = 1 -> 4/9.
    full = sweep_background_threshold(CAMS[None], LABELS[None], TARGET[None], 4)
    assert len(full["curve"]) == 19 and full["best_miou"] == 1.0 and full["best_threshold"] == pytest.approx(0.5)
    assert full["curve"][0] == (0.05, pytest.approx(4 / 9))


def test_ignored_target_pixels_do_not_count():
    target = np.array([[1, 2, 255, 255]])
    out = sweep_background_threshold(CAMS[None], LABELS[None], target[None], 4, thresholds=[0.4])
    assert out["best_miou"] == 1.0
