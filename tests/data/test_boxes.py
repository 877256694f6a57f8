"""3D boxes: reading (mmdetection3d info of the real keyframe), points inside, 2D projection."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from olivine_data.boxes import Box3D, box_corners, points_in_box, project_box, read_mmdet3d_boxes
from olivine_data.datasets.nuscenes import read_nuscenes_points

TOKEN = "ca9a282c9e77460f8360f564131a8af5"


def test_points_in_box_matches_the_box_frame() -> None:
    rng = np.random.default_rng(0)
    box = Box3D((2.0, -1.0, 0.5), (4.0, 2.0, 1.5), np.pi / 6, "car")
    pts = rng.uniform(-4, 6, (5000, 3))
    inside = points_in_box(pts, box)
    # naive: rotate every point into the box frame one at a time
    c, s = np.cos(box.yaw), np.sin(box.yaw)
    for p, got in zip(pts[:500], inside[:500]):
        d = p - np.array(box.center)
        local = np.array([c * d[0] + s * d[1], -s * d[0] + c * d[1], d[2]])
        assert got == bool(np.all(np.abs(local) <= np.array(box.size) / 2))
    assert points_in_box(box_corners(box) * 0.999 + np.array(box.center) * 0.001, box).all()
    with pytest.raises(ValueError, match="sizes must be > 0"):
        Box3D((0, 0, 0), (1, 0, 1), 0.0, "x")


def test_project_box_is_the_corner_rectangle_clipped_to_the_image() -> None:
    k = np.array([[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]])
    proj = np.concatenate([k, np.zeros((3, 1))], axis=1)  # camera frame = box frame
    box = Box3D((0.0, 0.0, 10.0), (2.0, 2.0, 2.0), 0.0, "car")
    (x0, y0, x1, y1), depth = project_box(box, proj, (80, 100))  # type: ignore[misc]
    assert depth == pytest.approx(9.0)
    assert (x0, y0) == pytest.approx((50 - 100 / 9, 40 - 100 / 9))
    assert (x1, y1) == pytest.approx((50 + 100 / 9, 40 + 100 / 9))
    assert project_box(Box3D((0.0, 0.0, -10.0), (2, 2, 2), 0.0, "car"), proj, (80, 100)) is None
    far_left = Box3D((-100.0, 0.0, 10.0), (2, 2, 2), 0.0, "car")
    assert project_box(far_left, proj, (80, 100)) is None


def test_real_keyframe_boxes_hold_their_annotated_point_counts(shared_data: Path) -> None:
    root = shared_data / "nuscenes" / "mmdet3d-demo"
    (info,) = root.glob("mmdet3d_info_*.json")
    instances = json.loads(info.read_text())["data_list"][0]["instances"]
    boxes = read_mmdet3d_boxes(info, TOKEN)
    labelled = [i for i in instances if i["bbox_label_3d"] != -1]
    assert len(instances) == 69 and len(boxes) == len(labelled) == 68
    (lidar,) = (root / "samples" / "LIDAR_TOP").glob("*.pcd.bin")
    xyz = read_nuscenes_points(lidar)[:, :3]
    counts = np.array([points_in_box(xyz, b).sum() for b in boxes])
    annotated = np.array([i["num_lidar_pts"] for i in labelled])
    # gravity-centre boxes: 60 of 68 exact, the rest within a few points (the annotation counts
    # were made by the devkit on the same sweep); a bottom-centre reading gets 14 exact
    assert (counts == annotated).sum() >= 60
    assert np.abs(counts - annotated).max() <= 20
    with pytest.raises(ValueError, match="no data_list entry"):
        read_mmdet3d_boxes(info, "nope")


#: detection class -> a nuScenes category of it (inverse of NUSCENES_DETECTION_NAMES, one each)
_CATEGORY = {
    "barrier": "movable_object.barrier",
    "bicycle": "vehicle.bicycle",
    "bus": "vehicle.bus.rigid",
    "car": "vehicle.car",
    "construction_vehicle": "vehicle.construction",
    "pedestrian": "human.pedestrian.adult",
    "traffic_cone": "movable_object.trafficcone",
    "truck": "vehicle.truck",
}


def test_devkit_annotations_read_back_as_the_same_lidar_boxes(
    shared_data: Path, tmp_path: Path
) -> None:
    """The real keyframe's boxes written as nuScenes ``sample_annotation`` records (global frame,
    ``wlh`` sizes, quaternions) come back through nuscenes-devkit as the same LiDAR-frame boxes.
    """
    import shutil

    from pyquaternion import Quaternion

    from olivine_data.boxes import NUSCENES_DETECTION_NAMES, read_nuscenes_boxes
    from olivine_data.datasets.nuscenes_tables import load_nuscenes

    src = shared_data / "nuscenes" / "mmdet3d-demo"
    root = tmp_path / "nuscenes"
    shutil.copytree(src / "v1.0-mini", root / "v1.0-mini")
    (root / "samples").symlink_to(src / "samples")
    (root / "maps").symlink_to(src / "maps")
    (info,) = src.glob("mmdet3d_info_*.json")
    boxes = read_mmdet3d_boxes(info, TOKEN)
    assert all(NUSCENES_DETECTION_NAMES[_CATEGORY[b.name]] == b.name for b in boxes)

    nusc = load_nuscenes(src, "v1.0-mini")
    lidar = nusc.get("sample_data", nusc.get("sample", TOKEN)["data"]["LIDAR_TOP"])
    cs = nusc.get("calibrated_sensor", lidar["calibrated_sensor_token"])
    ep = nusc.get("ego_pose", lidar["ego_pose_token"])
    q_cs, q_ep = Quaternion(cs["rotation"]), Quaternion(ep["rotation"])
    categories, instances, annotations = {}, [], []
    for i, b in enumerate(boxes):
        cat = _CATEGORY[b.name]
        categories.setdefault(
            cat, {"token": f"cat{len(categories)}", "name": cat, "description": ""}
        )
        center = (
            q_ep.rotate(q_cs.rotate(np.array(b.center)) + cs["translation"]) + ep["translation"]
        )
        rot = q_ep * q_cs * Quaternion(axis=[0, 0, 1], angle=b.yaw)
        instances.append(
            {"token": f"inst{i}", "category_token": categories[cat]["token"], "nbr_annotations": 1,
             "first_annotation_token": f"ann{i}", "last_annotation_token": f"ann{i}"}
        )  # fmt: skip
        annotations.append(
            {"token": f"ann{i}", "sample_token": TOKEN, "instance_token": f"inst{i}",
             "visibility_token": "4", "attribute_tokens": [], "translation": list(center),
             "size": [b.size[1], b.size[0], b.size[2]], "rotation": list(rot.elements),
             "prev": "", "next": "", "num_lidar_pts": 1, "num_radar_pts": 0}
        )  # fmt: skip
    tables = root / "v1.0-mini"
    (tables / "category.json").write_text(json.dumps(list(categories.values())))
    (tables / "instance.json").write_text(json.dumps(instances))
    (tables / "sample_annotation.json").write_text(json.dumps(annotations))

    back = read_nuscenes_boxes(load_nuscenes(root, "v1.0-mini"), TOKEN)
    assert len(back) == len(boxes)
    key = lambda b: b.center  # noqa: E731
    for got, want in zip(sorted(back, key=key), sorted(boxes, key=key)):
        assert got.name == want.name
        np.testing.assert_allclose(got.center, want.center, atol=1e-6)
        np.testing.assert_allclose(got.size, want.size, atol=1e-9)
        assert np.cos(got.yaw - want.yaw) == pytest.approx(1.0, abs=1e-9)
