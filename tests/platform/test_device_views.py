"""data.photometric=device: views' colour jitter, greyscale and blur deferred from the read tasks to a
batched pass on the Train worker's device (data/device_views.py), against hand-computed answers and
against the CPU path (data/augment.py) with the same random draws."""
import math

import numpy as np
import pytest
import torch

from contrastlab.platform.data import augment as A
from contrastlab.platform.data.device_views import apply_photometric, finish_views
from contrastlab.platform.data.reader import PreprocessBatches, rows_to_batch


def _photo(seed: int = 0, size: int = 48) -> np.ndarray:
    from sklearn.datasets import load_sample_images

    img = load_sample_images().images[seed % 2]
    y, x = 60 + 7 * seed, 90 + 11 * seed
    return np.ascontiguousarray(img[y : y + 3 * size : 3, x : x + 3 * size : 3])


def _params(order=(0, 1, 2, 3), factors=(1.0, 1.0, 1.0, 0.0), grey=False, blur=0.0) -> np.ndarray:
    return A.photometric_params((np.array(order), np.array(factors)), grey, blur)


def _apply(img_hwc: np.ndarray, params: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(A.to_chw(img_hwc)[None].copy())
    return apply_photometric(x, torch.from_numpy(params[None])).numpy()[0].transpose(1, 2, 0)


def test_neutral_parameters_leave_the_view_unchanged():
    img = _photo()
    assert np.array_equal(_apply(img, _params()), img)


def test_each_colour_op_computes_its_blend():
    img = _photo().astype(np.float64)
    grey = img @ A.GREY_WEIGHTS.astype(np.float64)
    src = img.astype(np.uint8)
    # brightness 1.5: x * 1.5, rounded and clipped
    assert np.abs(_apply(src, _params(factors=(1.5, 1, 1, 0))) - np.clip(np.round(img * 1.5), 0, 255)).max() <= 0
    # contrast 0.5: blend with the image's mean luma
    want = np.clip(np.round(0.5 * img + 0.5 * grey.mean()), 0, 255)
    assert np.abs(_apply(src, _params(factors=(1, 0.5, 1, 0))).astype(float) - want).max() <= 1
    # saturation 0: the luma image in all three channels
    assert np.abs(_apply(src, _params(factors=(1, 1, 0.0, 0))).astype(float) - np.round(grey)[..., None]).max() <= 1
    # hue: the YIQ chroma rotation of augment.hue_rotation
    want = np.clip(np.round(img @ A.hue_rotation(0.7).astype(np.float64).T), 0, 255)
    assert np.abs(_apply(src, _params(factors=(1, 1, 1, 0.7))).astype(float) - want).max() <= 1


def test_ops_clip_after_each_step_in_the_drawn_order():
    """Brightness 2 then contrast 0.5 differs from the reverse order because each op clips to 0-255."""
    img = np.full((8, 8, 3), 200, np.uint8)
    img[:4] = 40
    x = img.astype(np.float64)
    b_then_c = np.clip(np.round(x * 2), 0, 255)
    b_then_c = np.round(0.5 * b_then_c + 0.5 * b_then_c.mean())
    c_then_b = np.round(0.5 * x + 0.5 * x.mean())
    c_then_b = np.clip(np.round(c_then_b * 2), 0, 255)
    assert not np.array_equal(b_then_c, c_then_b)
    assert np.array_equal(_apply(img, _params(order=(0, 1, 2, 3), factors=(2, 0.5, 1, 0))), b_then_c)
    assert np.array_equal(_apply(img, _params(order=(1, 0, 2, 3), factors=(2, 0.5, 1, 0))), c_then_b)


def test_greyscale_and_blur_of_an_impulse():
    img = np.zeros((21, 21, 3), np.uint8)
    img[10, 10] = (255, 0, 0)
    out = _apply(img, _params(grey=True))
    assert (out[10, 10] == round(0.299 * 255)).all() and out.sum() == 3 * round(0.299 * 255)
    img[10, 10] = 255
    sigma = 1.0
    t = np.arange(-3, 4)
    k = np.exp(-t**2 / (2 * sigma**2))
    k /= k.sum()
    want = np.zeros((21, 21))
    want[7:14, 7:14] = np.round(255 * np.outer(k, k))
    out = _apply(img, _params(blur=sigma))
    assert np.abs(out[..., 0].astype(float) - want).max() <= 1 and (out[..., 0] == out[..., 2]).all()


def test_a_batch_equals_each_view_alone():
    """Mixed ops, orders and blur widths in one batch: each image gets exactly its own parameters."""
    rng = np.random.default_rng(3)
    views, params = [], []
    for i in range(6):
        d = A.to_chw(A.moco_v2_view(_photo(i), 40, rng, photometric="device"))
        views.append(d.pixels)
        params.append(d.params)
    params[0][A.P_BLUR], params[1][A.P_BLUR] = 1.9, 0.3  # a wide and a narrow kernel side by side
    batch = apply_photometric(torch.from_numpy(np.stack(views)), torch.from_numpy(np.stack(params))).numpy()
    for i in range(6):
        alone = apply_photometric(torch.from_numpy(views[i][None]), torch.from_numpy(params[i][None])).numpy()[0]
        assert np.abs(batch[i].astype(int) - alone).max() <= 1


def test_deferred_view_draws_what_the_reader_view_draws():
    """Same rng, either place: same crop, flip, jitter order and factors, grey coin and sigma; the
    finished pixels agree with OpenCV's to within rounding (fixed-point luma and blur there)."""
    mean_abs, worst = [], 0
    for seed in range(120):
        img = _photo(seed % 5, 64)
        whole = A.to_chw(A.moco_v2_view(img, 48, np.random.default_rng(seed), photometric="reader"))
        rng = np.random.default_rng(seed)
        deferred = A.to_chw(A.moco_v2_view(img, 48, rng, photometric="device"))
        assert isinstance(deferred, A.DeferredView) and deferred.pixels.shape == whole.shape
        finished = apply_photometric(torch.from_numpy(deferred.pixels[None].copy()), torch.from_numpy(deferred.params[None])).numpy()[0]
        diff = np.abs(finished.astype(int) - whole)
        mean_abs.append(diff.mean())
        worst = max(worst, int(diff.max()))
        if not (deferred.params[A.P_FACTORS] != [1, 1, 1, 0]).any() and not deferred.params[A.P_GREY] and not deferred.params[A.P_BLUR]:
            assert np.array_equal(finished, whole)  # nothing deferred: crop + flip identical
    # measured 2026-12-07: mean 0.05 grey levels, worst pixel 5 (contrast x saturation factors up to
    # 1.4 each turn a 1-level rounding difference into a few levels)
    assert np.mean(mean_abs) < 0.2 and worst <= 8


def test_reader_emits_a_parameter_column_only_when_deferring():
    from contrastlab.platform.data.codecs import encode_jpeg

    rows = [{"__key__": f"{i:05d}", "__url__": "s.tar", "jpg": encode_jpeg(_photo(i)), "json": b'{"index": %d}' % i} for i in range(4)]
    fn = lambda s, rng: {"image": A.to_chw(A.moco_v2_view(s["jpg"], 32, rng))}  # noqa: E731
    whole = PreprocessBatches(fn, ("jpg",), "raise", None, 0, "train", epoch=0)(rows_to_batch(rows))
    deferred = PreprocessBatches(fn, ("jpg",), "raise", None, 0, "train", epoch=0, photometric="device")(rows_to_batch(rows))
    assert sorted(whole) == ["image", "index"]
    assert sorted(deferred) == ["image", "image@photometric", "index"]
    assert deferred["image@photometric"].shape == (4, A.N_PHOTOMETRIC) and deferred["image@photometric"].dtype == np.float32
    finished = finish_views({k: torch.from_numpy(v) for k, v in deferred.items()})
    assert sorted(finished) == ["image", "index"]
    assert np.abs(finished["image"].numpy().astype(int) - whole["image"]).mean() < 0.5
    assert A._photometric_place.get() == "reader"  # the setting does not leak out of the batch


def test_errors_name_the_problem():
    from contrastlab.platform.config import ConfigError, build_experiment

    with pytest.raises(ConfigError, match="data.photometric must be reader .* or device"):
        build_experiment("declip", sets=["data.photometric=gpu"])
    with pytest.raises(ValueError, match="uint8 \\(B, 3, H, W\\)"):
        apply_photometric(torch.zeros(2, 48, 48, 3, dtype=torch.uint8), torch.zeros(2, A.N_PHOTOMETRIC))
    with pytest.raises(KeyError, match="no view column 'image'"):
        finish_views({"image@photometric": torch.zeros(2, A.N_PHOTOMETRIC)})
    with pytest.raises(TypeError, match="not an array yet"):
        np.stack([A.moco_v2_view(_photo(), 16, np.random.default_rng(0), photometric="device")] * 2)
    assert math.isclose(float(_params(blur=0.5)[A.P_BLUR]), 0.5)


def test_run_local_finishes_deferred_views_before_the_step(tmp_path, monkeypatch):
    """DeCLIP with data.photometric=device through the shared loop: the step sees finished views only."""
    from contrastlab.methods.declip.method import DeCLIP
    from contrastlab.platform.data import device_views
    from contrastlab.platform.local import run_local

    monkeypatch.setenv("CONTRASTLAB_CACHE", str(tmp_path))
    seen, finished = [], []
    step, apply = DeCLIP.train_step, device_views.apply_photometric

    def spy_step(self, batch, ctx):
        seen.append(sorted(batch))
        return step(self, batch, ctx)

    def spy_apply(images, params):
        finished.append(tuple(images.shape))
        return apply(images, params)

    monkeypatch.setattr(DeCLIP, "train_step", spy_step)
    monkeypatch.setattr(device_views, "apply_photometric", spy_apply)
    with pytest.warns(UserWarning, match="data.photometric=device without a GPU"):
        r = run_local("declip", ["data.photometric=device", "train.epochs=1", "train.max_steps_per_epoch=2", "train.batch_size=16",
                                 "data.embedded_params={n_train: 64, n_heldout: 32, n_test: 32}"], quiet=True)
    assert len(seen) == 2 and not any(k.endswith(A.PHOTOMETRIC_SUFFIX) for k in seen[0]) and {"image", "image2"} <= set(seen[0])
    assert finished[:2] == [(16, 3, 48, 48)] * 2  # both views of the first batch were finished on the worker
    assert math.isfinite(r.history[-1]["train_loss"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (the place data.photometric=device is for)")
def test_the_gpu_finishes_views_as_the_cpu_does():
    rng = np.random.default_rng(5)
    deferred = [A.to_chw(A.moco_v2_view(_photo(i % 5, 64), 48, rng, photometric="device")) for i in range(64)]
    pixels = torch.from_numpy(np.stack([d.pixels for d in deferred]))
    params = torch.from_numpy(np.stack([d.params for d in deferred]))
    on_cpu = apply_photometric(pixels, params)
    on_gpu = apply_photometric(pixels.cuda(), params.cuda())
    assert on_gpu.device.type == "cuda" and on_gpu.dtype == torch.uint8
    assert (on_gpu.cpu().int() - on_cpu.int()).abs().max() <= 1  # float summation order may differ
