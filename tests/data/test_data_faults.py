"""Corrupt nuScenes tables, calibrations and sweeps, and absurd coordinates (issue 14, cases 1, 4
and 6): each is one error naming the file (or sample), the record/field and the value, never a
bare ``KeyError``/``JSONDecodeError``/``Singular matrix``, a silently emptied camera, a scrambled
voxel grid or a neighbouring sample used in its place.

The real scene-0061 keyframe is mirrored into ``tmp_path`` (tables copied, sensor files
symlinked) and corrupted there; ``../shared/data`` is never written.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from olivine_data.collate import Collator
from olivine_data.datasets import NuScenesPretrainDataset
from olivine_data.datasets.nuscenes import load_nuscenes, read_nuscenes_points
from olivine_data.datasets.semantickitti import read_kitti_scan
from olivine_data.types import PretrainSample, SegSample
from olivine_data.voxelize import grid_coordinates, voxelize

VERSION = "v1.0-mini"
TOKEN = "ca9a282c9e77460f8360f564131a8af5"


@pytest.fixture()
def root(shared_data: Path, tmp_path: Path) -> Path:
    """A writable copy of the real demo dataroot (1.6 MB: tables and sensor files copied)."""
    src = shared_data / "nuscenes" / "mmdet3d-demo"
    dst = tmp_path / "nus"
    (dst / VERSION).mkdir(parents=True)
    for f in (src / VERSION).iterdir():
        (dst / VERSION / f.name).write_bytes(f.read_bytes())  # writable, unlike shutil.copy
    for sub in ("samples", "maps"):
        for f in (src / sub).rglob("*"):
            if f.is_file():
                target = dst / f.relative_to(src)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(f.read_bytes())  # copied: a symlink leads out of the root
    return dst


def _edit_table(root: Path, table: str, edit: Callable[[list[dict[str, Any]]], None]) -> Path:
    path = root / VERSION / f"{table}.json"
    records = json.loads(path.read_text())
    edit(records)
    path.write_text(json.dumps(records))
    return path


def _camera_records(root: Path, channel: str) -> tuple[dict[str, Any], str]:
    """(sample_data record, calibrated_sensor token) of ``channel``'s keyframe image."""
    sds = json.loads((root / VERSION / "sample_data.json").read_text())
    sd = next(r for r in sds if f"__{channel}__" in r["filename"])
    return sd, sd["calibrated_sensor_token"]


def _load_sample(root: Path) -> PretrainSample:
    return NuScenesPretrainDataset(root, VERSION, scenes=["scene-0061"])[0]


# ----------------------------------------------------------------------------- case 4: tables


def test_missing_calibrated_sensor_token_names_both_tables(root: Path) -> None:
    sd, cs_token = _camera_records(root, "CAM_BACK")
    _edit_table(
        root,
        "calibrated_sensor",
        lambda recs: recs.remove(next(r for r in recs if r["token"] == cs_token)),
    )
    msg = re.escape(
        f"{root / VERSION / 'sample_data.json'}: record {sd['token']!r} field "
        f"'calibrated_sensor_token' = {cs_token!r} is not a token of "
    ) + re.escape(str(root / VERSION / "calibrated_sensor.json"))
    with pytest.raises(ValueError, match=msg):
        load_nuscenes(root, VERSION)


def test_missing_ego_pose_names_the_table_and_the_referring_field(root: Path) -> None:
    sd, _ = _camera_records(root, "CAM_FRONT")
    _edit_table(
        root,
        "ego_pose",
        lambda recs: recs.remove(next(r for r in recs if r["token"] == sd["ego_pose_token"])),
    )
    msg = re.escape(
        f"{root / VERSION / 'ego_pose.json'}: no record with token {sd['ego_pose_token']!r} "
        f"(referred to by {root / VERSION / 'sample_data.json'} record {sd['token']!r} field "
        "'ego_pose_token')"
    )
    with pytest.raises(ValueError, match=msg):
        _load_sample(root)


def test_cut_off_table_names_the_file(root: Path) -> None:
    path = root / VERSION / "calibrated_sensor.json"
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match=re.escape(f"{path}: not valid JSON (") + ".*cut off"):
        load_nuscenes(root, VERSION)


@pytest.mark.parametrize("table", ["calibrated_sensor", "ego_pose"])
def test_zero_quaternion_names_file_record_and_field(root: Path, table: str) -> None:
    sd, cs_token = _camera_records(root, "CAM_FRONT_LEFT")
    token = cs_token if table == "calibrated_sensor" else sd["ego_pose_token"]

    def zero(recs: list[dict[str, Any]]) -> None:
        next(r for r in recs if r["token"] == token)["rotation"] = [0.0, 0.0, 0.0, 0.0]

    path = _edit_table(root, table, zero)
    msg = re.escape(
        f"{path}: record {token!r} field 'rotation' = [0.0, 0.0, 0.0, 0.0]: expected a unit "
        "quaternion [w, x, y, z], got norm 0"
    )
    with pytest.raises(ValueError, match=msg):
        _load_sample(root)


def test_zero_intrinsic_matrix_is_an_error_not_an_empty_camera(root: Path) -> None:
    _, cs_token = _camera_records(root, "CAM_BACK_LEFT")

    def zero(recs: list[dict[str, Any]]) -> None:
        next(r for r in recs if r["token"] == cs_token)["camera_intrinsic"] = [[0.0] * 3] * 3

    path = _edit_table(root, "calibrated_sensor", zero)
    msg = re.escape(f"{path}: record {cs_token!r} field 'camera_intrinsic' = ") + (
        r".*expected a pinhole matrix .* fx > 0 and fy > 0"
    )
    with pytest.raises(ValueError, match=msg):
        _load_sample(root)


@pytest.mark.parametrize("table", ["calibrated_sensor", "ego_pose"])
def test_nan_translation_is_an_error_not_an_empty_camera(root: Path, table: str) -> None:
    sd, cs_token = _camera_records(root, "CAM_FRONT_RIGHT")
    token = cs_token if table == "calibrated_sensor" else sd["ego_pose_token"]
    path = root / VERSION / f"{table}.json"
    records = json.loads(path.read_text())
    next(r for r in records if r["token"] == token)["translation"][1] = float("nan")
    path.write_text(json.dumps(records))  # json writes NaN, and the devkit reads it back
    msg = re.escape(f"{path}: record {token!r} field 'translation' = [") + (
        r".*nan.*\]: expected finite numbers"
    )
    with pytest.raises(ValueError, match=msg):
        _load_sample(root)


def test_intact_tables_still_pair_every_camera(root: Path) -> None:
    sample = _load_sample(root)
    per_camera = np.bincount(sample.pair_pixels[:, 0], minlength=6)
    assert (per_camera > 0).all() and int(per_camera.sum()) == sample.num_pairs


# ----------------------------------------------------------------------------- case 6: 0 bytes


def test_zero_byte_sweep_is_an_error_not_a_skipped_sample(root: Path) -> None:
    lidar = next((root / "samples/LIDAR_TOP").iterdir())
    lidar.unlink()
    lidar.write_bytes(b"")
    with pytest.raises(ValueError, match=re.escape(f"{lidar}: empty point file (0 bytes")):
        read_nuscenes_points(lidar)
    ds = NuScenesPretrainDataset(root, VERSION)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "no point projects ... skipped" warning either
        with pytest.raises(ValueError, match=re.escape(f"{lidar}: empty point file")):
            ds[0]
    assert ds.skipped_tokens == []


def test_zero_byte_kitti_scan_is_an_error(tmp_path: Path) -> None:
    scan = tmp_path / "000000.bin"
    scan.write_bytes(b"")
    with pytest.raises(ValueError, match=re.escape(f"{scan}: empty point file (0 bytes")):
        read_kitti_scan(scan)


# ----------------------------------------------------------------------------- case 1: range


@pytest.mark.parametrize(("col", "value"), [(0, 1e30), (2, -1e30), (1, 2e6)])
def test_absurd_coordinate_in_a_sweep_names_the_file_and_value(
    root: Path, col: int, value: float
) -> None:
    lidar = next((root / "samples/LIDAR_TOP").iterdir())
    pts = np.fromfile(lidar.resolve(), dtype=np.float32).reshape(-1, 5).copy()
    pts[123, col] = value
    lidar.unlink()
    pts.tofile(lidar)
    shown = f"{np.float32(value):.6g}"
    msg = re.escape(f"{lidar}: point 123 has {'xyz'[col]} = {shown}, beyond the supported")
    with pytest.raises(ValueError, match=msg):
        NuScenesPretrainDataset(root, VERSION)[0]


@pytest.mark.parametrize("mode", ["cylindrical", "cartesian"])
@pytest.mark.parametrize(("col", "value"), [(0, 1e30), (2, -1e30), (1, 3e9)])
def test_voxelize_refuses_coordinates_beyond_the_grid_naming_the_sample(
    mode: str, col: int, value: float
) -> None:
    rng = np.random.default_rng(0)
    pts = rng.uniform(-20, 20, size=(50, 3))
    pts[7, col] = value
    with pytest.raises(ValueError, match=r"sample tok-1: point 7 at .*outside the supported int32"):
        voxelize(
            pts, mode, (0.1, 1.0, 0.1) if mode == "cylindrical" else (0.1,) * 3, what="sample tok-1"
        )
    with pytest.raises(ValueError, match=r"points_xyz: point 7 "):
        grid_coordinates(pts, mode)


def test_voxel_grid_too_large_names_the_sample() -> None:
    # each coordinate fits the int32 grid, but the span of the cloud has > 2^62 cells
    pts = np.array([[0.0, 0.0, 0.0], [1e8, 1e8, 1e8]])
    with pytest.raises(ValueError, match=r"sample s: voxel grid too large: the points span"):
        voxelize(pts, "cartesian", (0.1, 0.1, 0.1), what="sample s")


def test_collate_names_the_sample_token() -> None:
    pts = np.zeros((4, 4), np.float32)
    pts[:, 0] = [1.0, 2.0, 3.0, 1e30]
    sample = SegSample(points=pts, point_labels=None, token="abc123")
    with pytest.raises(ValueError, match=r"sample abc123: point 3 .* rho = 1e\+30"):
        Collator().seg([sample])


def test_ordinary_far_points_still_voxelize() -> None:
    pts = np.array([[250.0, -3.0, 1.0], [-0.05, 0.0, -2.0], [999_999.0, 0.0, 0.0]])
    vox = voxelize(pts, "cylindrical", what="sample ok")
    assert vox.num_voxels == 3
    np.testing.assert_array_equal(
        vox.coords.astype(np.int64) + vox.offset,
        grid_coordinates(pts, "cylindrical")[vox.representative],
    )
