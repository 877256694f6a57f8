"""Typed containers at the package border: the one place the data contract is written down.

Every reader (nuScenes, SemanticKITTI, KITTI, the synthetic world) produces these; every consumer
(collate, models, recipes) takes them. Arrays are numpy on the sample side and torch on the batch
side. All containers are frozen dataclasses validated in ``__post_init__``: a wrong shape or dtype
raises a ``ValueError`` naming the field, the expected and the actual value.

Contract
--------
``PretrainSample`` (one LiDAR sweep and its cameras, before augmentation)
    points        (N, 4) float32   x, y, z [m], intensity, in the LiDAR frame
    images        (C, H, W, 3) uint8 camera images at original resolution (RGB)
    camera_names  tuple of C str   e.g. ("CAM_FRONT", ...)
    pair_points   (P,) int64       index of the paired point in ``points``
    pair_pixels   (P, 3) int64     [camera index, row, col] in the original image
    pair_labels   (P,) int64|None  VFM label of the paired pixel (label-store vocabulary)
    point_labels  (N,) int64|None  evaluation-class label per point (0 = ignore), downstream only
    token         str              stable sample id (nuScenes sample token, "seq/frame", ...)
    filtered_points int            points a range filter already removed from this sweep (the
                                   VoxelNet's; counted into the batch's ``voxel_drops``)

``SegSample`` (downstream: a LiDAR sweep with per-point labels)
    points (N, 4) float32, point_labels (N,) int64 | None, token str

``PretrainBatch`` / ``SegBatch`` (torch, after voxelisation and collate): see their docstrings.
Offsets: ``point_offsets[b]:point_offsets[b+1]`` are the rows of sample b in the concatenated
points, ``voxel_offsets`` likewise for voxels; images of sample b are rows ``b*C : (b+1)*C``
of ``images``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch

__all__ = ["PretrainSample", "SegSample", "PretrainBatch", "SegBatch", "check_array"]


def check_array(
    name: str,
    value: np.ndarray,
    *,
    dtype: type | np.dtype,
    shape: tuple[int | None, ...],
) -> None:
    """Raise ``ValueError`` unless ``value`` is an ndarray of ``dtype`` with a matching ``shape``.

    ``None`` in ``shape`` matches any length.
    """
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array, got {type(value).__name__}")
    if value.dtype != np.dtype(dtype):
        raise ValueError(f"{name}: expected dtype {np.dtype(dtype)}, got {value.dtype}")
    if value.ndim != len(shape) or any(
        want is not None and got != want for got, want in zip(value.shape, shape)
    ):
        pretty = tuple("*" if s is None else s for s in shape)
        raise ValueError(f"{name}: expected shape {pretty}, got {tuple(value.shape)}")


def _check_points(points: np.ndarray, token: str) -> None:
    check_array(f"{token}: points", points, dtype=np.float32, shape=(None, 4))
    if not np.isfinite(points).all():
        bad = int((~np.isfinite(points)).any(axis=1).sum())
        raise ValueError(f"{token}: points contain {bad} rows with NaN/inf values")


def _check_point_labels(labels: np.ndarray | None, points: np.ndarray, token: str) -> None:
    if labels is not None:
        check_array(f"{token}: point_labels", labels, dtype=np.int64, shape=(points.shape[0],))


@dataclass(frozen=True)
class PretrainSample:
    """One LiDAR sweep with its camera images and point-pixel pairs. See the module docstring."""

    points: np.ndarray
    images: np.ndarray
    camera_names: tuple[str, ...]
    pair_points: np.ndarray
    pair_pixels: np.ndarray
    pair_labels: np.ndarray | None = None
    point_labels: np.ndarray | None = None
    token: str = ""
    filtered_points: int = 0

    def __post_init__(self) -> None:
        t = self.token or "sample"
        _check_points(self.points, t)
        _check_filtered(self.filtered_points, t)
        check_array(f"{t}: images", self.images, dtype=np.uint8, shape=(None, None, None, 3))
        n_cam = self.images.shape[0]
        if len(self.camera_names) != n_cam:
            raise ValueError(
                f"{t}: camera_names has {len(self.camera_names)} names for {n_cam} images"
            )
        check_array(f"{t}: pair_points", self.pair_points, dtype=np.int64, shape=(None,))
        n_pairs = self.pair_points.shape[0]
        check_array(f"{t}: pair_pixels", self.pair_pixels, dtype=np.int64, shape=(n_pairs, 3))
        if n_pairs:
            n_pts = self.points.shape[0]
            if self.pair_points.min() < 0 or self.pair_points.max() >= n_pts:
                raise ValueError(
                    f"{t}: pair_points must lie in [0, {n_pts}), got "
                    f"[{self.pair_points.min()}, {self.pair_points.max()}]"
                )
            h, w = self.images.shape[1:3]
            cam, row, col = self.pair_pixels.T
            if cam.min() < 0 or cam.max() >= n_cam:
                raise ValueError(f"{t}: pair_pixels camera index outside [0, {n_cam})")
            if row.min() < 0 or row.max() >= h or col.min() < 0 or col.max() >= w:
                raise ValueError(f"{t}: pair_pixels outside the {h}x{w} image")
        if self.pair_labels is not None:
            check_array(f"{t}: pair_labels", self.pair_labels, dtype=np.int64, shape=(n_pairs,))
        _check_point_labels(self.point_labels, self.points, t)

    @property
    def num_pairs(self) -> int:
        return int(self.pair_points.shape[0])


@dataclass(frozen=True)
class SegSample:
    """One LiDAR sweep with optional per-point evaluation labels (0 = ignore)."""

    points: np.ndarray
    point_labels: np.ndarray | None = None
    token: str = ""
    filtered_points: int = 0

    def __post_init__(self) -> None:
        t = self.token or "sample"
        _check_points(self.points, t)
        _check_filtered(self.filtered_points, t)
        _check_point_labels(self.point_labels, self.points, t)


def _check_filtered(value: object, t: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{t}: filtered_points must be an int >= 0, got {value!r}")


_BatchT = TypeVar("_BatchT", bound="SegBatch")


@dataclass(frozen=True)
class SegBatch:
    """A collated batch of sweeps for the sparse backbone.

    voxel_coords    (V, 4) int32  [batch index, c0, c1, c2], non-negative grid indices
    voxel_features  (V, F) float32
    spatial_shape   (3,) tuple    grid extent (max index + 1 per axis over the batch)
    batch_size      int
    point_to_voxel  (N,) int64    row in voxel_coords of every (concatenated) input point
    point_offsets   (B+1,) int64
    voxel_offsets   (B+1,) int64
    voxel_labels    (V,) int64 | None  label of each voxel's representative point
    point_labels    (N,) int64 | None  label of every point (evaluation at point level)
    tokens          tuple of B str
    points          (N, 4) float32 | None  the concatenated points (x, y, z, intensity)
    voxel_drops     dict str -> int  what voxelisation left out, summed over the batch (mode
                    ``cartesian_mean``: ``filtered``, ``outside_grid``, ``over_point_cap``,
                    ``over_voxel_cap`` points and ``voxels_over_cap``); empty for other modes
    """

    voxel_coords: torch.Tensor
    voxel_features: torch.Tensor
    spatial_shape: tuple[int, int, int]
    batch_size: int
    point_to_voxel: torch.Tensor
    point_offsets: torch.Tensor
    voxel_offsets: torch.Tensor
    voxel_labels: torch.Tensor | None = None
    point_labels: torch.Tensor | None = None
    tokens: tuple[str, ...] = ()
    points: torch.Tensor | None = None
    voxel_drops: dict[str, int] = field(default_factory=dict)

    def to(self: _BatchT, device: torch.device | str) -> _BatchT:
        """Return a copy (of the same class) with every tensor moved to ``device``."""
        return _to_device(self, device)


@dataclass(frozen=True)
class PretrainBatch(SegBatch):
    """A collated pretraining batch: the voxels of ``SegBatch`` plus images and pairs.

    images          (B*C, 3, H, W) float32 in [0, 1] (RGB, after crop/resize)
    pair_voxels     (P,) int64    row in voxel_coords of the paired point's voxel (-1: none)
    pair_points     (P,) int64    row in the concatenated points (before voxelisation)
    pair_pixels     (P, 3) int64  [batch image index, row, col] in ``images``
    pair_labels     (P,) int64 | None  VFM labels
    pair_range_bins (P,) int64    horizontal range of the paired point, floor(sqrt(x^2+y^2)/0.1)
                                  (computed from the point, whatever the voxel coordinate system)
    """

    images: torch.Tensor = torch.empty(0)
    pair_voxels: torch.Tensor = torch.empty(0, dtype=torch.int64)
    pair_points: torch.Tensor = torch.empty(0, dtype=torch.int64)
    pair_pixels: torch.Tensor = torch.empty(0, 3, dtype=torch.int64)
    pair_labels: torch.Tensor | None = None
    pair_range_bins: torch.Tensor = torch.empty(0, dtype=torch.int64)


def _to_device(batch: _BatchT, device: torch.device | str) -> _BatchT:
    import dataclasses

    moved: dict[str, Any] = {
        f.name: v.to(device)
        for f in dataclasses.fields(batch)
        if isinstance(v := getattr(batch, f.name), torch.Tensor)
    }
    return dataclasses.replace(batch, **moved)
