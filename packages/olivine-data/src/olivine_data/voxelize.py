"""Voxelisation of a point cloud into a sparse integer grid (cylindrical or Cartesian).

Grid coordinates, before the offset:
    ``mode="cylindrical"`` (reference default): ``(floor(rho / s0), floor(phi_deg / s1),
    floor(z / s2))`` with ``rho = sqrt(x^2 + y^2)`` in metres, ``phi = atan2(y, x)`` in degrees
    (-180, 180], ``voxel_size = (0.1 m, 1 degree, 0.1 m)``.
    ``mode="cartesian"``: ``floor(xyz / voxel_size)`` (``voxel_size`` in metres per axis, e.g.
    ``(0.1, 0.1, 0.1)``).

Non-negative coordinates: the per-axis **minimum over this cloud** is subtracted
(``Voxelization.offset``); ``coords + offset`` gives back the raw floor coordinates. The offset is
per cloud, so the range column of cylindrical coords is *not* the range bin; DCAS reads range
from the points instead (``PretrainBatch.pair_range_bins``).

Representative point: the **first point in input order** that falls in the voxel (what
MinkowskiEngine's ``sparse_quantize(return_index=True)`` documents); voxel features and labels
are taken from it. Voxels are ordered by their linearised grid key (sorted, deterministic).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Voxelization", "voxelize", "grid_coordinates"]

_MODES = ("cylindrical", "cartesian")


@dataclass(frozen=True)
class Voxelization:
    """coords (V, 3) int32 >= 0; inverse (N,) int64 point -> voxel row; representative (V,)
    int64 index of the first input point of each voxel; offset (3,) int64 subtracted from the
    raw floor coordinates.
    """

    coords: np.ndarray
    inverse: np.ndarray
    representative: np.ndarray
    offset: np.ndarray
    mode: str
    voxel_size: tuple[float, float, float]

    @property
    def num_voxels(self) -> int:
        return int(self.coords.shape[0])


def _check(points_xyz: np.ndarray, mode: str, voxel_size: tuple[float, ...]) -> np.ndarray:
    pts = np.asarray(points_xyz)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points_xyz: expected shape (N, 3), got {pts.shape}")
    if not np.issubdtype(pts.dtype, np.floating):
        raise TypeError(f"points_xyz: expected a float array, got {pts.dtype}")
    if not np.isfinite(pts).all():
        raise ValueError("points_xyz: contains NaN/inf values")
    if mode not in _MODES:
        raise ValueError(f"mode: expected one of {_MODES}, got {mode!r}")
    if len(voxel_size) != 3 or not all(float(s) > 0 for s in voxel_size):
        raise ValueError(f"voxel_size: expected 3 positive sizes, got {voxel_size!r}")
    return pts.astype(np.float64, copy=False)


def grid_coordinates(
    points_xyz: np.ndarray,
    mode: str = "cylindrical",
    voxel_size: tuple[float, float, float] = (0.1, 1.0, 0.1),
) -> np.ndarray:
    """Raw (un-offset) ``(N, 3)`` int64 floor coordinates of every point."""
    pts = _check(points_xyz, mode, voxel_size)
    s = np.asarray(voxel_size, dtype=np.float64)
    if mode == "cylindrical":
        x, y, z = pts.T
        c = np.stack([np.hypot(x, y), np.degrees(np.arctan2(y, x)), z], axis=1)
    else:
        c = pts
    return np.floor(c / s).astype(np.int64)


def voxelize(
    points_xyz: np.ndarray,
    mode: str = "cylindrical",
    voxel_size: tuple[float, float, float] = (0.1, 1.0, 0.1),
) -> Voxelization:
    """Quantise ``(N, 3)`` points; see the module docstring for conventions."""
    q = grid_coordinates(points_xyz, mode, voxel_size)
    vs = (float(voxel_size[0]), float(voxel_size[1]), float(voxel_size[2]))
    if q.shape[0] == 0:
        empty = np.zeros(0, np.int64)
        return Voxelization(
            np.zeros((0, 3), np.int32), empty, empty, np.zeros(3, np.int64), mode, vs
        )
    offset = q.min(axis=0)
    q -= offset
    dims = q.max(axis=0) + 1
    if float(dims[0]) * float(dims[1]) * float(dims[2]) >= 2.0**62 or dims.max() >= 2**31:
        raise ValueError(f"voxel grid too large {tuple(dims.tolist())}: check voxel_size/units")
    key = (q[:, 0] * dims[1] + q[:, 1]) * dims[2] + q[:, 2]
    # return_index gives the first occurrence (stable sort) -> first point in input order.
    _, rep, inv = np.unique(key, return_index=True, return_inverse=True)
    return Voxelization(
        coords=q[rep].astype(np.int32),
        inverse=inv.astype(np.int64).reshape(-1),
        representative=rep.astype(np.int64),
        offset=offset,
        mode=mode,
        voxel_size=vs,
    )
