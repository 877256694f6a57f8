"""The converged probe's fit: an L2 multinomial logistic regression on standardised features,
fitted by full-batch L-BFGS to a stated gradient tolerance (tensors in, no config or data; the
recipe around it is :mod:`olivine_train.recipes.probe`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["DEFAULT_SETTINGS", "LogisticFit", "ProbeSettings", "fit_logistic"]


@dataclass(frozen=True)
class ProbeSettings:
    """How the probe is fitted.

    ``l2``: the penalty ``0.5 * l2 * ||W||^2`` added to the mean cross-entropy (standardised
    features, bias not penalised). ``tolerance``: convergence when ``max |gradient| <= tolerance``
    (L-BFGS's ``tolerance_grad``). ``max_iter``: L-BFGS iterations at most. ``dtype``: the fit's
    float type. ``calibrate_bn``: recompute BatchNorm statistics on the training split before
    caching; ``None`` does it for a random trunk only (a random trunk's BN statistics are
    meaningless; a pretrained trunk's are part of what is probed). ``range_bins``: increasing
    edges in metres of the horizontal range ``sqrt(x^2 + y^2)``; when given, the validation
    points are also scored per bin (``scores_by_range``; the last bin is open-ended).
    """

    l2: float = 1e-3
    tolerance: float = 1e-4
    max_iter: int = 3000
    dtype: str = "float32"
    calibrate_bn: bool | None = None
    history_size: int = 20
    range_bins: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        problems = []
        if not (self.l2 >= 0 and math.isfinite(self.l2)):
            problems.append(f"l2 must be a finite number >= 0, got {self.l2!r}")
        if not (self.tolerance > 0 and math.isfinite(self.tolerance)):
            problems.append(f"tolerance must be a finite number > 0, got {self.tolerance!r}")
        if self.max_iter < 1:
            problems.append(f"max_iter must be >= 1, got {self.max_iter!r}")
        if self.dtype not in ("float32", "float64"):
            problems.append(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if self.history_size < 1:
            problems.append(f"history_size must be >= 1, got {self.history_size!r}")
        edges = list(self.range_bins)
        if edges and (edges[0] < 0 or any(b <= a for a, b in zip(edges, edges[1:]))):
            problems.append(f"range_bins must be increasing edges >= 0, got {self.range_bins!r}")
        if problems:
            raise ValueError("probe settings: " + "; ".join(problems))


DEFAULT_SETTINGS = ProbeSettings()
"""The probe's defaults (frozen, so safe as a default argument)."""


@dataclass(frozen=True)
class LogisticFit:
    """A fitted probe: ``logits = ((x - mean) / sd) @ weight + bias`` and how the fit ended."""

    weight: torch.Tensor  # (D, K)
    bias: torch.Tensor  # (K,)
    mean: torch.Tensor  # (D,)
    sd: torch.Tensor  # (D,)
    loss: float
    max_abs_grad: float
    iterations: int
    converged: bool

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        z = (x.to(self.weight.dtype) - self.mean) / self.sd
        return z @ self.weight + self.bias


def fit_logistic(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    settings: ProbeSettings = DEFAULT_SETTINGS,
    ignore_index: int | None = 0,
) -> LogisticFit:
    """Standardise ``x`` (N, D) and fit an L2 multinomial logistic regression to ``y`` (N,).

    Rows labelled ``ignore_index`` are dropped and that class is never predicted (its logit is
    -inf). The standard deviation is clamped at 1e-6 so constant features stay finite.
    """
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"probe fit: expected x (N, D) and y (N,), got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")  # fmt: skip
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(
            f"probe fit: labels must lie in [0, {num_classes}), got [{int(y.min())}, "
            f"{int(y.max())}]"
        )
    dtype = getattr(torch, settings.dtype)
    x = x.to(dtype)
    if not bool(torch.isfinite(x).all()):
        raise ValueError("probe fit: the trunk's features contain NaN or inf")
    if ignore_index is not None:
        keep = y != ignore_index
        x, y = x[keep], y[keep]
    if x.shape[0] == 0:
        raise ValueError("probe fit: no labelled training voxels (every label is ignored)")
    mean, sd = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / sd
    w = torch.zeros(z.shape[1], num_classes, dtype=dtype, requires_grad=True)
    b = torch.zeros(num_classes, dtype=dtype, requires_grad=True)
    mask = torch.zeros(num_classes, dtype=dtype)
    if ignore_index is not None:
        mask[ignore_index] = -math.inf
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=settings.max_iter,
        tolerance_grad=settings.tolerance,
        tolerance_change=1e-12,
        history_size=settings.history_size,
        line_search_fn="strong_wolfe",
    )

    def objective() -> torch.Tensor:
        opt.zero_grad()
        logits = z @ w + b + mask
        loss = nn.functional.cross_entropy(logits, y) + 0.5 * settings.l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(objective)
    loss = float(objective().detach())
    assert w.grad is not None and b.grad is not None  # set by objective()
    grad = max(float(w.grad.abs().max()), float(b.grad.abs().max()))
    iterations = int(opt.state[opt._params[0]]["n_iter"])  # type: ignore[attr-defined]
    return LogisticFit(
        weight=w.detach(),
        bias=b.detach(),
        mean=mean,
        sd=sd,
        loss=loss,
        max_abs_grad=grad,
        iterations=iterations,
        converged=grad <= settings.tolerance,
    )
