"""The arithmetic of the PyTorch-only sparse convolutions: gather -> per-offset GEMM -> scatter-add
over a :class:`~olivine_models.point.sparse_maps.KernelMap`.

``index_select``, ``mm`` and ``index_add_`` in chunks of about one layer's size (the "Native"
algorithm of spconv and the gather-scatter dataflow of TorchSparse, Tang et al., MLSys 2022). The
convolution is a :class:`torch.autograd.Function` that saves only its input features and weight
and regathers in backward, so activation memory stays close to spconv's. Under ``torch.autocast``
the GEMMs run in the autocast dtype (e.g. bfloat16) and the layer returns that dtype; gradients
come back in the dtype of each input.
"""

from __future__ import annotations

from typing import Any

import torch

from olivine_models.point.sparse_maps import KernelMap

__all__ = ["sparse_conv"]


def _chunks(kmap: KernelMap) -> list[tuple[int, int, list[tuple[int, int, int]]]]:
    """Consecutive offset groups batched into chunks of about ``max(num_in, num_out)`` pairs.

    Each chunk is ``(start, end, [(k, s, e), ...])`` with pair ranges relative to ``start``: one
    gather, a GEMM per offset and one scatter per chunk keep the number of small ops low while the
    transient buffers stay the size of the layer's own input/output (not of all its pairs).
    """
    cap = max(kmap.num_in, kmap.num_out, 4096)
    chunks: list[tuple[int, int, list[tuple[int, int, int]]]] = []
    start = 0
    groups: list[tuple[int, int, int]] = []
    for gi, k in enumerate(kmap.offsets):
        s, e = kmap.bounds[gi], kmap.bounds[gi + 1]
        if groups and e - start > cap:
            chunks.append((start, s, groups))
            start, groups = s, []
        groups.append((k, s - start, e - start))
    if groups:
        chunks.append((start, kmap.bounds[-1], groups))
    return chunks


def _gemm_forward(x: torch.Tensor, w: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
    """``out[o] += x[i] @ w[k]`` over the pairs ``(i, o, k)``: gather, GEMM per offset, scatter."""
    c_out = int(w.shape[2])
    if kmap.identity_offset is not None:
        out = torch.mm(x, w[kmap.identity_offset])
    else:
        out = x.new_zeros(kmap.num_out, c_out)
    for start, end, groups in _chunks(kmap):
        src = x.index_select(0, kmap.in_rows[start:end])
        prod = x.new_empty(end - start, c_out)
        for k, s, e in groups:
            torch.mm(src[s:e], w[k], out=prod[s:e])
        out.index_add_(0, kmap.out_rows[start:end], prod)
    return out


class _GatherGemmScatter(torch.autograd.Function):
    """Sparse convolution over a kernel map; saves only its inputs, regathers in backward."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        feats: torch.Tensor,
        weight: torch.Tensor,
        kmap: KernelMap,
        compute_dtype: torch.dtype,
    ) -> torch.Tensor:
        c_out = int(weight.shape[0])
        c_in = int(weight.shape[-1])
        # (out, kD, kH, kW, in) -> (K, in, out) in the compute dtype
        w = weight.reshape(c_out, kmap.kernel_volume, c_in).permute(1, 2, 0).to(compute_dtype)
        x = feats.to(compute_dtype)
        ctx.save_for_backward(x, w)
        ctx.kmap = kmap
        ctx.dtypes = (feats.dtype, weight.dtype)
        ctx.weight_shape = tuple(weight.shape)
        return _gemm_forward(x, w, kmap)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        x, w = ctx.saved_tensors
        kmap: KernelMap = ctx.kmap
        feats_dtype, weight_dtype = ctx.dtypes
        g = grad_out.to(w.dtype).contiguous()
        need_x, need_w = bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[1])
        grad_x: torch.Tensor | None = None
        grad_w: torch.Tensor | None = None
        if need_x:
            if kmap.identity_offset is not None:
                grad_x = torch.mm(g, w[kmap.identity_offset].t())
            else:
                grad_x = x.new_zeros(x.shape)
        if need_w:
            grad_w = torch.zeros(w.shape, dtype=w.dtype, device=w.device)
            if kmap.identity_offset is not None:
                torch.mm(x.t(), g, out=grad_w[kmap.identity_offset])
        for start, end, groups in _chunks(kmap):
            gathered_g = g.index_select(0, kmap.out_rows[start:end])
            if grad_w is not None:
                gathered_x = x.index_select(0, kmap.in_rows[start:end])
                for k, s, e in groups:
                    torch.mm(gathered_x[s:e].t(), gathered_g[s:e], out=grad_w[k])
                del gathered_x
            if grad_x is not None:
                prod = x.new_empty(end - start, x.shape[1])
                for k, s, e in groups:
                    torch.mm(gathered_g[s:e], w[k].t(), out=prod[s:e])
                grad_x.index_add_(0, kmap.in_rows[start:end], prod)
        out_x = grad_x.to(feats_dtype) if grad_x is not None else None
        out_w = (
            grad_w.permute(2, 0, 1).reshape(ctx.weight_shape).to(weight_dtype)
            if grad_w is not None
            else None
        )
        return out_x, out_w, None, None


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """The autocast dtype active for ``device_type``, or None (torch >= 2.4 API, older fallback)."""
    try:
        if not torch.is_autocast_enabled(device_type):
            return None
        return torch.get_autocast_dtype(device_type)
    except (TypeError, AttributeError, RuntimeError):  # torch < 2.4: per-device functions
        if device_type == "cuda" and torch.is_autocast_enabled():
            return torch.get_autocast_gpu_dtype()
        if device_type == "cpu" and torch.is_autocast_cpu_enabled():
            return torch.get_autocast_cpu_dtype()
        return None


def sparse_conv(feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
    """Apply a sparse convolution with a KRSC weight ``(out, kD, kH, kW, in)`` over a kernel map.

    Under ``torch.autocast`` on the features' device the GEMMs run in the autocast dtype and the
    result has that dtype; otherwise in the common dtype of ``feats`` and ``weight``.
    """
    if feats.ndim != 2 or feats.shape[0] != kmap.num_in:
        raise ValueError(
            f"sparse_conv: feats must have shape ({kmap.num_in}, C_in), got {tuple(feats.shape)}"
        )
    if weight.ndim != 5 or weight.shape[-1] != feats.shape[1]:
        raise ValueError(
            f"sparse_conv: weight must be (out, kD, kH, kW, in={feats.shape[1]}), got "
            f"{tuple(weight.shape)}"
        )
    volume = int(weight.shape[1] * weight.shape[2] * weight.shape[3])
    if volume != kmap.kernel_volume:
        raise ValueError(
            f"sparse_conv: weight kernel {tuple(weight.shape[1:4])} has {volume} offsets, the "
            f"kernel map has {kmap.kernel_volume}"
        )
    device_type = feats.device.type
    dtype = _autocast_dtype(device_type) or torch.promote_types(feats.dtype, weight.dtype)
    with torch.autocast(device_type, enabled=False):
        out: torch.Tensor = _GatherGemmScatter.apply(feats, weight, kmap, dtype)
    return out
