"""SCALE model + method: missing modalities under the masked-attention deviation, the weighting modes,
and a short run_local training run that returns the eval metric."""
from __future__ import annotations

import pytest
import torch

from contrastlab.methods.scale.config import SCALEConfig
from contrastlab.methods.scale.data import image_boxes
from contrastlab.methods.scale.method import SCALE

torch.set_num_threads(1)

CFG = dict(image_size=16, image_grid=4, video_frames=4, frame_size=4, audio_seconds=0.5, n_mels=8, title_len=8,
           table_len=12, vocab_size=64, dropout=0.0)


def random_batch(cfg: SCALEConfig, b: int = 4, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    a_tok, a_dim = cfg.audio_shape
    batch = {
        "text_ids": torch.randint(5, cfg.vocab_size, (b, cfg.title_len), generator=g),
        "table_ids": torch.randint(5, cfg.vocab_size, (b, cfg.table_len), generator=g),
        "image_target": torch.rand(b, cfg.n_regions, cfg.region_dim, generator=g),
        "video_target": torch.rand(b, cfg.video_frames, cfg.frame_dim, generator=g),
        "audio_target": torch.randn(b, a_tok, a_dim, generator=g),
        "image_boxes": torch.as_tensor(image_boxes(cfg)).expand(b, -1, -1),
        "present": torch.ones(b, 5),
        "label": torch.arange(b), "audio_noise": torch.tensor([0, 1, 0, 1])[:b], "index": torch.arange(b),
    }
    for m in ("image", "video", "audio"):
        batch[f"{m}_feats"] = batch[f"{m}_target"].clone()
        batch[f"{m}_mask"] = torch.rand(batch[f"{m}_target"].shape[:2], generator=g) < 0.5
    batch["text_labels"] = torch.where(torch.rand(b, cfg.title_len, generator=g) < 0.3, batch["text_ids"], -1)
    batch["table_labels"] = torch.where(torch.rand(b, cfg.table_len, generator=g) < 0.3, batch["table_ids"], -1)
    return batch


def test_missing_modality_contributes_no_loss_and_no_gradient_in_mask_mode():
    torch.manual_seed(0)
    cfg = SCALEConfig(**CFG, missing="mask")
    method = SCALE(cfg).eval()  # eval: dropout off, so two forwards are comparable
    batch = random_batch(cfg)
    batch["present"][1, 4] = 0  # sample 1: no audio (zeros, no masked positions, as the sample function gives)
    batch["audio_feats"][1] = 0
    batch["audio_target"][1] = 0
    batch["audio_mask"][1] = False
    feats = batch["audio_feats"].clone().requires_grad_(True)
    total, _, _ = method.compute_losses({**batch, "audio_feats": feats})
    total.backward()
    assert feats.grad[1].abs().max() == 0
    assert feats.grad[0].abs().max() > 0  # present audio does get a gradient
    other = batch["audio_feats"].clone()
    other[1] = torch.randn_like(other[1]) * 5
    with torch.no_grad():
        total2, _, _ = method.compute_losses({**batch, "audio_feats": other})
    assert total2.item() == pytest.approx(total.item(), rel=1e-5, abs=1e-6)


def test_zeros_mode_attends_to_missing_zeros():
    """Official handling: the missing modality is a zero input that still takes part (so it changes the loss
    when its content changes: it is not masked anywhere)."""
    torch.manual_seed(0)
    cfg = SCALEConfig(**CFG, missing="zeros")
    method = SCALE(cfg).eval()
    batch = random_batch(cfg)
    batch["present"][1, 4] = 0
    with torch.no_grad():
        a = method.compute_losses(batch)[0].item()
        other = {**batch, "audio_feats": batch["audio_feats"].clone()}
        other["audio_feats"][1] += 3.0
        b = method.compute_losses(other)[0].item()
    assert a != pytest.approx(b, abs=1e-6)


@pytest.mark.parametrize("mode", ["official", "detached", "off"])
def test_weighting_modes_run_and_have_finite_losses(mode):
    torch.manual_seed(0)
    cfg = SCALEConfig(**CFG, graph_weighting=mode, mask_weighting=mode != "off")
    method = SCALE(cfg)
    total, terms, graphs = method.compute_losses(random_batch(cfg))
    assert torch.isfinite(total) and set(terms) == {"clr", "mlm", "mem", "mrm", "mfm", "mam"}
    total.backward()
    assert graphs["G"].shape == (4, 5, 5)


def test_masked_task_weights_scale_the_head_outputs():
    """mask_weighting on multiplies each head's output by diag(G'): with weighting off the value differs."""
    torch.manual_seed(0)
    batch = random_batch(SCALEConfig(**CFG))
    losses = {}
    for flag in (True, False):
        torch.manual_seed(0)
        method = SCALE(SCALEConfig(**CFG, mask_weighting=flag)).eval()
        with torch.no_grad():
            losses[flag] = method.compute_losses(batch)[1]
    assert losses[True]["mrm"].item() != pytest.approx(losses[False]["mrm"].item(), rel=1e-4)
    assert losses[True]["clr"].item() == pytest.approx(losses[False]["clr"].item(), rel=1e-6)


def test_base_preset_dimensions():
    arch = SCALEConfig(size="base").arch()
    assert (arch["hidden"], arch["layers"], arch["fusion_layers"], arch["pool_dim"], arch["fusion_intermediate"]) == (768, 6, 6, 1024, 2048)
    with pytest.raises(ValueError):
        SCALEConfig(graph_weighting="sometimes").validate()


def _run(tmp_path, probe: str):
    from contrastlab.platform.local import run_local

    return run_local("scale", [
        "train.epochs=1", "train.batch_size=32",
        "data.embedded_params={n_train: 96, n_test: 48, audio: tones}",
        f"method.probe={probe}", "method.probe_max_train=64", f"data.cache_dir={tmp_path / 'cache'}",
    ], quiet=True)


def test_run_local_trains_and_returns_eval_metric(tmp_path):
    last = _run(tmp_path, "never").history[-1]
    assert SCALE.eval_metric in last and 0.0 <= last[SCALE.eval_metric] <= 1.0
    assert "g_audio_noise" in last and "g_offdiag" in last and "train_w_text_audio" in last and "train_omega_audio" in last


@pytest.mark.slow
def test_run_local_linear_probes(tmp_path):
    last = _run(tmp_path, "last").history[-1]
    for name in ("fused", "text", "image", "table", "video", "audio"):
        assert 0.0 <= last[f"probe_{name}"] <= 1.0
