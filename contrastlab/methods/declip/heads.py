"""DeCLIP's extra heads (card c): SimSiam projector and predictor, and the MLM head.

Full size: Projector(E, 1024, 1024), Predictor(1024, 512), MLMHead(512, 49409).
Small (card g): Projector(64, 128, 128), Predictor(128, 32).
BatchNorm1d uses per-device statistics, not SyncBN (quirk 4).
"""
from __future__ import annotations

import torch
from torch import nn


class Projector(nn.Module):
    """`Lin(in->hidden)-BN-ReLU-Lin(hidden->hidden)-BN-ReLU-Lin(hidden->out)-BN`, on the raw image features."""

    def __init__(self, in_dim: int, hidden: int = 1024, out: int = 1024):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, out),
            nn.BatchNorm1d(out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Predictor(nn.Module):
    """`Lin(dim->hidden)-BN-ReLU-Lin(hidden->dim)`: the SimSiam bottleneck predictor."""

    def __init__(self, dim: int = 1024, hidden: int = 512):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MLMHead(nn.Module):
    """`Linear(width->vocab)` on the text transformer's final hidden states (after ln_final)."""

    def __init__(self, width: int, vocab: int):
        super().__init__()
        self.proj = nn.Linear(width, vocab)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., width) -> (..., vocab)."""
        return self.proj(hidden)

    def selected_logits(
        self, hidden: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and labels at the selected positions only: ((N_sel, vocab), (N_sel,)).

        Equivalent for the loss to `forward` on every position, but avoids materialising a
        (B, L, 49409) tensor (about 1.9 GB in fp32 at B=128, L=77).
        """
        selected = labels != ignore_index
        return self.proj(hidden[selected]), labels[selected]
