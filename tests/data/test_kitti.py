"""SemanticKITTI and KITTI readers on the real scans."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from olivine_data.datasets import (
    KittiPretrainDataset,
    SemanticKITTISegDataset,
    read_object_calib,
    read_odometry_calib,
    write_odometry_calib,
)
from olivine_data.datasets.semantickitti import learning_map_lut, load_semantickitti_config
from olivine_data.labels import LabelStore


@pytest.fixture(scope="module")
def sk_root(shared_data: Path) -> Path:
    return shared_data / "semantickitti" / "keonhee-han-KI_DT"


@pytest.fixture(scope="module")
def obj_root(shared_data: Path) -> Path:
    return shared_data / "kitti" / "kitti_object_vis" / "object" / "training"


def test_packaged_yaml_is_the_official_one(shared_data: Path) -> None:
    yaml_path = shared_data / "semantickitti/config/semantic-kitti.yaml"
    official = yaml.safe_load(yaml_path.read_text())
    assert load_semantickitti_config() == official
    assert load_semantickitti_config()["split"]["valid"] == [8]


def test_semantickitti_scan_labels_equal_yaml(sk_root: Path, shared_data: Path) -> None:
    ds = SemanticKITTISegDataset(sk_root, sequences=[7])
    assert len(ds) == 1
    s = ds[0]
    assert s.token == "07/000964"
    assert s.points.shape == (120485, 4)
    raw_pts = np.fromfile(sk_root / "sequences/07/velodyne/000964.bin", np.float32).reshape(-1, 4)
    np.testing.assert_array_equal(s.points, raw_pts)
    raw = np.fromfile(sk_root / "sequences/07/labels/000964.label", np.uint32)
    cfg = yaml.safe_load((shared_data / "semantickitti/config/semantic-kitti.yaml").read_text())
    want = np.array([cfg["learning_map"][int(x) & 0xFFFF] for x in raw])
    np.testing.assert_array_equal(s.point_labels, want)
    counts = np.bincount(s.point_labels, minlength=20)
    # README: {0: 1912, 1 car: 11510, 9 road: 17066, 11 sidewalk: 19952, 13 building: 37840,
    # 15 vegetation: 16304, ...}
    assert counts[[0, 1, 9, 11, 13, 15]].tolist() == [1912, 11510, 17066, 19952, 37840, 16304]
    assert counts.sum() == 120485 and s.point_labels.max() <= 19
    assert abs(np.median(s.points[s.point_labels == 9, 2]) + 1.68) < 0.01  # road median z
    # The moving-car id 252 is folded into car.
    assert (s.point_labels[(raw & 0xFFFF) == 252] == 1).all()


def test_semantickitti_splits_and_skip(tmp_path: Path, sk_root: Path) -> None:
    for seq in ("07", "08"):
        for sub in ("velodyne", "labels"):
            (tmp_path / "sequences" / seq / sub).mkdir(parents=True)
    src = sk_root / "sequences/07"
    for i in range(5):
        for seq in ("07", "08"):
            (tmp_path / f"sequences/{seq}/velodyne/{i:06d}.bin").symlink_to(
                src / "velodyne/000964.bin"
            )
            (tmp_path / f"sequences/{seq}/labels/{i:06d}.label").symlink_to(
                src / "labels/000964.label"
            )
    ds = SemanticKITTISegDataset(tmp_path, split="val")
    assert [f"{s}/{f.stem}" for s, f in ds.frames] == [f"08/{i:06d}" for i in range(5)]
    ds = SemanticKITTISegDataset(tmp_path, sequences=["07", 8], skip=3)
    assert [f"{s}/{f.stem}" for s, f in ds.frames] == [
        "07/000000",
        "07/000003",
        "08/000001",
        "08/000004",
    ]
    with pytest.raises(FileNotFoundError, match="sequences/00/velodyne"):
        SemanticKITTISegDataset(tmp_path, split="train")
    with pytest.raises(ValueError, match="unknown SemanticKITTI split"):
        SemanticKITTISegDataset(tmp_path, split="training")
    with pytest.raises(ValueError, match="skip"):
        SemanticKITTISegDataset(tmp_path, sequences=[7], skip=0)


def test_semantickitti_bad_inputs(tmp_path: Path, sk_root: Path) -> None:
    d = tmp_path / "sequences/07"
    (d / "velodyne").mkdir(parents=True)
    (d / "labels").mkdir()
    pts = np.fromfile(sk_root / "sequences/07/velodyne/000964.bin", np.float32)
    lab = np.fromfile(sk_root / "sequences/07/labels/000964.label", np.uint32)
    scan, label = d / "velodyne/000000.bin", d / "labels/000000.label"
    pts[:-1].tofile(scan)
    lab.tofile(label)
    ds = SemanticKITTISegDataset(tmp_path, sequences=[7])
    with pytest.raises(ValueError, match=r"000000\.bin: size .* not a multiple of 16"):
        ds[0]
    p2 = pts.copy()
    p2[5] = np.inf
    p2.tofile(scan)
    with pytest.raises(ValueError, match=r"000000\.bin: 1 of 120485 points have NaN/inf"):
        ds[0]
    pts.tofile(scan)
    lab[:-4].tofile(label)
    with pytest.raises(ValueError, match=r"000000\.label.*expected 120485"):
        ds[0]
    bad = lab.copy()
    bad[:3] = 77  # not in the learning map
    bad.tofile(label)
    with pytest.raises(ValueError, match=r"000000\.label: semantic ids \[77\]"):
        ds[0]
    label.unlink()
    with pytest.raises(FileNotFoundError, match=r"000000\.label"):
        ds[0]
    unlabelled = SemanticKITTISegDataset(tmp_path, sequences=[7], with_labels=False)
    assert unlabelled[0].point_labels is None
    lut = learning_map_lut(load_semantickitti_config())
    assert lut[252] == 1 and lut[1] == 0 and lut[77] == -1


def test_missing_backend_names_the_extra(monkeypatch: pytest.MonkeyPatch, sk_root: Path) -> None:
    monkeypatch.setitem(sys.modules, "auxiliary", None)
    monkeypatch.setitem(sys.modules, "auxiliary.laserscan", None)
    with pytest.raises(ImportError, match=re.escape("olivine-data[semantickitti]")):
        SemanticKITTISegDataset(sk_root, sequences=[7])


def _naive_kitti(points: np.ndarray, calib_path: Path, w: int, h: int) -> tuple[np.ndarray, ...]:
    cal = {}
    for line in calib_path.read_text().splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            cal[k] = np.array([float(x) for x in v.split()])
    p2 = cal["P2"].reshape(3, 4)
    r0 = np.eye(4)
    r0[:3, :3] = cal["R0_rect"].reshape(3, 3)
    tr = np.eye(4)
    tr[:3] = cal["Tr_velo_to_cam"].reshape(3, 4)
    x = np.concatenate([points[:, :3].astype(np.float64), np.ones((len(points), 1))], axis=1)
    img = (p2 @ r0 @ tr @ x.T).T
    depth = img[:, 2]
    return img[:, 0] / depth, img[:, 1] / depth, depth


def test_kitti_object_projection(obj_root: Path) -> None:
    ds = KittiPretrainDataset(obj_root, layout="object")
    assert len(ds) == 2
    s = ds[0]
    assert s.images.shape == (1, 370, 1224, 3) and s.camera_names == ("image_2",)
    assert s.points.shape == (115384, 4)
    u, v, d = _naive_kitti(s.points, obj_root / "calib/000000.txt", 1224, 370)
    # README's criterion (depth > 0, 0 <= u < W, 0 <= v < H) gives 20,285 points.
    assert ((d > 0) & (u >= 0) & (u < 1224) & (v >= 0) & (v < 370)).sum() == 20285
    # The reference pairing rule (depth > 1 m, 0 < u < W-1, 0 < v < H-1) keeps a subset.
    ref = (d > 1) & (u > 0) & (u < 1223) & (v > 0) & (v < 369)
    assert ref.sum() == 20222 == s.num_pairs
    np.testing.assert_array_equal(s.pair_points, np.nonzero(ref)[0])
    np.testing.assert_array_equal(s.pair_pixels[:, 1], np.round(v[ref]))
    np.testing.assert_array_equal(s.pair_pixels[:, 2], np.round(u[ref]))
    assert (s.pair_pixels[:, 0] == 0).all()
    # Pixel check: a nearby road point (x ~ 6-8 m ahead, lowest) falls in the lower image half.
    road = (s.points[s.pair_points, 0] < 8) & (s.points[s.pair_points, 2] < -1.4)
    assert road.sum() > 100 and (s.pair_pixels[road, 1] > 250).all()
    s1 = ds[1]
    assert s1.images.shape == (1, 375, 1242, 3) and s1.token == "000001"


def test_kitti_odometry_layout_with_adapter_and_labels(obj_root: Path, tmp_path: Path) -> None:
    # Lay the object frames out as odometry sequence 05 through the calib adapter.
    d = tmp_path / "sequences/05"
    (d / "velodyne").mkdir(parents=True)
    (d / "image_2").mkdir()
    for stem in ("000000", "000001"):
        (d / f"velodyne/{stem}.bin").symlink_to(obj_root / f"velodyne/{stem}.bin")
        (d / f"image_2/{stem}.png").symlink_to(obj_root / f"image_2/{stem}.png")
    cal = read_object_calib(obj_root / "calib/000000.txt")
    write_odometry_calib(cal, d / "calib.txt")
    back = read_odometry_calib(d / "calib.txt")
    np.testing.assert_allclose(back.projection, cal.projection, rtol=1e-10)
    obj = KittiPretrainDataset(obj_root, layout="object")[0]
    store = LabelStore(tmp_path / "labels")
    lab = np.random.default_rng(0).integers(0, 17, size=(370, 1224))
    store.write("image_2", "05_000000", lab)
    ds = KittiPretrainDataset(tmp_path, sequences=[5], label_store=store, skip=2)
    assert len(ds) == 1
    s = ds[0]
    assert s.token == "05/000000"
    np.testing.assert_array_equal(s.pair_points, obj.pair_points)
    np.testing.assert_array_equal(s.pair_pixels, obj.pair_pixels)
    assert s.pair_labels is not None
    np.testing.assert_array_equal(s.pair_labels, lab[s.pair_pixels[:, 1], s.pair_pixels[:, 2]])


def test_kitti_bad_inputs(obj_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "training"
    for sub in ("velodyne", "image_2", "calib"):
        (root / sub).mkdir(parents=True)
        shutil.copy(next((obj_root / sub).glob("000000.*")), root / sub)
    ds = KittiPretrainDataset(root, layout="object")
    assert ds[0].num_pairs == 20222
    (root / "image_2/000000.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"image not found: .*image_2/000000\.png"):
        ds[0]
    shutil.copy(obj_root / "image_2/000000.png", root / "image_2")
    text = (root / "calib/000000.txt").read_text()
    (root / "calib/000000.txt").write_text(re.sub(r"(?m)^R0_rect:.*\n", "", text))
    with pytest.raises(ValueError, match=r"000000\.txt: missing calibration entry 'R0_rect'"):
        ds[0]
    (root / "calib/000000.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"calibration file not found: .*000000\.txt"):
        ds[0]
    (root / "calib/000000.txt").write_text(text)
    # A scan behind the camera only: no pair -> skipped with a warning, then an error.
    pts = np.fromfile(root / "velodyne/000000.bin", np.float32).reshape(-1, 4)
    pts[:, 0] = -np.abs(pts[:, 0]) - 5.0
    pts.tofile(root / "velodyne/000000.bin")
    with (
        pytest.warns(RuntimeWarning, match="no point projects"),
        pytest.raises(ValueError, match="no frame"),
    ):
        ds[0]
    assert ds.skipped_tokens == ["000000"]
    with pytest.raises(ValueError, match="layout"):
        KittiPretrainDataset(root, layout="raw")
