"""nuScenes readers against nuscenes-devkit on the real scene-0061 keyframe."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from olivine_data.datasets import NuScenesPretrainDataset, NuScenesSegDataset
from olivine_data.datasets.nuscenes import (
    LIDARSEG_TO_EVAL16,
    NUSCENES_CAMERAS,
    load_nuscenes,
    read_lidarseg_file,
    read_nuscenes_points,
    select_scenes,
)
from olivine_data.labels import SEEM17, LabelStore

VERSION = "v1.0-mini"
TOKEN = "ca9a282c9e77460f8360f564131a8af5"
README_COUNTS = {  # ../shared/data/README.md, map_pointcloud_to_image(min_dist=1.0)
    "CAM_FRONT": 3053,
    "CAM_FRONT_LEFT": 3696,
    "CAM_FRONT_RIGHT": 3076,
    "CAM_BACK": 4820,
    "CAM_BACK_LEFT": 4089,
    "CAM_BACK_RIGHT": 3369,
}


@pytest.fixture(scope="module")
def demo_root(shared_data: Path) -> Path:
    return shared_data / "nuscenes" / "mmdet3d-demo"


@pytest.fixture(scope="module")
def nusc(demo_root: Path):  # type: ignore[no-untyped-def]
    return load_nuscenes(demo_root, VERSION)


@pytest.fixture(scope="module")
def demo_sample(demo_root: Path, nusc):  # type: ignore[no-untyped-def]
    ds = NuScenesPretrainDataset(demo_root, VERSION, scenes=["scene-0061"], nusc=nusc)
    return ds[0]


def _mirror(demo_root: Path, dst: Path) -> Path:
    """A writable copy of the demo dataroot (1.6 MB: tables and sensor files copied)."""
    (dst / VERSION).mkdir(parents=True)
    for f in (demo_root / VERSION).iterdir():
        shutil.copy(f, dst / VERSION / f.name)
    for sub in ("samples", "maps"):
        for f in (demo_root / sub).rglob("*"):
            if f.is_file():
                target = dst / f.relative_to(demo_root)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(f, target)  # a symlink would lead out of the dataroot
    return dst


def _devkit_chain_float64(nusc, points, lidar_sd, cam_sd) -> np.ndarray:  # type: ignore[no-untyped-def]
    """map_pointcloud_to_image's five steps, verbatim, on a float64 LidarPointCloud."""
    from nuscenes.utils.data_classes import LidarPointCloud
    from nuscenes.utils.geometry_utils import view_points
    from pyquaternion import Quaternion

    pc = LidarPointCloud(points.T.astype(np.float64))
    cs = nusc.get("calibrated_sensor", lidar_sd["calibrated_sensor_token"])
    pc.rotate(Quaternion(cs["rotation"]).rotation_matrix)
    pc.translate(np.array(cs["translation"]))
    pose = nusc.get("ego_pose", lidar_sd["ego_pose_token"])
    pc.rotate(Quaternion(pose["rotation"]).rotation_matrix)
    pc.translate(np.array(pose["translation"]))
    pose = nusc.get("ego_pose", cam_sd["ego_pose_token"])
    pc.translate(-np.array(pose["translation"]))
    pc.rotate(Quaternion(pose["rotation"]).rotation_matrix.T)
    cs = nusc.get("calibrated_sensor", cam_sd["calibrated_sensor_token"])
    pc.translate(-np.array(cs["translation"]))
    pc.rotate(Quaternion(cs["rotation"]).rotation_matrix.T)
    uv = view_points(pc.points[:3, :], np.array(cs["camera_intrinsic"]), normalize=True)
    return uv[:2].T


def test_pairs_equal_devkit_map_pointcloud_to_image(demo_sample, nusc) -> None:  # type: ignore[no-untyped-def]
    s = demo_sample
    assert s.token == TOKEN
    assert s.points.shape == (34688, 4) and s.images.shape == (6, 900, 1600, 3)
    assert s.camera_names == NUSCENES_CAMERAS
    sample = nusc.get("sample", TOKEN)
    # Sub-pixel coordinates through the public projection API with the dataset's chain.
    from olivine_data.datasets.nuscenes import lidar_to_camera_matrix
    from olivine_data.projection import compose_projection, project_to_cameras

    lidar_sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    total_extra = 0
    for ci, cam in enumerate(NUSCENES_CAMERAS):
        cam_sd = nusc.get("sample_data", sample["data"][cam])
        k = nusc.get("calibrated_sensor", cam_sd["calibrated_sensor_token"])["camera_intrinsic"]
        proj = project_to_cameras(
            s.points[:, :3],
            compose_projection(np.array(k), lidar_to_camera_matrix(nusc, lidar_sd, cam_sd))[None],
            [(900, 1600)],
        )
        # The dataset's pairs for this camera are exactly these points, rounded.
        sel = s.pair_pixels[:, 0] == ci
        np.testing.assert_array_equal(s.pair_points[sel], proj.point_indices)
        np.testing.assert_array_equal(s.pair_pixels[sel, 1:], np.round(proj.uv[:, ::-1]))

        dk_uv, _, im = nusc.explorer.map_pointcloud_to_image(
            sample["data"]["LIDAR_TOP"], sample["data"][cam], min_dist=1.0
        )
        assert im.size == (1600, 900)
        assert dk_uv.shape[1] == README_COUNTS[cam]
        # The devkit keeps 1 < u < W-1 and 1 < v < H-1; the reference pairing keeps 0 < u, 0 < v.
        u, v = proj.uv.T
        inner = (u > 1) & (v > 1)
        assert inner.sum() == README_COUNTS[cam]
        # map_pointcloud_to_image keeps the cloud in float32 while it sits in the global frame
        # (|x| ~ 1.2 km, float32 spacing 1.2e-4 m), which moves its pixels by up to ~0.02 px.
        np.testing.assert_allclose(proj.uv[inner], dk_uv[:2].T, rtol=0, atol=0.05)
        # The same devkit steps (rotate/translate/view_points) on a float64 cloud agree to 1e-3 px.
        np.testing.assert_allclose(
            proj.uv,
            _devkit_chain_float64(nusc, s.points, lidar_sd, cam_sd)[proj.point_indices],
            rtol=0,
            atol=1e-3,
        )
        # The extra pairs lie in the 1-pixel strip the devkit leaves out, and nowhere else.
        extra = proj.uv[~inner]
        assert ((extra[:, 0] <= 1) | (extra[:, 1] <= 1)).all()
        assert (extra > 0).all()
        total_extra += int((~inner).sum())
    assert s.num_pairs == sum(README_COUNTS.values()) + total_extra
    assert total_extra == 12  # 3 + 0 + 1 + 2 + 2 + 4 points in the 0 < u <= 1 / 0 < v <= 1 strip


def test_pairs_depth_and_bounds(demo_sample) -> None:  # type: ignore[no-untyped-def]
    s = demo_sample
    cam, row, col = s.pair_pixels.T
    assert row.min() >= 0 and row.max() <= 899 and col.min() >= 0 and col.max() <= 1599
    # Each camera sees a point at most once.
    key = cam * s.points.shape[0] + s.pair_points
    assert np.unique(key).size == key.size


def test_vfm_labels_at_rounded_pixel(demo_root: Path, nusc, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store = LabelStore(tmp_path, SEEM17)
    sample = nusc.get("sample", TOKEN)
    rng = np.random.default_rng(1)
    label_images = {}
    for cam in NUSCENES_CAMERAS:
        fname = nusc.get("sample_data", sample["data"][cam])["filename"]
        lab = rng.integers(0, 17, size=(900, 1600))
        store.write(cam, fname, lab)
        label_images[cam] = lab
    ds = NuScenesPretrainDataset(demo_root, VERSION, label_store=store, nusc=nusc)
    s = ds[0]
    assert s.pair_labels is not None
    for ci, cam in enumerate(NUSCENES_CAMERAS):
        sel = s.pair_pixels[:, 0] == ci
        want = label_images[cam][s.pair_pixels[sel, 1], s.pair_pixels[sel, 2]]
        np.testing.assert_array_equal(s.pair_labels[sel], want)
    # A path works too; a missing label file names the file.
    ds2 = NuScenesPretrainDataset(demo_root, VERSION, label_store=tmp_path / "nothing", nusc=nusc)
    with pytest.raises(FileNotFoundError, match="camseg/CAM_FRONT/.*png"):
        ds2[0]
    # A label image of the wrong size is refused.
    fname = nusc.get("sample_data", sample["data"]["CAM_BACK"])["filename"]
    store.write("CAM_BACK", fname, np.zeros((450, 800), int))
    with pytest.raises(ValueError, match="expected \\(900, 1600\\)"):
        ds[0]


def test_scene_selection(demo_root: Path, tmp_path: Path) -> None:
    names = [f"scene-{i:04d}" for i in range(10)]
    assert select_scenes(names, tmp_path) == names
    assert select_scenes(names, tmp_path, skip=3) == ["scene-0002", "scene-0005", "scene-0008"]
    with pytest.warns(UserWarning, match="falling back"):
        assert select_scenes(names, tmp_path, skip=100) == ["scene-0000"]
    with pytest.raises(ValueError, match="scene-9999"):
        select_scenes(names, tmp_path, scenes=["scene-0001", "scene-9999"])
    assert select_scenes(names, tmp_path, scenes=["scene-0004", "scene-0001"]) == [
        "scene-0001",
        "scene-0004",
    ]
    # olivine_splits.json keys win; other names fall through to the devkit splits.
    (tmp_path / "olivine_splits.json").write_text(
        json.dumps({"train": names[:6], "val": names[6:]})
    )
    assert select_scenes(names, tmp_path, split="val") == names[6:]
    assert select_scenes(names, tmp_path, split="train", skip=2) == names[1:6:2]
    with pytest.raises(ValueError, match="unknown split 'nope'.*mini_val.*val"):
        select_scenes(names, tmp_path, split="nope")
    with pytest.raises(ValueError, match="none of its"):
        select_scenes(names, tmp_path, split="mini_val")
    # Official devkit split on the real tables: scene-0061 is in mini_train, not in mini_val.
    with pytest.warns(UserWarning, match="7 of 8"):
        assert select_scenes(["scene-0061"], demo_root, split="mini_train") == ["scene-0061"]
    (tmp_path / "olivine_splits.json").write_text('{"train": "scene-0001"}')
    with pytest.raises(ValueError, match="olivine_splits.json.*list"):
        select_scenes(names, tmp_path, split="train")


def test_lidarseg_fragment_32_to_16(shared_data: Path) -> None:
    frag = shared_data / "nuscenes" / "mmdet3d-tests-lidarseg"
    pts = read_nuscenes_points(
        frag
        / "samples/LIDAR_TOP"
        / "n015-2018-08-02-17-16-37+0800__LIDAR_TOP__1533201470948018.pcd.bin"
    )
    assert pts.shape == (40, 4)
    lab_path = frag / "lidarseg/v1.0-trainval/5f6c1e0a0c3b444b97e78d2aa3fa34d2_lidarseg.bin"
    raw = np.fromfile(lab_path, dtype=np.uint8)
    assert set(np.unique(raw).tolist()) == {17, 24, 27, 28, 30, 31}
    mapped = read_lidarseg_file(lab_path, 40)
    # The YAML shipped with the data (Cylinder3D's, verified against the devkit) is the oracle.
    import yaml

    cfg = yaml.safe_load(
        (shared_data / "nuscenes/config/nuscenes-lidarseg-16class.yaml").read_text()
    )
    lm = cfg["learning_map"]
    assert [lm[i] for i in range(32)] == LIDARSEG_TO_EVAL16.tolist()
    np.testing.assert_array_equal(mapped, [lm[int(r)] for r in raw])
    assert set(np.unique(mapped).tolist()) == {0, 4, 11, 14, 15, 16}
    # Geometry sanity from the README: driveable surface is low, ego points are near the origin.
    assert np.median(pts[mapped == 11, 2]) < -1.5
    assert (np.linalg.norm(pts[raw == 31, :2], axis=1) < 1.5).all()
    with pytest.raises(ValueError, match="expected 41"):
        read_lidarseg_file(lab_path, 41)


def test_seg_dataset_through_devkit_lidarseg(demo_root: Path, tmp_path: Path) -> None:
    root = _mirror(demo_root, tmp_path / "nus")
    # Install lidarseg for the demo sweep: the 32-class category table and a label file.
    import yaml

    names = yaml.safe_load(
        (demo_root.parent / "config" / "nuscenes-lidarseg-16class.yaml").read_text()
    )["labels"]
    cats = [
        {"token": f"cat{i}", "name": names[i], "description": "", "index": i} for i in range(32)
    ]
    (root / VERSION / "category.json").write_text(json.dumps(cats))
    lidar_sd = "9d9bf11fb0e144c8b446d54a8a00184f"
    rel = f"lidarseg/{VERSION}/{lidar_sd}_lidarseg.bin"
    (root / VERSION / "lidarseg.json").write_text(
        json.dumps([{"token": lidar_sd, "sample_data_token": lidar_sd, "filename": rel}])
    )
    (root / "lidarseg" / VERSION).mkdir(parents=True)
    raw = np.random.default_rng(0).integers(0, 32, 34688).astype(np.uint8)
    raw.tofile(root / rel)
    with pytest.warns(UserWarning, match="7 of 8 scenes"):
        ds = NuScenesSegDataset(root, VERSION, split="mini_train")
    assert len(ds) == 1
    s = ds[0]
    assert s.points.shape == (34688, 4) and s.token == TOKEN
    np.testing.assert_array_equal(s.point_labels, LIDARSEG_TO_EVAL16[raw])
    # A label file of the wrong length names the file.
    raw[:-1].tofile(root / rel)
    with pytest.raises(ValueError, match=f"{lidar_sd}_lidarseg.bin.*expected 34688"):
        ds[0]
    (raw % 40 + 1).astype(np.uint8).tofile(root / rel)
    with pytest.raises(ValueError, match="0..31"):
        ds[0]


def test_bad_nuscenes_inputs(demo_root: Path, tmp_path: Path) -> None:
    root = _mirror(demo_root, tmp_path / "nus")
    with pytest.raises(FileNotFoundError, match="v1.0-trainval"):
        NuScenesPretrainDataset(root, "v1.0-trainval")
    with pytest.raises(FileNotFoundError, match="lidarseg.json"):
        NuScenesSegDataset(root, VERSION)
    lidar = next((root / "samples/LIDAR_TOP").iterdir())
    data = np.fromfile(lidar.resolve(), dtype=np.float32)
    lidar.unlink()
    ds = NuScenesPretrainDataset(root, VERSION)
    with pytest.raises(FileNotFoundError, match="LIDAR_TOP"):
        ds[0]
    data[:-3].tofile(lidar)  # truncated: not a multiple of 5 floats
    with pytest.raises(ValueError, match=re.escape(lidar.name) + ".*not a multiple of 20"):
        ds[0]
    bad = data.copy().reshape(-1, 5)
    bad[10, 1] = np.nan
    bad[20, 2] = np.inf
    bad.tofile(lidar)
    msg = re.escape(f"{lidar.name}: 2 of 34688 points have NaN/inf")
    with pytest.raises(ValueError, match=msg):
        ds[0]
    # Missing camera image.
    data.tofile(lidar)
    cam = next((root / "samples/CAM_BACK").iterdir())
    cam.unlink()
    with pytest.raises(FileNotFoundError, match="CAM_BACK"):
        ds[0]
    cam.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="cannot decode"):
        ds[0]


def test_no_pair_sample_is_skipped_with_warning(demo_root: Path, tmp_path: Path) -> None:
    root = _mirror(demo_root, tmp_path / "nus")
    lidar = next((root / "samples/LIDAR_TOP").iterdir())
    pts = np.fromfile(lidar.resolve(), dtype=np.float32).reshape(-1, 5).copy()
    pts[:, :3] = [0.0, 0.0, 0.5]  # every point at the sensor: depth < 1 m in every camera
    lidar.unlink()
    pts.tofile(lidar)
    ds = NuScenesPretrainDataset(root, VERSION)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="no keyframe"):
            ds[0]
    assert ds.skipped_tokens == [TOKEN]
    assert any("no point projects" in str(w.message) for w in rec)


def test_real_sample_through_augmentation_and_collate(demo_sample) -> None:  # type: ignore[no-untyped-def]
    from olivine_data.collate import Collator
    from olivine_data.transforms import PretrainAugmentation, ResizeImages

    aug = PretrainAugmentation(seed=0)(demo_sample)
    val = ResizeImages()(demo_sample)
    assert aug.images.shape == val.images.shape == (6, 224, 416, 3)
    assert val.num_pairs == demo_sample.num_pairs
    per_img = np.bincount(aug.pair_pixels[:, 0], minlength=6)
    assert (per_img > 1024).all() or (
        per_img > 0.75 * np.bincount(demo_sample.pair_pixels[:, 0], minlength=6)
    ).all()
    batch = Collator().pretrain([aug, val])
    assert batch.images.shape == (12, 3, 224, 416)
    assert batch.pair_pixels[:, 0].max() <= 11 and batch.pair_pixels[:, 1].max() < 224
    assert int(batch.pair_range_bins.min()) >= 10  # depth > 1 m in a camera => range >= ~1 m
