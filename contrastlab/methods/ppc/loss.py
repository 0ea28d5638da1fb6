"""PPC's losses (pixel-to-prototype contrast) and SEAM's CAM losses, as pure functions of tensors.

Notation (method card `ppc.md`, section b): N images, C = C_fg + 1 channels (background included,
at `bg_index`), a grid of h x w pixels, D-dimensional pixel embeddings, temperature tau.

    normalised CAM   a = ReLU(A); m, M = min, max over pixels (per image and channel);
                     a <- 0 where a < m + 1e-5;  n = (a - m - 1e-5) / (M - m + 1e-5);  n[bg] = t
    pseudo-label     y_i = argmax_k n_ki over the classes in the image (bg always present)
    prototype        P_k = normalise( sum_j w_j e_j / sum_j w_j ), j = the K pixels of the WHOLE batch
                     with largest n_k (ties: smallest flat index in (n, y, x) raster order), w = n_k
    prototype CE     l(e^, P, y) = -log softmax_k(e^ . P_k / tau)[y]
    L_cp    = 1/2 [ mean l(e^1, P2, y1) + mean l(e^2, P1, y2) ]         (cross prototype)
    L_cl    = 1/2 [ mean l(e^1, P1, y2) + mean l(e^2, P2, y1) ]         (cross pseudo-label)
    L_intra = 1/2 sum_v (1/C_v) sum_{k present} mean_{i in picks_k} l'_i  (semi-hard prototypes, hard pixels)
    L_nce   = w_cp L_cp + w_cl L_cl + w_intra L_intra    (0.1 each in the paper)

Only the pixel embeddings e^ carry gradient: CAM normalisation, pseudo-labels and prototypes are
computed from detached tensors. `ppc_losses` is the single entry point (checklist item 9).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping

import torch
import torch.nn.functional as F

EPS = 1e-5


# --------------------------------------------------------------------------- CAM normalisation and pseudo-labels
def normalize_cam(cam: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """The official per-image, per-channel min-max normalisation of a (N, C, h, w) map (no grad).

    n = (a - m - eps) / (M - m + eps) with a = ReLU(cam) and a set to 0 below m + eps. Kept as
    written: the minimum pixel of an all-positive map becomes strongly negative (card, gotchas).
    """
    with torch.no_grad():
        a = F.relu(cam.detach().float())
        flat = a.flatten(2)
        m = flat.min(-1).values[..., None, None]
        big = flat.max(-1).values[..., None, None]
        a = torch.where(a < m + eps, torch.zeros_like(a), a)
        return (a - m - eps) / (big - m + eps)


def cam_scores(cam: torch.Tensor, bg_index: int, bg_value: float) -> torch.Tensor:
    """Normalised CAM with the background channel overwritten by the constant `bg_value` (t)."""
    n = normalize_cam(cam)
    n[:, bg_index] = bg_value
    return n


def full_labels(labels: torch.Tensor, num_channels: int, bg_index: int) -> torch.Tensor:
    """(N, C_fg) or (N, C) multi-hot image labels -> (N, C) with the background always present."""
    labels = labels.detach().float()
    if labels.shape[1] == num_channels - 1:
        ones = labels.new_ones(labels.shape[0], 1)
        labels = torch.cat([labels[:, :bg_index], ones, labels[:, bg_index:]], dim=1)
    elif labels.shape[1] != num_channels:
        raise ValueError(f"labels have {labels.shape[1]} columns; expected {num_channels - 1} (foreground) or {num_channels}")
    labels = labels.clone()
    labels[:, bg_index] = 1.0
    return labels


def pseudo_labels(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """y_i = argmax over the image's classes of the scores: (N, C, h, w), (N, C) -> (N, h, w) int64.

    The card writes argmax_k n_ki * l_k; here absent classes get -inf instead of 0, which is the
    same whenever the background score t > 0 (t beats 0) and keeps absent classes from ever winning
    otherwise. Ties go to the first channel (torch.argmax), i.e. to the background when bg_index = 0.
    """
    present = labels.bool()[:, :, None, None]
    return scores.masked_fill(~present, float("-inf")).argmax(dim=1)


# --------------------------------------------------------------------------- prototypes
def topk_count(h: int, w: int, fraction: float) -> int:
    """K = h * w * fraction (card: 16*16/8 = 32 on SEAM), at least 1."""
    return max(1, int(h * w * fraction))


def class_prototypes(scores: torch.Tensor, emb: torch.Tensor, k: int) -> torch.Tensor:
    """(C, D) unit prototypes from scores (N, C, h, w) and embeddings (N, D, h, w), both detached.

    For class c: the k pixels of the whole batch with the largest score (stable descending sort, so
    ties go to the smallest flat (n, y, x) index), P_c = normalise(sum w e / sum w) with w the scores.
    normalise(v / s) = sign(s) normalise(v), used so that a zero weight sum gives no NaN.
    """
    scores, emb = scores.detach().float(), emb.detach().float()
    n, c, h, w = scores.shape
    d = emb.shape[1]
    s = scores.permute(1, 0, 2, 3).reshape(c, n * h * w)
    e = emb.permute(0, 2, 3, 1).reshape(n * h * w, d)
    k = min(k, n * h * w)
    top = torch.sort(s, dim=1, descending=True, stable=True).indices[:, :k]  # (C, k)
    weights = torch.gather(s, 1, top)
    num = torch.einsum("ck,ckd->cd", weights, e[top])
    sign = torch.where(weights.sum(1) < 0, -1.0, 1.0)[:, None]
    return F.normalize(num, dim=1) * sign


# --------------------------------------------------------------------------- contrast terms
def flat_pixels(x: torch.Tensor) -> torch.Tensor:
    """(N, D, h, w) -> (N*h*w, D) in (n, y, x) raster order."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def prototype_ce(e_hat: torch.Tensor, protos: torch.Tensor, y: torch.Tensor, tau: float) -> torch.Tensor:
    """mean_i -log[exp(e^_i . P_{y_i} / tau) / sum_k exp(e^_i . P_k / tau)]; e_hat (M, D) unit rows, y (M,)."""
    return F.cross_entropy(e_hat @ protos.t() / tau, y)


def semi_hard_pixel_losses(e_hat: torch.Tensor, protos: torch.Tensor, y: torch.Tensor, tau: float,
                           skip: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel l'_i with semi-hard prototypes, and s_iy (for the hard-pixel ranking).

    s_ik = e^_i . P_k; the denominator holds the positive plus the prototypes ranked skip+1 ...
    skip+count by s_ik (descending, among all C); a positive inside that window counts twice.
    """
    sim = e_hat @ protos.t()  # (M, C)
    window = torch.sort(sim, dim=1, descending=True, stable=True).values[:, skip:skip + count]
    pos = sim.gather(1, y[:, None])  # (M, 1)
    logits = torch.cat([pos, window], dim=1) / tau
    return torch.logsumexp(logits, dim=1) - pos[:, 0] / tau, pos[:, 0]


def hard_positions(pos_sim: torch.Tensor, hard_start: float) -> torch.Tensor:
    """Positions (into a class's raster-ordered pixel list of length L) of its hard pixels.

    Sort by ascending (s_iy + 1) / 2 (stable), take ranks floor(hard_start L) - floor(L/2) ...
    floor(hard_start L) - 1: skip the ~10% least similar pixels, keep the next floor(L/2).
    """
    length = pos_sim.shape[0]
    end = int(math.floor(hard_start * length))
    order = torch.sort((pos_sim.detach() + 1) / 2, stable=True).indices
    return order[end - length // 2:end]


RandomPicks = Mapping[tuple[int, int], torch.Tensor]


def random_positions(length: int, generator: torch.Generator | None, device) -> torch.Tensor:
    """floor(L/2) distinct positions out of L, from `generator` (torch.randperm, CPU)."""
    return torch.randperm(length, generator=generator)[: length // 2].to(device)


def intra_view_loss(e_hat: torch.Tensor, protos: torch.Tensor, y: torch.Tensor, tau: float, *, skip: int, count: int,
                    hard_start: float, generator: torch.Generator | None = None, view: int = 0,
                    random_picks: RandomPicks | None = None) -> torch.Tensor:
    """L_intra^v = (1/C) sum over classes k present in y of loss_k (C counts classes with L = 1, which add 0).

    loss_k = mean of l' over [floor(L/2) random pixels] + [floor(L/2) hard pixels] (duplicates kept),
    positions into the class's pixels in raster order. Random positions come from
    `random_picks[(view, k)]` when given, else from `generator` (one randperm(L) per class with
    L >= 2, classes ascending, view 0 before view 1: reproducible with a seeded generator).
    """
    losses, pos_sim = semi_hard_pixel_losses(e_hat, protos, y, tau, skip, count)
    classes = torch.unique(y)  # sorted ascending
    total = losses.new_zeros(())
    for k in classes.tolist():
        members = torch.nonzero(y == k, as_tuple=False)[:, 0]  # raster order
        length = members.numel()
        if length < 2:
            continue
        if random_picks is not None and (view, k) in random_picks:
            rand = torch.as_tensor(random_picks[(view, k)], dtype=torch.long, device=y.device)
        else:
            rand = random_positions(length, generator, y.device)
        hard = hard_positions(pos_sim[members], hard_start)
        total = total + losses[members[torch.cat([rand, hard])]].mean()
    return total / max(1, classes.numel())


@dataclass
class PPCLossConfig:
    tau: float = 0.1
    bg_index: int = 0  # SEAM: 0, EPS: last channel
    bg_value: float = 0.2  # t: SEAM 0.20, EPS 0.10
    topk_fraction: float = 1 / 8  # K = h * w * fraction of the common (view-2) grid
    semi_hard_skip: int = 3
    semi_hard_count: int = 10
    hard_start: float = 0.6
    weight_cp: float = 0.1
    weight_cl: float = 0.1
    weight_intra: float = 0.1


def ppc_losses(cam1: torch.Tensor, cam2: torch.Tensor, emb1: torch.Tensor, emb2: torch.Tensor, labels: torch.Tensor,
               generator: torch.Generator | None = None, cfg: PPCLossConfig | None = None, *,
               random_picks: RandomPicks | None = None,
               gather: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """All PPC terms for one batch of two views.

    cam1, cam2: (N, C, h1, w1), (N, C, h2, w2) CAM-like maps (PCM-refined cam_rv in the paper);
    emb1, emb2: (N, D, ., .) un-normalised pixel embeddings; labels: (N, C_fg) or (N, C) multi-hot.
    View-1 tensors are resized (bilinear, align_corners=True) to the view-2 grid first, so pixel i
    of both views is the same place. `gather` (no-grad all-gather over workers) makes prototypes
    span the global batch; without it they span this worker's batch (the intra-view loop always
    runs on the local batch). Returns {"loss_cp", "loss_cl", "loss_intra", "loss_nce", "y1", "y2",
    "protos1", "protos2"}; only the loss terms carry gradient, and only through emb1/emb2.
    """
    cfg = cfg or PPCLossConfig()
    size = cam2.shape[-2:]
    if cam1.shape[-2:] != size:
        cam1 = F.interpolate(cam1.detach().float(), size=size, mode="bilinear", align_corners=True)
    if emb1.shape[-2:] != size:
        emb1 = F.interpolate(emb1, size=size, mode="bilinear", align_corners=True)
    c = cam1.shape[1]
    lab = full_labels(labels, c, cfg.bg_index)
    if cfg.semi_hard_skip + cfg.semi_hard_count > c:
        raise ValueError(f"semi-hard window skip {cfg.semi_hard_skip} + count {cfg.semi_hard_count} exceeds the {c} prototypes")
    k = topk_count(size[0], size[1], cfg.topk_fraction)
    scores, ys, protos, e_hats = [], [], [], []
    for cam, emb in ((cam1, emb1), (cam2, emb2)):
        s = cam_scores(cam, cfg.bg_index, cfg.bg_value)
        ys.append(pseudo_labels(s, lab).reshape(-1))
        s_all, e_all = (gather(s), gather(emb.detach())) if gather is not None else (s, emb.detach())
        protos.append(class_prototypes(s_all, e_all, k))
        e_hats.append(F.normalize(flat_pixels(emb.float()), dim=1))
        scores.append(s)
    (e1, e2), (y1, y2), (p1, p2) = e_hats, ys, protos
    loss_cp = 0.5 * (prototype_ce(e1, p2, y1, cfg.tau) + prototype_ce(e2, p1, y2, cfg.tau))
    loss_cl = 0.5 * (prototype_ce(e1, p1, y2, cfg.tau) + prototype_ce(e2, p2, y1, cfg.tau))
    intra = [intra_view_loss(e, p, y, cfg.tau, skip=cfg.semi_hard_skip, count=cfg.semi_hard_count, hard_start=cfg.hard_start,
                             generator=generator, view=v, random_picks=random_picks)
             for v, (e, p, y) in enumerate(((e1, p1, y1), (e2, p2, y2)))]
    loss_intra = 0.5 * (intra[0] + intra[1])
    loss_nce = cfg.weight_cp * loss_cp + cfg.weight_cl * loss_cl + cfg.weight_intra * loss_intra
    shape = (cam2.shape[0],) + tuple(size)
    return {"loss_cp": loss_cp, "loss_cl": loss_cl, "loss_intra": loss_intra, "loss_nce": loss_nce,
            "y1": y1.reshape(shape), "y2": y2.reshape(shape), "protos1": p1, "protos2": p2}


# --------------------------------------------------------------------------- SEAM's CAM losses
def max_norm(cam: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """SEAM's max_norm: ReLU(p - min - eps) / (max - min + eps) with p = ReLU(cam), per image and channel."""
    p = F.relu(cam)
    flat = p.flatten(2)
    lo = flat.min(-1).values[..., None, None]
    hi = flat.max(-1).values[..., None, None]
    return F.relu(p - lo - eps) / (hi - lo + eps)


def classification_loss(cam: torch.Tensor, labels_fg: torch.Tensor, bg_index: int) -> torch.Tensor:
    """MultiLabelSoftMargin(GAP(cam) over the foreground channels, image labels)."""
    logits = cam.mean(dim=(2, 3))
    fg = [i for i in range(cam.shape[1]) if i != bg_index]
    return F.multilabel_soft_margin_loss(logits[:, fg], labels_fg.float())


def min_pool_loss(cam_rv: torch.Tensor, labels: torch.Tensor, bg_index: int) -> torch.Tensor:
    """SEAM's adaptive min-pooling: mean of ReLU of the hw/4 smallest per-pixel foreground maxima of
    the label-masked cam_rv (labels (N, C) with background)."""
    n, c, h, w = cam_rv.shape
    fg = [i for i in range(c) if i != bg_index]
    masked = (cam_rv * labels[:, :, None, None])[:, fg]
    per_pixel = masked.max(dim=1).values.reshape(n, -1)
    k = max(1, h * w // 4)
    return F.relu(torch.topk(per_pixel, k, dim=1, largest=False).values).mean()


def max_onehot(x: torch.Tensor, bg_index: int) -> torch.Tensor:
    """Zero every foreground channel that is not the per-pixel foreground maximum (bg kept as is)."""
    fg = [i for i in range(x.shape[1]) if i != bg_index]
    out = x.clone()
    f = out[:, fg]
    out[:, fg] = torch.where(f == f.max(dim=1, keepdim=True).values, f, torch.zeros_like(f))
    return out


def seam_losses(cam1: torch.Tensor, cam_rv1: torch.Tensor, cam2: torch.Tensor, cam_rv2: torch.Tensor, labels_fg: torch.Tensor,
                bg_index: int = 0, ecr_fraction: float = 0.2, use_minpool: bool = True) -> dict[str, torch.Tensor]:
    """SEAM: L_cls (both views, + min-pool on cam_rv), L_er, L_ecr on the view-2 grid.

    cam^v are raw CAMs, cam_rv^v the PCM-refined ones; view-1 maps are max-normed, then resized
    (bilinear, align_corners) to the view-2 grid, and multiplied by the labels (bg included):
      L_er  = mean |cam1 - cam2| over foreground channels
      L_ecr = mean(top ecr_fraction of |max_onehot(cam2.detach()) - cam_rv1|) + the symmetric term,
              where cam^v's background channel is 1 - max foreground.
    """
    c = cam1.shape[1]
    labels = full_labels(labels_fg, c, bg_index)[:, :, None, None]
    loss_cls = 0.5 * (classification_loss(cam1, labels_fg, bg_index) + classification_loss(cam2, labels_fg, bg_index))
    if use_minpool:
        loss_cls = loss_cls + 0.5 * (min_pool_loss(cam_rv1, labels[:, :, 0, 0], bg_index) + min_pool_loss(cam_rv2, labels[:, :, 0, 0], bg_index))
    size = cam2.shape[-2:]

    def down(x):
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True) if x.shape[-2:] != size else x

    n1, rv1 = down(max_norm(cam1)) * labels, down(max_norm(cam_rv1)) * labels
    n2, rv2 = max_norm(cam2) * labels, max_norm(cam_rv2) * labels
    fg = [i for i in range(c) if i != bg_index]
    loss_er = (n1[:, fg] - n2[:, fg]).abs().mean()
    with_bg = []
    for x in (n1, n2):
        x = x.clone()
        x[:, bg_index] = 1 - x[:, fg].max(dim=1).values
        with_bg.append(x)
    n1, n2 = with_bg
    k = max(1, int(c * size[0] * size[1] * ecr_fraction))
    batch = cam2.shape[0]
    ecr1 = (max_onehot(n2.detach(), bg_index) - rv1).abs().reshape(batch, -1)
    ecr2 = (max_onehot(n1.detach(), bg_index) - rv2).abs().reshape(batch, -1)
    loss_ecr = torch.topk(ecr1, k, dim=1).values.mean() + torch.topk(ecr2, k, dim=1).values.mean()
    return {"loss_cls": loss_cls, "loss_er": loss_er, "loss_ecr": loss_ecr}


def class_separation(emb: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class sums of unit pixel embeddings and counts, for mean intra- minus inter-class cosine.

    emb (N, D, h, w), target (N, h, w) on the same grid. With mu_c = sum_c / n_c:
    intra = mean_c |mu_c|^2 (mean cosine over pairs of class-c pixels, self-pairs included),
    inter = mean_{c != c'} mu_c . mu_c'. See `separation_from_sums`.
    """
    e = F.normalize(flat_pixels(emb.float()), dim=1)
    t = target.reshape(-1).long()
    keep = t != ignore_index
    e, t = e[keep], t[keep]
    sums = torch.zeros(num_classes, e.shape[1], device=e.device).index_add_(0, t, e)
    counts = torch.bincount(t, minlength=num_classes).float()
    return sums, counts


def separation_from_sums(sums: torch.Tensor, counts: torch.Tensor) -> float:
    present = counts > 0
    if present.sum() < 2:
        return float("nan")
    mu = sums[present] / counts[present, None]
    gram = mu @ mu.t()
    c = gram.shape[0]
    intra = gram.diag().mean()
    inter = (gram.sum() - gram.diag().sum()) / (c * (c - 1))
    return float(intra - inter)
