"""Row-wise contrastive losses over the logit matrix ``L = k q^T / tau`` (internal).

Every contrastive loss in this package is, per anchor row ``i`` of ``L``,

* ``"diag"``: ``lse_j L_ij - L_ii`` (InfoNCE with diagonal positives),
* ``"sum"``:  ``lse_j L_ij - lse_{j in A(i)} L_ij`` (``-log sum_{A(i)} softmax_i``),
* ``"mean"``: ``lse_j L_ij - mean_{j in A(i)} L_ij`` (SupCon's mean of log-probabilities),

with ``A(i) = {j : label_j = label_i}`` (which contains ``i``).

One fused autograd function computes all of them, block of rows by block of rows:

* forward: ``E = exp(L - m)`` with ``m`` the row maximum (computed in place on the matmul output,
  so no raw exponential of a logit is ever formed and nothing overflows), ``s = sum_j E_ij``,
  ``lse = m + log s``; positives come from per-class sums (``"sum"``: one small ``E @ onehot``
  matmul when there are few classes; ``"mean"``: class sums of ``q``, no ``M x M`` work at all);
* backward: ``dL_ij = g_i (softmax_i(L)_j - w_ij)``, with ``w`` the positive weights of the mode,
  again block by block. The diagonal and ``"mean"`` parts of ``w`` are applied through ``O(M D)``
  class sums instead of an ``M x M`` matrix.

``save_matrix=True`` (the default, ``chunk_size=None``) keeps ``E`` (``M x M``) for the backward;
otherwise each block of logits is recomputed in the backward from ``k`` and ``q`` and peak memory is
``O(M * block)``. Both give the same values and gradients up to float rounding.

Rows of ``"sum"`` whose positive mass underflows relative to the row maximum (only possible when
positives are ~87 nats below the best negative in float32, i.e. far from unit-norm features) are
recomputed exactly with a masked log-sum-exp, in the forward and in the backward.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar, cast

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

Mode = Literal["diag", "sum", "mean"]
_P = ParamSpec("_P")
_R = TypeVar("_R")
_MODES = ("diag", "sum", "mean")
_ONEHOT_MAX_CLASSES = 128  # above this, "sum" uses an M x block mask instead of E @ onehot
_DENSE_BLOCK = 1024  # rows per block when the whole matrix is kept (bounds the temporaries)


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Disable autocast inside the kernel: its matmuls must run in the compute dtype (an fp16
    logit matrix would overflow), whatever AMP context the caller is in.
    """
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except RuntimeError:  # a device type without autocast support
        return contextlib.nullcontext()


def _autocast_off(
    fn: Callable[Concatenate[Any, Tensor, _P], _R],
) -> Callable[Concatenate[Any, Tensor, _P], _R]:
    """Run an autograd ``forward(ctx, k, ...)`` / ``backward(ctx, grad, ...)`` without autocast
    on the device of its first tensor (see :func:`_no_autocast`).
    """

    @functools.wraps(fn)
    def run(ctx: Any, first: Tensor, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with _no_autocast(first.device):
            return fn(ctx, first, *args, **kwargs)

    return run


def _underflow_threshold(dtype: torch.dtype) -> float:
    # below this a sum of exp(L - max) has lost relative precision (subnormal range ahead)
    return float(torch.finfo(dtype).tiny) * 2.0**24


class _Classes:
    """Per-call label bookkeeping: dense class ids, counts, one-hot (when small)."""

    def __init__(self, labels: Tensor, dtype: torch.dtype) -> None:
        uniq, inv = torch.unique(labels, return_inverse=True)
        self.inv: Tensor = inv
        self.num = int(uniq.shape[0])
        self.counts = torch.bincount(inv, minlength=self.num).to(dtype)
        self.onehot: Tensor | None = None
        if self.num <= _ONEHOT_MAX_CLASSES:
            self.onehot = torch.nn.functional.one_hot(inv, self.num).to(dtype)

    def mask(self, rows: slice) -> Tensor:
        return self.inv[rows, None] == self.inv[None, :]


def _positive_stats(e_blk: Tensor, rows: slice, classes: _Classes) -> Tensor:
    """``sum_{j in A(i)} E_ij`` for the rows of the block."""
    if classes.onehot is not None:
        per_class = e_blk @ classes.onehot  # (c, K)
        return per_class.gather(1, classes.inv[rows, None]).squeeze(1)
    return torch.where(classes.mask(rows), e_blk, torch.zeros_like(e_blk)).sum(dim=1)


def _exact_sum_rows(
    ks: Tensor, q: Tensor, classes: _Classes, idx: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Exact (logits, mask, lse over positives) for a few rows ``idx`` (underflow fallback)."""
    logits = ks[idx] @ q.T
    mask = classes.inv[idx, None] == classes.inv[None, :]
    lse_pos = torch.logsumexp(logits.masked_fill(~mask, float("-inf")), dim=1)
    return logits, mask, lse_pos


class _RowLosses(torch.autograd.Function):
    @staticmethod
    @_autocast_off
    def forward(
        ctx: FunctionCtx,
        k: Tensor,
        q: Tensor,
        labels: Tensor | None,
        mode: str,
        inv_tau: float,
        block: int,
        save_matrix: bool,
    ) -> Tensor:
        m_rows, _ = k.shape
        ks = k * inv_tau  # scale once: L = (k / tau) q^T
        classes = _Classes(labels, k.dtype) if labels is not None else None
        row_max = k.new_empty(m_rows)
        lse_all = k.new_empty(m_rows)
        pos = k.new_empty(m_rows)  # "diag": L_ii, "sum": lse over A(i), "mean": mean over A(i)
        matrix = k.new_empty(m_rows, m_rows) if save_matrix else None
        exact_idx: list[Tensor] = []
        thresh = _underflow_threshold(k.dtype)

        q_class: Tensor | None = None
        if mode == "mean":
            assert classes is not None
            q_class = torch.zeros(classes.num, q.shape[1], dtype=q.dtype, device=q.device)
            q_class = q_class.index_add(0, classes.inv, q)

        for start in range(0, m_rows, block):
            rows = slice(start, min(start + block, m_rows))
            e_blk = matrix[rows] if matrix is not None else None
            e_blk = torch.mm(ks[rows], q.T, out=e_blk) if e_blk is not None else ks[rows] @ q.T
            mx = e_blk.amax(dim=1)
            e_blk.sub_(mx[:, None]).exp_()  # E = exp(L - max) <= 1
            s_all = e_blk.sum(dim=1)
            row_max[rows] = mx
            lse_all[rows] = mx + torch.log(s_all)
            if mode == "sum":
                assert classes is not None
                s_pos = _positive_stats(e_blk, rows, classes)
                pos[rows] = mx + torch.log(s_pos)
                bad = (s_pos < thresh).nonzero().squeeze(1)
                if bad.numel() > 0:
                    idx = bad + start
                    _, _, lse_pos = _exact_sum_rows(ks, q, classes, idx)
                    pos[idx] = lse_pos
                    exact_idx.append(idx)
        if mode == "diag":
            pos = (ks * q).sum(dim=1)
        elif mode == "mean":
            assert classes is not None and q_class is not None
            pos = (ks * q_class[classes.inv]).sum(dim=1) / classes.counts[classes.inv]

        exact = torch.cat(exact_idx) if exact_idx else k.new_empty(0, dtype=torch.long)
        ctx.save_for_backward(k, q, row_max, lse_all, pos, exact)
        ctx.matrix = matrix  # type: ignore[attr-defined]
        ctx.classes = classes  # type: ignore[attr-defined]
        ctx.q_class = q_class  # type: ignore[attr-defined]
        ctx.mode = mode  # type: ignore[attr-defined]
        ctx.inv_tau = inv_tau  # type: ignore[attr-defined]
        ctx.block = block  # type: ignore[attr-defined]
        return lse_all - pos

    @staticmethod
    @once_differentiable
    @_autocast_off
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        k, q, row_max, lse_all, pos, exact = ctx.saved_tensors
        matrix: Tensor | None = ctx.matrix
        classes: _Classes | None = ctx.classes
        mode: str = ctx.mode
        inv_tau: float = ctx.inv_tau
        block: int = ctx.block
        m_rows = k.shape[0]
        ks = k * inv_tau
        scale = grad_out * inv_tau  # dl_i/dL_ij * g_i, folded with dL/dk = G q / tau
        grad_k = torch.empty_like(k)
        grad_q = torch.zeros_like(q)
        # 1 / sum_j exp(L_ij - max_i): softmax_i = E_ij * inv_all_i
        inv_all = torch.exp(row_max - lse_all)
        inv_pos = torch.exp(row_max - pos) if mode == "sum" else None
        is_exact = torch.zeros(m_rows, dtype=torch.bool, device=k.device)
        is_exact[exact] = True

        for start in range(0, m_rows, block):
            rows = slice(start, min(start + block, m_rows))
            if matrix is not None:
                e_blk = matrix[rows]
            else:
                e_blk = ks[rows] @ q.T
                e_blk.sub_(row_max[rows, None]).exp_()
            sc = scale[rows, None]
            if mode == "sum":
                assert classes is not None and inv_pos is not None
                a = inv_all[rows, None] * sc
                b = inv_pos[rows, None] * sc
                g_blk = e_blk * torch.where(classes.mask(rows), a - b, a)
                local_exact = is_exact[rows].nonzero().squeeze(1)
                if local_exact.numel() > 0:
                    idx = local_exact + start
                    logits, mask, _ = _exact_sum_rows(ks, q, classes, idx)
                    soft = torch.exp(logits - lse_all[idx, None])
                    soft_pos = torch.exp(logits.masked_fill(~mask, float("-inf")) - pos[idx, None])
                    g_blk[local_exact] = (soft - soft_pos) * sc[local_exact]
            else:
                g_blk = e_blk * (inv_all[rows, None] * sc)
            grad_k[rows] = g_blk @ q
            grad_q.addmm_(g_blk.T, k[rows])

        # the positive weights that are cheap in O(M D): the diagonal, and the "mean" mode
        if mode == "diag":
            grad_k -= scale[:, None] * q
            grad_q -= scale[:, None] * k
        elif mode == "mean":
            assert classes is not None
            q_class: Tensor = ctx.q_class
            per = scale / classes.counts[classes.inv]
            grad_k -= per[:, None] * q_class[classes.inv]
            k_class = torch.zeros_like(q_class).index_add(0, classes.inv, per[:, None] * k)
            grad_q -= k_class[classes.inv]
        need_k, need_q = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        return (
            grad_k if need_k else None,
            grad_q if need_q else None,
            None,
            None,
            None,
            None,
            None,
        )


def row_losses(
    k: Tensor,
    q: Tensor,
    labels: Tensor | None,
    mode: Mode,
    inv_tau: float,
    chunk: int | None,
) -> Tensor:
    """Per-row losses ``(M,)``.

    ``chunk=None`` keeps the ``M x M`` matrix of ``exp(L - max)`` for the backward (fastest);
    an int recomputes it block by block in the backward (``O(M * chunk)`` memory).
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if mode != "diag" and labels is None:
        raise ValueError(f"mode {mode!r} needs labels")
    m_rows = k.shape[0]
    if chunk is None:
        block, save = min(m_rows, _DENSE_BLOCK), True
    else:
        block, save = min(m_rows, chunk), False
    # Function.apply is untyped in some torch releases (2.13) and typed in others (2.14): a cast
    # keeps mypy --strict clean on both columns of the test matrix.
    apply = cast(Callable[..., Tensor], _RowLosses.apply)
    return apply(k, q, labels, mode, inv_tau, block, save)


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
