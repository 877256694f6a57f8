"""Synthetic world: geometry vs naive references, sensors, imbalance, VFM noise, determinism."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from olivine_data.synthetic import (
    SyntheticWorldConfig,
    corrupt_labels,
    export_nuscenes,
    generate_world,
    label_noise_rate,
)
from olivine_data.synthetic.geometry import GroundZone, Primitive, classify_ground
from olivine_data.synthetic.layout import make_layout
from olivine_data.synthetic.materials import MATERIAL_ID, MATERIALS, material_lookup
from olivine_data.synthetic.sensors import (
    NUSCENES_CALIBRATION,
    matrix_to_quaternion,
    quaternion_to_matrix,
    scaled_intrinsics,
)
from olivine_data.synthetic.vfm import SEEM17_CONFUSIONS

_LIDARSEG = material_lookup("lidarseg")


# -- geometry -----------------------------------------------------------------------------------
def _inside(prim: Primitive, p: np.ndarray) -> np.ndarray:
    """Naive point-in-solid test (K, 3) -> (K,) bool."""
    q = p - np.asarray(prim.center)
    if prim.kind == "box":
        c, s = np.cos(prim.yaw), np.sin(prim.yaw)
        local = np.stack([c * q[:, 0] + s * q[:, 1], -s * q[:, 0] + c * q[:, 1], q[:, 2]], 1)
        return (np.abs(local) <= np.asarray(prim.size)).all(axis=1)
    if prim.kind == "ellipsoid":
        return ((q / np.asarray(prim.size)) ** 2).sum(axis=1) <= 1.0
    r0, r1, h = prim.size
    radius = r0 + (r1 - r0) * q[:, 2] / h
    return (q[:, 2] >= 0) & (q[:, 2] <= h) & (np.hypot(q[:, 0], q[:, 1]) <= radius)


@pytest.mark.parametrize(
    "prim",
    [
        Primitive("box", (6.0, 1.0, 1.0), (2.0, 0.8, 1.0), 0.4, 1, 1),
        Primitive("ellipsoid", (5.0, -1.0, 2.0), (1.5, 1.0, 2.0), 0.0, 1, 1),
        Primitive("frustum", (5.0, 0.5, 0.0), (0.6, 0.1, 2.5), 0.0, 1, 1),
        Primitive("frustum", (4.0, 0.0, -0.5), (0.8, 0.8, 2.0), 0.0, 1, 1),
    ],
)
def test_intersection_matches_ray_marching(prim: Primitive) -> None:
    rng = np.random.default_rng(0)
    origin = np.array([0.0, 0.0, 1.2], dtype=np.float32)
    centre, radius = prim.bounding_sphere()
    target = centre + rng.uniform(-1.0, 1.0, (400, 3)) * radius
    dirs = (target - origin).astype(np.float32)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    t = prim.intersect(origin, dirs)
    steps = np.arange(0.0, 15.0, 0.002)
    pts = origin[None, None, :] + dirs[:, None, :] * steps[None, :, None]
    inside = _inside(prim, pts.reshape(-1, 3)).reshape(len(dirs), len(steps))
    has = inside.any(axis=1)
    first = np.where(has, steps[inside.argmax(axis=1)], np.inf)
    assert has.sum() > 50 and (~has).sum() > 20
    np.testing.assert_array_equal(np.isfinite(t), has)
    np.testing.assert_allclose(t[has], first[has], atol=0.01)
    # normals point outwards (towards the ray origin side)
    hit_pts = origin + dirs[has] * t[has, None]
    n = prim.normals(hit_pts)
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-5)
    assert ((n * dirs[has]).sum(axis=1) < 1e-3).mean() > 0.98


def test_ground_zones_paint_in_order_and_dash() -> None:
    zones = [
        GroundZone(3, -10, 10, -5, 5),
        GroundZone(1, -10, 10, -2, 2),
        GroundZone(2, -10, 10, -0.1, 0.1, 1, 6.0, 3.0),
    ]
    xy = np.array([[0.0, 4.0], [0.0, 1.0], [1.0, 0.0], [4.0, 0.0], [20.0, 0.0]])
    mat, zone = classify_ground(xy, zones, default_material=4)
    assert mat.tolist() == [3, 1, 2, 1, 4]
    assert zone.tolist() == [0, 1, 2, 1, -1]


def test_calibration_quaternions_round_trip() -> None:
    for calib in NUSCENES_CALIBRATION.values():
        r = quaternion_to_matrix(calib.rotation)
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-9)
        np.testing.assert_allclose(quaternion_to_matrix(matrix_to_quaternion(r)), r, atol=1e-9)
    k = scaled_intrinsics("CAM_FRONT", (400, 225))
    assert k[0, 0] == pytest.approx(1266.417203046554 / 4)
    with pytest.raises(ValueError, match="channel"):
        scaled_intrinsics("LIDAR_TOP", (400, 225))


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="vfm_noise"):
        SyntheticWorldConfig(vfm_noise=1.5)
    with pytest.raises(ValueError, match="image_size"):
        SyntheticWorldConfig(image_size=(8, 8))
    with pytest.raises(ValueError, match="cameras"):
        SyntheticWorldConfig(cameras=("CAM_TOP",))
    with pytest.raises(ValueError, match="scenes.*samples_per_scene"):
        SyntheticWorldConfig(scenes=0, samples_per_scene=0)
    assert SyntheticWorldConfig(scenes=1).num_val_scenes == 0
    assert SyntheticWorldConfig(scenes=8, val_fraction=0.25).num_val_scenes == 2


# -- sensors ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world():  # type: ignore[no-untyped-def]
    return generate_world(
        SyntheticWorldConfig(scenes=3, samples_per_scene=2, seed=11, image_size=(160, 90))
    )


def test_lidar_sweep_like_hdl32e(world) -> None:  # type: ignore[no-untyped-def]
    kf = world.render_keyframe(0, 0)
    pts = kf.lidar.points
    assert pts.dtype == np.float32 and pts.shape[1] == 5
    assert 20_000 <= len(pts) <= 35_000, len(pts)
    assert set(np.unique(pts[:, 4]).astype(int)) <= set(range(32))
    assert len(np.unique(pts[:, 4])) >= 28
    assert 0 <= pts[:, 3].min() and pts[:, 3].max() <= 255
    # density falls with range: points per square metre in rings around the sensor
    r = np.hypot(pts[:, 0], pts[:, 1])
    edges = np.array([3.0, 10.0, 20.0, 40.0])
    counts = np.histogram(r, edges)[0]
    density = counts / (np.pi * (edges[1:] ** 2 - edges[:-1] ** 2))
    assert (np.diff(density) < 0).all(), density
    # per-material intensity: lane paint is brighter than asphalt
    mat = kf.lidar.material
    assert (
        pts[mat == MATERIAL_ID["lane_marking"], 3].mean()
        > 2 * pts[mat == MATERIAL_ID["road"], 3].mean()
    )


def test_cameras_render_class_dependent_images(world) -> None:  # type: ignore[no-untyped-def]
    kf = world.render_keyframe(1, 1)
    assert len(kf.cameras) == 6
    for cam in kf.cameras:
        assert cam.image.shape == (90, 160, 3) and cam.image.dtype == np.uint8
        assert cam.gt_labels.shape == (90, 160)
    img = np.concatenate([c.image.reshape(-1, 3) for c in kf.cameras]).astype(float)
    gt = np.concatenate([c.gt_labels.reshape(-1) for c in kf.cameras])
    road, veg = img[gt == 10].mean(axis=0), img[gt == 13].mean(axis=0)
    assert veg[1] > veg[2] and abs(road[0] - road[2]) < 30  # green trees, grey road
    # textured, not flat: within-class spread is substantial
    assert img[gt == 10].std(axis=0).mean() > 5


def test_class_imbalance_and_coverage(world) -> None:  # type: ignore[no-untyped-def]
    counts = np.zeros(32, dtype=np.int64)
    for s in range(3):
        for k in range(2):
            counts += np.bincount(world.render_keyframe(s, k).lidar.lidarseg, minlength=32)
    frac = counts / counts.sum()
    dominant = frac[24] + frac[28] + frac[30]  # driveable, manmade, vegetation
    assert dominant > 0.6, frac
    top3 = set(np.argsort(frac)[-4:].tolist())
    assert {24, 28} <= top3
    assert frac[12] < 0.005 and frac[14] < 0.005  # traffic cones and bicycles are rare
    assert frac[17] > 10 * frac[14]  # cars much more frequent than bicycles
    # at least 10 of the 16 evaluation classes exist as objects/surfaces in the world
    eval_map = {
        9: 1,
        14: 2,
        15: 3,
        16: 3,
        17: 4,
        18: 5,
        21: 6,
        2: 7,
        12: 8,
        22: 9,
        23: 10,
        24: 11,
        25: 12,
        26: 13,
        27: 14,
        28: 15,
        30: 16,
    }
    present = {
        eval_map[int(_LIDARSEG[p.material])] for lay in world.layouts for p in lay.primitives
    }
    present |= {eval_map[int(_LIDARSEG[z.material])] for lay in world.layouts for z in lay.zones}
    present |= {eval_map[int(_LIDARSEG[lay.default_material])] for lay in world.layouts}
    assert len(present) >= 12, sorted(present)
    # a 10-scene world holds all 16 evaluation classes
    layouts = [make_layout(11, i, 2) for i in range(10)]
    mats = {p.material for lay in layouts for p in lay.primitives}
    mats |= {z.material for lay in layouts for z in lay.zones} | {layouts[0].default_material}
    assert {eval_map[int(_LIDARSEG[m])] for m in mats} == set(range(1, 17))


def test_same_class_pairs_are_common(world) -> None:  # type: ignore[no-untyped-def]
    """Semantic self-conflict: many distinct instances share a class (rows of cars, trees)."""
    layout = world.layouts[0]
    cars = {p.instance for p in layout.primitives if p.material == MATERIAL_ID["car"]}
    trees = {p.instance for p in layout.primitives if p.material == MATERIAL_ID["foliage"]}
    assert len(cars) >= 10 and len(trees) >= 10


# -- VFM labels ---------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [0.0, 0.05, 0.2, 0.5, 0.9])
def test_vfm_noise_matches_configured_rate(world, rate: float) -> None:  # type: ignore[no-untyped-def]
    _, gt, _, inst = world.render_camera(
        0,
        world.lidar_timestamp(0, 0),
        np.asarray(world.render_keyframe(0, 0).cameras[0].sensor_to_ego),
        scaled_intrinsics("CAM_FRONT", (160, 90)),
        (160, 90),
    )
    labels = corrupt_labels(gt, inst, rate, np.random.default_rng(1))
    assert labels.dtype == np.uint8 and labels.shape == gt.shape
    assert label_noise_rate(gt, labels) == pytest.approx(rate, abs=0.002)
    np.testing.assert_array_equal(labels[gt == 16], 16)
    if rate >= 0.2:
        wrong = labels != gt
        assert (labels[wrong] == 16).any()  # unlabelled regions / erosion
        confused = wrong & (labels != 16)
        assert confused.any()
        pairs = set(zip(gt[confused].tolist(), labels[confused].tolist()))
        # confusions are between plausible classes or neighbours across a boundary
        plausible = sum(1 for g, v in pairs if v in SEEM17_CONFUSIONS[g])
        assert plausible >= 1


def test_vfm_noise_of_export(nusc_export: Path, nusc_config) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    rates = []
    for p in sorted((nusc_export / "camseg").rglob("*.png")):
        gt = np.array(Image.open(nusc_export / "gt" / p.relative_to(nusc_export)))
        rates.append(label_noise_rate(gt, np.array(Image.open(p))))
    assert len(rates) == 6 * 4
    assert np.mean(rates) == pytest.approx(nusc_config.vfm_noise, abs=0.01)


# -- determinism --------------------------------------------------------------------------------
def _folder_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_different_seed_different_world(tmp_path: Path) -> None:
    cfg = SyntheticWorldConfig(
        scenes=1,
        samples_per_scene=1,
        seed=5,
        image_size=(64, 36),
        lidar_azimuth_steps=200,
        cameras=("CAM_FRONT", "CAM_BACK"),
    )
    a = _folder_hash(export_nuscenes(cfg, tmp_path / "a", progress=False))
    b = _folder_hash(export_nuscenes(cfg, tmp_path / "b", progress=False))
    assert a == b
    other = SyntheticWorldConfig(**{**cfg.__dict__, "seed": 6})
    c = _folder_hash(export_nuscenes(other, tmp_path / "c", progress=False))
    assert c != a
    la, lc = generate_world(cfg).layouts[0], generate_world(other).layouts[0]
    assert la.primitives != lc.primitives


def test_materials_table_consistent() -> None:
    assert MATERIALS[0].name == "sky" and MATERIALS[0].seem == 16
    # a lidarseg class maps to exactly one SEEM17 class (camera and LiDAR labels agree)
    seem_of: dict[int, set[int]] = {}
    for m in MATERIALS[1:]:
        seem_of.setdefault(m.lidarseg, set()).add(m.seem)
    assert all(len(v) == 1 for v in seem_of.values())


def test_calibration_constants_match_real_nuscenes_tables(shared_data: Path) -> None:
    """The rig constants are the real scene-0061 calibrated_sensor records (read, not copied)."""
    import json

    table = shared_data / "nuscenes" / "mmdet3d-demo" / "v1.0-mini"
    sensors = {s["token"]: s["channel"] for s in json.loads((table / "sensor.json").read_text())}
    records = json.loads((table / "calibrated_sensor.json").read_text())
    assert len(records) == 7
    for rec in records:
        ours = NUSCENES_CALIBRATION[sensors[rec["sensor_token"]]]
        np.testing.assert_allclose(ours.translation, rec["translation"], rtol=0, atol=1e-9)
        np.testing.assert_allclose(ours.rotation, rec["rotation"], rtol=0, atol=1e-12)
        if rec["camera_intrinsic"]:
            np.testing.assert_allclose(ours.intrinsic, rec["camera_intrinsic"], atol=1e-9)
