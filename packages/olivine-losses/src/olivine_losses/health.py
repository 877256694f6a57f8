"""Training-health measures: chance levels of the contrastive losses and feature collapse.

A contrastive loss is only evidence of learning when it is *below its chance level*: the value it
takes when every logit of a row is equal (the network has learnt nothing that separates the
candidates). These functions give that value for the losses of this package on the exact
candidate set of a step, so that ``loss - chance`` can be logged and checked:

======================================  ============================================================
``info_nce_chance(m)``                  ``log M`` (``M`` candidates per anchor)
``semantic_contrastive_chance(labels)`` ``mean_i log(M / n_{y_i})`` (sum-in-log form) or ``log M``
``superpixel_chance(pts, pix)``         ``log S`` over the ``S`` superpixels that take part
``effective_rank(features)``            ``exp`` of the entropy of the normalised singular values
``direction_cosines(mu)``               mean and max pairwise cosine of class directions
======================================  ============================================================

The effective rank is the RankMe measure (Roy & Vetterli, EUSIPCO 2007; Garrido et al., ICML
2023): with singular values ``s`` of the ``(N, D)`` feature matrix and ``p = s / sum(s)``,
``erank = exp(-sum p log p)``, between 1 (all features on one direction: collapse) and ``D``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from olivine_losses._checks import check_features, check_labels, check_optional_int

__all__ = [
    "direction_cosines",
    "effective_rank",
    "info_nce_chance",
    "most_collinear_pair",
    "semantic_contrastive_chance",
    "superpixel_chance",
]


def _labels(name: str, labels: object, n_name: str) -> Tensor:
    """A 1-D integer label tensor of any length."""
    n = labels.shape[0] if isinstance(labels, Tensor) and labels.ndim == 1 else -1
    return check_labels(name, labels, n, n_name)


def info_nce_chance(num_candidates: int) -> float:
    """Chance level of :func:`~olivine_losses.info_nce` with ``num_candidates`` candidates per
    anchor: ``log M`` (every one of the ``M`` logits of a row equal).
    """
    if (
        isinstance(num_candidates, bool)
        or not isinstance(num_candidates, int)
        or num_candidates < 1
    ):
        raise ValueError(f"num_candidates must be an int >= 1, got {num_candidates!r}")
    return math.log(num_candidates)


def semantic_contrastive_chance(
    labels: Tensor, *, ignore_index: int | None = None, variant: str = "sum_in_log"
) -> float:
    """Chance level of :func:`~olivine_losses.semantic_contrastive` for the step's ``labels``.

    With equal logits, anchor ``i`` of the sum-in-log form loses ``log(M / n_{y_i})``, where ``M``
    counts every candidate (ignored labels included: they stay in the denominator) and ``n_{y_i}``
    the candidates sharing its label (itself included); the loss is the mean over the anchors
    whose label is not ``ignore_index``. The ``"mean_log_prob"`` (SupCon) form loses ``log M`` at
    every anchor. Returns 0.0 when no anchor is left (the loss is then 0 as well).
    """
    lab = _labels("labels", labels, "M").to(torch.int64)
    ignore = check_optional_int("ignore_index", ignore_index)
    if variant not in ("sum_in_log", "mean_log_prob"):
        raise ValueError(f"variant must be 'sum_in_log' or 'mean_log_prob', got {variant!r}")
    m = int(lab.shape[0])
    anchors = lab if ignore is None else lab[lab != ignore]
    if anchors.numel() == 0:
        return 0.0
    if variant == "mean_log_prob":
        return math.log(m)
    _, inverse, counts = torch.unique(lab, return_inverse=True, return_counts=True)
    per_pair = math.log(m) - torch.log(counts.to(torch.float64))[inverse]
    if ignore is not None:
        per_pair = per_pair[lab != ignore]
    return float(per_pair.mean())


def superpixel_chance(point_superpixels: Tensor, pixel_superpixels: Tensor) -> float:
    """Chance level of :func:`~olivine_losses.superpixel_info_nce`: ``log S``, with ``S`` the
    superpixels (non-negative ids) holding both a point and a pixel; 0.0 when there is none.
    """
    pts = _labels("point_superpixels", point_superpixels, "N").to(torch.int64)
    pix = _labels("pixel_superpixels", pixel_superpixels, "P").to(pts.device)
    both = torch.isin(torch.unique(pts[pts >= 0]), pix.to(torch.int64))
    s = int(both.sum())
    return math.log(s) if s > 0 else 0.0


def effective_rank(features: Tensor) -> float:
    """Effective rank (RankMe) of ``(N, D)`` features: ``exp(H(s / sum s))`` over the singular
    values ``s``, computed in float64. 1.0 means every row lies on one direction (collapse);
    at most ``min(N, D)``. Rows are used as given (not centred). Returns 0.0 for an all-zero or
    empty matrix, which has no direction at all.
    """
    f = check_features("features", features, allow_empty=True).detach()
    if f.shape[0] == 0:
        return 0.0
    if not bool(torch.isfinite(f).all()):
        raise ValueError("features must be finite to measure their effective rank")
    s = torch.linalg.svdvals(f.to(torch.float64))
    total = s.sum()
    if float(total) <= 0.0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * torch.log(p)).sum()))


def direction_cosines(mu: Tensor, valid: Tensor | None = None) -> tuple[float, float]:
    """Mean and max pairwise cosine similarity between the rows of ``mu`` ``(K, C)`` (class
    directions), over the rows where ``valid`` is True (default: all non-zero rows).

    Well separated classes give a mean near ``-1/(K-1)`` to 0; near-collinear directions give a
    mean close to 1. Returns ``(nan, nan)`` when fewer than two rows take part.
    """
    if not isinstance(mu, Tensor) or mu.ndim != 2:
        raise ValueError(f"mu must be a (K, C) tensor, got {getattr(mu, 'shape', type(mu))}")
    m = mu.detach().to(torch.float64)
    norms = torch.linalg.vector_norm(m, dim=1)
    keep = norms > 0 if valid is None else valid.to(device=m.device, dtype=torch.bool) & (norms > 0)
    m = m[keep] / norms[keep][:, None]
    k = int(m.shape[0])
    if k < 2:
        return math.nan, math.nan
    cos = m @ m.T
    off = cos[~torch.eye(k, dtype=torch.bool, device=m.device)]
    return float(off.mean()), float(off.max())


def most_collinear_pair(mu: Tensor, valid: Tensor | None = None) -> tuple[int, int, float]:
    """``(a, b, cosine)``: the two rows of ``mu`` ``(K, C)`` (class indices, ``a < b``) with the
    largest cosine similarity, over the rows where ``valid`` is True (default: all non-zero rows).
    Returns ``(-1, -1, nan)`` when fewer than two rows take part.
    """
    if not isinstance(mu, Tensor) or mu.ndim != 2:
        raise ValueError(f"mu must be a (K, C) tensor, got {getattr(mu, 'shape', type(mu))}")
    m = mu.detach().to(torch.float64)
    norms = torch.linalg.vector_norm(m, dim=1)
    keep = norms > 0 if valid is None else valid.to(device=m.device, dtype=torch.bool) & (norms > 0)
    rows = torch.nonzero(keep).flatten()
    if rows.numel() < 2:
        return -1, -1, math.nan
    u = m[rows] / norms[rows][:, None]
    cos = u @ u.T
    upper = torch.triu(torch.ones_like(cos, dtype=torch.bool), diagonal=1)
    flat = torch.where(upper, cos, torch.full_like(cos, -math.inf)).argmax()
    i, j = divmod(int(flat), int(rows.numel()))
    return int(rows[i]), int(rows[j]), float(cos[i, j])
