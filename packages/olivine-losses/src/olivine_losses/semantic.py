"""Weakly-supervised (VFM-label) contrastive distillation, OLIVINE's ``L_sup``."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from olivine_losses._checks import (
    check_chunk_size,
    check_labels,
    check_optional_int,
    check_pair,
    check_reduction,
    check_temperature,
    check_weights,
    compute_dtype,
)
from olivine_losses._kernel import Mode, reduce_losses, row_losses

__all__ = ["semantic_contrastive", "SemanticVariant"]

SemanticVariant = Literal["sum_in_log", "mean_log_prob"]
_VARIANTS: dict[str, Mode] = {"sum_in_log": "sum", "mean_log_prob": "mean"}


def semantic_contrastive(
    k: Tensor,
    q: Tensor,
    labels: Tensor,
    temperature: float = 0.07,
    *,
    variant: SemanticVariant = "sum_in_log",
    ignore_index: int | None = None,
    symmetric: bool = False,
    weights: Tensor | None = None,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> Tensor:
    """Label-supervised contrastive loss between 3D anchors and 2D candidates (``L_sup``).

    With ``L = k q^T / temperature`` and ``A(i) = {j : labels[j] == labels[i]}`` (which contains the
    matched pixel ``j = i``), the loss of anchor ``i`` is

    * ``variant="sum_in_log"`` (the reference, OLIVINE's ``SupConLoss``)::

          l_i = -log( sum_{j in A(i)} exp(L_ij) / sum_j exp(L_ij) )
              = logsumexp_j(L_ij) - logsumexp_{j in A(i)}(L_ij)

    * ``variant="mean_log_prob"`` (SupCon's ``L_out``)::

          l_i = -(1/|A(i)|) sum_{j in A(i)} log( exp(L_ij) / sum_j exp(L_ij) )

    Both are computed with log-sum-exp only, so neither unit-norm features nor float32 are needed
    (the reference exponentiates raw logits, which is safe only for unit vectors in float32).

    Unlabelled pairs: the reference lets VFM label 0 mean both "barrier" and "unlabelled" (SEEM
    paints nothing as 0), so unlabelled pixels are positives of every barrier anchor. Pass
    ``ignore_index`` (e.g. 16 for the SEEM17 vocabulary's explicit "background", 0 for Grounded-SAM
    ids) to drop the pairs with that label *as anchors*: they contribute no loss term and are never
    anyone's positive, but their pixels stay in every denominator as negatives, like any other
    non-matching pixel. The default ``None`` reproduces the reference (every pair is an anchor).

    Args:
        k: ``(M, D)`` anchor features (3D semantic head); need not be unit norm.
        q: ``(M, D)`` candidate features (2D semantic head at the matched pixels).
        labels: ``(M,)`` integer VFM labels of the pairs.
        temperature: ``tau > 0`` (reference: 0.07).
        variant: ``"sum_in_log"`` (default, the reference) or ``"mean_log_prob"``.
        ignore_index: label whose pairs are not anchors, or ``None``.
        symmetric: average with the same loss using ``q`` as anchors against ``k``.
        weights: optional ``(M,)`` per-anchor weights.
        reduction: ``"mean"`` over the anchors that are kept (weighted mean with ``weights``; 0
            when no anchor is kept), ``"sum"``, or ``"none"`` (``(M,)``, 0 at ignored anchors).
        chunk_size: row-chunked forward and backward in ``O(M * chunk_size)`` memory, same result.

    Returns:
        The loss in the dtype of ``k``; half/bfloat16 inputs are computed and returned in float32
        (an fp16 loss would overflow to ``inf`` above 65504).
    """
    kt, qt = check_pair("k", k, "q", q)
    lab = check_labels("labels", labels, kt.shape[0], "M")
    if lab.device != kt.device:
        raise ValueError(f"labels must be on the device of k ({kt.device}), got {lab.device}")
    tau = check_temperature(temperature)
    if variant not in _VARIANTS:
        raise ValueError(f"variant must be one of {tuple(_VARIANTS)}, got {variant!r}")
    ignore = check_optional_int("ignore_index", ignore_index)
    w = check_weights("weights", weights, kt.shape[0])
    red = check_reduction(reduction)
    chunk = check_chunk_size(chunk_size)

    mode = _VARIANTS[variant]
    out_dtype = compute_dtype(kt.dtype)
    cdt = compute_dtype(torch.promote_types(kt.dtype, qt.dtype))
    kc, qc = kt.to(cdt), qt.to(cdt)
    losses = row_losses(kc, qc, lab, mode, 1.0 / tau, chunk)
    if symmetric:
        losses = 0.5 * (losses + row_losses(qc, kc, lab, mode, 1.0 / tau, chunk))
    valid = None if ignore is None else lab != ignore
    return reduce_losses(losses, w, valid, red).to(out_dtype)
