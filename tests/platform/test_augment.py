"""CPU augmentations: each op against what it must do, and the MoCo-v2 view end to end."""
import numpy as np
import pytest

from contrastlab.platform.data import augment as A


def _image(h=48, w=40, seed=0):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


@pytest.mark.parametrize("shape", [(12, 9, 3), (12, 9, 1), (12, 9)])
def test_hflip_mirrors_exactly_and_respects_p(shape):
    img = (np.arange(np.prod(shape)) % 251).astype(np.uint8).reshape(shape)
    out = A.hflip(img, np.random.default_rng(0), p=1.0)
    assert out.shape == img.shape and np.array_equal(out, img[:, ::-1])
    assert A.hflip(img, np.random.default_rng(0), p=0.0) is img
    video = np.zeros((4, 6, 3, 3), np.uint8)  # (T, H, W, C) with W == 3: the numpy path
    video[:, :, 0] = 7
    assert np.array_equal(A.hflip(video, np.random.default_rng(0), p=1.0), video[:, ::-1])


def test_random_resized_crop_box_stays_inside_and_follows_scale():
    rng = np.random.default_rng(0)
    areas = []
    for _ in range(500):
        y, x, ch, cw = A.random_resized_crop_box(60, 80, rng, scale=(0.2, 1.0))
        assert 0 <= y and y + ch <= 60 and 0 <= x and x + cw <= 80 and ch > 0 and cw > 0
        areas.append(ch * cw / (60 * 80))
    assert min(areas) >= 0.19 and max(areas) <= 1.0
    assert A.random_resized_crop_box(10, 10, rng, scale=(5.0, 6.0)) == (0, 0, 10, 10)  # impossible: centred square
    assert A.random_resized_crop(_image(), 32, rng).shape == (32, 32, 3)


def test_color_ops_keep_range_and_identities():
    img = _image()
    rng = np.random.default_rng(0)
    assert A.color_jitter(img, rng, p=0.0) is img
    out = A.color_jitter(img, rng, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, p=1.0)
    assert np.abs(out.astype(int) - img).max() <= 1  # every factor off: the image comes back (rounding)
    grey = A.random_grayscale(img, rng, p=1.0)
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])
    jittered = A.color_jitter(img, np.random.default_rng(3), p=1.0)
    assert jittered.dtype == np.uint8 and jittered.shape == img.shape and not np.array_equal(jittered, img)


def test_gaussian_blur_smooths():
    img = _image(64, 64)
    out = A.gaussian_blur(img, np.random.default_rng(0), sigma=(1.5, 1.5), p=1.0)
    rough = lambda x: np.abs(np.diff(x.astype(float), axis=1)).mean()  # noqa: E731
    assert rough(out) < 0.6 * rough(img)
    assert A.gaussian_blur(img, np.random.default_rng(0), p=0.0) is img


def test_moco_v2_view_is_a_function_of_the_rng():
    img = _image(64, 64)
    a = A.moco_v2_view(img, 32, np.random.default_rng([1, 2, 3]))
    b = A.moco_v2_view(img, 32, np.random.default_rng([1, 2, 3]))
    c = A.moco_v2_view(img, 32, np.random.default_rng([1, 2, 4]))
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    chw = A.to_chw(a)
    assert chw.shape == (3, 32, 32) and chw.flags["C_CONTIGUOUS"]
