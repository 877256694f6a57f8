"""From the VoxelNet's sparse output to per-point features: the OLIVINE pretraining heads, the
BEV map and the bilinear point sampling (github.com/Eaphan/OLIVINE ``model/spconv_backbone.py``
``VoxelNet`` / ``HeightCompression`` and ``pretrain/lightning_trainer_spconv.py``
``interpolate_from_bev_features``).

* :class:`SparseBEVHead`: ``SparseConv3d(128, 64, 1, bias=False)`` on ``conv_out``'s sparse output
  (a per-voxel matmul; spconv 2.3 reads the ``(64, 1, 1, 1, 128)`` weight memory as ``(128, 64)``,
  and so do we), then L2 normalisation per voxel.
* :func:`height_compression`: the sparse tensor made dense, ``(B, C, D, H, W)`` viewed as ``(B,
  C * D, H, W)`` (OpenPCDet's ``HeightCompression``; empty cells are 0).
* :func:`sample_bev`: a point at ``(x, y)`` reads the map at column ``u = (x - x_min) / vx / 8``
  and row ``v = (y - y_min) / vy / 8``, bilinearly: what ``grid_sample(align_corners=True)`` gives,
  except that the reference returns **0** when ``u`` or ``v`` is outside ``[0, W - 1)`` / ``[0, H -
  1)`` (its clamped corner weights cancel), e.g. on the last 0.8 m of the range. No normalisation
  follows the sampling, as in the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BEVGrid", "SparseBEVHead", "height_compression", "sample_bev"]


@dataclass(frozen=True)
class BEVGrid:
    """Where a BEV map's cells are: ``x_min``, ``y_min`` and the voxel size in metres, and the
    backbone's stride (8 for the VoxelNet). The reference: ``(-51.2, -51.2, 0.1, 0.1, 8)``.
    """

    x_min: float = -51.2
    y_min: float = -51.2
    voxel_x: float = 0.1
    voxel_y: float = 0.1
    stride: int = 8

    def __post_init__(self) -> None:
        if self.voxel_x <= 0 or self.voxel_y <= 0 or self.stride < 1:
            raise ValueError(
                f"BEVGrid: voxel sizes must be > 0 and stride >= 1, got {self.voxel_x}, "
                f"{self.voxel_y}, {self.stride}"
            )


class SparseBEVHead(nn.Module):
    """A 1x1x1 sparse convolution without bias, then L2 normalisation per voxel (the reference's
    ``final`` / ``final_class_level``). Works on the sparse tensors of both backends.

    The parameter is ``weight``, ``(out, 1, 1, 1, in)`` like spconv's ``SparseConv3d``.
    """

    def __init__(self, in_channels: int = 128, out_channels: int = 64) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(
                f"SparseBEVHead: channels must be >= 1, got {in_channels}, {out_channels}"
            )
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.weight = nn.Parameter(torch.empty(out_channels, 1, 1, 1, in_channels))
        bound = 1.0 / in_channels**0.5  # kaiming_uniform_(a=sqrt(5)), spconv's default init
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)

    def forward(self, x: Any) -> Any:
        """Same sites, ``(V, out_channels)`` unit-norm features."""
        feats = x.features
        if feats.shape[1] != self.in_channels:
            raise ValueError(
                f"SparseBEVHead: expected {self.in_channels} channels, got {tuple(feats.shape)}"
            )
        w = self.weight.reshape(self.in_channels, self.out_channels).to(feats.dtype)
        return x.replace_feature(F.normalize(torch.mm(feats, w), dim=1))


def height_compression(x: Any) -> torch.Tensor:
    """``(B, C * D, H, W)`` dense map of a sparse tensor with ``[b, z, y, x]`` indices; channel
    ``c * D + d`` holds channel ``c`` at height ``d`` (OpenPCDet's ``dense().view``).
    """
    feats, idx = x.features, x.indices.long()
    d, h, w = (int(s) for s in x.spatial_shape)
    b, c = int(x.batch_size), int(feats.shape[1])
    dense = feats.new_zeros(b, d, h, w, c)
    dense[idx[:, 0], idx[:, 1], idx[:, 2], idx[:, 3]] = feats
    return dense.permute(0, 4, 1, 2, 3).reshape(b, c * d, h, w)


def sample_bev(
    bev: torch.Tensor, xy: torch.Tensor, batch_index: torch.Tensor, grid: BEVGrid = BEVGrid()
) -> torch.Tensor:
    """``(N, C)`` bilinear samples of ``bev`` ``(B, C, H, W)`` at the points' ``xy`` ``(N, 2)``
    (metres) of scans ``batch_index`` ``(N,)`` (module docstring; all points at once).
    """
    if bev.ndim != 4:
        raise ValueError(f"sample_bev: bev must be (B, C, H, W), got {tuple(bev.shape)}")
    if xy.ndim != 2 or xy.shape[1] != 2 or batch_index.shape != xy.shape[:1]:
        raise ValueError(
            f"sample_bev: xy must be (N, 2) and batch_index (N,), got {tuple(xy.shape)} and "
            f"{tuple(batch_index.shape)}"
        )
    b, c, h, w = (int(s) for s in bev.shape)
    pos = xy.to(torch.float32)
    u = (pos[:, 0] - grid.x_min) / grid.voxel_x / grid.stride  # column (x)
    v = (pos[:, 1] - grid.y_min) / grid.voxel_y / grid.stride  # row (y)
    valid = (u >= 0) & (u < w - 1) & (v >= 0) & (v < h - 1)
    u = torch.where(valid, u, torch.zeros_like(u))
    v = torch.where(valid, v, torch.zeros_like(v))
    u0, v0 = u.floor(), v.floor()
    fu, fv = (u - u0).unsqueeze(1), (v - v0).unsqueeze(1)
    base = (batch_index.long() * h + v0.long()) * w + u0.long()  # top-left corner
    flat = bev.permute(0, 2, 3, 1).reshape(b * h * w, c)
    top = flat[base] * (1 - fu) + flat[base + 1] * fu
    bottom = flat[base + w] * (1 - fu) + flat[base + w + 1] * fu
    out = top * (1 - fv) + bottom * fv
    return out * valid.unsqueeze(1).to(out.dtype)
