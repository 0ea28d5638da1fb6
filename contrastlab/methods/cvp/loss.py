"""CVP stage-2 losses: COMPLETER's cross-view objective (card cvp.md §b; [R] the paper's "maximise
mutual information and minimise conditional entropy across views" read as Lin et al., CVPR 2021).

All pure functions of tensors; compute in fp32 (eps = 2.22e-16 underflows in fp16).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 2.22e-16  # COMPLETER's sys.float_info.epsilon clamp


def joint_matrix(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """P = sym(sum_i z1_i z2_i^T) / sum: (K, K), symmetric, non-negative, sums to 1.

    z1, z2: (N, K) soft assignments (rows on the simplex). Under DDP pass globally gathered z's
    (gather with gradient), so every rank optimises the same batch-level joint.
    """
    p = z1.float().t() @ z2.float()  # sum_i z1_i z2_i^T
    p = (p + p.t()) / 2
    return p / p.sum()


def mi_loss(z1: torch.Tensor, z2: torch.Tensor, alpha: float = 9.0, eps: float = EPS) -> torch.Tensor:
    """L_MI = -sum_jk P_jk [ln P_jk - (alpha+1) ln P_r,j - (alpha+1) ln P_c,k].

    P = joint_matrix(z1, z2); marginals P_r (row sums), P_c (column sums) are taken before clamping,
    then P, P_r, P_c are clamped below at eps. Equals -I(z1; z2) - alpha (H(z1) + H(z2)) (up to the
    clamp); summed over the K^2 entries. Optimum (perfect, balanced agreement): -(1 + 2 alpha) ln K;
    all-uniform outputs: -2 alpha ln K.
    """
    p = joint_matrix(z1, z2)
    k = p.shape[0]
    p_r = p.sum(dim=1).view(k, 1).expand(k, k)
    p_c = p.sum(dim=0).view(1, k).expand(k, k)
    p, p_r, p_c = p.clamp_min(eps), p_r.clamp_min(eps), p_c.clamp_min(eps)
    return -(p * (torch.log(p) - (alpha + 1) * torch.log(p_r) - (alpha + 1) * torch.log(p_c))).sum()


def prediction_loss(pred12: torch.Tensor, z2: torch.Tensor, pred21: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
    """L_pre = MSE(Q12(z1), z2) + MSE(Q21(z2), z1), means over elements (the conditional-entropy term).
    No stop-gradient: gradients reach both the predictors and the encoders (as COMPLETER)."""
    return F.mse_loss(pred12.float(), z2.float()) + F.mse_loss(pred21.float(), z1.float())


def reconstruction_loss(rec1: torch.Tensor, v1: torch.Tensor, rec2: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
    """L_rec = MSE(D1(z1), v1) + MSE(D2(z2), v2)."""
    return F.mse_loss(rec1.float(), v1.float()) + F.mse_loss(rec2.float(), v2.float())


def pre_weight(contrast_epoch: int, lambda_pre: float, pre_start_epoch: int) -> float:
    """lambda_pre from stage-2 epoch `pre_start_epoch` on (0-based epochs of the contrast phase), else 0."""
    return lambda_pre if contrast_epoch >= pre_start_epoch else 0.0


def stage2_total(l_mi: torch.Tensor, l_rec: torch.Tensor, l_pre: torch.Tensor | None, lambda_rec: float,
                 lambda_pre_now: float) -> torch.Tensor:
    """L2 = L_MI + lambda_rec L_rec + lambda_pre_now L_pre (lambda_pre_now = pre_weight(...))."""
    total = l_mi + lambda_rec * l_rec
    if l_pre is not None and lambda_pre_now:
        total = total + lambda_pre_now * l_pre
    return total


def cluster_usage(z: torch.Tensor) -> tuple[float, float]:
    """(number of clusters that are some row's argmax, entropy of the mean assignment) - collapse monitors."""
    used = int(torch.unique(z.argmax(dim=1)).numel())
    m = z.float().mean(dim=0).clamp_min(EPS)
    return used, float(-(m * m.log()).sum())
