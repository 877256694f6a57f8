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

Range: every grid coordinate ``c / s`` must lie in the int32 range (coordinates are stored as
int32), and the grid that the cloud spans must have fewer than ``2^62`` cells (the linearised key
is an int64). A point outside (e.g. ``x = 1e30``, which would overflow the int64 cast and silently
scramble the grid) raises ``ValueError`` naming the sample (``what``), the point and its value.
The readers already refuse coordinates beyond ``olivine_data._io.MAX_ABS_COORDINATE`` (1e6 m),
naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Voxelization", "voxelize", "grid_coordinates"]

_MODES = ("cylindrical", "cartesian")
_AXES = {"cylindrical": ("rho", "phi", "z"), "cartesian": ("x", "y", "z")}
_MAX_GRID_INDEX = float(2**31 - 1)  # coords are stored as int32


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


def _check(
    points_xyz: np.ndarray, mode: str, voxel_size: tuple[float, ...], what: str
) -> np.ndarray:
    pts = np.asarray(points_xyz)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"{what}: expected points of shape (N, 3), got {pts.shape}")
    if not np.issubdtype(pts.dtype, np.floating):
        raise TypeError(f"{what}: expected a float array of points, got {pts.dtype}")
    if not np.isfinite(pts).all():
        raise ValueError(f"{what}: points contain NaN/inf values")
    if mode not in _MODES:
        raise ValueError(f"mode: expected one of {_MODES}, got {mode!r}")
    if len(voxel_size) != 3 or not all(float(s) > 0 for s in voxel_size):
        raise ValueError(f"voxel_size: expected 3 positive sizes, got {voxel_size!r}")
    return pts.astype(np.float64, copy=False)


def grid_coordinates(
    points_xyz: np.ndarray,
    mode: str = "cylindrical",
    voxel_size: tuple[float, float, float] = (0.1, 1.0, 0.1),
    *,
    what: str = "points_xyz",
) -> np.ndarray:
    """Raw (un-offset) ``(N, 3)`` int64 floor coordinates of every point.

    ``what`` names the cloud in errors (e.g. ``"sample <token>"``). Raises ``ValueError`` if a
    grid coordinate is outside the int32 range (module docstring).
    """
    pts = _check(points_xyz, mode, voxel_size, what)
    s = np.asarray(voxel_size, dtype=np.float64)
    if mode == "cylindrical":
        x, y, z = pts.T
        c = np.stack([np.hypot(x, y), np.degrees(np.arctan2(y, x)), z], axis=1)
    else:
        c = pts
    with np.errstate(over="ignore"):
        scaled = np.floor(c / s)
    out_of_range = ~(np.abs(scaled) <= _MAX_GRID_INDEX)  # also catches c / s = inf
    if out_of_range.any():
        row, axis = (int(i) for i in np.argwhere(out_of_range)[0])
        raise ValueError(
            f"{what}: point {row} at (x, y, z) = {tuple(float(v) for v in pts[row])} has "
            f"{_AXES[mode][axis]} = {float(c[row, axis]):.6g}, i.e. grid coordinate "
            f"{float(scaled[row, axis]):.6g} at voxel size {float(s[axis]):g}, outside the "
            f"supported int32 grid range (|coordinate| <= {_MAX_GRID_INDEX:.0f} voxels; "
            f"{int(out_of_range.any(axis=1).sum())} of {pts.shape[0]} points): corrupt "
            "coordinates or wrong units"
        )
    return scaled.astype(np.int64)


def voxelize(
    points_xyz: np.ndarray,
    mode: str = "cylindrical",
    voxel_size: tuple[float, float, float] = (0.1, 1.0, 0.1),
    *,
    what: str = "points_xyz",
) -> Voxelization:
    """Quantise ``(N, 3)`` points; see the module docstring for conventions and the range.

    ``what`` names the cloud in errors (the collator passes ``"sample <token>"``).
    """
    q = grid_coordinates(points_xyz, mode, voxel_size, what=what)
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
        raise ValueError(
            f"{what}: voxel grid too large: the points span {tuple(dims.tolist())} voxels of "
            f"size {vs} along {_AXES[mode]} (at most 2^31 per axis and 2^62 in all): check "
            "voxel_size, the units (metres) and the coordinates"
        )
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
