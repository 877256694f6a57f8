"""KITTI ``.bin`` scans decoded by semantic-kitti-api's ``auxiliary.laserscan.LaserScan`` (the
optional ``olivine-data[semantickitti]`` extra), after this package's size and value checks.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from olivine_data._io import read_point_file

__all__ = ["laserscan_class", "read_kitti_scan"]


def laserscan_class() -> Any:
    """semantic-kitti-api's ``LaserScan`` class; an ``ImportError`` naming the extra without it."""
    try:
        from auxiliary.laserscan import LaserScan
    except ImportError as exc:
        raise ImportError(
            "SemanticKITTI reading needs semantic-kitti-api (module 'auxiliary'): "
            "pip install 'olivine-data[semantickitti]' (or pip install --no-deps "
            "semantic-kitti-api pyyaml)"
        ) from exc
    return LaserScan


def read_kitti_scan(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a KITTI ``.bin`` scan (float32 x, y, z, remission) as ``(N, 4)`` float32.

    Validated here (size multiple of 16 bytes, finite), decoded by semantic-kitti-api.
    """
    checked = read_point_file(path, num_fields=4, keep=4)
    scan = laserscan_class()(project=False)
    scan.open_scan(str(path))
    pts = np.concatenate([scan.points, scan.remissions[:, None]], axis=1).astype(np.float32)
    if pts.shape != checked.shape:  # pragma: no cover - defensive, layouts agree
        raise ValueError(f"{path}: backend read {pts.shape}, expected {checked.shape}")
    return np.ascontiguousarray(pts)
