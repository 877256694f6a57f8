"""Sparse 3D convolutions from PyTorch operations only (no spconv, no compiled extension).

The layers mirror the spconv 2.x classes that :class:`~olivine_models.point.minkunet.MinkUNet` and
:class:`~olivine_models.point.voxelnet.VoxelNet` are built from (``SubMConv3d``, ``SparseConv3d``,
``SparseInverseConv3d`` and ``SparseConvTensor``), with the same constructor arguments (minus
spconv's ``algo``), the same ``indice_key`` sharing and the same weight layout, so one state dict
loads into either backend:

* weights are ``(out, kD, kH, kW, in)`` (spconv >= 2.2 "KRSC" layout, for all three layer types,
  inverse convolutions included), with kernel axes in the order of the coordinate columns
  ``[batch, i, j, k]`` -> ``(kD, kH, kW)`` = ``(i, j, k)``;
* a submanifold convolution (Graham et al., "3D Semantic Segmentation with Submanifold Sparse
  Convolutional Networks", CVPR 2018) is a cross-correlation: output site ``x`` receives
  ``W[:, a, b, c, :] @ f(x + (a, b, c) - (k - 1) / 2)`` at the input sites only;
* a strided convolution with per-axis kernel ``k``, stride ``s`` and padding ``p`` has an output
  site ``o`` wherever some input ``x`` satisfies ``o * s = x + p - a`` for a kernel offset
  ``0 <= a < k`` (weight ``W[:, a, :]``), on the grid ``floor((n + 2p - k) / s) + 1`` (spconv's
  ``SparseConv3d``); with ``k = s`` and ``p = 0`` this is ``x -> x // s`` at offset
  ``x - s (x // s)``;
* an inverse convolution with the same ``indice_key`` sends each coarse feature back to exactly
  the fine sites (and row order) that entered the paired strided convolution, with the weight at
  the same offset: ``out(x) = W[:, x - 2 (x // 2), :] @ f(x // 2)`` (spconv's
  ``SparseInverseConv3d``; MinkowskiEngine's ``MinkowskiConvolutionTranspose`` on the coordinate
  map of the finer level);
* a 1x1x1 convolution (submanifold, or strided with stride 1 and no padding) reads its
  ``(out, 1, 1, 1, in)`` weight memory as an ``(in, out)`` matrix, as spconv 2.3 does
  (``torch.mm(features, weight.view(in, out))`` in ``spconv/pytorch/conv.py``).

Kernel maps (:mod:`olivine_models.point.sparse_maps`: for every kernel offset, the pairs ``(input
row, output row)``) are built with vectorised torch operations. A map is stored in the tensor's
``indice_dict`` under the layer's ``indice_key`` and is shared by every later tensor of the same
forward pass, as in spconv, so each resolution is hashed once. The convolution itself
(:mod:`olivine_models.point.sparse_ops`) is gather -> per-offset GEMM -> scatter-add.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from olivine_models.point.sparse_maps import (
    KernelMap,
    _triple,
    downsample_kernel_map,
    strided_kernel_map,
    submanifold_kernel_map,
)
from olivine_models.point.sparse_ops import sparse_conv

__all__ = [
    "KERNEL_MAP_LABEL",
    "KernelMap",
    "SparseConvTensor",
    "SparseConv3d",
    "SparseInverseConv3d",
    "SubMConv3d",
    "downsample_kernel_map",
    "sparse_conv",
    "strided_kernel_map",
    "submanifold_kernel_map",
]


KERNEL_MAP_LABEL = "sparse_torch.kernel_map"
"""``torch.profiler`` label around kernel-map building (``benchmarks/sparse_backend_bench.py``)."""


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
    """Strided sparse 3D convolution (spconv ``SparseConv3d``): per-axis kernel, stride and
    padding, dilation 1.

    ``stride == kernel_size`` without padding is MinkUNet's down-sampling (one output site per
    occupied cell; the spatial shape must then be a multiple of the stride, so that no site is
    lost); any other combination follows spconv's output-site rule (module docstring), e.g.
    OpenPCDet's ``(3, 3, 3)`` / stride 2 / padding 1 and ``(3, 1, 1)`` / stride ``(2, 1, 1)``. A
    1x1x1 convolution with stride 1 keeps the sites (a per-site matmul). The kernel map and the fine
    sites are stored under ``indice_key`` for :class:`SparseInverseConv3d`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
        bias: bool = True,
        indice_key: str | None = None,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, bias, indice_key)
        self.stride = _triple(stride, "stride")
        self.padding = _triple(padding, "padding")
        if _triple(dilation, "dilation") != (1, 1, 1):
            raise ValueError(f"SparseConv3d (torch backend) needs dilation 1, got {dilation}")
        if min(self.stride) < 1 or min(self.padding) < 0:
            raise ValueError(
                f"SparseConv3d: stride must be >= 1 and padding >= 0, got stride={self.stride}, "
                f"padding={self.padding}"
            )
        self._pointwise = self.kernel_size == (1, 1, 1) and self.stride == (1, 1, 1)
        if self._pointwise and self.padding != (0, 0, 0):
            raise ValueError("SparseConv3d: padding must be zero for a 1x1x1 stride-1 convolution")

    def forward(self, x: SparseConvTensor) -> SparseConvTensor:
        """Convolve onto the output sites (module docstring)."""
        shape = tuple(int(s) for s in x.spatial_shape)
        if self._pointwise:  # spconv's conv1x1 path: same sites, weight memory read as (in, out)
            w = self.weight.reshape(self.in_channels, self.out_channels)
            feats = torch.mm(x.features, w.to(x.features.dtype))
            if self.bias is not None:
                feats = feats + self.bias.to(feats.dtype)
            return x.replace_feature(feats)
        down = self.stride == self.kernel_size and self.padding == (0, 0, 0)
        if down and any(s % k for s, k in zip(shape, self.kernel_size)):
            raise ValueError(
                f"SparseConv3d: spatial_shape {shape} must be a multiple of the stride "
                f"{self.kernel_size} (pad it), or the last cells would be dropped"
            )
        with torch.profiler.record_function(KERNEL_MAP_LABEL):
            if down:
                kmap, out_indices, out_shape = downsample_kernel_map(
                    x.indices, shape, self.kernel_size
                )
            else:
                kmap, out_indices, out_shape = strided_kernel_map(
                    x.indices, shape, self.kernel_size, self.stride, self.padding
                )
        if self.indice_key is not None:
            x.indice_dict[self.indice_key] = _DownRecord(
                kmap, self.kernel_size, x.indices, (shape[0], shape[1], shape[2])
            )
        feats = self._apply_conv(x.features, kmap)
        return SparseConvTensor(feats, out_indices, out_shape, x.batch_size, x.indice_dict)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, stride={self.stride}, padding={self.padding}"


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
