"""Pair sampling: uniform (for the point-pixel InfoNCE) and DCAS (density- and category-aware).

DCAS (density and category aware sampling of the OLIVINE paper, arXiv:2405.14271; reference code
github.com/Eaphan/OLIVINE): with ``r_i`` the horizontal range bin of pair i and ``y_i`` its VFM
label,

    w_i = 1 / (f(r_i) * n_{y_i}),   p_i = w_i / sum_j w_j

where ``n_c`` is the number of pairs of label c **in the batch** and ``f`` is a 1-D Gaussian KDE
over the P range values with Silverman's bandwidth ``h = 1.06 * std(r) * P^(-1/5)`` (``std`` with
``ddof=1``, as ``torch.std``):

    f(r) = (1/P) sum_j N(r; r_j, h^2).

Range bins are integers, so ``f`` only needs the count of each bin: ``f(u) = sum_v count_v
N(u; v, h^2) / P``. For integer input spanning S <= 65536 bins the histogram is correlated with
the kernel sampled at the integer lags (``conv1d``, O(S) memory); otherwise (float input or a huge
span) ``f`` is evaluated on the U unique values in row blocks (O(U^2) time, O(2048 U) memory).
Either way memory does not grow with P (the reference builds a U x P matrix) and the numbers are
the direct KDE's up to float64 rounding.

Degenerate density: if ``std(r) == 0`` (every pair in the same bin, or P == 1) the KDE is
undefined (h = 0); the density term is then taken as constant, so the weights depend on the
label counts only (no NaN). P == 0 returns an empty tensor.
"""

from __future__ import annotations

import math

import torch

__all__ = ["uniform_pairs", "range_kde", "dcas_probabilities", "dcas_sample"]

_BLOCK = 2048
_MAX_DENSE_SPAN = 1 << 16


def uniform_pairs(num_pairs: int, m: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``min(m, num_pairs)`` distinct pair indices drawn uniformly (int64)."""
    if num_pairs < 0 or m < 0:
        raise ValueError(f"num_pairs and m must be >= 0, got {num_pairs} and {m}")
    return torch.randperm(num_pairs, generator=generator)[:m]


def _validate(range_bins: torch.Tensor, labels: torch.Tensor) -> None:
    if not isinstance(range_bins, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise TypeError("range_bins and labels must be torch tensors")
    if range_bins.ndim != 1 or labels.ndim != 1 or range_bins.shape != labels.shape:
        raise ValueError(
            f"range_bins and labels must be 1-D of equal length, got {tuple(range_bins.shape)} "
            f"and {tuple(labels.shape)}"
        )
    if labels.is_floating_point():
        raise TypeError(f"labels must be integers, got {labels.dtype}")


def range_kde(range_bins: torch.Tensor) -> torch.Tensor:
    """Silverman Gaussian KDE of the values, evaluated at each value: (P,) float64.

    Returns all-ones when the standard deviation is 0 (see the module docstring).
    """
    r = range_bins.to(torch.float64)
    p = r.numel()
    if p == 0:
        return r
    std = float(r.std()) if p > 1 else 0.0
    if std == 0.0 or not math.isfinite(std):
        return torch.ones_like(r)
    h = 1.06 * std * p ** (-0.2)
    norm = 1.0 / (p * h * math.sqrt(2.0 * math.pi))
    if not range_bins.is_floating_point():
        lo = int(range_bins.min())
        span = int(range_bins.max()) - lo + 1
        if span <= _MAX_DENSE_SPAN:
            # Integer bins: histogram on the dense grid, correlate with the kernel sampled at the
            # integer lags. Same sum as below, O(span^2) in C with O(span) memory.
            hist = torch.bincount(range_bins - lo, minlength=span).to(torch.float64)
            lags = torch.arange(-(span - 1), span, dtype=torch.float64, device=r.device) / h
            kernel = torch.exp(-0.5 * lags * lags)
            dens = torch.nn.functional.conv1d(
                hist.view(1, 1, -1), kernel.view(1, 1, -1), padding=span - 1
            ).view(-1)
            return dens[range_bins - lo] * norm
    uniq, inverse, counts = torch.unique(r, return_inverse=True, return_counts=True)
    counts = counts.to(torch.float64)
    dens = torch.empty_like(uniq)
    for s in range(0, uniq.numel(), _BLOCK):  # blocks of unique bins, not points
        z = (uniq[s : s + _BLOCK, None] - uniq[None, :]) / h
        dens[s : s + _BLOCK] = torch.exp(-0.5 * z * z) @ counts * norm
    return dens[inverse]


def dcas_probabilities(range_bins: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """DCAS sampling probabilities ``(P,)`` float64 summing to 1 (see the module docstring)."""
    _validate(range_bins, labels)
    if labels.numel() == 0:
        return torch.zeros(0, dtype=torch.float64, device=labels.device)
    density = range_kde(range_bins)
    if int(labels.min()) >= 0 and int(labels.max()) < _MAX_DENSE_SPAN:
        per_pair = torch.bincount(labels)[labels]
    else:
        _, lab_inv, lab_counts = torch.unique(labels, return_inverse=True, return_counts=True)
        per_pair = lab_counts[lab_inv]
    w = 1.0 / (density * per_pair.to(torch.float64))
    return w / w.sum()


def dcas_sample(
    range_bins: torch.Tensor,
    labels: torch.Tensor,
    m: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw ``min(m, P)`` distinct pair indices with DCAS probabilities (int64)."""
    if m < 0:
        raise ValueError(f"m must be >= 0, got {m}")
    probs = dcas_probabilities(range_bins, labels)
    p = probs.numel()
    if m >= p:
        return torch.randperm(p, generator=generator, device=probs.device)
    if m == 0:
        return torch.zeros(0, dtype=torch.int64, device=probs.device)
    return torch.multinomial(probs, m, replacement=False, generator=generator)
