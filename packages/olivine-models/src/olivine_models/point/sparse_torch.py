"""Sparse 3D convolutions from PyTorch operations only (no spconv, no compiled extension).

The layers mirror the spconv 2.x classes that :class:`~olivine_models.point.minkunet.MinkUNet` is
built from (``SubMConv3d``, ``SparseConv3d``, ``SparseInverseConv3d`` and ``SparseConvTensor``),
with the same constructor arguments (minus spconv's ``algo``), the same ``indice_key`` sharing and
the same weight layout, so one state dict loads into either backend:

* weights are ``(out, kD, kH, kW, in)`` (spconv >= 2.2 "KRSC" layout, for all three layer types,
  inverse convolutions included), with kernel axes in the order of the coordinate columns
  ``[batch, i, j, k]`` -> ``(kD, kH, kW)`` = ``(i, j, k)``;
* a submanifold convolution (Graham et al., "3D Semantic Segmentation with Submanifold Sparse
  Convolutional Networks", CVPR 2018) is a cross-correlation: output site ``x`` receives
  ``W[:, a, b, c, :] @ f(x + (a, b, c) - (k - 1) / 2)`` at the input sites only;
* a strided convolution with kernel 2 and stride 2 maps site ``x`` to ``x // 2`` with the weight
  at offset ``x - 2 (x // 2)``;
* an inverse convolution with the same ``indice_key`` sends each coarse feature back to exactly
  the fine sites (and row order) that entered the paired strided convolution, with the weight at
  the same offset: ``out(x) = W[:, x - 2 (x // 2), :] @ f(x // 2)`` (spconv's
  ``SparseInverseConv3d``; MinkowskiEngine's ``MinkowskiConvolutionTranspose`` on the coordinate
  map of the finer level).

* a 1x1x1 convolution reads its ``(out, 1, 1, 1, in)`` weight memory as an ``(in, out)`` matrix,
  as spconv 2.3 does (``torch.mm(features, weight.view(in, out))`` in ``spconv/pytorch/conv.py``).

Kernel maps (for every kernel offset, the pairs ``(input row, output row)``) are built with
vectorised torch operations: coordinates are packed into one int64 key per site, the keys are
sorted once, and the shifted keys of half of the submanifold offsets are looked up together with
``torch.searchsorted`` (the other half are the same pairs mirrored) — no Python loop over sites.
A map is stored in the tensor's ``indice_dict`` under the layer's ``indice_key`` and is shared by
every later tensor of the same forward pass, as in spconv, so each resolution is hashed once.

The convolution itself is gather -> per-offset GEMM -> scatter-add (``index_select``, ``mm``,
``index_add_``; the "Native" algorithm of spconv and the gather-scatter dataflow of TorchSparse,
Tang et al., MLSys 2022), in chunks of about one layer's size. It is a
:class:`torch.autograd.Function` that saves only its input features and weight and regathers in
backward, so activation memory stays close to spconv's. Under ``torch.autocast`` the GEMMs run in
the autocast dtype (e.g. bfloat16) and the layer returns that dtype; gradients come back in the
dtype of each input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = [
    "KERNEL_MAP_LABEL",
    "KernelMap",
    "SparseConvTensor",
    "SparseConv3d",
    "SparseInverseConv3d",
    "SubMConv3d",
    "downsample_kernel_map",
    "sparse_conv",
    "submanifold_kernel_map",
]


KERNEL_MAP_LABEL = "sparse_torch.kernel_map"
"""``torch.profiler`` label around kernel-map building (``benchmarks/sparse_backend_bench.py``)."""


@dataclass(eq=False)
class KernelMap:
    """Input/output row pairs of a sparse convolution, grouped by kernel offset.

    Attributes:
        in_rows: ``(M,)`` int64 input rows; the pairs of offset ``offsets[g]`` are
            ``in_rows[bounds[g]:bounds[g + 1]]``.
        out_rows: ``(M,)`` int64 output rows, aligned with ``in_rows``.
        offsets: flat kernel offset index of each group (row-major over ``(kD, kH, kW)``).
        bounds: ``len(offsets) + 1`` start positions of the groups in ``in_rows``.
        num_in: number of input sites.
        num_out: number of output sites.
        kernel_volume: ``kD * kH * kW``.
        identity_offset: for a submanifold map, the centre offset whose pairs are ``(r, r)`` for
            every row; it is not stored in the pairs but applied as one dense GEMM. ``None`` for
            strided and inverse maps.
    """

    in_rows: torch.Tensor
    out_rows: torch.Tensor
    offsets: list[int]
    bounds: list[int]
    num_in: int
    num_out: int
    kernel_volume: int
    identity_offset: int | None = None

    def transposed(self) -> KernelMap:
        """The map of the transposed convolution (inputs and outputs swapped, same offsets)."""
        return KernelMap(
            in_rows=self.out_rows,
            out_rows=self.in_rows,
            offsets=list(self.offsets),
            bounds=list(self.bounds),
            num_in=self.num_out,
            num_out=self.num_in,
            kernel_volume=self.kernel_volume,
            identity_offset=self.identity_offset,
        )


@dataclass(eq=False)
class _DownRecord:
    """What a strided convolution leaves under its ``indice_key`` for the inverse convolution."""

    kernel_map: KernelMap
    kernel_size: tuple[int, int, int]
    fine_indices: torch.Tensor
    fine_shape: tuple[int, int, int]


@dataclass(eq=False)
class _SubmRecord:
    kernel_map: KernelMap
    kernel_size: tuple[int, int, int]
    num_sites: int


def _triple(value: int | Sequence[int], what: str) -> tuple[int, int, int]:
    if isinstance(value, int):
        return (value, value, value)
    out = tuple(int(v) for v in value)
    if len(out) != 3:
        raise ValueError(f"{what} must be an int or 3 ints, got {value!r}")
    return (out[0], out[1], out[2])


def _pack(indices: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """``(N, 4)`` ``[b, i, j, k]`` -> ``(N,)`` int64 keys ``((b * I + i) * J + j) * K + k``."""
    c = indices.to(torch.int64)
    return ((c[:, 0] * shape[0] + c[:, 1]) * shape[1] + c[:, 2]) * shape[2] + c[:, 3]


def _offset_grid(kernel: tuple[int, int, int], device: torch.device) -> torch.Tensor:
    """``(kD*kH*kW, 3)`` kernel offsets in row-major (weight) order, each axis ``0..k-1``."""
    axes = [torch.arange(k, device=device) for k in kernel]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)


def submanifold_kernel_map(
    indices: torch.Tensor, spatial_shape: Sequence[int], kernel_size: tuple[int, int, int]
) -> KernelMap:
    """Kernel map of a submanifold convolution (outputs = inputs, odd kernel, centred).

    Sites are packed into int64 keys on the grid grown by a margin of ``(k - 1) / 2`` cells on
    every side, so a neighbour key never wraps into another row of the grid and out-of-grid
    neighbours are simply absent. The keys are sorted once; for each offset ``d`` of one half of
    the kernel the sorted keys shifted by ``d`` (still sorted) are looked up in one
    ``searchsorted``. A pair found at ``+d`` (output ``o``, input ``o + d``) is also the pair of the
    mirrored offset ``-d`` with the roles swapped, so only half of the offsets are searched.
    """
    if any(k % 2 == 0 for k in kernel_size):
        raise ValueError(f"a submanifold convolution needs an odd kernel, got {kernel_size}")
    device = indices.device
    n = int(indices.shape[0])
    half = [(k - 1) // 2 for k in kernel_size]
    grown = [int(s) + 2 * h for s, h in zip(spatial_shape, half)]
    shifted = indices.to(torch.int64) + torch.tensor([0, *half], device=device)
    sorted_keys, order = torch.sort(_pack(shifted, grown))
    volume = kernel_size[0] * kernel_size[1] * kernel_size[2]
    identity = (volume - 1) // 2  # the all-zero offset in row-major order of an odd kernel
    grid = _offset_grid(kernel_size, device)[:identity]  # the first half; mirrors: volume-1-k
    delta = grid - torch.tensor(half, device=device)
    step = (delta[:, 0] * grown[1] + delta[:, 1]) * grown[2] + delta[:, 2]  # (H,)
    query = sorted_keys.unsqueeze(0) + step.unsqueeze(1)  # (H, N), each row sorted
    pos = torch.searchsorted(sorted_keys, query).clamp_(max=max(n - 1, 0))
    found = sorted_keys[pos] == query
    counts = found.sum(dim=1).tolist()  # one host sync per map
    neighbour = order[pos][found]  # input rows of offset k (= output rows of its mirror)
    centre = order.expand(identity, n)[found]
    offsets: list[int] = []
    bounds = [0]
    for k in range(identity):
        if counts[k]:
            offsets.append(k)
            bounds.append(bounds[-1] + int(counts[k]))
    for k in reversed(range(identity)):  # mirrored offsets, volume - 1 - k, from the same pairs
        if counts[k]:
            offsets.append(volume - 1 - k)
            bounds.append(bounds[-1] + int(counts[k]))
    # mirrored half: the same pairs with input/output swapped, rows in reversed offset order
    starts = [0]
    for c in counts:
        starts.append(starts[-1] + int(c))
    rev = [torch.arange(starts[k], starts[k + 1], device=device) for k in reversed(range(identity))]
    perm = torch.cat(rev) if rev else torch.zeros(0, dtype=torch.int64, device=device)
    in_rows = torch.cat([neighbour, centre[perm]])
    out_rows = torch.cat([centre, neighbour[perm]])
    return KernelMap(
        in_rows=in_rows,
        out_rows=out_rows,
        offsets=offsets,
        bounds=bounds,
        num_in=n,
        num_out=n,
        kernel_volume=volume,
        identity_offset=identity,
    )


def downsample_kernel_map(
    indices: torch.Tensor, spatial_shape: Sequence[int], kernel_size: tuple[int, int, int]
) -> tuple[KernelMap, torch.Tensor, tuple[int, int, int]]:
    """Kernel map of a convolution whose stride equals its kernel (no padding, no dilation).

    Every input site ``x`` feeds exactly one output site ``x // s`` through the offset
    ``x - s (x // s)``, so the output sites are the distinct parents of the input sites
    (MinkowskiEngine's and spconv's strided ``k = s`` convolution). Returns the map, the
    ``(N_out, 4)`` int32 output indices (sorted by packed key) and the output spatial shape.
    """
    shape = [int(s) for s in spatial_shape]
    out_shape = (
        shape[0] // kernel_size[0],
        shape[1] // kernel_size[1],
        shape[2] // kernel_size[2],
    )
    c = indices.to(torch.int64)
    stride = torch.tensor(kernel_size, device=indices.device)
    parent = c[:, 1:] // stride
    local = c[:, 1:] - parent * stride
    offset = (local[:, 0] * kernel_size[1] + local[:, 1]) * kernel_size[2] + local[:, 2]
    parent_idx = torch.cat([c[:, :1], parent], dim=1)
    parent_keys = _pack(parent_idx, out_shape)
    uniq, out_rows = torch.unique(parent_keys, sorted=True, return_inverse=True)
    # decode the unique parent keys back into [b, i, j, k]
    k = uniq % out_shape[2]
    rest = uniq // out_shape[2]
    j = rest % out_shape[1]
    rest = rest // out_shape[1]
    i = rest % out_shape[0]
    b = rest // out_shape[0]
    out_indices = torch.stack([b, i, j, k], dim=1).to(torch.int32)
    volume = kernel_size[0] * kernel_size[1] * kernel_size[2]
    order = torch.argsort(offset, stable=True)
    counts = torch.bincount(offset, minlength=volume).tolist()
    offsets = [g for g, m in enumerate(counts) if m > 0]
    bounds = [0]
    for g in offsets:
        bounds.append(bounds[-1] + int(counts[g]))
    kmap = KernelMap(
        in_rows=order,
        out_rows=out_rows[order],
        offsets=offsets,
        bounds=bounds,
        num_in=int(indices.shape[0]),
        num_out=int(uniq.shape[0]),
        kernel_volume=volume,
    )
    return kmap, out_indices, out_shape


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


@dataclass(eq=False)
class SparseConvTensor:
    """Sparse features on integer sites, API-compatible with spconv's ``SparseConvTensor``.

    Args:
        features: ``(N, C)`` floating features, one row per site.
        indices: ``(N, 4)`` int32 ``[batch, i, j, k]``, unique rows, inside ``spatial_shape``.
        spatial_shape: grid size ``(I, J, K)``.
        batch_size: number of batch elements.
        indice_dict: kernel maps by ``indice_key``, shared by the tensors of one forward pass.
    """

    features: torch.Tensor
    indices: torch.Tensor
    spatial_shape: Sequence[int]
    batch_size: int
    indice_dict: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.indices.ndim != 2 or self.indices.shape[1] != 4:
            raise ValueError(
                f"SparseConvTensor: indices must be (N, 4) [batch, i, j, k], got "
                f"{tuple(self.indices.shape)}"
            )
        if self.features.ndim != 2 or self.features.shape[0] != self.indices.shape[0]:
            raise ValueError(
                f"SparseConvTensor: features must be (N={self.indices.shape[0]}, C), got "
                f"{tuple(self.features.shape)}"
            )
        self.spatial_shape = tuple(int(s) for s in self.spatial_shape)

    def replace_feature(self, features: torch.Tensor) -> SparseConvTensor:
        """Same sites and kernel maps, new features (spconv's ``replace_feature``)."""
        return SparseConvTensor(
            features, self.indices, self.spatial_shape, self.batch_size, self.indice_dict
        )


class _SparseConvBase(nn.Module):
    """Shared parameters of the three layer types: a KRSC weight and an optional bias."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        bias: bool,
        indice_key: str | None,
    ) -> None:
        super().__init__()
        if int(in_channels) < 1 or int(out_channels) < 1:
            raise ValueError(
                f"{type(self).__name__}: channels must be >= 1, got in={in_channels}, "
                f"out={out_channels}"
            )
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = _triple(kernel_size, "kernel_size")
        if min(self.kernel_size) < 1:
            raise ValueError(f"{type(self).__name__}: kernel_size must be >= 1, got {kernel_size}")
        self.indice_key = indice_key
        self.weight = nn.Parameter(
            torch.empty(self.out_channels, *self.kernel_size, self.in_channels)
        )
        self.bias: nn.Parameter | None = (
            nn.Parameter(torch.zeros(self.out_channels)) if bias else None
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-uniform over ``fan_in = in * kD * kH * kW`` (torch's ``ConvNd`` default)."""
        fan_in = self.in_channels * self.kernel_size[0] * self.kernel_size[1] * self.kernel_size[2]
        bound = 1.0 / fan_in**0.5
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)  # = kaiming_uniform_(a=sqrt(5)) for this fan-in
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    def _apply_conv(self, feats: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
        if feats.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__}: expected {self.in_channels} input channels, got features "
                f"of shape {tuple(feats.shape)}"
            )
        out = sparse_conv(feats, self.weight, kmap)
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"bias={self.bias is not None}, indice_key={self.indice_key!r}"
        )


class SubMConv3d(_SparseConvBase):
    """Submanifold 3D convolution (spconv ``SubMConv3d``): outputs at the input sites only.

    Layers with the same ``indice_key`` share one kernel map per forward pass.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        bias: bool = True,
        indice_key: str | None = None,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, bias, indice_key)
        if any(k % 2 == 0 for k in self.kernel_size):
            raise ValueError(f"SubMConv3d needs an odd kernel_size, got {self.kernel_size}")

    def forward(self, x: SparseConvTensor) -> SparseConvTensor:
        """Convolve ``x`` at its own sites."""
        n = int(x.indices.shape[0])
        if self.kernel_size == (1, 1, 1):
            # spconv 2.3 runs a 1x1x1 convolution as ``torch.mm(features, weight.view(in, out))``
            # (``spconv/pytorch/conv.py``, ``FILTER_HWIO = False``): the (out, 1, 1, 1, in)
            # parameter's memory is read as an (in, out) matrix, not as its transpose. Reading it
            # the same way keeps checkpoints interchangeable between the backends.
            w = self.weight.reshape(self.in_channels, self.out_channels)
            feats = torch.mm(x.features, w.to(x.features.dtype))  # autocast may recast both
            if self.bias is not None:
                feats = feats + self.bias.to(feats.dtype)
            return x.replace_feature(feats)
        record = x.indice_dict.get(self.indice_key) if self.indice_key is not None else None
        if record is not None:
            if not isinstance(record, _SubmRecord) or record.num_sites != n:
                raise ValueError(
                    f"SubMConv3d: indice_key {self.indice_key!r} already holds a "
                    f"{type(record).__name__.strip('_')} for different sites; use one key per "
                    "resolution"
                )
            if record.kernel_size != self.kernel_size:
                raise ValueError(
                    f"SubMConv3d: indice_key {self.indice_key!r} was built for kernel "
                    f"{record.kernel_size}, this layer has {self.kernel_size}"
                )
            kmap = record.kernel_map
        else:
            with torch.profiler.record_function(KERNEL_MAP_LABEL):
                kmap = submanifold_kernel_map(x.indices, x.spatial_shape, self.kernel_size)
            if self.indice_key is not None:
                x.indice_dict[self.indice_key] = _SubmRecord(kmap, self.kernel_size, n)
        return x.replace_feature(self._apply_conv(x.features, kmap))


class SparseConv3d(_SparseConvBase):
    """Strided sparse 3D convolution with ``stride == kernel_size`` (spconv ``SparseConv3d``).

    This is the down-sampling convolution of MinkUNet (kernel 2, stride 2). The kernel map and the
    fine sites are stored under ``indice_key`` for :class:`SparseInverseConv3d`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        bias: bool = True,
        indice_key: str | None = None,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, bias, indice_key)
        self.stride = _triple(stride, "stride")
        if self.stride != self.kernel_size:
            raise ValueError(
                "SparseConv3d (torch backend) implements stride == kernel_size (the MinkUNet "
                f"down-sampling), got kernel_size={self.kernel_size}, stride={self.stride}"
            )

    def forward(self, x: SparseConvTensor) -> SparseConvTensor:
        """Down-sample: one output site per occupied ``stride``-cell."""
        shape = tuple(int(s) for s in x.spatial_shape)
        if any(s % k for s, k in zip(shape, self.kernel_size)):
            raise ValueError(
                f"SparseConv3d: spatial_shape {shape} must be a multiple of the stride "
                f"{self.kernel_size} (pad it)"
            )
        with torch.profiler.record_function(KERNEL_MAP_LABEL):
            kmap, out_indices, out_shape = downsample_kernel_map(x.indices, shape, self.kernel_size)
        if self.indice_key is not None:
            x.indice_dict[self.indice_key] = _DownRecord(
                kmap, self.kernel_size, x.indices, (shape[0], shape[1], shape[2])
            )
        feats = self._apply_conv(x.features, kmap)
        return SparseConvTensor(feats, out_indices, out_shape, x.batch_size, x.indice_dict)


class SparseInverseConv3d(_SparseConvBase):
    """Inverse of the strided convolution with the same ``indice_key`` (spconv's class).

    The output has exactly the sites, row order and spatial shape of the tensor that entered the
    paired :class:`SparseConv3d`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        indice_key: str,
        bias: bool = True,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, bias, indice_key)
        if not indice_key:
            raise ValueError("SparseInverseConv3d needs the indice_key of its strided convolution")

    def forward(self, x: SparseConvTensor) -> SparseConvTensor:
        """Up-sample back to the fine sites recorded under ``indice_key``."""
        key = str(self.indice_key)
        record = x.indice_dict.get(key)
        if not isinstance(record, _DownRecord):
            raise ValueError(
                f"SparseInverseConv3d: no strided convolution recorded under indice_key {key!r} "
                f"(recorded keys: {sorted(x.indice_dict)})"
            )
        if record.kernel_size != self.kernel_size:
            raise ValueError(
                f"SparseInverseConv3d: indice_key {key!r} was a kernel {record.kernel_size} "
                f"convolution, this layer has kernel {self.kernel_size}"
            )
        if record.kernel_map.num_out != int(x.indices.shape[0]):
            raise ValueError(
                f"SparseInverseConv3d: input has {x.indices.shape[0]} sites, the strided "
                f"convolution {key!r} produced {record.kernel_map.num_out}"
            )
        feats = self._apply_conv(x.features, record.kernel_map.transposed())
        return SparseConvTensor(
            feats, record.fine_indices, record.fine_shape, x.batch_size, x.indice_dict
        )
