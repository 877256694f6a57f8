"""VoxelNet: OpenPCDet's ``VoxelBackBone8x`` (the SECOND / PV-RCNN 3D backbone) on spconv or on
PyTorch alone.

The OLIVINE detection student (github.com/Eaphan/OLIVINE ``model/spconv_backbone.py``, a copy of
github.com/open-mmlab/OpenPCDet ``pcdet/models/backbones_3d/spconv_backbone.py``). Layers, their
arguments and the parameter names are OpenPCDet's, so that ``state_dict()`` holds exactly the 72
tensors of ``VoxelBackBone8x`` (12 convolution weights, and weight, bias, running_mean,
running_var and num_batches_tracked of 12 BatchNorms), in spconv 2.x layout ``(out, k0, k1, k2,
in)`` over the coordinate axes ``(z, y, x)``:

==============  =================================================================================
``conv_input``  SubMConv3d(in, 16, 3, key ``subm1``) -> BN -> ReLU
``conv1``       [SubMConv3d(16, 16, 3, ``subm1``) -> BN -> ReLU]
``conv2``       [SparseConv3d(16, 32, 3, s 2, p 1, ``spconv2``), 2 x SubMConv3d(32, 32, ``subm2``)]
``conv3``       [SparseConv3d(32, 64, 3, s 2, p 1, ``spconv3``), 2 x SubMConv3d(64, 64, ``subm3``)]
``conv4``       [SparseConv3d(64, 64, 3, s 2, p (0, 1, 1), ``spconv4``), 2 x SubMConv3d(``subm4``)]
``conv_out``    SparseConv3d(64, 128, (3, 1, 1), s (2, 1, 1), p 0, ``spconv_down2``) -> BN -> ReLU
==============  =================================================================================

every block being conv (no bias) -> ``BatchNorm1d(eps=1e-3, momentum=0.01)`` -> ReLU. On the
reference grid ``(40, 1024, 1024)`` (z, y, x) the output is at stride 8 in y and x: ``(1, 128,
128)``; on OpenPCDet's KITTI grid ``(41, 1600, 1408)`` it is ``(2, 200, 176)``. The pretraining
heads, the BEV map and the point sampling are not part of this module
(:mod:`olivine_models.point.bev`), so a checkpoint of it is exactly an OpenPCDet backbone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from olivine_models._spconv import require_spconv
from olivine_models.point import sparse_torch
from olivine_models.point.backends import SparseBackend, sparse_layers, switch_spconv_algo
from olivine_models.point.sparse_input import validate_sparse_input

__all__ = [
    "VOXELNET_BN_EPS",
    "VOXELNET_BN_MOMENTUM",
    "VOXELNET_OUT_CHANNELS",
    "VOXELNET_STRIDE",
    "VoxelNet",
]

VOXELNET_BN_EPS = 1e-3
VOXELNET_BN_MOMENTUM = 0.01
"""OpenPCDet's ``norm_fn = partial(nn.BatchNorm1d, eps=1e-3, momentum=0.01)`` (torch convention)."""
VOXELNET_OUT_CHANNELS = 128
VOXELNET_STRIDE = 8
"""Down-sampling of ``conv_out``'s output in y and x (``encoded_spconv_tensor_stride``)."""


class _SparseSequential(nn.Sequential):
    """spconv's ``SparseSequential``: sparse layers take the tensor, BatchNorm and ReLU its
    features. Children are named ``0, 1, 2, ...`` as in ``nn.Sequential`` (and spconv).
    """

    def forward(self, x: Any) -> Any:  # type: ignore[override]
        for module in self:
            if isinstance(module, (nn.BatchNorm1d, nn.ReLU)):
                x = x.replace_feature(module(x.features))
            else:
                x = module(x)
        return x


class VoxelNet(nn.Module):
    """OpenPCDet ``VoxelBackBone8x`` (module docstring) on either sparse backend.

    Args:
        in_channels: features per voxel (4 = mean x, y, z, intensity; OpenPCDet's MeanVFE).
        backend: ``"auto"``, ``"spconv"`` or ``"torch"`` (as for
            :class:`~olivine_models.point.minkunet.MinkUNet`; same state dict on both).
        gpu_algo: spconv algorithm for CUDA inputs (CPU always uses ``Native``).
        bn_eps, bn_momentum: BatchNorm settings (OpenPCDet's 1e-3 and 0.01 by default).
        name: model name used in error messages.

    ``forward(coords, feats, spatial_shape, batch_size)`` takes ``(V, 4)`` int32 ``[batch, z, y,
    x]`` voxel coordinates and returns ``conv_out``'s sparse tensor (the backend's
    ``SparseConvTensor``: ``features`` ``(V', 128)``, ``indices``, ``spatial_shape``), OpenPCDet's
    ``encoded_spconv_tensor``.
    """

    out_channels = VOXELNET_OUT_CHANNELS
    stride = VOXELNET_STRIDE

    def __init__(
        self,
        in_channels: int = 4,
        backend: str = "auto",
        gpu_algo: str = "MaskImplicitGemm",
        bn_eps: float = VOXELNET_BN_EPS,
        bn_momentum: float = VOXELNET_BN_MOMENTUM,
        name: str = "voxelnet",
    ) -> None:
        super().__init__()
        if int(in_channels) < 1:
            raise ValueError(f"{name}: in_channels must be >= 1, got {in_channels}")
        if not 0.0 < bn_momentum < 1.0 or bn_eps <= 0:
            raise ValueError(
                f"{name}: bn_momentum must be in (0, 1) and bn_eps > 0, got {bn_momentum}, {bn_eps}"
            )
        self.sparse_backend: SparseBackend
        self.sparse_backend, sp, kw = sparse_layers(backend)
        self._algo = kw.get("algo")
        self.name, self.in_channels, self.gpu_algo = name, int(in_channels), gpu_algo

        def bn(c: int) -> nn.BatchNorm1d:
            return nn.BatchNorm1d(c, eps=bn_eps, momentum=bn_momentum)

        def subm(cin: int, cout: int, key: str) -> _SparseSequential:
            conv = sp.SubMConv3d(cin, cout, 3, bias=False, indice_key=key, **kw)
            return _SparseSequential(conv, bn(cout), nn.ReLU())

        def down(cin: int, cout: int, padding: Sequence[int] | int, key: str) -> _SparseSequential:
            conv = sp.SparseConv3d(
                cin, cout, 3, stride=2, padding=padding, bias=False, indice_key=key, **kw
            )
            return _SparseSequential(conv, bn(cout), nn.ReLU())

        self.conv_input = subm(self.in_channels, 16, "subm1")
        self.conv1 = _SparseSequential(subm(16, 16, "subm1"))
        self.conv2 = _SparseSequential(
            down(16, 32, 1, "spconv2"), subm(32, 32, "subm2"), subm(32, 32, "subm2")
        )
        self.conv3 = _SparseSequential(
            down(32, 64, 1, "spconv3"), subm(64, 64, "subm3"), subm(64, 64, "subm3")
        )
        self.conv4 = _SparseSequential(
            down(64, 64, (0, 1, 1), "spconv4"), subm(64, 64, "subm4"), subm(64, 64, "subm4")
        )
        self.conv_out = _SparseSequential(
            sp.SparseConv3d(
                64,
                VOXELNET_OUT_CHANNELS,
                (3, 1, 1),
                stride=(2, 1, 1),
                padding=0,
                bias=False,
                indice_key="spconv_down2",
                **kw,
            ),
            bn(VOXELNET_OUT_CHANNELS),
            nn.ReLU(),
        )

    def forward(
        self,
        coords: torch.Tensor,
        feats: torch.Tensor,
        spatial_shape: Sequence[int],
        batch_size: int,
    ) -> Any:
        """``conv_out``'s sparse tensor (class docstring); ``spatial_shape`` is ``(z, y, x)``."""
        shape = validate_sparse_input(
            self.name, coords, feats, spatial_shape, batch_size, self.in_channels
        )
        if self.sparse_backend == "spconv":
            self._algo = switch_spconv_algo(self, feats.device, self.gpu_algo, self._algo)
        layers = require_spconv() if self.sparse_backend == "spconv" else sparse_torch
        x = layers.SparseConvTensor(
            feats.contiguous(), coords.contiguous(), list(shape), int(batch_size)
        )
        x = self.conv_input(x)
        for stage in (self.conv1, self.conv2, self.conv3, self.conv4, self.conv_out):
            x = stage(x)
        return x

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, in_channels={self.in_channels}, out_channels="
            f"{self.out_channels}, stride={self.stride}, sparse_backend={self.sparse_backend!r}"
        )
