"""PPC's CAM network: SEAM's PCM seed and the backbones' output strides."""
import pytest
import torch

from contrastlab.methods.ppc.model import CAMNet, pcm_seed

torch.set_num_threads(1)


def test_pcm_seed_and_shapes():
    cam = torch.tensor([[[[2.0]], [[1.0]], [[-1.0]]]])  # bg, fg1, fg2 at one pixel
    seed = pcm_seed(cam, 0)
    # max-normalised per channel (a single pixel -> ~1), bg = 1 - max fg, non-maximal fg zeroed
    assert seed[0, 1, 0, 0].item() == pytest.approx(1.0, abs=1e-4) and seed[0, 2, 0, 0].item() == 0.0
    assert seed[0, 0, 0, 0].item() == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("backbone, stride", [("cnn-small", 4), ("resnet18", 8), ("resnet18", 4)])
def test_output_stride_and_heads(backbone, stride):
    net = CAMNet(5, backbone, stride, proj_dim=8, cnn_width=8, cnn_dim=16)
    out = net(torch.randn(2, 3, 32, 32))
    g = 32 // stride
    assert out["cam"].shape == (2, 5, g, g) and out["cam_rv"].shape == (2, 5, g, g) and out["emb"].shape == (2, 8, g, g)
    assert (out["emb"] >= 0).all()  # ReLU projection head
    assert net.cam_head.bias is None  # bias-free CAM head, background channel included


def test_pcm_output_is_an_affinity_average_of_the_seed():
    net = CAMNet(3, "cnn-small", 4, cnn_width=8, cnn_dim=16).eval()
    out = net(torch.randn(1, 3, 16, 16))
    seed = pcm_seed(out["cam"], 0)
    # the affinity is normalised over its first index: cam_rv(j) = sum_i seed(i) Aff(i, j) is a convex combination
    flat_seed, flat_rv = seed.flatten(2), out["cam_rv"].detach().flatten(2)
    assert (flat_rv <= flat_seed.max(-1, keepdim=True).values + 1e-4).all()
    assert (flat_rv >= flat_seed.min(-1, keepdim=True).values - 1e-4).all()
    assert out["cam_rv"].requires_grad
    out["cam_rv"].sum().backward()
    assert net.cam_head.weight.grad is None or net.cam_head.weight.grad.abs().sum() == 0  # PCM reads a detached CAM
    assert net.pcm.f9.weight.grad.abs().sum() > 0


