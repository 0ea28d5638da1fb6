"""The photometric half of a view, done on the Train worker's device for a whole batch at once.

With `data.photometric = device`, recipes that support it (`augment.moco_v2_view`) leave their colour
jitter, random greyscale and Gaussian blur undone in the read tasks: a view arrives as its cropped and
flipped uint8 pixels (column `<view>`) plus the parameters the reader drew for it (column
`<view>@photometric`, layout in augment.py). `finish_views` applies them here, batched, before the
method's step sees the batch, so methods do not change. Why: the colour ops and the blur cost the read
tasks 2-6x the JPEG decode of a 224-64 px image (benchmarks/README.md); on a GPU they are a few
elementwise passes and two depthwise convolutions per batch, and the read tasks are left with decode +
crop + flip (DALI and FFCV split the work the same way). Not yet timed on a GPU (no device lent).
On a CPU it is the wrong place: torch takes ~5.9 ms per 224 px view for what OpenCV does in ~0.13 ms
(45x; benchmarks/augment_views.py, one thread), so the config warns when the Train worker has no GPU.

Semantics match the CPU path (torchvision on PIL): each colour op is rounded and clipped to 0-255
before the next, the contrast blend uses the mean luma of the image as it is at that point, the blur
is a Gaussian truncated at 3 sigma with a mirrored (reflect-101) border. Results agree with
`augment.py`'s OpenCV path to within a few grey levels (OpenCV rounds its luma and blur in fixed
point; tests/platform/test_device_views.py measures the difference).
"""
from __future__ import annotations

import math
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from .augment import GREY_WEIGHTS, N_PHOTOMETRIC, NEUTRAL_JITTER_FACTORS, P_BLUR, P_FACTORS, P_GREY, P_ORDER, PHOTOMETRIC_SUFFIX, _FROM_YIQ, _TO_YIQ


def _luma(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) float -> (B, 1, H, W) ITU-R 601 luma."""
    w = torch.as_tensor(GREY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _hue_matrices(angle: torch.Tensor) -> torch.Tensor:
    """(B,) radians -> (B, 3, 3) RGB matrices rotating YIQ's chroma plane (augment.hue_rotation, batched)."""
    to_yiq = torch.as_tensor(_TO_YIQ, dtype=torch.float32, device=angle.device)
    from_yiq = torch.as_tensor(_FROM_YIQ, dtype=torch.float32, device=angle.device)
    c, s = torch.cos(angle), torch.sin(angle)
    rot = torch.zeros(angle.shape[0], 3, 3, device=angle.device)
    rot[:, 0, 0], rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = 1, c, -s, s, c
    return from_yiq @ rot @ to_yiq


def _colour_op(x: torch.Tensor, op: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """One position of the jitter's random order: every image takes its own op (0 brightness,
    1 contrast, 2 saturation, 3 hue) with its factor, as one batched 3x3 matrix plus offset."""
    b = x.shape[0]
    f = factors.gather(1, op[:, None]).squeeze(1)  # (B,) this op's factor per image
    eye = torch.eye(3, device=x.device).expand(b, 3, 3)
    grey = torch.as_tensor(GREY_WEIGHTS, device=x.device).expand(b, 1, 3)
    scaled = eye * f.view(b, 1, 1)
    matrix = torch.where((op == 2).view(b, 1, 1), scaled + (1 - f).view(b, 1, 1) * grey, scaled)
    if bool((op == 3).any()):
        matrix = torch.where((op == 3).view(b, 1, 1), _hue_matrices(f), matrix)
    y = torch.bmm(matrix, x.reshape(b, 3, -1)).view_as(x)
    if bool((op == 1).any()):  # contrast: blend with the image's mean luma
        offset = torch.where(op == 1, (1 - f) * _luma(x).mean(dim=(1, 2, 3)), torch.zeros_like(f))
        y += offset.view(b, 1, 1, 1)
    return y.round_().clamp_(0, 255)  # back to uint8 values after every op, as on PIL


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image Gaussian blur (sigma 0 = none): one separable depthwise convolution for the batch,
    each image's kernel truncated at ceil(3 sigma) and zero-padded to the batch's widest."""
    b, c, h, w = x.shape
    radius = int(math.ceil(3 * float(sigma.max())))
    radius = min(radius, h - 1, w - 1)  # reflect padding needs a border narrower than the image
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    s = sigma.clamp_min(1e-6).view(b, 1)
    own_radius = torch.ceil(3 * sigma).view(b, 1)
    kernel = torch.exp(-(t.view(1, -1) ** 2) / (2 * s**2)) * (t.abs().view(1, -1) <= own_radius)
    kernel = torch.where((sigma > 0).view(b, 1), kernel, (t == 0).to(x.dtype).view(1, -1))
    kernel = kernel / kernel.sum(1, keepdim=True)
    weight = kernel.repeat_interleave(c, 0)  # (B*C, K): one filter per image channel
    y = F.pad(x.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, weight.view(b * c, 1, 1, -1), groups=b * c)
    y = F.conv2d(y, weight.view(b * c, 1, -1, 1), groups=b * c)
    return y.view(b, c, h, w)


def apply_photometric(images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) views + (B, N_PHOTOMETRIC) parameters -> uint8 views with colour jitter,
    greyscale and blur applied per image (in that order, as the CPU recipe)."""
    if images.ndim != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
        raise ValueError(f"deferred photometric ops need uint8 (B, 3, H, W) views, got {images.dtype} {tuple(images.shape)}"
                         " (is the view column made by to_chw?)")
    if params.ndim != 2 or params.shape != (images.shape[0], N_PHOTOMETRIC):
        raise ValueError(f"expected ({images.shape[0]}, {N_PHOTOMETRIC}) photometric parameters, got {tuple(params.shape)}")
    params = params.to(device=images.device, dtype=torch.float32)
    x = images.float()
    order, factors = params[:, P_ORDER].long(), params[:, P_FACTORS]
    if bool((factors != factors.new_tensor(NEUTRAL_JITTER_FACTORS)).any()):  # some image has jitter
        for position in range(4):
            x = _colour_op(x, order[:, position], factors)
    grey = params[:, P_GREY] > 0.5
    if bool(grey.any()):
        luma = _luma(x).round().expand_as(x)
        x = torch.where(grey.view(-1, 1, 1, 1), luma, x)
    sigma = params[:, P_BLUR]
    if bool((sigma > 0).any()):
        x = _blur(x, sigma).round().clamp_(0, 255)
    return x.to(torch.uint8)


def finish_views(batch: dict) -> dict:
    """Apply every deferred view's photometric ops in a batch (on the batch's device) and drop the
    parameter columns; a batch without them is returned as it is."""
    deferred = [k for k in batch if k.endswith(PHOTOMETRIC_SUFFIX)]
    if not deferred:
        return batch
    out = {k: v for k, v in batch.items() if not k.endswith(PHOTOMETRIC_SUFFIX)}
    for key in deferred:
        view = key[: -len(PHOTOMETRIC_SUFFIX)]
        if view not in out:
            raise KeyError(f"column {key!r} has no view column {view!r} beside it")
        out[view] = apply_photometric(out[view], batch[key])
    return out


def finishing_views(batches: Callable[..., Iterator[dict]]) -> Callable[..., Iterator[dict]]:
    """Wrap a `batches(split, ...)` function so that every batch it yields has its views finished."""

    def wrapped(*args, **kwargs):
        return (finish_views(b) for b in batches(*args, **kwargs))

    return wrapped
