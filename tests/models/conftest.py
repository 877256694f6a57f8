"""Fixtures for the olivine-models tests: the real nuScenes sweep, voxelised here in numpy.

Deliberately independent of olivine_data so that these tests run with only olivine-models
installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch


@dataclass(frozen=True)
class VoxelisedSweep:
    points: np.ndarray  # (N, 5) float32 x, y, z, intensity, ring
    coords: torch.Tensor  # (V, 4) int32 [batch=0, rho, phi, z]
    feats: torch.Tensor  # (V, 1) float32 intensity of the first point of each voxel
    spatial_shape: tuple[int, int, int]


def cylindrical_voxelise(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rho / 0.1 m, phi in 1 degree bins, z / 0.1 m), shifted to be non-negative; unique voxels.

    Returns (V, 3) int64 voxel indices and the index of the first point kept in each voxel.
    """
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    rho = np.sqrt(x**2 + y**2)
    phi = np.degrees(np.arctan2(y, x))
    grid = np.floor(np.stack([rho / 0.1, phi / 1.0, z / 0.1], axis=1)).astype(np.int64)
    grid -= grid.min(axis=0)
    _, first = np.unique(grid, axis=0, return_index=True)
    first = np.sort(first)
    return grid[first], first


@pytest.fixture(scope="session")
def nuscenes_sweep(shared_data: Path) -> VoxelisedSweep:
    files = sorted((shared_data / "nuscenes/mmdet3d-demo/samples/LIDAR_TOP").glob("*.pcd.bin"))
    assert len(files) == 1, f"expected one LIDAR_TOP sweep, found {files}"
    points = np.fromfile(files[0], dtype=np.float32).reshape(-1, 5)
    grid, first = cylindrical_voxelise(points)
    coords = np.concatenate([np.zeros((len(grid), 1), np.int64), grid], axis=1).astype(np.int32)
    shape = tuple(int(s) for s in grid.max(axis=0) + 1)
    return VoxelisedSweep(
        points=points,
        coords=torch.from_numpy(coords),
        feats=torch.from_numpy(points[first, 3:4].copy()),
        spatial_shape=(shape[0], shape[1], shape[2]),
    )


def voxelised(points: np.ndarray, feature_column: int) -> VoxelisedSweep:
    """Cylindrical voxels of one real scan (batch index 0), first point's feature per voxel."""
    grid, first = cylindrical_voxelise(points)
    coords = np.concatenate([np.zeros((len(grid), 1), np.int64), grid], axis=1).astype(np.int32)
    shape = tuple(int(s) for s in grid.max(axis=0) + 1)
    col = feature_column
    return VoxelisedSweep(
        points=points,
        coords=torch.from_numpy(coords),
        feats=torch.from_numpy(points[first, col : col + 1].copy()),
        spatial_shape=(shape[0], shape[1], shape[2]),
    )


@pytest.fixture(scope="session")
def kitti_scan(shared_data: Path) -> VoxelisedSweep:
    """The real SemanticKITTI scan (seq 07, 000964; x, y, z, remission), every 4th point.

    Subsampled (~30k of ~120k points) to keep the CPU parity tests of the large MinkUNet short.
    """
    path = shared_data / "semantickitti/keonhee-han-KI_DT/sequences/07/velodyne/000964.bin"
    points = np.fromfile(path, dtype=np.float32).reshape(-1, 4)
    return voxelised(np.ascontiguousarray(points[::4]), 3)


@pytest.fixture(autouse=True)
def _one_torch_thread():  # type: ignore[no-untyped-def]
    """Run each models test single-threaded (restored afterwards).

    On the shared 2-core CI/dev machines, OpenMP worker threads spin-wait for each other and small
    matmuls (spconv's Native algorithm is gather-matmul-scatter) become ~10x slower with 2 threads.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
