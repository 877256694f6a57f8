"""Kernel maps of the PyTorch-only sparse convolutions: which input row feeds which output row
through which kernel offset, built with vectorised torch operations (no Python loop over sites).

Coordinates are ``(N, 4)`` ``[batch, i, j, k]``; kernel offsets are flat indices, row-major over
``(kD, kH, kW)`` (the weight layout of :mod:`olivine_models.point.sparse_torch`). Three maps:

* :func:`submanifold_kernel_map`: outputs = inputs, odd kernel, centred (Graham et al., CVPR 2018);
* :func:`downsample_kernel_map`: ``stride == kernel``, no padding: ``x -> x // s`` at offset
  ``x - s (x // s)`` (MinkUNet's down-sampling);
* :func:`strided_kernel_map`: any per-axis kernel, stride and padding (dilation 1), spconv 2.x
  ``SparseConv3d`` semantics: output site ``o`` exists when some input ``x`` and offset ``a``
  satisfy ``o * s = x + p - a`` with ``0 <= o < floor((n + 2p - k) / s) + 1`` per axis, and the pair
  uses weight offset ``a`` (the VoxelNet's ``k = 3, s = 2, p = 1`` and ``(3, 1, 1)`` convolutions).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "KernelMap",
    "conv_output_shape",
    "downsample_kernel_map",
    "strided_kernel_map",
    "submanifold_kernel_map",
]


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
    volume = kernel_size[0] * kernel_size[1] * kernel_size[2]
    rows = torch.arange(int(indices.shape[0]), device=indices.device)
    kmap = _grouped(
        rows, out_rows.reshape(-1), offset, volume, int(indices.shape[0]), int(uniq.shape[0])
    )
    return kmap, _decode(uniq, out_shape), out_shape


def conv_output_shape(
    spatial_shape: Sequence[int],
    kernel_size: tuple[int, int, int],
    stride: tuple[int, int, int],
    padding: tuple[int, int, int],
) -> tuple[int, int, int]:
    """``floor((n + 2p - k) / s) + 1`` per axis (spconv's ``get_conv_output_size``, dilation 1).

    Raises:
        ValueError: an axis would have no output site.
    """
    out = tuple(
        (int(n) + 2 * p - k) // s + 1
        for n, k, s, p in zip(spatial_shape, kernel_size, stride, padding)
    )
    if min(out) < 1:
        raise ValueError(
            f"sparse convolution: spatial_shape {tuple(spatial_shape)} is too small for kernel "
            f"{kernel_size}, stride {stride}, padding {padding} (output shape {out})"
        )
    return (out[0], out[1], out[2])


def _decode(keys: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Inverse of :func:`_pack`: ``(N,)`` keys -> ``(N, 4)`` int32 ``[b, i, j, k]``."""
    k = keys % shape[2]
    rest = keys // shape[2]
    j = rest % shape[1]
    rest = rest // shape[1]
    i = rest % shape[0]
    b = rest // shape[0]
    return torch.stack([b, i, j, k], dim=1).to(torch.int32)


def _grouped(
    in_rows: torch.Tensor,
    out_rows: torch.Tensor,
    offset: torch.Tensor,
    volume: int,
    num_in: int,
    num_out: int,
) -> KernelMap:
    """A :class:`KernelMap` from unordered ``(in, out, offset)`` triples (stable by offset)."""
    order = torch.argsort(offset, stable=True)
    counts = torch.bincount(offset, minlength=volume).tolist()
    offsets = [g for g, m in enumerate(counts) if m > 0]
    bounds = [0]
    for g in offsets:
        bounds.append(bounds[-1] + int(counts[g]))
    return KernelMap(
        in_rows=in_rows[order],
        out_rows=out_rows[order],
        offsets=offsets,
        bounds=bounds,
        num_in=num_in,
        num_out=num_out,
        kernel_volume=volume,
    )


def strided_kernel_map(
    indices: torch.Tensor,
    spatial_shape: Sequence[int],
    kernel_size: tuple[int, int, int],
    stride: tuple[int, int, int],
    padding: tuple[int, int, int],
) -> tuple[KernelMap, torch.Tensor, tuple[int, int, int]]:
    """Kernel map of a general strided sparse convolution (module docstring; dilation 1).

    All ``N x kD kH kW`` candidate pairs are formed at once (``o * s = x + p - a``), the valid ones
    kept, and the output sites are the distinct valid ``[b, o]``, sorted by packed key. Returns the
    map, the ``(N_out, 4)`` int32 output indices and the output spatial shape.
    """
    out_shape = conv_output_shape(spatial_shape, kernel_size, stride, padding)
    device = indices.device
    c = indices.to(torch.int64)
    grid = _offset_grid(kernel_size, device)  # (K, 3)
    s = torch.tensor(stride, device=device)
    numer = c[:, None, 1:] + torch.tensor(padding, device=device) - grid[None]  # (N, K, 3)
    o = torch.div(numer, s, rounding_mode="floor")
    ok = ((numer - o * s) == 0).all(dim=-1) & (o >= 0).all(dim=-1)
    ok &= (o < torch.tensor(out_shape, device=device)).all(dim=-1)
    rows, offs = ok.nonzero(as_tuple=True)
    parent = torch.cat([c[rows, :1], o[rows, offs]], dim=1)
    uniq, out_rows = torch.unique(_pack(parent, out_shape), sorted=True, return_inverse=True)
    volume = kernel_size[0] * kernel_size[1] * kernel_size[2]
    kmap = _grouped(
        rows, out_rows.reshape(-1), offs, volume, int(indices.shape[0]), int(uniq.shape[0])
    )
    return kmap, _decode(uniq, out_shape), out_shape
