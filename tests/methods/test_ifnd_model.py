"""IFND encoders, momentum encoder, key queue and the small-scale augmentation."""
import numpy as np
import torch

from contrastlab.methods.ifnd.augment import random_view, to_float, two_views
from contrastlab.methods.ifnd.model import KeyQueue, MomentumEncoder, resnet50_encoder, small_encoder


def test_small_encoder_shapes():
    torch.manual_seed(0)
    enc = small_encoder(in_channels=1)
    z = enc(torch.randn(4, 1, 8, 8))
    assert z.shape == (4, 64) and torch.allclose(z.norm(dim=1), torch.ones(4), atol=1e-5)
    assert enc.features(torch.randn(4, 1, 28, 28)).shape == (4, 128)
    assert small_encoder(in_channels=3)(torch.randn(2, 3, 32, 32)).shape == (2, 64)


def test_resnet50_encoder_shapes():
    torch.set_num_threads(1)
    enc = resnet50_encoder().eval()
    with torch.no_grad():
        x = torch.randn(1, 3, 32, 32)
        assert enc.features(x).shape == (1, 2048) and enc(x).shape == (1, 128)


def test_momentum_encoder_ema():
    torch.manual_seed(0)
    online = small_encoder()
    mom = MomentumEncoder(online, momentum=0.9)
    assert all(torch.equal(a, b) for a, b in zip(mom.encoder.parameters(), online.parameters()))
    assert not any(p.requires_grad for p in mom.parameters())
    before = [p.clone() for p in mom.encoder.parameters()]
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
    mom.update(online)
    for b, k, q in zip(before, mom.encoder.parameters(), online.parameters()):
        assert torch.allclose(k, 0.9 * b + 0.1 * q, atol=1e-6)


def test_key_queue_fifo_wrap_and_state_dict():
    qu = KeyQueue(size=5, dim=3)
    assert (qu.indices == -1).all() and torch.allclose(qu.keys.norm(dim=1), torch.ones(5))
    qu.enqueue(torch.ones(3, 3), torch.tensor([1, 2, 3]))
    qu.enqueue(2 * torch.ones(3, 3), torch.tensor([4, 5, 6]))  # wraps: slots 3, 4, 0
    assert qu.indices.tolist() == [6, 2, 3, 4, 5] and int(qu.ptr) == 1
    sd = qu.state_dict()
    assert set(sd) == {"keys", "indices", "ptr"} and sd["indices"].dtype == torch.int64
    fresh = KeyQueue(size=5, dim=3, seed=1)
    fresh.load_state_dict(sd)
    assert torch.equal(fresh.keys, qu.keys) and int(fresh.ptr) == 1


def test_two_views_shapes_determinism_and_statistics():
    rng_img = np.random.default_rng(0)
    imgs = rng_img.integers(0, 256, (64, 28, 28), dtype=np.uint8)
    v1, v2 = two_views(imgs, np.random.default_rng(1))
    assert v1.shape == v2.shape == (64, 1, 28, 28) and v1.dtype == np.float32
    w1, _ = two_views(imgs, np.random.default_rng(1))
    assert np.array_equal(v1, w1) and not np.array_equal(v1, v2)
    rgb = rng_img.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    assert two_views(rgb, np.random.default_rng(0))[0].shape == (4, 3, 8, 8)


def test_view_components():
    x = to_float(np.full((200, 8, 8), 255, np.uint8))
    # identity geometry, no brightness change, no erasing: only the noise remains, sigma 0.1
    noisy = random_view(x, np.random.default_rng(0), rotation_deg=0, scale=0, shift=0, brightness=(1, 1), erase_p=0)
    assert abs(float((noisy - x).std()) - 0.1) < 0.005 and abs(float((noisy - x).mean())) < 0.005
    # erasing only: exactly 9 zero pixels in about half of the images
    er = random_view(x, np.random.default_rng(0), rotation_deg=0, scale=0, shift=0, brightness=(1, 1), noise_std=0)
    zeros = (er == 0).reshape(200, -1).sum(1)
    assert set(zeros.tolist()) <= {0, 9} and 70 < (zeros == 9).sum() < 130
    # brightness only: per-image constant factor in [0.8, 1.2]
    br = random_view(x, np.random.default_rng(0), rotation_deg=0, scale=0, shift=0, noise_std=0, erase_p=0)
    f = br.reshape(200, -1)
    assert np.allclose(f.min(1), f.max(1), atol=1e-5) and f.min() >= 0.8 - 1e-6 and f.max() <= 1.2 + 1e-6
