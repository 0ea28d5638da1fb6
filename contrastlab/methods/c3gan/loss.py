"""C3-GAN losses (card b), pure functions of tensors, all computed in fp32
(or fp64 when given fp64).

Notation: r = D's adversarial logit (B,), h = D's embedding (B, e), L = centroids (Y, e),
tau = temperature (0.1), codes = cluster ids (B,) of the fakes.

  cosine logits  s_k(x) = <h/|h|, L_k/|L_k|> / tau                         (B, Y)
  Info(x, c)     = mean_i CE(s(x_i), c_i)
  hinge (D)      = mean relu(1 - r_real) + mean relu(1 + r_fake)
  adversarial(G) = -mean r_fake
  NT-Xent        u = normalise([h_real; h_aug]) (2B, e), logits u u^T / tau without the
                 diagonal, positive = the other view, CE averaged over all 2B rows
  entropy        w * mean_i H(p_i) - w * H(mean_i p_i), p_i = softmax(s(x_i)) of real x, natural log
  mask reg.      mean_i relu(0.1 - mbar_i) + mean_i relu(mbar_i - 0.9) + mean H_2(m),
                 H_2(m) = -m log2(m + 1e-6) - (1 - m) log2(1 - m + 1e-6), mbar_i = spatial mean

  D total = hinge + 5 Info(fake, c) + 1 Info(masked fake, c) + NT-Xent + entropy terms (0.1, 0.1)
  G total = adversarial + 5 Info(fake, c) + 1 Info(masked fake, c) + mask regulariser
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _fp(x: torch.Tensor) -> torch.Tensor:
    """At least fp32 (half/bfloat16 are upcast; float64 stays, so tests can check exact values)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def cosine_logits(h: torch.Tensor, centroids: torch.Tensor, tau: float) -> torch.Tensor:
    """s = normalise(h) normalise(L)^T / tau, shape (B, Y)."""
    return F.normalize(_fp(h), dim=1) @ F.normalize(_fp(centroids), dim=1).T / tau


def info_loss(h: torch.Tensor, centroids: torch.Tensor, codes: torch.Tensor, tau: float) -> torch.Tensor:
    """Contrastive InfoGAN term: mean cross-entropy over the Y centroids with cosine/tau logits."""
    return F.cross_entropy(cosine_logits(h, centroids, tau), codes.long())


def hinge_d(r_real: torch.Tensor, r_fake: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 - _fp(r_real)).mean() + F.relu(1.0 + _fp(r_fake)).mean()


def adversarial_g(r_fake: torch.Tensor) -> torch.Tensor:
    return -_fp(r_fake).mean()


def nt_xent(h_real: torch.Tensor, h_aug: torch.Tensor, tau: float) -> torch.Tensor:
    """SimCLR loss on two views; rows i and i+B are positives, the other 2B-2 rows negatives."""
    u = F.normalize(_fp(torch.cat([h_real, h_aug])), dim=1)
    n = u.shape[0]
    logits = (u @ u.T / tau).masked_fill(torch.eye(n, dtype=torch.bool, device=u.device), float("-inf"))
    target = (torch.arange(n, device=u.device) + n // 2) % n
    return F.cross_entropy(logits, target)


def entropy_terms(logits_real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean_i H(p_i), H(mean_i p_i)) with p_i = softmax(logits_i), natural log.

    xlogy gives 0 log 0 = 0, which is the no-eps formula wherever it is defined.
    """
    p = F.softmax(_fp(logits_real), dim=1)
    mean_h = -torch.special.xlogy(p, p).sum(dim=1).mean()
    pbar = p.mean(dim=0)
    return mean_h, -torch.special.xlogy(pbar, pbar).sum()


def mask_regulariser(mask: torch.Tensor, low: float = 0.1, high: float = 0.9, eps: float = 1e-6) -> torch.Tensor:
    """Keeps the mean mask of each sample in [low, high] and pushes pixels to 0 or 1 (bits)."""
    m = _fp(mask)
    mbar = m.flatten(1).mean(dim=1)
    binary_entropy = -m * torch.log2(m + eps) - (1 - m) * torch.log2(1 - m + eps)
    return F.relu(low - mbar).mean() + F.relu(mbar - high).mean() + binary_entropy.mean()


def d_loss(
    r_real: torch.Tensor,
    r_fake: torch.Tensor,
    h_fake: torch.Tensor,
    h_masked: torch.Tensor,
    h_real: torch.Tensor,
    h_aug: torch.Tensor,
    centroids: torch.Tensor,
    codes: torch.Tensor,
    tau: float = 0.1,
    info_weight: float = 5.0,
    masked_info_weight: float = 1.0,
    simclr_weight: float = 1.0,
    entropy_weight: float = 0.1,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Discriminator objective; returns (total, terms) with terms unweighted (for logging)."""
    ent_each, ent_mean = entropy_terms(cosine_logits(h_real, centroids, tau))
    terms = {
        "d_hinge": hinge_d(r_real, r_fake),
        "d_info": info_loss(h_fake, centroids, codes, tau),
        "d_info_masked": info_loss(h_masked, centroids, codes, tau),
        "d_simclr": nt_xent(h_real, h_aug, tau),
        "d_entropy_each": ent_each,
        "d_entropy_mean": ent_mean,
    }
    total = (
        terms["d_hinge"]
        + info_weight * terms["d_info"]
        + masked_info_weight * terms["d_info_masked"]
        + simclr_weight * terms["d_simclr"]
        + entropy_weight * ent_each
        - entropy_weight * ent_mean
    )
    return total, terms


def g_loss(
    r_fake: torch.Tensor,
    h_fake: torch.Tensor,
    h_masked: torch.Tensor,
    centroids: torch.Tensor,
    codes: torch.Tensor,
    mask: torch.Tensor,
    tau: float = 0.1,
    info_weight: float = 5.0,
    masked_info_weight: float = 1.0,
    mask_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Generator objective; returns (total, terms) with terms unweighted (for logging)."""
    terms = {
        "g_adv": adversarial_g(r_fake),
        "g_info": info_loss(h_fake, centroids, codes, tau),
        "g_info_masked": info_loss(h_masked, centroids, codes, tau),
        "g_mask": mask_regulariser(mask),
    }
    total = terms["g_adv"] + info_weight * terms["g_info"] + masked_info_weight * terms["g_info_masked"] + mask_weight * terms["g_mask"]
    return total, terms


def sample_codes(batch: int, n_clusters: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Cluster ids (B,) for the fakes.

    Y >= B: B distinct ids, the first B of a random permutation of the Y ids (official).
    Y < B: ids drawn uniformly with replacement. This is a documented deviation: the official
    code leaves the surplus rows all-zero (silently cluster 0), which we do not copy.
    """
    if n_clusters >= batch:
        return torch.randperm(n_clusters, generator=generator)[:batch]
    return torch.randint(n_clusters, (batch,), generator=generator)


def sample_inputs(
    batch: int, n_clusters: int, generator: torch.Generator | None = None, z_dim: int = 64, cz_dim: int = 8, device=None
) -> dict[str, torch.Tensor]:
    """Everything G needs for one step: z ~ N(0, I), c_z ~ N(0, I), codes and their one-hots."""
    z = torch.randn(batch, z_dim, generator=generator)
    cz = torch.randn(batch, cz_dim, generator=generator)
    codes = sample_codes(batch, n_clusters, generator)
    onehot = F.one_hot(codes, n_clusters).float()
    return {k: v.to(device) for k, v in {"z": z, "cz": cz, "codes": codes, "onehot": onehot}.items()}
