"""FAME mask and merge: the card's checklist items 1-6 (fame.md h)."""
import math

import pytest
import torch

from contrastlab.methods.fame.mask import (
    N_BINS, colour_bins, colour_foreground_prob, colour_histograms, fame, fame_mask, gaussian_blur2d, gaussian_kernel1d,
    gaussian_kernel_size, merge_clips, minmax, motion_map, rgb_to_hsv, seed_masks,
)

torch.set_num_threads(1)


def moving_square_clip(h: int, t: int = 16, side: int = 8, step: int = 2, noise: float = 0.01, seed: int = 0):
    """(1, 3, T, H, W): a red square moving right over a grey, lightly textured background + per-frame noise.
    Returns the clip and the bool (H, W) trajectory (every pixel the square covers in some frame)."""
    g = torch.Generator().manual_seed(seed)
    bg = 0.45 + 0.1 * torch.rand(3, 1, h, h, generator=g).expand(3, t, h, h).clone()
    y0 = h // 2 - side // 2
    traj = torch.zeros(h, h, dtype=torch.bool)
    clip = bg.clone()
    for f in range(t):
        x0 = 4 + step * f
        clip[:, f, y0:y0 + side, x0:x0 + side] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
        traj[y0:y0 + side, x0:x0 + side] = True
    clip = clip + (torch.rand(clip.shape, generator=g) * 2 - 1) * noise
    return clip.clamp(0, 1)[None], traj


# 2. kernel size rule and sigma
@pytest.mark.parametrize("crop,size", [(224, 23), (112, 11), (64, 7), (48, 5), (32, 3)])
def test_kernel_size_rule(crop, size):
    assert gaussian_kernel_size(crop) == size


def test_gaussian_sigma_is_size_over_three():
    g = gaussian_kernel1d(5)
    sigma = 5 / 3
    expected = torch.tensor([math.exp(-(x**2) / (2 * sigma**2)) for x in (-2, -1, 0, 1, 2)])
    torch.testing.assert_close(g, expected / expected.sum())
    # a constant map stays constant under the reflect-padded blur
    x = torch.full((1, 9, 9), 0.3)
    torch.testing.assert_close(gaussian_blur2d(x, 5), x)


# 1. exactly floor(beta HW) ones, binary, no NaN, for random / constant / static clips
@pytest.mark.parametrize("kind", ["random", "constant", "static"])
@pytest.mark.parametrize("beta", [0.3, 0.5, 0.7])
def test_mask_count_binary_no_nan(kind, beta):
    g = torch.Generator().manual_seed(1)
    if kind == "random":
        x = torch.rand(3, 3, 6, 20, 24, generator=g)
    elif kind == "constant":
        x = torch.full((3, 3, 6, 20, 24), 0.5)
    else:
        x = torch.rand(3, 3, 1, 20, 24, generator=g).expand(3, 3, 6, 20, 24).contiguous()
    m = fame_mask(x, beta=beta)
    assert m.shape == (3, 20, 24)
    assert not torch.isnan(m).any()
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    assert (m.sum(dim=(1, 2)) == math.floor(beta * 20 * 24)).all()


# 3. static clip: motion map identically zero; the mask then comes from colour statistics only
def test_static_clip_motion_zero_mask_from_colour_only():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 1, 16, 16, generator=g).expand(2, 3, 8, 16, 16).contiguous()
    assert (motion_map(x) == 0).all()
    mask, maps = fame_mask(x, beta=0.5, return_maps=True)
    assert (maps["motion"] == 0).all()
    assert (mask.sum(dim=(1, 2)) == 128).all()
    assert maps["fg_seed"].sum(dim=(1, 2)).tolist() == [128, 128] and maps["bg_seed"].sum(dim=(1, 2)).tolist() == [25, 25]


def test_motion_map_formula():
    x = torch.zeros(1, 3, 3, 2, 2)
    x[0, 0, 1, 0, 0] = 0.6  # frame 1, red, pixel (0, 0): |0 - .6| + |.6 - 0| over 2 pairs
    x[0, 2, 2, 1, 1] = 0.4
    d = motion_map(x)
    torch.testing.assert_close(d, torch.tensor([[[0.6, 0.0], [0.0, 0.2]]]))


def test_minmax_per_clip():
    x = torch.tensor([[[1.0, 3.0], [2.0, 5.0]], [[0.0, 0.0], [0.0, 0.0]]])
    out = minmax(x)
    torch.testing.assert_close(out[0], (x[0] - 1) / (4 + 1e-8))
    assert (out[1] == 0).all()


# 4. a moving square is inside the mask
@pytest.mark.parametrize("h,beta,need", [(64, 0.25, 0.95), (48, 0.5, 0.80)])
def test_moving_square_covered(h, beta, need):
    for seed in range(3):
        clip, traj = moving_square_clip(h, seed=seed)
        mask = fame_mask(clip, beta=beta)[0].bool()
        covered = (mask & traj).sum().item() / traj.sum().item()
        assert covered >= need, f"seed {seed}: {covered:.3f} of the trajectory in the mask"


# 5. colour bins and histograms
def test_hsv_kornia_convention():
    rgb = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0.5, 0.5, 0.5]]).T.reshape(1, 3, 1, 5)
    hsv = rgb_to_hsv(rgb)[0, :, 0]
    torch.testing.assert_close(hsv[0], torch.tensor([0, 2 * math.pi / 3, 4 * math.pi / 3, math.pi / 3, 0]))
    torch.testing.assert_close(hsv[1], torch.tensor([1.0, 1, 1, 1, 0]))
    torch.testing.assert_close(hsv[2], torch.tensor([1.0, 1, 1, 1, 0.5]))


def test_colour_bins_hand_values():
    # pure green: h = 2pi/3, s = v = 1. Quirk: angle 2pi * 2pi/3 = 4pi^2/3.
    green = torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1)
    angle = 4 * math.pi**2 / 3
    qa = round(9 * (math.cos(angle) + 1) / 2 + 1)
    qb = round(9 * (math.sin(angle) + 1) / 2 + 1)
    assert colour_bins(green, hue_quirk=True).item() == qa + 10 * (qb - 1) + 100 * 9
    # without the quirk: cos(2pi/3) = -.5 -> a = .25 -> 3.25 -> 3; sin = .866 -> b = .933 -> 9.4 -> 9
    assert colour_bins(green, hue_quirk=False).item() == 3 + 10 * 8 + 900
    # grey 0.5: s = 0 -> a = b = .5 -> 5.5 -> 6 (half to even); v: 5.5 -> 6
    grey = torch.full((1, 3, 1, 1), 0.5)
    assert colour_bins(grey).item() == 6 + 10 * 5 + 100 * 5


def test_colour_bins_range():
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    x[0] = 0.0
    x[1] = 1.0
    for quirk in (True, False):
        bins = colour_bins(x, quirk)
        assert bins.min() >= 1 and bins.max() <= 999


def test_histograms_laplace_and_probability():
    bins = torch.tensor([[[5, 5, 7, 9]]])  # (1, 1, 4)
    fg = torch.tensor([[[True, True, True, False]]])
    bg = torch.tensor([[[False, False, False, True]]])
    h_fg, h_bg = colour_histograms(bins, fg, bg)
    assert h_fg.shape == (1, N_BINS)
    torch.testing.assert_close(h_fg[0, [5, 7, 9]], torch.tensor([2 / 3, 1 / 3, 0.0]), rtol=1e-6, atol=1e-7)
    n_bg = 1
    # bins without any bg-seed pixel: 1 / (n_bg + 1000); bin 9 holds the bg seed: 2 / (n_bg + 1000)
    torch.testing.assert_close(h_bg[0, 5], torch.tensor(1 / (n_bg + 1000)))
    torch.testing.assert_close(h_bg[0, 9], torch.tensor(2 / (n_bg + 1000)))
    r = colour_foreground_prob(bins, h_fg, h_bg)[0, 0]
    expected5 = (2 / 3) / (2 / 3 + 1 / 1001)
    torch.testing.assert_close(r, torch.tensor([expected5, expected5, (1 / 3) / (1 / 3 + 1 / 1001), 0.0]))


def test_seed_sizes():
    m = torch.rand(2, 10, 10, generator=torch.Generator().manual_seed(4))
    fg, bg = seed_masks(m, 0.5, 0.1)
    assert fg.sum(dim=(1, 2)).tolist() == [50, 50] and bg.sum(dim=(1, 2)).tolist() == [10, 10]
    assert not (fg & bg).any()
    for b in range(2):  # top-k: every seed >= every non-seed within a clip
        assert m[b][fg[b]].min() >= m[b][~fg[b]].max()
        assert m[b][bg[b]].max() <= m[b][~bg[b]].min()


# 6. merge
def test_merge_keeps_foreground_and_partner_background():
    g = torch.Generator().manual_seed(5)
    x = torch.rand(4, 3, 5, 8, 8, generator=g)
    mask = (torch.rand(4, 8, 8, generator=g) > 0.5).float()
    perm = torch.tensor([2, 0, 3, 1])
    y = merge_clips(x, mask, perm)
    for b in range(4):
        fg = mask[b].bool()
        for t in range(5):
            assert torch.equal(y[b, :, t][:, fg], x[b, :, t][:, fg])
            assert torch.equal(y[b, :, t][:, ~fg], x[perm[b], :, t][:, ~fg])
    assert torch.equal(merge_clips(x, mask, torch.arange(4)), x)


def test_fame_end_to_end_shapes():
    x = torch.rand(6, 3, 4, 16, 16, generator=torch.Generator().manual_seed(6))
    y, m, perm = fame(x, beta=0.5, generator=torch.Generator().manual_seed(0))
    assert y.shape == x.shape and sorted(perm.tolist()) == list(range(6))
    assert (m.sum(dim=(1, 2)) == 128).all()
    torch.testing.assert_close(y, merge_clips(x, m, perm))
