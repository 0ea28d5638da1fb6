"""CPU image augmentations on uint8 HxWxC numpy arrays, for Ray Data preprocessing.

Each takes an explicit `np.random.Generator` (seeded per sample, epoch and run by the reader), so
views are reproducible. OpenCV does the pixel work (enlarging, mirroring, blur, the colour
matrices: one SIMD C call each on uint8), and torch's uint8 kernel the antialiased shrinking.
Measured on one core (2026-12-07), against the PIL + numpy code this replaced, at 64 / 224 px:
ColorJitter (four ops) 24 / 67 us vs 79 / 546, blur 22 / 137 vs 111 / 1,176, flip 1 / 4 vs 15 / 63;
a whole MoCo-v2 view 43 / 178 us vs 184 / 1,550 (benchmarks/README.md, session 14).

Semantics follow torchvision on PIL images (what MoCo v2 and DeCLIP train with): every colour op
returns uint8 (rounded and clipped after each op, in random order); resizing is bilinear with
antialiasing when shrinking (within one grey level of PIL's); the blur is a true Gaussian of the drawn
sigma truncated at 3 sigma (PIL's GaussianBlur approximates one with box filters).
"""
from __future__ import annotations

import contextlib
import contextvars
import math
import warnings

import cv2
import numpy as np

# Per-sample calls on small images: OpenCV's own thread pool only adds overhead and would
# over-subscribe the one CPU a Ray Data task holds; parallelism comes from the tasks.
cv2.setNumThreads(1)

GREY_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601 luma, as PIL's "L" and cv2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def random_resized_crop_box(h: int, w: int, rng: np.random.Generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop box (y, x, ch, cw): area fraction ~ U(scale), log-uniform aspect;
    10 tries, then the centred square. Shared by image crops and clip crops (one box for all frames)."""
    area = h * w
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
    side = min(h, w)
    return (h - side) // 2, (w - side) // 2, side, side


def random_resized_crop(img: np.ndarray, size: int, rng: np.random.Generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> np.ndarray:
    """torchvision's RandomResizedCrop of one image (box from `random_resized_crop_box`)."""
    y, x, ch, cw = random_resized_crop_box(img.shape[0], img.shape[1], rng, scale, ratio)
    return resize(img[y : y + ch, x : x + cw], size)


def resize(img: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a uint8 HxW or HxWxC image to `size` (int = square, or (h, w)), antialiased
    along any axis that shrinks, as PIL's and torchvision's bilinear: enlarging is OpenCV's bilinear;
    shrinking is torch's antialiased bilinear on a channels-last uint8 tensor (within 1 grey level of
    PIL; 2-4x faster than OpenCV's area filter, whose non-integer path is slow)."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if img.shape[:2] == hw:
        return np.ascontiguousarray(img)
    if hw[0] < img.shape[0] or hw[1] < img.shape[1]:
        return _shrink_antialiased(img, hw)
    out = cv2.resize(img, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)
    return out[:, :, None] if img.ndim == 3 and out.ndim == 2 else out  # cv2 drops a 1-channel axis


def _shrink_antialiased(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    chans = img[:, :, None] if img.ndim == 2 else img
    if chans.flags.writeable:
        src = torch.from_numpy(chans)
    else:  # e.g. np.asarray(PIL image): only read here, so skip torch's warning about writes
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            src = torch.from_numpy(chans)
    x = src.permute(2, 0, 1)[None].contiguous(memory_format=torch.channels_last)
    y = F.interpolate(x, size=hw, mode="bilinear", antialias=True, align_corners=False)
    out = y[0].permute(1, 2, 0).numpy()  # channels-last in -> channels-last out: HWC contiguous, no copy
    return out[:, :, 0] if img.ndim == 2 else out


def resize_shorter_center_crop(img: np.ndarray, resize_to: int, crop: int) -> np.ndarray:
    h, w = img.shape[:2]
    s = resize_to / min(h, w)
    img = resize(img, (max(crop, round(h * s)), max(crop, round(w * s))))
    h, w = img.shape[:2]
    y, x = (h - crop) // 2, (w - crop) // 2
    return np.ascontiguousarray(img[y : y + crop, x : x + crop])


def hflip(img: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """Mirror left-right with probability p (axis 1: HxW[xC] images and (T, H, W, C) clips alike)."""
    if rng.random() >= p:
        return img
    if img.dtype in (np.uint8, np.float32) and (img.ndim == 2 or (img.ndim == 3 and img.shape[2] <= 4)):
        out = cv2.flip(img, 1)  # 15x faster than a negative-stride copy at 64 px
        return out[:, :, None] if img.ndim == 3 and out.ndim == 2 else out
    return np.ascontiguousarray(img[:, ::-1])


def _affine(img: np.ndarray, matrix: np.ndarray, offset: float = 0.0) -> np.ndarray:
    """uint8 RGB -> matrix @ rgb + offset, rounded and clipped to uint8 (one OpenCV pass)."""
    m = np.empty((3, 4), np.float32)
    m[:, :3], m[:, 3] = matrix, offset
    return cv2.transform(img, m)


def grey_mean(img: np.ndarray) -> float:
    """Mean luma of a uint8 RGB image, in 0-255."""
    return float(cv2.mean(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY))[0])


_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float64)
_FROM_YIQ = np.linalg.inv(_TO_YIQ)


def hue_rotation(angle: float) -> np.ndarray:
    """RGB -> RGB matrix rotating the chroma plane of YIQ by `angle` radians: a linear hue shift
    that keeps luma (torchvision shifts H in HSV, a non-linear round trip ~10x dearer per pixel)."""
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[1, 0, 0], [0, c, -s], [0, s, c]], np.float64)
    return (_FROM_YIQ @ rot @ _TO_YIQ).astype(np.float32)


NEUTRAL_JITTER_FACTORS = (1.0, 1.0, 1.0, 0.0)  # brightness, contrast, saturation, hue angle: no change


def draw_color_jitter(rng: np.random.Generator, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1,
                      p: float = 0.8) -> tuple[np.ndarray, np.ndarray] | None:
    """ColorJitter's random draws, in torchvision's order: the coin (p), the order of the four ops,
    then each enabled op's factor as its turn comes. Returns (order, factors) - factors are
    (brightness, contrast, saturation, hue angle in radians), 1/1/1/0 for an op that is off - or
    None when the coin says no jitter. One source of the draws for both the CPU and device paths."""
    if rng.random() >= p:
        return None
    order = rng.permutation(4)
    factors = np.array(NEUTRAL_JITTER_FACTORS)
    for op in order:
        if op == 0 and brightness:
            factors[0] = rng.uniform(1 - brightness, 1 + brightness)
        elif op == 1 and contrast:
            factors[1] = rng.uniform(1 - contrast, 1 + contrast)
        elif op == 2 and saturation:
            factors[2] = rng.uniform(1 - saturation, 1 + saturation)
        elif op == 3 and hue:
            factors[3] = rng.uniform(-hue, hue) * 2 * math.pi
    return order, factors


def color_jitter(img: np.ndarray, rng: np.random.Generator, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p: float = 0.8) -> np.ndarray:
    """ColorJitter of a uint8 RGB image with probability p: brightness, contrast, saturation and hue
    in random order, each factor drawn as torchvision draws it, each op back to uint8 as on PIL."""
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"color_jitter needs a uint8 HxWx3 RGB image, got {img.dtype} {img.shape}")
    drawn = draw_color_jitter(rng, brightness, contrast, saturation, hue, p)
    return img if drawn is None else apply_color_jitter(img, *drawn)


def apply_color_jitter(img: np.ndarray, order, factors) -> np.ndarray:
    """The four colour ops in `order`, each rounded and clipped to uint8 (neutral factors skip an op)."""
    eye = np.eye(3, dtype=np.float32)
    for op in order:
        f = float(factors[op])
        if op == 0 and f != 1.0:
            img = _affine(img, eye * f)
        elif op == 1 and f != 1.0:
            img = _affine(img, eye * f, (1 - f) * grey_mean(img))  # blend with the mean grey
        elif op == 2 and f != 1.0:
            img = _affine(img, eye * f + (1 - f) * GREY_WEIGHTS[None, :])  # blend with the luma image
        elif op == 3 and f != 0.0:
            img = _affine(img, hue_rotation(f))
    return img


def random_grayscale(img: np.ndarray, rng: np.random.Generator, p: float = 0.2) -> np.ndarray:
    return grey_rgb(img) if rng.random() < p else img


def grey_rgb(img: np.ndarray) -> np.ndarray:
    """The luma of a uint8 RGB image in all three channels."""
    return cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)


def draw_blur_sigma(rng: np.random.Generator, sigma=(0.1, 2.0), p: float = 0.5) -> float:
    """GaussianBlur's draws: the coin (p), then sigma ~ U(sigma); 0.0 = no blur."""
    if rng.random() >= p:
        return 0.0
    return float(rng.uniform(*sigma))


def blur_kernel_size(sigma: float) -> int:
    return 2 * math.ceil(3 * sigma) + 1  # truncated at 3 sigma


def gaussian_blur(img: np.ndarray, rng: np.random.Generator, sigma=(0.1, 2.0), p: float = 0.5) -> np.ndarray:
    """With probability p, a Gaussian blur of sigma ~ U(sigma) (kernel 2*ceil(3 sigma)+1, mirrored border)."""
    s = draw_blur_sigma(rng, sigma, p)
    return apply_gaussian_blur(img, s) if s > 0 else img


def apply_gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    k = blur_kernel_size(sigma)
    out = cv2.GaussianBlur(img, (k, k), sigma, borderType=cv2.BORDER_REFLECT_101)
    return out[:, :, None] if img.ndim == 3 and out.ndim == 2 else out


# --------------------------------------------------------------------------- deferred photometric ops
# `data.photometric = device` moves a view's colour jitter, greyscale and blur from the CPU read tasks
# to the Train worker's device (device_views.py), where a whole batch takes them in one batched pass,
# and the read tasks are left with decode + crop + flip. The reader still
# draws every random parameter, in the same order, so a view's crop, coin flips and factors do not
# depend on where its pixels are made. The parameters travel beside the view as a float32 column.
PHOTOMETRIC_SUFFIX = "@photometric"  # column `<view>@photometric` holds `<view>`'s deferred parameters
# Layout of the parameter vector: the jitter's op order (4 op ids), its factors (brightness, contrast,
# saturation, hue angle in radians; 1/1/1/0 = off), greyscale (0/1), blur sigma (0 = off).
P_ORDER, P_FACTORS, P_GREY, P_BLUR, N_PHOTOMETRIC = slice(0, 4), slice(4, 8), 8, 9, 10
PHOTOMETRIC_PLACES = ("reader", "device")
_photometric_place: contextvars.ContextVar[str] = contextvars.ContextVar("contrastlab_photometric", default="reader")


class DeferredView:
    """A view whose photometric ops are still to be done on the Train worker's device: the cropped
    and flipped uint8 pixels plus the drawn parameters. The reader turns it into two columns."""

    __slots__ = ("pixels", "params")

    def __init__(self, pixels: np.ndarray, params: np.ndarray):
        self.pixels, self.params = pixels, params

    def __repr__(self) -> str:
        return f"DeferredView(pixels {self.pixels.dtype}{list(self.pixels.shape)}, params {self.params.tolist()})"

    def __array__(self, *args, **kwargs):
        raise TypeError("a DeferredView (data.photometric=device) is not an array yet: return it from the sample "
                        "function as a column of its own (to_chw is fine); the Train worker finishes it")


@contextlib.contextmanager
def photometric_place(place: str):
    """Within this block, views whose recipe supports it (`moco_v2_view`) defer their photometric ops
    when `place` is "device". The platform wraps each method's per-sample function in it."""
    if place not in PHOTOMETRIC_PLACES:
        raise ValueError(f"data.photometric must be one of {PHOTOMETRIC_PLACES}, got {place!r}")
    token = _photometric_place.set(place)
    try:
        yield
    finally:
        _photometric_place.reset(token)


def photometric_params(jitter, grey: bool, blur_sigma: float) -> np.ndarray:
    """Drawn photometric parameters -> the float32 vector the device path reads."""
    params = np.zeros(N_PHOTOMETRIC, np.float32)
    order, factors = jitter if jitter is not None else (np.arange(4), np.array(NEUTRAL_JITTER_FACTORS))
    params[P_ORDER], params[P_FACTORS] = order, factors
    params[P_GREY], params[P_BLUR] = float(grey), blur_sigma
    return params


def moco_v2_view(img: np.ndarray, size: int, rng: np.random.Generator, crop_scale=(0.2, 1.0), blur: bool = True,
                 photometric: str | None = None) -> np.ndarray | DeferredView:
    """The MoCo-v2 'aug+' recipe used by DeCLIP/IFND: crop, jitter p=.8, grey p=.2, blur p=.5, flip.

    `photometric`: "reader" makes the whole view here; "device" returns a `DeferredView` (crop and
    flip done, jitter/grey/blur drawn but left to the Train worker's device); None = the platform's
    setting for this run (`data.photometric`). The random draws are the same either way."""
    x = random_resized_crop(img, size, rng, scale=crop_scale)
    jitter = draw_color_jitter(rng)
    grey = rng.random() < 0.2
    sigma = draw_blur_sigma(rng) if blur else 0.0
    flip = rng.random() < 0.5
    if (photometric or _photometric_place.get()) == "device":
        # flip commutes with all three (per-pixel ops; a symmetric kernel on a mirrored border)
        return DeferredView(cv2.flip(x, 1) if flip else x, photometric_params(jitter, grey, sigma))
    if jitter is not None:
        x = apply_color_jitter(x, *jitter)
    if grey:
        x = grey_rgb(x)
    if sigma > 0:
        x = apply_gaussian_blur(x, sigma)
    return cv2.flip(x, 1) if flip else x


def to_chw(img: np.ndarray | DeferredView) -> np.ndarray | DeferredView:
    """HxWxC -> CxHxW, same dtype (views are uint8, converted to float and normalised on the Train worker)."""
    if isinstance(img, DeferredView):
        return DeferredView(to_chw(img.pixels), img.params)
    if img.ndim == 2:
        return np.ascontiguousarray(img[None])
    h, w, c = img.shape
    if c == 1 or h * w < 48 * 48 or c > 512 or img.dtype not in _CV2_SPLIT_DTYPES:
        return np.ascontiguousarray(img.transpose(2, 0, 1))
    # OpenCV writes each channel straight into its plane of one new array: one allocation, where
    # cv2.split's own planes + np.stack (before session 18) made four and twice the bytes, and a read
    # task holding a block's rows pays first-touch page faults on each new byte. One-process probe,
    # rows held as in a block, alternated: 1.1-2.9x faster at 64-448 px in most orders of sizes (such
    # timings follow the allocator's history: one order had 375x500 2x slower). Through Ray (224 px
    # MoCo-v2 pairs, same cluster, alternated) no difference: 1,537 against 1,521 img/s. A transposed
    # copy is 1.3-2.5x slower than either. cv2.split takes up to 512 channels of its own dtypes; the
    # rest (and images under 48x48, where the transpose is as fast) go the transposed way.
    out = np.empty((c, h, w), img.dtype)
    cv2.split(img, list(out))
    return out


_CV2_SPLIT_DTYPES = {np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16, np.int32, np.float32, np.float64)}


def normalize_batch(x, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """uint8 (B, C, H, W) tensor on the worker -> float normalised."""
    import torch

    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return (x.float() / 255.0 - m) / s
