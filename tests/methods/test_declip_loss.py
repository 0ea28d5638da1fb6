"""DeCLIP loss terms against the card's checklist (h items 1-6, 8, 9; the W=2 contract of 11)."""
import math

import pytest
import torch

from contrastlab.methods.clip.loss import clip_loss, logit_scale_value, normalize
from contrastlab.methods.declip.loss import (
    LossWeights,
    ThetaClamp,
    clamp_log_scale_,
    declip_total,
    mlm_loss,
    mvs_loss,
    nn_loss,
    simsiam_loss,
)

F32 = 1e-4  # card tolerance in float32 (every contrastive term is computed in fp32)


def unit(*shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return normalize(torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype)


# --- h1: identical embeddings give log B for any scale --------------------------------------
@pytest.mark.parametrize("s", [1.0, 1 / 0.07, 100.0])
def test_identical_embeddings_give_log_b(s):
    v = unit(1, 16).expand(8, 16)
    assert clip_loss(v, v, s).item() == pytest.approx(2.079442, abs=1e-6)
    assert mvs_loss(v, v, v, v, s).item() == pytest.approx(math.log(8), abs=1e-6)
    assert nn_loss(v, v, v, v, s).item() == pytest.approx(math.log(8), abs=1e-6)


# --- h2: B=2, i = t = I_2 ---------------------------------------------------------------------
def test_two_by_two_identity_at_scale_one():
    eye = torch.eye(2)
    expected = math.log1p(math.exp(-1))  # 0.313262
    assert expected == pytest.approx(0.313262, abs=1e-6)
    assert clip_loss(eye, eye, 1.0).item() == pytest.approx(expected, abs=1e-6)
    # each CE on its own (one direction): nn_loss with one view is exactly CE(s i n^T, y)
    assert nn_loss(eye, None, eye, None, 1.0).item() == pytest.approx(expected, abs=1e-6)
    assert mvs_loss(eye, eye, eye, eye, 1.0).item() == pytest.approx(expected, abs=1e-6)


def test_two_by_two_identity_at_initial_scale():
    eye = torch.eye(2)
    loss = clip_loss(eye, eye, 1 / 0.07).item()
    assert loss == pytest.approx(math.log1p(math.exp(-1 / 0.07)), abs=1e-7)  # about 6.2e-7
    assert 0 < loss < 1e-6


# --- h3: symmetry and joint permutation invariance ---------------------------------------------
def test_clip_and_mvs_symmetric_and_permutation_invariant():
    i1, i2, t, ta = (unit(6, 32, seed=k) for k in range(4))
    s = 7.0
    assert clip_loss(i1, t, s).item() == pytest.approx(clip_loss(t, i1, s).item(), abs=1e-6)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(3))
    assert clip_loss(i1[perm], t[perm], s).item() == pytest.approx(clip_loss(i1, t, s).item(), abs=1e-6)
    base = mvs_loss(i1, i2, t, ta, s).item()
    assert mvs_loss(i2, i1, ta, t, s).item() == pytest.approx(base, abs=1e-6)
    assert mvs_loss(i1[perm], i2[perm], t[perm], ta[perm], s).item() == pytest.approx(base, abs=1e-6)
    manual = (clip_loss(i1, t, s) + clip_loss(i2, t, s) + clip_loss(i1, ta, s) + clip_loss(i2, ta, s)) / 4
    assert base == pytest.approx(manual.item(), abs=1e-6)


def test_mvs_off_is_plain_clip():
    i1, t = unit(5, 16, seed=1), unit(5, 16, seed=2)
    assert torch.equal(mvs_loss(i1, None, t, None, 3.0), clip_loss(i1, t, 3.0))
    # identical views: exactly the single-view value
    assert torch.equal(mvs_loss(i1, i1, t, t, 3.0), clip_loss(i1, t, 3.0))


# --- h4: scale cap and theta clamp --------------------------------------------------------------
def test_scale_cap_theta_4_8_equals_log_100():
    i, t = unit(8, 32, seed=1), unit(8, 32, seed=2)
    s_a = logit_scale_value(torch.tensor(4.8))
    s_b = logit_scale_value(torch.tensor(math.log(100)))
    assert s_a.item() == pytest.approx(100.0, abs=1e-4)
    assert clip_loss(i, t, s_a).item() == pytest.approx(clip_loss(i, t, s_b).item(), abs=1e-5)


def test_theta_stays_in_range_around_optimizer_steps():
    theta = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    opt = torch.optim.SGD([theta], lr=0.5)
    clamp = ThetaClamp(3.0, 6.0)
    clamp(theta)
    assert theta.item() == pytest.approx(3.0)  # first clamp lifts 2.659 to 3
    for direction in [1.0] * 10 + [-1.0] * 10:  # push up past 6, then down past 3
        opt.zero_grad()
        (-direction * theta * 5).backward()
        clamp(theta)
        opt.step()
        clamp(theta)
        assert 3.0 <= theta.item() <= 6.0
    assert theta.requires_grad and theta.grad is not None


def test_rn50_clamp_only_from_below():
    theta = torch.nn.Parameter(torch.tensor(7.5))
    clamp_log_scale_(theta, 3.0, None)
    assert theta.item() == pytest.approx(7.5)
    with torch.no_grad():
        theta.fill_(1.0)
    clamp_log_scale_(theta, 3.0, None)
    assert theta.item() == pytest.approx(3.0)


# --- h5: random unit vectors ---------------------------------------------------------------------
# For random unit vectors the logits are ~N(0, s^2/d) and E[C] ~ log B + s^2/(2d), so "log B +- 0.1"
# holds where s^2/(2d) is small; at d=512 it needs s <~ 7 (s=20, d=512 gives about log B + 0.4).
@pytest.mark.parametrize("d,s", [(512, 1.0), (512, 5.0), (1024, 5.0), (4096, 1 / 0.07), (8192, 20.0)])
def test_random_unit_vectors_near_log_b(d, s):
    b = 64
    losses = [clip_loss(unit(b, d, seed=2 * k), unit(b, d, seed=2 * k + 1), s).item() for k in range(4)]
    assert sum(losses) / len(losses) == pytest.approx(math.log(b), abs=0.1)


# --- h6: SimSiam -------------------------------------------------------------------------------
def test_simsiam_values():
    p = unit(4, 8, seed=1)
    assert simsiam_loss(p, p, p, p).item() == pytest.approx(-1.0, abs=1e-6)
    e0, e1 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert simsiam_loss(e0, e0, e1, e1).item() == pytest.approx(0.0, abs=1e-7)
    # p1=[1,0], z2=[1,0], p2=[0,1], z1=[1,0] -> -1/2 (1 + 0)
    assert simsiam_loss(e0, e1, e0, e0).item() == pytest.approx(-0.5, abs=1e-7)


def test_simsiam_scale_invariant():
    p1, p2, z1, z2 = (torch.randn(5, 16, generator=torch.Generator().manual_seed(k)) for k in range(4))
    base = simsiam_loss(p1, p2, z1, z2).item()
    assert -1.0 <= base <= 1.0
    assert simsiam_loss(3.0 * p1, 0.2 * p2, z1, z2).item() == pytest.approx(base, abs=1e-6)
    assert simsiam_loss(p1, p2, 7.0 * z1, 0.5 * z2).item() == pytest.approx(base, abs=1e-6)


def test_simsiam_stop_gradient_on_z():
    p1, p2, z1, z2 = (torch.randn(5, 16, generator=torch.Generator().manual_seed(k)).requires_grad_() for k in range(4))
    simsiam_loss(p1, p2, z1, z2).backward()
    assert z1.grad is None and z2.grad is None
    assert p1.grad is not None and p1.grad.abs().sum() > 0
    assert p2.grad is not None and p2.grad.abs().sum() > 0


def test_simsiam_fp32_under_low_precision_inputs():
    p = torch.randn(4, 8).bfloat16()
    assert simsiam_loss(p, p, p, p).dtype == torch.float32


# --- h8: NNS is one-directional with CLIP's labels ------------------------------------------------
def test_nn_loss_one_directional_same_labels():
    i1, i2, n, na = (unit(6, 16, seed=k) for k in range(4))
    s = 4.0
    y = torch.arange(6)
    ce = torch.nn.functional.cross_entropy
    manual = 0.25 * (ce(s * i1 @ n.T, y) + ce(s * i1 @ na.T, y) + ce(s * i2 @ n.T, y) + ce(s * i2 @ na.T, y))
    assert nn_loss(i1, i2, n, na, s).item() == pytest.approx(manual.item(), abs=1e-6)
    # not the symmetric CLIP form
    one = nn_loss(i1, None, n, None, s).item()
    assert one == pytest.approx(ce(s * i1 @ n.T, y).item(), abs=1e-6)
    assert abs(one - clip_loss(i1, n, s).item()) > 1e-3


def test_nn_loss_gradient_reaches_images_only():
    i1, i2 = unit(6, 16, seed=1).requires_grad_(), unit(6, 16, seed=2).requires_grad_()
    n, na = unit(6, 16, seed=3).requires_grad_(), unit(6, 16, seed=4).requires_grad_()
    nn_loss(i1, i2, n, na, 5.0).backward()
    assert i1.grad is not None and i2.grad is not None
    assert n.grad is None and na.grad is None


# --- h9: the total ----------------------------------------------------------------------------------
def test_total_default_weights():
    terms = {"mvs": torch.tensor(2.0), "ss": torch.tensor(-0.7), "mlm": torch.tensor(5.0), "nn": torch.tensor(3.0)}
    expected = 0.4 * 2.0 + 0.2 * (-0.7 + 5.0 + 3.0)
    assert declip_total(terms).item() == pytest.approx(expected, abs=1e-6)
    assert LossWeights().resolve({"ss", "mlm", "nn"})["contrastive"] == pytest.approx(0.4)


def test_total_with_extras_off_equals_clip_exactly():
    i, t = unit(8, 32, seed=1), unit(8, 32, seed=2)
    s = logit_scale_value(torch.tensor(3.0))
    clip = clip_loss(i, t, s)
    mvs = mvs_loss(i, i, t, t, s)  # identical views
    aux = {"ss": torch.tensor(-0.9), "mlm": torch.tensor(float("nan")), "nn": torch.tensor(4.0)}
    zero = LossWeights(ss=0.0, mlm=0.0, nn=0.0)
    assert torch.equal(declip_total({"mvs": mvs, **aux}, zero), clip)
    assert torch.equal(declip_total({"mvs": mvs}), clip)  # extras not computed at all
    assert torch.equal(declip_total({"clip": mvs_loss(i, None, t, None, s)}), clip)


def test_total_renormalises_per_sweep_definition():
    terms = {"mvs": torch.tensor(1.0), "mlm": torch.tensor(2.0), "nn": torch.tensor(3.0)}
    w = LossWeights(ss=0.3, mlm=0.1, nn=0.25)  # ss off (not in terms): contrastive = 1 - 0.35
    assert declip_total(terms, w).item() == pytest.approx(0.65 * 1 + 0.1 * 2 + 0.25 * 3, abs=1e-6)
    fixed = declip_total(terms, {"clip": 0.4, "mlm": 0.2, "nn": 0.2})
    assert fixed.item() == pytest.approx(0.4 + 0.4 + 0.6, abs=1e-6)
    with pytest.raises(ValueError):
        declip_total({**terms, "ss": torch.tensor(0.0)}, LossWeights(ss=0.5, mlm=0.5, nn=0.5))
    with pytest.raises(ValueError):
        declip_total({"ss": torch.tensor(1.0)})


# --- h11 contract without Ray: two simulated ranks with a fake gather --------------------------------
def fake_gather_for(fulls):
    """A gather that maps a rank's local slice to the full (2B, D) tensor it came from (with grad)."""
    def make(rank, b):
        def gather(x):
            for full in fulls:
                if torch.equal(full.float()[rank * b : (rank + 1) * b], x.float()):
                    # a real gather keeps the graph only of what it was given (detached stays detached)
                    return full.float() if x.requires_grad else full.float().detach()
            raise AssertionError("gather called with an unknown tensor")
        return gather
    return make


@pytest.mark.parametrize("term", ["clip", "mvs", "nn"])
def test_two_rank_local_losses_average_to_global(term):
    b, d, s = 4, 16, 6.0
    leaves = [unit(2 * b, d, seed=10 + k).requires_grad_() for k in range(4)]
    make = fake_gather_for(leaves)

    def loss_fn(x, gather=None, rank=0):
        i1, i2, t, ta = x
        kw = {} if gather is None else {"gather": gather, "rank": rank}
        if term == "clip":
            return clip_loss(i1, t, s, **kw)
        if term == "mvs":
            return mvs_loss(i1, i2, t, ta, s, **kw)
        return nn_loss(i1, i2, t, ta, s, **kw)

    single = loss_fn(leaves)
    g_single = torch.autograd.grad(single, leaves, allow_unused=True)
    local = [loss_fn([x[r * b : (r + 1) * b] for x in leaves], make(r, b), r) for r in range(2)]
    averaged = 0.5 * (local[0] + local[1])  # DDP averages the per-rank gradients
    g_avg = torch.autograd.grad(averaged, leaves, allow_unused=True)
    assert averaged.item() == pytest.approx(single.item(), abs=1e-5)
    for ga, gs in zip(g_avg, g_single):
        if gs is None:
            assert ga is None or ga.abs().max() == 0
        else:
            torch.testing.assert_close(ga, gs, atol=1e-5, rtol=1e-4)


def test_mlm_loss_smoke_in_total():
    logits = torch.randn(2, 5, 11, requires_grad=True)
    labels = torch.full((2, 5), -100)
    labels[0, 1] = 3
    total = declip_total({"mvs": torch.tensor(1.0), "mlm": mlm_loss(logits, labels)})
    total.backward()
    assert logits.grad is not None
