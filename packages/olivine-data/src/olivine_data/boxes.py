"""3D boxes in the LiDAR frame: reading them, points inside them, their 2D box in a camera.

Used to prompt a VFM with ground-truth boxes (box-prompt labels) and to measure label quality at
the LiDAR points inside each box. Two sources:

* the nuScenes ``sample_annotation`` table, through nuscenes-devkit's ``get_sample_data`` (boxes
  moved to the LIDAR_TOP frame by the devkit), category names mapped to the 10 nuScenes detection
  classes (:data:`NUSCENES_DETECTION_NAMES`, the mapping of the nuScenes detection benchmark);
* an mmdetection3d info file (``data_list[i].instances[j].bbox_3d``, LiDAR frame,
  ``[x, y, z, dx, dy, dz, yaw]``: ``dx`` along the heading; mmdetection3d's nuScenes converter
  stores the devkit's box centre, i.e. the gravity centre, in these infos), as JSON
  (mmdetection3d's own ``.pkl`` converted to JSON). On the real scene-0061 keyframe the point
  count inside 60 of its 68 labelled boxes equals the info's ``num_lidar_pts`` exactly (the
  others within a few points).

The 2D box of a 3D box in a camera is the bounding rectangle of its corners in front of the camera
(depth above ``min_depth``), clipped to the image, as nuscenes-devkit's ``export_2d_annotation``
(``post_process_coords``) does.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "NUSCENES_DETECTION_NAMES",
    "Box3D",
    "box_corners",
    "points_in_box",
    "project_box",
    "read_mmdet3d_boxes",
    "read_nuscenes_boxes",
]

#: nuScenes category -> detection class (the nuScenes detection benchmark's mapping).
NUSCENES_DETECTION_NAMES: dict[str, str] = {
    "movable_object.barrier": "barrier",
    "vehicle.bicycle": "bicycle",
    "vehicle.bus.bendy": "bus",
    "vehicle.bus.rigid": "bus",
    "vehicle.car": "car",
    "vehicle.construction": "construction_vehicle",
    "vehicle.motorcycle": "motorcycle",
    "human.pedestrian.adult": "pedestrian",
    "human.pedestrian.child": "pedestrian",
    "human.pedestrian.construction_worker": "pedestrian",
    "human.pedestrian.police_officer": "pedestrian",
    "movable_object.trafficcone": "traffic_cone",
    "vehicle.trailer": "trailer",
    "vehicle.truck": "truck",
}


@dataclass(frozen=True)
class Box3D:
    """An oriented box in the LiDAR frame.

    Attributes:
        center: ``(x, y, z)`` of the box centre (metres).
        size: ``(length, width, height)``: extents along the heading, across it, and up.
        yaw: heading angle about +z (radians), from +x towards +y.
        name: class name (e.g. a nuScenes detection class ``"car"``).
    """

    center: tuple[float, float, float]
    size: tuple[float, float, float]
    yaw: float
    name: str

    def __post_init__(self) -> None:
        values = [*self.center, *self.size, self.yaw]
        if len(self.center) != 3 or len(self.size) != 3 or not np.isfinite(values).all():
            raise ValueError(f"Box3D {self.name!r}: need finite 3-vectors, got {self}")
        if min(self.size) <= 0:
            raise ValueError(f"Box3D {self.name!r}: sizes must be > 0, got {self.size}")


def box_corners(box: Box3D) -> np.ndarray:
    """``(8, 3)`` corners; the first four at the bottom, the last four above them."""
    length, width, height = box.size
    x = np.array([1, 1, -1, -1, 1, 1, -1, -1]) * length / 2
    y = np.array([1, -1, -1, 1, 1, -1, -1, 1]) * width / 2
    z = np.array([-1, -1, -1, -1, 1, 1, 1, 1]) * height / 2
    c, s = np.cos(box.yaw), np.sin(box.yaw)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return (rot @ np.stack([x, y, z])).T + np.asarray(box.center, dtype=np.float64)


def points_in_box(points_xyz: np.ndarray, box: Box3D) -> np.ndarray:
    """Boolean ``(N,)``: which of the ``(N, 3)`` points lie inside (or on) ``box``."""
    pts = np.asarray(points_xyz, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points_xyz: expected shape (N, 3), got {pts.shape}")
    c, s = np.cos(box.yaw), np.sin(box.yaw)
    d = pts - np.asarray(box.center, dtype=np.float64)
    local_x = c * d[:, 0] + s * d[:, 1]
    local_y = -s * d[:, 0] + c * d[:, 1]
    half = np.asarray(box.size, dtype=np.float64) / 2
    return (  # type: ignore[no-any-return]
        (np.abs(local_x) <= half[0]) & (np.abs(local_y) <= half[1]) & (np.abs(d[:, 2]) <= half[2])
    )


def project_box(
    box: Box3D,
    projection: np.ndarray,
    image_hw: tuple[int, int],
    min_depth: float = 1.0,
) -> tuple[tuple[float, float, float, float], float] | None:
    """The box's 2D bounding rectangle in a camera, and its nearest corner depth.

    Args:
        box: the 3D box (LiDAR frame).
        projection: ``(3, 4)`` LiDAR-to-pixel matrix (:func:`olivine_data.compose_projection`).
        image_hw: ``(height, width)`` of the image.
        min_depth: corners at or behind this depth are dropped.

    Returns:
        ``((x0, y0, x1, y1), depth)`` clipped to the image, or None when no corner is in front
        of the camera or the rectangle misses the image (or is thinner than a pixel).
    """
    proj = np.asarray(projection, dtype=np.float64)
    if proj.shape != (3, 4):
        raise ValueError(f"projection: expected shape (3, 4), got {proj.shape}")
    corners = box_corners(box)
    uvw = corners @ proj[:, :3].T + proj[:, 3]
    front = uvw[:, 2] > min_depth
    if not front.any():
        return None
    uv = uvw[front, :2] / uvw[front, 2:3]
    h, w = image_hw
    x0, y0 = np.clip(uv.min(axis=0), 0, [w, h])
    x1, y1 = np.clip(uv.max(axis=0), 0, [w, h])
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return (float(x0), float(y0), float(x1), float(y1)), float(uvw[front, 2].min())


def read_mmdet3d_boxes(path: str | os.PathLike[str], sample_token: str) -> list[Box3D]:
    """The 3D boxes of one sample from an mmdetection3d (>= 1.0) info file saved as JSON.

    Instances labelled ``-1`` (categories outside ``metainfo.categories``) are left out.

    Raises:
        ValueError: unreadable file, no entry for ``sample_token``, or a malformed instance
            (the message names the file and field).
    """
    p = Path(path)
    try:
        info: Any = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{p}: cannot read an mmdetection3d info JSON ({exc})") from exc
    try:
        classes = {int(v): str(k) for k, v in info["metainfo"]["categories"].items()}
        entries = [d for d in info["data_list"] if d.get("token") == sample_token]
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(
            f"{p}: expected metainfo.categories and data_list[].token (mmdetection3d >= 1.0 "
            f"info), missing {exc}"
        ) from exc
    if not entries:
        raise ValueError(f"{p}: no data_list entry with token {sample_token!r}")
    boxes = []
    for j, inst in enumerate(entries[0].get("instances", [])):
        where = f"{p}: data_list[token={sample_token}].instances[{j}]"
        try:
            if int(inst["bbox_label_3d"]) == -1:  # mmdet3d: a category outside the classes
                continue
            x, y, z, dx, dy, dz, yaw = (float(v) for v in inst["bbox_3d"][:7])
            name = classes[int(inst["bbox_label_3d"])]
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            raise ValueError(
                f"{where}: need bbox_3d [x, y, z, dx, dy, dz, yaw] and a known bbox_label_3d "
                f"({exc!r})"
            ) from exc
        boxes.append(Box3D((x, y, z), (dx, dy, dz), yaw, name))
    return boxes


def read_nuscenes_boxes(nusc: Any, sample_token: str) -> list[Box3D]:
    """The annotated boxes of a nuScenes sample in its LIDAR_TOP frame, as detection classes.

    Categories outside :data:`NUSCENES_DETECTION_NAMES` (animals, debris, ...) are left out.
    """
    sample = nusc.get("sample", sample_token)
    _, boxes, _ = nusc.get_sample_data(sample["data"]["LIDAR_TOP"])
    out = []
    for b in boxes:
        name = NUSCENES_DETECTION_NAMES.get(b.name)
        if name is None:
            continue
        w, length, h = (float(v) for v in b.wlh)
        yaw = float(np.arctan2(b.rotation_matrix[1, 0], b.rotation_matrix[0, 0]))
        out.append(Box3D(tuple(float(v) for v in b.center), (length, w, h), yaw, name))  # type: ignore[arg-type]
    return out
