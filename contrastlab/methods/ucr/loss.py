"""UCR loss terms (card b) as pure functions of tensors, plus the mean-teacher update.

Notation: f = online features (train mode: BN-neck output, NOT normalised), C = cluster centroids
(means of unit EMA eval features), V = per-(cluster, camera) proxies, f° = frozen old model.

    L = L_ccl + L_cam                      (first domain)
    L = L_ccl + L_cam + L_old + L_kl       (later domains)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PROXY_NORMS = ("column", "row")


def label_smoothed_ce(logits: torch.Tensor, targets: torch.Tensor, num_classes: int | None = None,
                      epsilon: float = 0.1) -> torch.Tensor:
    """Cross-entropy with label smoothing: target = (1 - eps) onehot(y) + eps / K, averaged over rows.

    K = `num_classes` (default: the number of logit columns). The official code passes
    K = n_new + n_old while the new-batch logits have only n_new columns, so the smoothed target
    sums to (1 - eps) + eps n_new / K < 1: kept as a faithful quirk (card b). Zero logits, 4
    columns: K = 4 gives log 4; K = 8 gives 0.95 log 4.
    """
    k = logits.shape[1] if num_classes is None else int(num_classes)
    log_p = F.log_softmax(logits.float(), dim=1)
    target = torch.full_like(log_p, epsilon / k)
    target.scatter_add_(1, targets.long().view(-1, 1), torch.full_like(log_p[:, :1], 1.0 - epsilon))
    return -(target * log_p).sum(dim=1).mean()


def centroid_contrast(features: torch.Tensor, centroids: torch.Tensor, labels: torch.Tensor, tau: float = 0.5,
                      num_classes: int | None = None, epsilon: float = 0.1) -> torch.Tensor:
    """L_ccl / L_old: LS-CE(f C^T / tau, y) with unnormalised f and the fixed centroid matrix C."""
    return label_smoothed_ce(features.float() @ centroids.float().T / tau, labels, num_classes, epsilon)


def normalize_proxies(proxies: torch.Tensor, mode: str = "column") -> torch.Tensor:
    """'column' (official quirk): each feature dimension divided by its norm over all proxies;
    'row' (intended): each proxy scaled to unit norm."""
    if mode == "column":
        return F.normalize(proxies.float(), dim=0)
    if mode == "row":
        return F.normalize(proxies.float(), dim=1)
    raise ValueError(f"proxy_norm must be one of {PROXY_NORMS}, got {mode!r}")


def camera_proxy_contrast(features: torch.Tensor, labels: torch.Tensor, cameras: torch.Tensor, proxies: torch.Tensor,
                          proxy_owner: torch.Tensor, beta: float = 0.07, num_negatives: int = 50,
                          proxy_norm: str = "column", camera_weight: float = 0.5) -> torch.Tensor:
    """L_cam: camera-aware proxy contrast with hardest negatives (card b.2).

    s_ij = f_i/|f_i| . v_j (v normalised by `proxy_norm`); P_i = proxies owned by y_i,
    N_i = the `num_negatives` proxies of other clusters with the largest s_ij;
    l_i = -(1/|P_i|) sum_{p in P_i} log[exp(s_ip/beta) / sum_{j in P_i u N_i} exp(s_ij/beta)];
    L = sum over cameras c in the batch of camera_weight * mean_{i: c_i = c} l_i.
    With fewer than `num_negatives` other-cluster proxies all of them are used (the official code
    would then take positives as 'negatives'; documented deviation).
    """
    f = F.normalize(features.float(), dim=1)
    sims = f @ normalize_proxies(proxies, proxy_norm).T / beta  # (B, P)
    positive = proxy_owner.view(1, -1) == labels.view(-1, 1)
    k = min(num_negatives, proxies.shape[0])
    neg_scores = sims.masked_fill(positive, float("-inf"))
    top_vals, top_idx = neg_scores.topk(k, dim=1)
    chosen_neg = torch.zeros_like(positive).scatter_(1, top_idx, torch.isfinite(top_vals))
    in_denominator = positive | chosen_neg
    log_denominator = torch.logsumexp(sims.masked_fill(~in_denominator, float("-inf")), dim=1)
    pos_count = positive.sum(dim=1).clamp(min=1)
    per_sample = -((sims - log_denominator[:, None]) * positive).sum(dim=1) / pos_count
    loss = sims.new_zeros(())
    for cam in torch.unique(cameras):
        loss = loss + camera_weight * per_sample[cameras == cam].mean()
    return loss


def similarity_kl(new_features: torch.Tensor, ema_features: torch.Tensor, old_features: torch.Tensor,
                  tau: float = 0.2, weight: float = 20.0) -> torch.Tensor:
    """L_kl: lambda (1/B) sum_i KL(P_old[i] || P_new[i]) on the buffered batch (card b.4).

    P_new[i, j] = softmax_j(f^(x_i) . fbar^(x_j) / tau), P_old[i, j] = softmax_j(f°^(x_i) . f°^(x_j) / tau),
    ^ = L2-normalised. ema_features and old_features carry no gradient. Zero when all three agree.
    """
    f = F.normalize(new_features.float(), dim=1)
    g = F.normalize(ema_features.detach().float(), dim=1)
    o = F.normalize(old_features.detach().float(), dim=1)
    log_p_new = F.log_softmax(f @ g.T / tau, dim=1)
    log_p_old = F.log_softmax(o @ o.T / tau, dim=1)
    kl = (log_p_old.exp() * (log_p_old - log_p_new)).sum(dim=1).mean()
    return weight * kl


@torch.no_grad()
def ema_update(ema: nn.Module, online: nn.Module, alpha: float = 0.999) -> None:
    """theta_bar <- alpha theta_bar + (1 - alpha) theta, parameters only (BN buffers move by the EMA's own forwards)."""
    for p_ema, p in zip(ema.parameters(), online.parameters()):
        p_ema.mul_(alpha).add_(p.detach(), alpha=1.0 - alpha)
