"""Vectorised LiDAR-to-camera projection (all cameras at once, no loop over points).

The nuScenes reference chain (lidar -> ego at lidar time -> global -> ego at camera time ->
camera -> intrinsics) is composed once per camera into a single ``(3, 4)`` projection matrix
``K @ T_cam<-lidar`` in float64, then applied to every point with one batched matrix product.
KITTI uses the same code with ``P2 @ Tr`` (or ``P2 @ R0_rect @ Tr_velo_to_cam``).

A pair is kept, as in the reference, when its depth (third row of the projection, the camera z
for nuScenes) is ``> min_depth`` (1.0 m) and it lies strictly inside the image:
``0 < u < W - 1`` and ``0 < v < H - 1``. The pixel is rounded (numpy, half to even) and stored as
``(row, col) = (round(v), round(u))``. nuscenes-devkit's ``map_pointcloud_to_image`` uses a
1-pixel margin instead (``1 < u < W - 1``); this module follows the pairing code of the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CameraProjection", "compose_projection", "project_to_cameras"]


@dataclass(frozen=True)
class CameraProjection:
    """Result of :func:`project_to_cameras`, camera-major (all pairs of camera 0 first).

    point_indices (P,) int64   index of the projected point
    camera_indices (P,) int64  index of the camera
    uv (P, 2) float64          sub-pixel (u = column, v = row) coordinates
    depth (P,) float64         depth along the optical axis
    """

    point_indices: np.ndarray
    camera_indices: np.ndarray
    uv: np.ndarray
    depth: np.ndarray

    @property
    def pixels(self) -> np.ndarray:
        """``(P, 3)`` int64 ``[camera, row, col]`` with the rounded pixel (the reference rule)."""
        rc = np.round(self.uv[:, ::-1]).astype(np.int64)
        return np.concatenate([self.camera_indices[:, None], rc], axis=1)


def compose_projection(intrinsic: np.ndarray, lidar_to_camera: np.ndarray) -> np.ndarray:
    """``(3, 4)`` projection ``K @ T``: ``intrinsic`` is (3, 3) or (3, 4), ``lidar_to_camera``
    (4, 4) or (3, 4) (a rigid transform; a missing last row is taken as [0, 0, 0, 1]).
    """
    k = np.asarray(intrinsic, dtype=np.float64)
    t = np.asarray(lidar_to_camera, dtype=np.float64)
    if k.shape == (3, 3):
        k = np.concatenate([k, np.zeros((3, 1))], axis=1)
    if k.shape != (3, 4):
        raise ValueError(f"intrinsic: expected shape (3, 3) or (3, 4), got {k.shape}")
    if t.shape == (3, 4):
        t = np.concatenate([t, [[0.0, 0.0, 0.0, 1.0]]], axis=0)
    if t.shape != (4, 4):
        raise ValueError(f"lidar_to_camera: expected shape (4, 4) or (3, 4), got {t.shape}")
    return k @ t


def project_to_cameras(
    points_xyz: np.ndarray,
    projections: np.ndarray,
    image_sizes: np.ndarray | list[tuple[int, int]],
    min_depth: float = 1.0,
) -> CameraProjection:
    """Project ``(N, 3)`` points into ``C`` cameras at once.

    Args:
        points_xyz: (N, 3) points in the LiDAR frame (any float dtype; computed in float64).
        projections: (C, 3, 4) matrices from :func:`compose_projection`.
        image_sizes: (C, 2) ``(height, width)`` per camera.
        min_depth: keep points whose depth is strictly greater (reference: 1.0 m).
    """
    pts = np.asarray(points_xyz)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points_xyz: expected shape (N, 3), got {pts.shape}")
    proj = np.asarray(projections, dtype=np.float64)
    if proj.ndim != 3 or proj.shape[1:] != (3, 4):
        raise ValueError(f"projections: expected shape (C, 3, 4), got {proj.shape}")
    sizes = np.asarray(image_sizes, dtype=np.float64).reshape(-1, 2)
    if sizes.shape[0] != proj.shape[0]:
        raise ValueError(
            f"image_sizes: expected {proj.shape[0]} (height, width) rows, got {sizes.shape[0]}"
        )
    pts64 = pts.astype(np.float64, copy=False)
    # (C, 3, N) = (C, 3, 3) @ (3, N) + (C, 3, 1)
    cam = np.einsum("cij,nj->cin", proj[:, :, :3], pts64) + proj[:, :, 3:]
    depth = cam[:, 2, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = cam[:, 0, :] / depth
        v = cam[:, 1, :] / depth
    h = sizes[:, 0:1]
    w = sizes[:, 1:2]
    keep = (depth > min_depth) & (u > 0) & (u < w - 1) & (v > 0) & (v < h - 1)
    cam_idx, pt_idx = np.nonzero(keep)
    return CameraProjection(
        point_indices=pt_idx.astype(np.int64),
        camera_indices=cam_idx.astype(np.int64),
        uv=np.stack([u[cam_idx, pt_idx], v[cam_idx, pt_idx]], axis=1),
        depth=depth[cam_idx, pt_idx],
    )
