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


def _replay_factor(seed: int, lo: float, hi: float) -> float:
    """The one factor color_jitter draws when a single op is on: p coin, permutation, then uniform."""
    rng = np.random.default_rng(seed)
    rng.random(), rng.permutation(4)
    return rng.uniform(lo, hi)


def test_each_jitter_op_computes_its_blend():
    img = _image(20, 24, seed=5)
    x = img.astype(np.float64)
    grey = x @ np.array([0.299, 0.587, 0.114])
    off = dict(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, p=1.0)
    f = _replay_factor(11, 0.6, 1.4)
    cases = {
        "brightness": x * f,                                       # blend with black
        "contrast": (x - grey.mean()) * f + grey.mean(),           # blend with the mean grey
        "saturation": x * f + (1 - f) * grey[..., None],           # blend with the luma image
    }
    for op, expected in cases.items():
        out = A.color_jitter(img, np.random.default_rng(11), **{**off, op: 0.4})
        want = np.clip(np.round(expected), 0, 255)
        assert out.dtype == np.uint8 and np.abs(out - want).max() <= 1, op  # OpenCV rounds once


def test_hue_rotation_keeps_luma_and_turns_chroma():
    assert np.allclose(A.hue_rotation(0.0), np.eye(3), atol=1e-6)
    m = A.hue_rotation(1.0)
    luma = np.array([0.299, 0.587, 0.114])
    assert np.allclose(luma @ m, luma, atol=1e-5)  # luma of the output = luma of the input
    assert np.allclose(A.hue_rotation(0.4) @ A.hue_rotation(0.6), m, atol=1e-5)  # rotations compose
    img = np.zeros((4, 4, 3), np.uint8)
    img[..., 0] = 200  # pure red turns towards other hues
    out = A.color_jitter(img, np.random.default_rng(2), brightness=0, contrast=0, saturation=0, hue=0.5, p=1.0)
    assert not np.array_equal(out, img)


def test_gaussian_blur_of_an_impulse_is_the_gaussian_kernel():
    img = np.zeros((41, 41), np.uint8)
    img[20, 20] = 255
    sigma = 1.7
    rng = np.random.default_rng(0)
    out = A.gaussian_blur(img, rng, sigma=(sigma, sigma), p=1.0).astype(np.float64)
    r = np.arange(-6, 7)  # 2 * ceil(3 sigma) + 1 = 13 taps
    g = np.exp(-r ** 2 / (2 * sigma ** 2))
    g /= g.sum()
    want = 255 * np.outer(g, g)
    assert np.abs(out[14:27, 14:27] - want).max() <= 1.0 and out.sum() == pytest.approx(255, abs=40)
    assert out[:13].max() == 0  # truncated at 3 sigma


def test_resize_antialiases_when_shrinking_and_keeps_channel_axes():
    checker = ((np.indices((64, 64)).sum(0) % 2) * 255).astype(np.uint8)
    small = A.resize(checker, 16)
    assert small.shape == (16, 16) and np.abs(small.astype(int) - 127.5).max() <= 1  # area filter: flat grey
    grey = A.resize(checker[:, :, None], (20, 30))
    assert grey.shape == (20, 30, 1)
    ramp = np.tile(np.arange(0, 64, dtype=np.uint8)[None, :, None], (8, 1, 3))
    up = A.resize(ramp, (8, 128)).astype(int)  # bilinear when enlarging: the ramp stays monotone
    assert up.shape == (8, 128, 3) and (np.diff(up[0, :, 0]) >= 0).all()


@pytest.mark.parametrize("hw", [(8, 9), (64, 64), (200, 150)])
def test_to_chw_is_a_planar_copy(hw):
    img = _image(*hw)
    out = A.to_chw(img)
    assert out.shape == (3, *hw) and out.flags["C_CONTIGUOUS"] and np.array_equal(out, img.transpose(2, 0, 1))
    assert A.to_chw(img[:, :, 0]).shape == (1, *hw)
    assert not np.shares_memory(out, img)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32, np.float64, np.float16, np.bool_])
@pytest.mark.parametrize("channels", [1, 2, 4, 7])
def test_to_chw_keeps_every_dtype_and_channel_count(dtype, channels):
    rng = np.random.default_rng(channels)
    img = (rng.random((60, 70, channels)) * 200).astype(dtype)
    for view in (img, img[::-1, 5:], img[:, :, ::-1]):  # non-contiguous inputs too
        out = A.to_chw(view)
        assert out.dtype == img.dtype and out.flags["C_CONTIGUOUS"]
        assert np.array_equal(out, view.transpose(2, 0, 1))


def test_to_chw_takes_more_channels_than_opencv_splits():
    cube = np.arange(130 * 130 * 600, dtype=np.uint32).reshape(130, 130, 600) % 251  # a hyperspectral-sized patch
    assert np.array_equal(A.to_chw(cube.astype(np.uint8)), cube.astype(np.uint8).transpose(2, 0, 1))


@pytest.mark.parametrize("hw", [(24, 24), (10, 70), (90, 30)])
def test_resize_matches_pil_bilinear(hw):
    """PIL's bilinear (antialiased when shrinking) is the reference torchvision's PIL path uses."""
    from PIL import Image

    img = _image(60, 50, seed=3)
    want = np.asarray(Image.fromarray(img).resize((hw[1], hw[0]), Image.BILINEAR)).astype(int)
    got = A.resize(img, hw)
    assert got.shape == (*hw, 3) and got.dtype == np.uint8 and np.abs(got.astype(int) - want).max() <= 1


def test_opencv_thread_pool_is_off():
    """A Ray Data task holds one CPU; OpenCV's own pool would over-subscribe it for no gain on small images."""
    assert A.cv2.getNumThreads() == 1


def test_color_jitter_names_a_wrong_input():
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        A.color_jitter(np.zeros((8, 8, 3), np.float32), np.random.default_rng(0), p=1.0)
    flipped = A.hflip(np.arange(12, dtype=np.int64).reshape(3, 4), np.random.default_rng(0), p=1.0)  # numpy path
    assert flipped.tolist() == [[3, 2, 1, 0], [7, 6, 5, 4], [11, 10, 9, 8]]
