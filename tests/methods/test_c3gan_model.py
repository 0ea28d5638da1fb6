"""C3-GAN networks: shapes (h 10), warp identity (h 6), D/G step isolation (h 7), assignment (h 11)."""
import pytest
import torch

from contrastlab.methods.c3gan.loss import sample_inputs
from contrastlab.methods.c3gan.model import Discriminator, Generator, discriminator_step_loss, generator_step_loss
from contrastlab.methods.c3gan.warp import affine_theta, identity_theta, sample_theta, warp

torch.set_num_threads(1)


def test_warp_identity():  # 6
    x = torch.randn(3, 2, 9, 9)
    one, zero = torch.ones(3), torch.zeros(3)
    theta = affine_theta(one, zero, zero, zero)
    assert torch.equal(theta, identity_theta(3))
    assert torch.allclose(warp(x, theta), x, atol=1e-5)


def test_warp_sampling_ranges_and_seed():
    for strength, (lo, hi), rot in [("strong", (0.8, 1.5), 15), ("w", (0.9, 1.1), 2)]:
        th = sample_theta(500, strength, torch.Generator().manual_seed(0))
        scale = th[:, 0, :2].norm(dim=1)
        assert scale.min() >= lo - 1e-5 and scale.max() <= hi + 1e-5
        angle = torch.rad2deg(torch.atan2(th[:, 1, 0], th[:, 0, 0]))
        assert angle.abs().max() <= rot + 1e-4
        assert torch.equal(th, sample_theta(500, strength, torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError):
        sample_theta(2, "medium")


def _nets(y=10, size=32, ch=1):
    torch.manual_seed(0)
    return Generator(y, img_size=size, img_channels=ch), Discriminator(y, img_size=size, img_channels=ch)


def test_shapes_32():  # 10 (small variant)
    gen, disc = _nets()
    inp = sample_inputs(4, 10, torch.Generator().manual_seed(0))
    out = gen(inp["z"], inp["onehot"], inp["cz"], sample_theta(4, "weak"))
    for k in ("bg", "fg", "fake", "masked_fake"):
        assert out[k].shape == (4, 1, 32, 32)
    assert out["mask"].shape == (4, 1, 32, 32) and out["mask"].min() >= 0 and out["mask"].max() <= 1
    assert torch.allclose(out["masked_fake"], out["mask"] * out["fake"])
    assert disc.trunk(out["fake"]).shape == (4, 128, 4, 4)
    r, h = disc(out["fake"])
    assert r.shape == (4,) and h.shape == (4, 128)
    assert disc.centroids().shape == (10, 128) and disc.cluster_logits(h, 0.1).shape == (4, 10)
    # ids work as codes too
    assert torch.allclose(gen(inp["z"], inp["codes"], inp["cz"])["fake"], gen(inp["z"], inp["onehot"], inp["cz"])["fake"], atol=1e-6)


def test_shapes_128_batch2():  # 10 (official widths)
    torch.manual_seed(0)
    gen, disc = Generator(8, img_size=128), Discriminator(8, img_size=128)
    inp = sample_inputs(2, 8, torch.Generator().manual_seed(0))
    out = gen(inp["z"], inp["onehot"], inp["cz"], sample_theta(2))
    assert out["fake"].shape == (2, 3, 128, 128) and out["mask"].shape == (2, 1, 128, 128)
    assert ((out["mask"] > 0) & (out["mask"] < 1)).float().mean() > 0.5  # sigmoid, zeros only outside the warp
    feat = disc.trunk(out["fake"])
    assert feat.shape == (2, 512, 4, 4)
    r, h = disc(out["fake"])
    assert r.shape == (2,) and h.shape == (2, 512) and disc.centroids().shape == (8, 512)


def test_centroids_are_linear_of_identity():
    _, disc = _nets(y=5)
    with torch.no_grad():
        disc.centroid_layer.bias.normal_()
    assert torch.allclose(disc.centroids(), disc.centroid_layer(torch.eye(5)), atol=1e-6)


def test_init():
    gen, disc = _nets()
    w = disc.centroid_layer.weight  # (e, Y) orthogonal columns
    assert torch.allclose(w.T @ w, torch.eye(10), atol=1e-5) and (disc.centroid_layer.bias == 0).all()
    bn = gen.bg.fc[1]
    assert (bn.bias == 0).all() and abs(float(bn.weight.detach().mean()) - 1) < 0.01 and 0.01 < float(bn.weight.detach().std()) < 0.03


def _params(m):
    return {k: v.detach().clone() for k, v in m.named_parameters()}


def _changed(before, m):
    return {k for k, v in m.named_parameters() if not torch.equal(before[k], v)}


def test_d_step_and_g_step_touch_only_their_network():  # 7
    gen, disc = _nets()
    opt_g = torch.optim.Adam(gen.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), 2e-4, betas=(0.5, 0.999))
    g = torch.Generator().manual_seed(0)
    real, aug = torch.rand(8, 1, 32, 32) * 2 - 1, torch.rand(8, 1, 32, 32) * 2 - 1

    # D step: gradient reaches trunk, both heads and the centroid layer; none reaches G
    g0, d0 = _params(gen), _params(disc)
    loss, terms = discriminator_step_loss(gen, disc, real, aug, sample_inputs(8, 10, g), sample_theta(8, "weak", g), 0.1)
    opt_d.zero_grad()
    loss.backward()
    assert all(p.grad is None for p in gen.parameters())
    for name in ("trunk.0.weight", "adv_head.weight", "adv_head.bias", "info_head.3.weight", "centroid_layer.weight", "centroid_layer.bias"):
        assert dict(disc.named_parameters())[name].grad.abs().sum() > 0, name
    opt_d.step()
    assert not _changed(g0, gen) and _changed(d0, disc) == set(d0)

    # G step with D frozen: only G changes (centroids included in "D unchanged")
    g0, d0 = _params(gen), _params(disc)
    opt_d.zero_grad()  # as the loop does between steps; otherwise Adam would replay the D gradient
    disc.requires_grad_(False)
    loss, terms, out = generator_step_loss(gen, disc, sample_inputs(8, 10, g), sample_theta(8, "weak", g), 0.1)
    opt_g.zero_grad()
    loss.backward()
    opt_g.step()
    opt_d.step()  # stepping D's optimiser too must not move it: D got no gradient
    disc.requires_grad_(True)
    assert not _changed(d0, disc)
    changed = _changed(g0, gen)
    assert "fg.cond.0.weight" in changed and "bg.fc.0.weight" in changed and "fg.to_mask.1.weight" in changed
    assert set(terms) == {"g_adv", "g_info", "g_info_masked", "g_mask"} and torch.isfinite(loss)


def test_assignment_depends_only_on_d_in_eval_mode():  # 11
    _, disc = _nets()
    disc.eval()
    x = torch.rand(6, 1, 32, 32) * 2 - 1
    a = disc.assign(x)
    assert a.shape == (6,) and torch.equal(a, disc.assign(x)) and torch.equal(a[:2], disc.assign(x[:2]))


def test_d_step_gathers_real_embeddings_for_simclr_and_entropy():  # card i: global batch under DDP
    gen, disc = _nets()
    real, aug = torch.rand(4, 1, 32, 32) * 2 - 1, torch.rand(4, 1, 32, 32) * 2 - 1
    calls = []

    def fake_gather(x):  # a "second worker" holding a detached copy of this worker's rows
        calls.append(tuple(x.shape))
        return torch.cat([x, x.detach() + 0.5])

    torch.manual_seed(1)
    total, terms = discriminator_step_loss(gen, disc, real, aug, sample_inputs(4, 10, torch.Generator().manual_seed(0)), None, 0.1, gather=fake_gather)
    assert calls == [(4, 128), (4, 128)]  # h(real) and h(aug), nothing else
    torch.manual_seed(1)
    local, local_terms = discriminator_step_loss(gen, disc, real, aug, sample_inputs(4, 10, torch.Generator().manual_seed(0)), None, 0.1)
    assert terms["d_hinge"] == local_terms["d_hinge"] and terms["d_info"] == local_terms["d_info"]  # local terms stay local
    assert terms["d_simclr"] != local_terms["d_simclr"]  # 2 x 8 - 2 negatives per row instead of 6
    assert {"r_real", "r_fake"} <= set(terms)


def _bn_running(disc):
    return [t.clone() for m in disc.modules() if isinstance(m, torch.nn.BatchNorm2d) for t in (m.running_mean, m.running_var)]


@pytest.mark.parametrize("bn_stats", ["real", "all"])
def test_bn_running_stats_follow_real_images_only_when_asked(bn_stats):
    gen, disc = _nets()
    real, aug = torch.rand(8, 1, 32, 32) * 2 - 1, torch.rand(8, 1, 32, 32)
    ref = Discriminator(10, img_size=32, img_channels=1)
    ref.load_state_dict(disc.state_dict())
    ref(real)  # one train-mode forward of the real batch alone
    g = torch.Generator().manual_seed(0)
    loss, _ = discriminator_step_loss(gen, disc, real, aug, sample_inputs(8, 10, g), sample_theta(8, "weak", g), bn_stats=bn_stats)
    generator_step_loss(gen, disc, sample_inputs(8, 10, g), sample_theta(8, "weak", g), bn_stats=bn_stats)
    same = all(torch.allclose(a, b) for a, b in zip(_bn_running(disc), _bn_running(ref)))
    assert same == (bn_stats == "real")
    assert all(m.momentum == 0.1 for m in disc.modules() if isinstance(m, torch.nn.BatchNorm2d))  # restored
    # the training maths does not depend on the option: same loss either way
    gen2, disc2 = _nets()
    other = "all" if bn_stats == "real" else "real"
    g = torch.Generator().manual_seed(0)
    loss2, _ = discriminator_step_loss(gen2, disc2, real, aug, sample_inputs(8, 10, g), sample_theta(8, "weak", g), bn_stats=other)
    assert torch.allclose(loss, loss2)
