"""MinkUNet (Res16UNet) sparse 3D backbones on spconv or on PyTorch alone.

The layout follows MinkowskiEngine's ``Res16UNetBase`` as used by PointContrast, SLidR and OLIVINE
(``model/res16unet.py``), rewritten with spconv 2.x layers. ``backend="torch"`` builds the same
network from :mod:`olivine_models.point.sparse_torch` (same layer classes, arguments, indice keys
and weight layout, PyTorch operations only), so one state dict loads into both backends:

=============================  =====================================================================
MinkowskiEngine                here (spconv)
=============================  =====================================================================
``conv0p1s1`` k=3 (no bias)    ``SubMConv3d(k=3)`` at stride 1
``convXpYs2`` k=2, s=2         ``SparseConv3d(k=2, s=2)`` (indice key ``down{level}``)
``convtrXpYs2`` k=2, s=2       ``SparseInverseConv3d(k=2)`` with the same indice key, so the output
                               sites are exactly the sites that entered the matching down conv
BasicBlock k=3 convs           ``SubMConv3d(k=3)`` (shared indice key per resolution)
block shortcut conv k=1        ``SubMConv3d(k=1)`` + BN when the width changes
``ME.cat`` skip connection     feature concatenation (rows are aligned, see below)
``MinkowskiBatchNorm``         ``torch.nn.BatchNorm1d`` on the features
=============================  =====================================================================

BatchNorm momentum: ``MinkowskiBatchNorm(n, momentum=m)`` forwards ``m`` to
``torch.nn.BatchNorm1d`` unchanged, so the reference ``bn_momentum: 0.05`` is already in torch's
convention (``running = (1 - m) * running + m * batch``); we pass 0.05 to ``BatchNorm1d`` as is.

Row order: submanifold convolutions keep their input sites in order, and an inverse convolution
returns exactly the site list (and order) that entered its paired down convolution. The output of
the network therefore has one row per input voxel, in the order of ``coords``.

Algorithm choice (spconv backend): spconv's CPU path implements only ``ConvAlgo.Native``. Every
forward call picks the algorithm from the device of its input (Native on CPU,
``MaskImplicitGemm`` on CUDA by default) and sets it on all sparse layers; weights are stored in
one layout for all algorithms (spconv >= 2.2, KRSC), so the same state dict runs on both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from olivine_models._spconv import require_spconv
from olivine_models.point import sparse_torch
from olivine_models.point.backends import SparseBackend, sparse_layers, switch_spconv_algo
from olivine_models.point.sparse_input import validate_sparse_input

__all__ = ["MinkUNet", "MinkUNetConfig", "MINKUNET_CONFIGS", "validate_sparse_input"]

DEFAULT_BN_MOMENTUM = 0.05
"""BatchNorm momentum of the reference pretraining config, in torch's convention (module doc)."""

NUM_LEVELS = 4
"""Number of stride-2 down/up sampling stages; spatial shapes are padded to a multiple of 2**4."""


@dataclass(frozen=True)
class MinkUNetConfig:
    """Layout of a Res16UNet-style network.

    Attributes:
        layers: number of BasicBlocks in block1..block8 (four encoder, four decoder stages).
        planes: output width of block1..block8 (``planes[4:]`` are also the widths of the
            transposed convolutions that feed blocks 5..8).
        init_dim: width of the stem convolution (``INIT_DIM``).
        kernel_size: kernel of the stem and block convolutions (3 in the reference).
    """

    layers: tuple[int, int, int, int, int, int, int, int]
    planes: tuple[int, int, int, int, int, int, int, int]
    init_dim: int = 32
    kernel_size: int = 3

    def __post_init__(self) -> None:
        if len(self.layers) != 8 or len(self.planes) != 8:
            raise ValueError(
                f"MinkUNetConfig needs 8 layer counts and 8 plane widths, got "
                f"{len(self.layers)} and {len(self.planes)}"
            )
        if any(int(n) < 1 for n in self.layers) or any(int(p) < 1 for p in self.planes):
            raise ValueError(
                f"MinkUNetConfig layers and planes must be >= 1, got {self.layers}, {self.planes}"
            )
        if self.init_dim < 1 or self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(
                f"MinkUNetConfig needs init_dim >= 1 and an odd kernel_size, got "
                f"init_dim={self.init_dim}, kernel_size={self.kernel_size}"
            )


_PLANES_34C = (32, 64, 128, 256, 256, 128, 96, 96)

MINKUNET_CONFIGS: dict[str, MinkUNetConfig] = {
    # MinkowskiEngine Res16UNet34C: the OLIVINE / SLidR / PointContrast backbone.
    "minkunet34c": MinkUNetConfig(layers=(2, 3, 4, 6, 2, 2, 2, 2), planes=_PLANES_34C),
    # Res16UNet18 / Res16UNet14 depths with the 34C widths, so that they are drop-in (96 outputs).
    "minkunet18": MinkUNetConfig(layers=(2, 2, 2, 2, 2, 2, 2, 2), planes=_PLANES_34C),
    "minkunet14": MinkUNetConfig(layers=(1, 1, 1, 1, 1, 1, 1, 1), planes=_PLANES_34C),
    # A very small network for tests and the CPU demo.
    "minkunet_tiny": MinkUNetConfig(
        layers=(1, 1, 1, 1, 1, 1, 1, 1), planes=(8, 16, 16, 32, 32, 16, 16, 16), init_dim=8
    ),
}


class _BasicBlock(nn.Module):
    """ResNet BasicBlock of submanifold convolutions (ME ``BasicBlock``, no bias, BN)."""

    def __init__(
        self,
        spconv: Any,
        inplanes: int,
        planes: int,
        kernel_size: int,
        indice_key: str,
        bn_momentum: float,
        conv_kw: dict[str, Any],
    ) -> None:
        super().__init__()
        self.conv1 = spconv.SubMConv3d(
            inplanes, planes, kernel_size, bias=False, indice_key=indice_key, **conv_kw
        )
        self.norm1 = nn.BatchNorm1d(planes, momentum=bn_momentum)
        self.conv2 = spconv.SubMConv3d(
            planes, planes, kernel_size, bias=False, indice_key=indice_key, **conv_kw
        )
        self.norm2 = nn.BatchNorm1d(planes, momentum=bn_momentum)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.ModuleList | None = None
        if inplanes != planes:
            # ME: conv(kernel_size=1, bias=False) + BN. A 1x1 submanifold conv is a per-site matmul.
            self.downsample = nn.ModuleList(
                [
                    spconv.SubMConv3d(inplanes, planes, 1, bias=False, **conv_kw),
                    nn.BatchNorm1d(planes, momentum=bn_momentum),
                ]
            )

    def forward(self, x: Any) -> Any:
        identity = x.features
        out = self.conv1(x)
        out = out.replace_feature(self.relu(self.norm1(out.features)))
        out = self.conv2(out)
        feats = self.norm2(out.features)
        if self.downsample is not None:
            identity = self.downsample[1](self.downsample[0](x).features)
        return out.replace_feature(self.relu(feats + identity))


class MinkUNet(nn.Module):
    """Res16UNet-style sparse UNet (spconv or the PyTorch-only backend).

    Args:
        in_channels: number of input features per voxel (1 = lidar intensity in the reference).
        config: the layout; see :data:`MINKUNET_CONFIGS`.
        bn_momentum: BatchNorm momentum in torch's convention (0.05 as in the reference).
        gpu_algo: spconv algorithm used for CUDA inputs (CPU always uses ``Native``); unused by
            the torch backend.
        name: model name used in error messages.
        backend: ``"auto"`` (spconv when it imports, else torch; logged), ``"spconv"`` or
            ``"torch"`` (:mod:`olivine_models.point.sparse_torch`, never imports spconv). The
            chosen one is :attr:`sparse_backend`.

    ``forward(coords, feats, spatial_shape, batch_size)`` returns ``(V, out_channels)`` features,
    one row per input voxel in the order of ``coords``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        config: MinkUNetConfig | None = None,
        bn_momentum: float = DEFAULT_BN_MOMENTUM,
        gpu_algo: str = "MaskImplicitGemm",
        name: str = "minkunet",
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.sparse_backend: SparseBackend
        self.sparse_backend, spconv, conv_kw = sparse_layers(backend)
        algo = conv_kw.get("algo")
        if int(in_channels) < 1:
            raise ValueError(f"{name}: in_channels must be >= 1, got {in_channels}")
        if not 0.0 < bn_momentum < 1.0:
            raise ValueError(f"{name}: bn_momentum must be in (0, 1), got {bn_momentum}")
        cfg = config if config is not None else MINKUNET_CONFIGS["minkunet34c"]
        self.name = name
        self.config = cfg
        self.in_channels = int(in_channels)
        self.out_channels = int(cfg.planes[7])
        self.bn_momentum = float(bn_momentum)
        self.gpu_algo = gpu_algo
        self._algo = algo
        self._conv_kw = conv_kw
        k = cfg.kernel_size
        planes, layers = cfg.planes, cfg.layers
        m = self.bn_momentum

        def bn(c: int) -> nn.BatchNorm1d:
            return nn.BatchNorm1d(c, momentum=m)

        self.inplanes = cfg.init_dim
        self.conv0p1s1 = spconv.SubMConv3d(
            self.in_channels, cfg.init_dim, k, bias=False, indice_key="subm1", **conv_kw
        )
        self.bn0 = bn(cfg.init_dim)
        # Encoder: four stride-2 stages (ME kernel_size=2, stride=2, no bias).
        self.down_convs = nn.ModuleList()
        self.down_bns = nn.ModuleList()
        self.enc_blocks = nn.ModuleList()
        for level in range(NUM_LEVELS):
            self.down_convs.append(
                spconv.SparseConv3d(
                    self.inplanes,
                    self.inplanes,
                    2,
                    stride=2,
                    bias=False,
                    indice_key=f"down{level + 1}",
                    **conv_kw,
                )
            )
            self.down_bns.append(bn(self.inplanes))
            self.enc_blocks.append(
                self._make_layer(spconv, planes[level], layers[level], f"subm{2 ** (level + 1)}", m)
            )
        # Decoder: transposed (inverse) convs back to the sites of the matching encoder level,
        # concatenated with the encoder skip, then a stage of blocks.
        skip_widths = [cfg.init_dim, planes[0], planes[1], planes[2]]
        self.up_convs = nn.ModuleList()
        self.up_bns = nn.ModuleList()
        self.dec_blocks = nn.ModuleList()
        for j in range(NUM_LEVELS):
            level = NUM_LEVELS - j  # 4, 3, 2, 1: undoes down{level}
            width = planes[4 + j]
            self.up_convs.append(
                spconv.SparseInverseConv3d(
                    self.inplanes, width, 2, bias=False, indice_key=f"down{level}", **conv_kw
                )
            )
            self.up_bns.append(bn(width))
            self.inplanes = width + skip_widths[level - 1]
            self.dec_blocks.append(
                self._make_layer(spconv, width, layers[4 + j], f"subm{2 ** (level - 1)}", m)
            )
        self.relu = nn.ReLU(inplace=True)

    def _make_layer(
        self, spconv: Any, planes: int, blocks: int, indice_key: str, bn_momentum: float
    ) -> nn.ModuleList:
        layer = nn.ModuleList()
        for _ in range(blocks):
            layer.append(
                _BasicBlock(
                    spconv,
                    self.inplanes,
                    planes,
                    self.config.kernel_size,
                    indice_key,
                    bn_momentum,
                    self._conv_kw,
                )
            )
            self.inplanes = planes
        return layer

    def _set_algo(self, device: torch.device) -> None:
        if self.sparse_backend == "spconv":
            self._algo = switch_spconv_algo(self, device, self.gpu_algo, self._algo)

    def forward(
        self,
        coords: torch.Tensor,
        feats: torch.Tensor,
        spatial_shape: Sequence[int],
        batch_size: int,
    ) -> torch.Tensor:
        """Per-voxel features.

        Args:
            coords: ``(V, 4)`` int32 ``[batch, i, j, k]``, non-negative, unique rows.
            feats: ``(V, in_channels)`` float features.
            spatial_shape: grid size ``(I, J, K)``; every coordinate must be below it. It is padded
                internally to a multiple of 16 so that the four stride-2 stages lose no site.
            batch_size: number of scans (``coords[:, 0] < batch_size``).

        Returns:
            ``(V, out_channels)`` features in the row order of ``coords``.
        """
        shape = validate_sparse_input(
            self.name, coords, feats, spatial_shape, batch_size, self.in_channels
        )
        mult = 2**NUM_LEVELS
        padded = [((s + mult - 1) // mult) * mult for s in shape]
        self._set_algo(feats.device)
        spconv = require_spconv() if self.sparse_backend == "spconv" else sparse_torch
        x = spconv.SparseConvTensor(
            feats.contiguous(), coords.contiguous(), padded, int(batch_size)
        )
        x = self.conv0p1s1(x)
        x = x.replace_feature(self.relu(self.bn0(x.features)))
        skips = [x]
        for level in range(NUM_LEVELS):
            x = self.down_convs[level](x)
            x = x.replace_feature(self.relu(self.down_bns[level](x.features)))
            for block in cast(nn.ModuleList, self.enc_blocks[level]):
                x = block(x)
            skips.append(x)
        skips.pop()  # the bottleneck output is not a skip
        for j in range(NUM_LEVELS):
            x = self.up_convs[j](x)
            x = x.replace_feature(self.relu(self.up_bns[j](x.features)))
            skip = skips[NUM_LEVELS - 1 - j]
            x = x.replace_feature(torch.cat([x.features, skip.features], dim=1))
            for block in cast(nn.ModuleList, self.dec_blocks[j]):
                x = block(x)
        out: torch.Tensor = x.features
        return out

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, in_channels={self.in_channels}, "
            f"out_channels={self.out_channels}, layers={self.config.layers}, "
            f"planes={self.config.planes}, init_dim={self.config.init_dim}, "
            f"sparse_backend={self.sparse_backend!r}"
        )
