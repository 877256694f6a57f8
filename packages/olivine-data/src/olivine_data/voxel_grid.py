"""Mean-of-points voxelisation on a fixed Cartesian grid (the VoxelNet / SECOND data path).

What the OLIVINE reference's VoxelNet pretraining does (github.com/Eaphan/OLIVINE,
``pretrain/dataloader_nuscenes_spconv.py``): keep the points with ``x^2 + y^2 <= 51.2^2`` and
``-5 <= z <= 3`` (:func:`range_filter_mask`), then spconv's ``PointToVoxel`` with voxels of
0.1 x 0.1 x 0.2 m over ``[-51.2, -51.2, -5, 51.2, 51.2, 3]``, at most 10 points per voxel and 60,000
voxels, and OpenPCDet's ``MeanVFE``: a voxel's feature is the mean of its points' (x, y, z,
intensity). Grid coordinates are ``(z, y, x)`` (OpenPCDet's order), spatial shape ``[40, 1024,
1024]``.

:func:`voxelize_mean` reproduces ``PointToVoxel``'s rules without a loop over points:

* a point's cell is ``floor((p - range_min) / voxel_size)`` in float32 arithmetic; a point whose
  cell is outside ``[0, grid)`` on some axis (e.g. ``z = 3`` exactly, or ``x = 51.2``) is in no
  voxel (``outside_grid``);
* voxels are numbered in the order in which their first point appears; the voxels after the
  first ``max_voxels`` are dropped with all their points (``over_voxel_cap`` points,
  ``voxels_over_cap`` voxels);
* a voxel averages its first ``max_points_per_voxel`` points in input order; later points of a
  full voxel are not averaged (``over_point_cap``).

Nothing is dropped silently: :class:`VoxelDrops` counts every case and travels with the result
(and, through the collator, with the batch). A point that no voxel averages keeps its place in the
cloud: the VoxelNet still gives it a feature by sampling its BEV map at the point's (x, y).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np

from olivine_data.types import PretrainSample, SegSample

__all__ = [
    "VOXELNET_NUSCENES_GRID",
    "MeanVoxelization",
    "RangeFilter",
    "VoxelDrops",
    "VoxelGrid",
    "crop_to_range",
    "range_filter_mask",
    "voxelize_mean",
]


@dataclass(frozen=True)
class VoxelGrid:
    """A fixed Cartesian voxel grid with the caps of spconv's ``PointToVoxel``.

    Attributes:
        point_range: ``(x_min, y_min, z_min, x_max, y_max, z_max)`` in metres.
        voxel_size: ``(vx, vy, vz)`` in metres.
        max_points_per_voxel: points averaged per voxel (10 in the reference).
        max_voxels: voxels kept per cloud (60,000 in the reference).
        radius: the range filter keeps ``x^2 + y^2 <= radius^2`` (and ``z_min <= z <= z_max``);
            ``None`` keeps every point in ``[z_min, z_max]``.
    """

    point_range: tuple[float, float, float, float, float, float] = (
        -51.2,
        -51.2,
        -5.0,
        51.2,
        51.2,
        3.0,
    )
    voxel_size: tuple[float, float, float] = (0.1, 0.1, 0.2)
    max_points_per_voxel: int = 10
    max_voxels: int = 60000
    radius: float | None = 51.2

    def __post_init__(self) -> None:
        r, v = tuple(self.point_range), tuple(self.voxel_size)
        if len(r) != 6 or any(r[i + 3] <= r[i] for i in range(3)):
            raise ValueError(
                f"VoxelGrid.point_range: expected (x_min, y_min, z_min, x_max, y_max, z_max) with "
                f"max > min, got {r}"
            )
        if len(v) != 3 or min(v) <= 0:
            raise ValueError(f"VoxelGrid.voxel_size: expected 3 positive sizes, got {v}")
        if self.max_points_per_voxel < 1 or self.max_voxels < 1:
            raise ValueError(
                f"VoxelGrid: max_points_per_voxel and max_voxels must be >= 1, got "
                f"{self.max_points_per_voxel} and {self.max_voxels}"
            )
        if self.radius is not None and self.radius <= 0:
            raise ValueError(f"VoxelGrid.radius must be > 0 or None, got {self.radius}")

    @property
    def grid_size_xyz(self) -> tuple[int, int, int]:
        """Cells along (x, y, z): ``round((max - min) / voxel_size)`` (spconv's rule)."""
        r, v = np.asarray(self.point_range, np.float32), np.asarray(self.voxel_size, np.float32)
        n = np.round((r[3:] - r[:3]) / v).astype(np.int64)
        return (int(n[0]), int(n[1]), int(n[2]))

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """The sparse tensor's shape in coordinate order ``(z, y, x)``: ``(40, 1024, 1024)``."""
        x, y, z = self.grid_size_xyz
        return (z, y, x)


VOXELNET_NUSCENES_GRID = VoxelGrid()
"""The reference VoxelNet pretraining grid on nuScenes (module docstring)."""


@dataclass(frozen=True)
class VoxelDrops:
    """What a mean voxelisation left out, in points (and voxels for the voxel cap)."""

    outside_grid: int = 0
    over_point_cap: int = 0
    over_voxel_cap: int = 0
    voxels_over_cap: int = 0

    def __add__(self, other: VoxelDrops) -> VoxelDrops:
        return VoxelDrops(
            self.outside_grid + other.outside_grid,
            self.over_point_cap + other.over_point_cap,
            self.over_voxel_cap + other.over_voxel_cap,
            self.voxels_over_cap + other.voxels_over_cap,
        )

    def as_dict(self) -> dict[str, int]:
        """``{"outside_grid": .., "over_point_cap": .., "over_voxel_cap": .., ...}``."""
        return {
            "outside_grid": self.outside_grid,
            "over_point_cap": self.over_point_cap,
            "over_voxel_cap": self.over_voxel_cap,
            "voxels_over_cap": self.voxels_over_cap,
        }


@dataclass(frozen=True)
class MeanVoxelization:
    """Result of :func:`voxelize_mean`.

    Attributes:
        coords: ``(V, 3)`` int32 ``(z, y, x)`` cells, in order of first appearance.
        features: ``(V, F)`` float32 mean of the averaged points' features.
        num_points: ``(V,)`` int32 points averaged per voxel (``<= max_points_per_voxel``).
        point_to_voxel: ``(N,)`` int64 row of each point's voxel, ``-1`` when the point is outside
            the grid or its voxel was dropped by the voxel cap (a point over the point cap keeps
            its voxel's row: it lies in it, it is just not averaged).
        representative: ``(V,)`` int64 first point of each voxel.
        drops: the counts of :class:`VoxelDrops`.
    """

    coords: np.ndarray
    features: np.ndarray
    num_points: np.ndarray
    point_to_voxel: np.ndarray
    representative: np.ndarray
    drops: VoxelDrops

    @property
    def num_voxels(self) -> int:
        return int(self.coords.shape[0])


def range_filter_mask(points: np.ndarray, grid: VoxelGrid = VOXELNET_NUSCENES_GRID) -> np.ndarray:
    """``(N,)`` bool: the reference's filter ``x^2 + y^2 <= radius^2`` and ``z_min <= z <= z_max``
    (computed in the points' own dtype, float32 for the readers' clouds).
    """
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise ValueError(f"range_filter_mask: expected points of shape (N, >=3), got {pts.shape}")
    z = pts[:, 2]
    keep = (z >= grid.point_range[2]) & (z <= grid.point_range[5])
    if grid.radius is not None:
        keep &= pts[:, 0] * pts[:, 0] + pts[:, 1] * pts[:, 1] <= grid.radius * grid.radius
    return np.asarray(keep, dtype=bool)


def voxelize_mean(
    points: np.ndarray, grid: VoxelGrid = VOXELNET_NUSCENES_GRID, *, what: str = "points"
) -> MeanVoxelization:
    """Voxelise ``(N, F >= 3)`` points (x, y, z first) by the rules of the module docstring.

    The features averaged are all ``F`` columns (``(x, y, z, intensity)`` for the VoxelNet).
    ``what`` names the cloud in errors.
    """
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise ValueError(f"{what}: expected points of shape (N, >=3), got {pts.shape}")
    if not np.issubdtype(pts.dtype, np.floating):
        raise TypeError(f"{what}: expected a float array of points, got {pts.dtype}")
    if not np.isfinite(pts[:, :3]).all():
        raise ValueError(f"{what}: points contain NaN/inf coordinates")
    n, f = int(pts.shape[0]), int(pts.shape[1])
    size = np.asarray(grid.grid_size_xyz, np.int64)
    lo = np.asarray(grid.point_range[:3], np.float32)
    vs = np.asarray(grid.voxel_size, np.float32)
    cell = np.floor((pts[:, :3].astype(np.float32) - lo) / vs).astype(np.int64)  # (N, 3) x, y, z
    inside = ((cell >= 0) & (cell < size)).all(axis=1)
    idx = np.flatnonzero(inside)
    key = (cell[idx, 2] * size[1] + cell[idx, 1]) * size[0] + cell[idx, 0]
    uniq, first, inv = np.unique(key, return_index=True, return_inverse=True)
    inv = inv.reshape(-1)
    # number the voxels by first appearance (first[] indexes idx, which is increasing)
    rank = np.empty(uniq.shape[0], np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(uniq.shape[0])
    vid = rank[inv]  # voxel id of every in-grid point
    kept_voxel = vid < grid.max_voxels
    # position of each point inside its voxel, in input order
    order = np.argsort(vid, kind="stable")
    counts = np.bincount(vid, minlength=uniq.shape[0])
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.empty_like(vid)
    pos[order] = np.arange(vid.shape[0]) - starts[vid[order]]
    averaged = kept_voxel & (pos < grid.max_points_per_voxel)
    v = int(min(uniq.shape[0], grid.max_voxels))
    sums = np.zeros((v, f), np.float64)
    np.add.at(sums, vid[averaged], pts[idx[averaged]].astype(np.float64))
    num = np.bincount(vid[averaged], minlength=v)[:v]
    feats = (sums / np.maximum(num, 1)[:, None]).astype(np.float32)
    first_point = idx[first[np.argsort(first, kind="stable")]][:v]
    coords = cell[first_point][:, ::-1].astype(np.int32)  # (z, y, x)
    p2v = np.full(n, -1, np.int64)
    p2v[idx[kept_voxel]] = vid[kept_voxel]
    drops = VoxelDrops(
        outside_grid=int(n - idx.shape[0]),
        over_point_cap=int((kept_voxel & ~averaged).sum()),
        over_voxel_cap=int((~kept_voxel).sum()),
        voxels_over_cap=int(max(uniq.shape[0] - grid.max_voxels, 0)),
    )
    return MeanVoxelization(
        coords=np.ascontiguousarray(coords),
        features=feats,
        num_points=num.astype(np.int32),
        point_to_voxel=p2v,
        representative=first_point.astype(np.int64),
        drops=drops,
    )


S = TypeVar("S", PretrainSample, SegSample)


def crop_to_range(sample: S, grid: VoxelGrid = VOXELNET_NUSCENES_GRID) -> tuple[S, int]:
    """``sample`` without the points that :func:`range_filter_mask` rejects (their pairs and
    labels go with them; the remaining pairs are re-indexed; ``filtered_points`` grows by their
    number), and how many points were removed. The reference applies this filter to the raw
    cloud, before augmentation and pairing.
    """
    keep = range_filter_mask(sample.points, grid)
    removed = int(keep.shape[0] - keep.sum())
    if removed == 0:
        return sample, 0
    labels = None if sample.point_labels is None else sample.point_labels[keep]
    total = sample.filtered_points + removed
    if isinstance(sample, SegSample):
        return (
            replace(sample, points=sample.points[keep], point_labels=labels, filtered_points=total),
            removed,
        )
    new_index = np.cumsum(keep) - 1
    kept_pairs = keep[sample.pair_points]
    return (
        replace(
            sample,
            points=sample.points[keep],
            point_labels=labels,
            pair_points=new_index[sample.pair_points[kept_pairs]].astype(np.int64),
            pair_pixels=sample.pair_pixels[kept_pairs],
            pair_labels=None if sample.pair_labels is None else sample.pair_labels[kept_pairs],
            filtered_points=total,
        ),
        removed,
    )


class RangeFilter:
    """The reference's range filter as a sample transform (``transform(sample, rng)``): the
    first step of the VoxelNet's pretraining pipeline (:func:`crop_to_range`).
    """

    def __init__(self, grid: VoxelGrid = VOXELNET_NUSCENES_GRID) -> None:
        self.grid = grid

    def __call__(self, sample: S, rng: object = None) -> S:
        return crop_to_range(sample, self.grid)[0]
