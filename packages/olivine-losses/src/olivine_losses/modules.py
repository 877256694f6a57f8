"""Typed ``nn.Module`` wrappers around :mod:`olivine_losses.functional`.

Hyperparameters are validated once in ``__init__`` (``ValueError``/``TypeError``); tensors are
validated on every call by the functional form.
"""

from __future__ import annotations

from torch import Tensor, nn

from olivine_losses._checks import (
    check_chunk_size,
    check_optional_int,
    check_reduction,
    check_temperature,
)
from olivine_losses.contrastive import info_nce, superpixel_info_nce
from olivine_losses.semantic import _VARIANTS, SemanticVariant, semantic_contrastive

__all__ = ["InfoNCELoss", "SemanticContrastiveLoss", "SuperpixelInfoNCELoss"]


class _ContrastiveLoss(nn.Module):
    """Shared hyperparameters of the contrastive losses (validated once, shown in ``repr``)."""

    def __init__(
        self, temperature: float, symmetric: bool, reduction: str, chunk_size: int | None
    ) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature)
        self.symmetric = bool(symmetric)
        self.reduction = check_reduction(reduction)
        self.chunk_size = check_chunk_size(chunk_size)

    def _own_repr(self) -> str:
        """The subclass's own hyperparameters, shown after the temperature."""
        return ""

    def extra_repr(self) -> str:
        own = self._own_repr()
        return (
            f"temperature={self.temperature}, {own + ', ' if own else ''}"
            f"symmetric={self.symmetric}, reduction={self.reduction!r}, "
            f"chunk_size={self.chunk_size}"
        )


class InfoNCELoss(_ContrastiveLoss):
    """Point-pixel InfoNCE (``L_PPNCE``); see :func:`olivine_losses.functional.info_nce`.

    ``forward(k, q, weights=None)`` with ``k`` the ``(M, D)`` 3D anchors and ``q`` the ``(M, D)``
    matched 2D features.
    """

    def __init__(
        self,
        temperature: float = 0.07,
        *,
        symmetric: bool = False,
        reduction: str = "mean",
        chunk_size: int | None = None,
    ) -> None:
        super().__init__(temperature, symmetric, reduction, chunk_size)

    def forward(self, k: Tensor, q: Tensor, weights: Tensor | None = None) -> Tensor:
        return info_nce(
            k,
            q,
            self.temperature,
            symmetric=self.symmetric,
            weights=weights,
            reduction=self.reduction,
            chunk_size=self.chunk_size,
        )


class SemanticContrastiveLoss(_ContrastiveLoss):
    """VFM-label contrastive loss (``L_sup``); see
    :func:`olivine_losses.functional.semantic_contrastive`.

    ``forward(k, q, labels, weights=None)``.
    """

    def __init__(
        self,
        temperature: float = 0.07,
        *,
        variant: SemanticVariant = "sum_in_log",
        ignore_index: int | None = None,
        symmetric: bool = False,
        reduction: str = "mean",
        chunk_size: int | None = None,
    ) -> None:
        check_temperature(temperature)  # errors in argument order: temperature before variant
        if variant not in _VARIANTS:
            raise ValueError(f"variant must be one of {tuple(_VARIANTS)}, got {variant!r}")
        ignore = check_optional_int("ignore_index", ignore_index)
        super().__init__(temperature, symmetric, reduction, chunk_size)
        self.variant: SemanticVariant = variant
        self.ignore_index = ignore

    def _own_repr(self) -> str:
        return f"variant={self.variant!r}, ignore_index={self.ignore_index}"

    def forward(
        self, k: Tensor, q: Tensor, labels: Tensor, weights: Tensor | None = None
    ) -> Tensor:
        return semantic_contrastive(
            k,
            q,
            labels,
            self.temperature,
            variant=self.variant,
            ignore_index=self.ignore_index,
            symmetric=self.symmetric,
            weights=weights,
            reduction=self.reduction,
            chunk_size=self.chunk_size,
        )


class SuperpixelInfoNCELoss(_ContrastiveLoss):
    """SLidR's superpixel-pooled InfoNCE; see
    :func:`olivine_losses.functional.superpixel_info_nce`.

    ``forward(point_features, pixel_features, point_superpixels, pixel_superpixels)``.
    """

    def __init__(
        self,
        temperature: float = 0.07,
        *,
        normalize: bool = False,
        symmetric: bool = False,
        reduction: str = "mean",
        chunk_size: int | None = None,
    ) -> None:
        super().__init__(temperature, symmetric, reduction, chunk_size)
        self.normalize = bool(normalize)

    def _own_repr(self) -> str:
        return f"normalize={self.normalize}"

    def forward(
        self,
        point_features: Tensor,
        pixel_features: Tensor,
        point_superpixels: Tensor,
        pixel_superpixels: Tensor,
    ) -> Tensor:
        return superpixel_info_nce(
            point_features,
            pixel_features,
            point_superpixels,
            pixel_superpixels,
            self.temperature,
            normalize=self.normalize,
            symmetric=self.symmetric,
            reduction=self.reduction,
            chunk_size=self.chunk_size,
        )
