"""Row-wise contrastive losses over the logit matrix ``L = k q^T / tau`` (internal).

Every loss in this package is, per anchor row ``i`` of ``L``,

* ``"diag"``: ``lse_j L_ij - L_ii`` (InfoNCE with diagonal positives),
* ``"sum"``:  ``lse_j L_ij - lse_{j in A(i)} L_ij`` (``-log sum_{A(i)} softmax_i``),
* ``"mean"``: ``lse_j L_ij - mean_{j in A(i)} L_ij`` (SupCon's mean of log-probabilities),

with ``A(i) = {j : label_j = label_i}`` (which contains ``i``). Everything goes through
``logsumexp``; no exponential of a raw logit is ever formed.

Two implementations with identical results:

* :func:`row_losses_dense` builds the whole ``M x M`` matrix with ordinary autograd ops (supports
  double backward).
* :class:`_ChunkedRowLosses` walks the rows in chunks of ``chunk`` rows in the forward *and* in the
  backward (it recomputes each chunk of logits from ``k`` and ``q`` and keeps only the per-row
  log-sum-exps), so peak memory is ``O(M * chunk)`` instead of ``O(M^2)``. Its gradient is
  ``dL_ij = g_i (softmax_i(L)_j - w_ij)``, with ``w_ij`` the positive weights of the mode.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

Mode = Literal["diag", "sum", "mean"]
_MODES = ("diag", "sum", "mean")


def _positive_mask(labels: Tensor, rows: slice) -> Tensor:
    return labels[rows, None] == labels[None, :]


def _chunk_rows(
    k_rows: Tensor, q: Tensor, labels: Tensor | None, rows: slice, mode: str, inv_tau: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Forward on one block of rows: (per-row loss, lse over all columns, positive statistic)."""
    logits = (k_rows @ q.T) * inv_tau
    lse_all = torch.logsumexp(logits, dim=1)
    n = logits.shape[0]
    if mode == "diag":
        cols = torch.arange(rows.start, rows.start + n, device=logits.device)
        pos = logits.gather(1, cols[:, None]).squeeze(1)
        stat = pos
    else:
        assert labels is not None
        mask = _positive_mask(labels, rows)
        if mode == "sum":
            pos = torch.logsumexp(logits.masked_fill(~mask, float("-inf")), dim=1)
            stat = pos
        else:
            count = mask.sum(dim=1).to(logits.dtype)
            pos = torch.where(mask, logits, torch.zeros_like(logits)).sum(dim=1) / count
            stat = count
    return lse_all - pos, lse_all, stat


def row_losses_dense(
    k: Tensor, q: Tensor, labels: Tensor | None, mode: Mode, inv_tau: float
) -> Tensor:
    """Per-row losses, ``(M,)``, with plain autograd on the full ``M x M`` logit matrix."""
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    loss, _, _ = _chunk_rows(k, q, labels, slice(0, k.shape[0]), mode, inv_tau)
    return loss


class _ChunkedRowLosses(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: FunctionCtx,
        k: Tensor,
        q: Tensor,
        labels: Tensor | None,
        mode: str,
        inv_tau: float,
        chunk: int,
    ) -> Tensor:
        m = k.shape[0]
        losses = k.new_empty(m)
        lse_all = k.new_empty(m)
        stat = k.new_empty(m)
        for start in range(0, m, chunk):
            rows = slice(start, min(start + chunk, m))
            loss_c, lse_c, stat_c = _chunk_rows(k[rows], q, labels, rows, mode, inv_tau)
            losses[rows] = loss_c
            lse_all[rows] = lse_c
            stat[rows] = stat_c
        ctx.save_for_backward(k, q, lse_all, stat)
        ctx.labels = labels  # type: ignore[attr-defined]  # integer, never differentiated
        ctx.mode = mode  # type: ignore[attr-defined]
        ctx.inv_tau = inv_tau  # type: ignore[attr-defined]
        ctx.chunk = chunk  # type: ignore[attr-defined]
        return losses

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        k, q, lse_all, stat = ctx.saved_tensors
        labels: Tensor | None = ctx.labels
        mode: str = ctx.mode
        inv_tau: float = ctx.inv_tau
        chunk: int = ctx.chunk
        m = k.shape[0]
        need_k, need_q = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_k = torch.zeros_like(k) if need_k else None
        grad_q = torch.zeros_like(q) if need_q else None
        for start in range(0, m, chunk):
            rows = slice(start, min(start + chunk, m))
            logits = (k[rows] @ q.T) * inv_tau
            g = grad_out[rows, None] * inv_tau
            coeff = torch.exp(logits - lse_all[rows, None])  # softmax rows
            if mode == "diag":
                n = logits.shape[0]
                cols = torch.arange(start, start + n, device=k.device)
                coeff[torch.arange(n, device=k.device), cols] -= 1.0
            else:
                assert labels is not None  # modes "sum"/"mean" always carry labels
                mask = _positive_mask(labels, rows)
                if mode == "sum":
                    # softmax over the positives only (exactly 0 elsewhere, never inf)
                    coeff -= torch.exp(logits.masked_fill(~mask, float("-inf")) - stat[rows, None])
                else:
                    coeff -= mask.to(coeff.dtype) / stat[rows, None]
            coeff *= g
            if grad_k is not None:
                grad_k[rows] = coeff @ q
            if grad_q is not None:
                grad_q += coeff.T @ k[rows]
        return grad_k, grad_q, None, None, None, None


def row_losses_chunked(
    k: Tensor, q: Tensor, labels: Tensor | None, mode: Mode, inv_tau: float, chunk: int
) -> Tensor:
    """Per-row losses, ``(M,)``, in ``O(M * chunk)`` memory for both forward and backward."""
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    out: Tensor = _ChunkedRowLosses.apply(k, q, labels, mode, inv_tau, chunk)
    return out


def row_losses(
    k: Tensor,
    q: Tensor,
    labels: Tensor | None,
    mode: Mode,
    inv_tau: float,
    chunk: int | None,
) -> Tensor:
    """Dispatch: dense when ``chunk`` is None (or covers all rows), chunked otherwise."""
    if chunk is None or chunk >= k.shape[0]:
        return row_losses_dense(k, q, labels, mode, inv_tau)
    return row_losses_chunked(k, q, labels, mode, inv_tau, chunk)


def reduce_losses(
    losses: Tensor, weights: Tensor | None, valid: Tensor | None, reduction: str
) -> Tensor:
    """Weighted reduction of per-row losses; rows with ``valid == False`` contribute nothing.

    ``"mean"`` is ``sum_i w_i l_i / sum_i w_i`` (0, not NaN, when the weights sum to 0);
    ``"sum"`` is ``sum_i w_i l_i``; ``"none"`` returns ``w_i l_i`` (0 for invalid rows).
    """
    w: Tensor | None = None
    if weights is not None:
        w = weights.to(losses.dtype)
    if valid is not None:
        vw = valid.to(losses.dtype)
        w = vw if w is None else w * vw
    weighted = losses if w is None else losses * w
    if reduction == "none":
        return weighted
    total = weighted.sum()
    if reduction == "sum":
        return total
    if w is None:
        return total / losses.shape[0]
    denom = w.sum()
    safe = torch.where(denom != 0, denom, torch.ones_like(denom))
    return total / safe
