"""nuScenes tables through nuscenes-devkit, with errors that name the file, record and field.

Table and calibration faults are errors that name the table file, the record and the field: a
table that is not valid JSON (e.g. cut off), a token that no record of the referenced table holds,
and a ``calibrated_sensor`` / ``ego_pose`` record whose ``translation`` is not 3 finite numbers,
whose ``rotation`` is not a unit quaternion ``[w, x, y, z]``, or (cameras) whose
``camera_intrinsic`` is not a finite 3x3 matrix with positive focal lengths and last row
``[0, 0, 1]``. Such a fault would otherwise give a bare ``KeyError``/``JSONDecodeError``/
``Singular matrix``, or silently empty a camera of its pairs.

Every ``filename`` a record holds must resolve (symlinks followed) inside the dataroot
(:func:`record_file`), and a camera record's ``width`` / ``height`` are the size its image must
have (:func:`recorded_image_size`): the intrinsic matrix holds for that size only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from olivine_data.datasets._common import confined_path

if TYPE_CHECKING:
    from nuscenes import NuScenes

__all__ = [
    "load_nuscenes",
    "get_record",
    "table_file",
    "camera_intrinsic",
    "lidar_to_camera_matrix",
    "recorded_image_size",
    "record_file",
]


def load_nuscenes(root: str | os.PathLike[str], version: str) -> NuScenes:
    """Open the devkit tables at ``root/version`` with a clear error if they are missing.

    Raises:
        FileNotFoundError: the table folder or one of the tables the readers use is missing.
        ValueError: a table is not valid JSON (naming the file and the position), or a record
            refers to a token that the referenced table does not hold (naming both files, the
            record and the field), as found while the devkit builds its indexes.
    """
    from nuscenes import NuScenes

    table_root = Path(root) / version
    if not table_root.is_dir():
        raise FileNotFoundError(f"nuScenes tables not found: {table_root} (root={root!s})")
    for name in ("scene", "sample", "sample_data", "calibrated_sensor", "ego_pose"):
        if not (table_root / f"{name}.json").is_file():
            raise FileNotFoundError(f"nuScenes table missing: {table_root / (name + '.json')}")
    try:
        return NuScenes(version=version, dataroot=str(root), verbose=False)
    except json.JSONDecodeError as exc:
        raise ValueError(_explain_bad_json(table_root, exc)) from None
    except KeyError as exc:
        raise ValueError(_explain_missing_key(table_root, exc)) from None


def _explain_bad_json(table_root: Path, exc: json.JSONDecodeError) -> str:
    """Name the table that does not parse (the devkit's error does not)."""
    for path in sorted(table_root.glob("*.json")):
        try:
            json.loads(path.read_text())
        except json.JSONDecodeError as err:
            return (
                f"{path}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno}, "
                f"{path.stat().st_size} bytes): the nuScenes table is cut off or corrupt"
            )
    return f"{table_root}: a nuScenes table is not valid JSON ({exc})"


def _explain_missing_key(table_root: Path, exc: KeyError) -> str:
    """Find the record whose field holds the token the devkit could not resolve."""
    missing = exc.args[0] if exc.args else None
    if isinstance(missing, str):
        for path in sorted(table_root.glob("*.json")):
            try:
                records = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if not isinstance(records, list):
                continue
            for rec in records:
                if not isinstance(rec, dict):
                    continue
                for field, value in rec.items():
                    if field != "token" and value == missing:
                        target = _referenced_table(path.stem, field)
                        return (
                            f"{path}: record {rec.get('token')!r} field {field!r} = {missing!r} "
                            f"is not a token of {table_root / (target + '.json')}: the nuScenes "
                            "tables are inconsistent (a record was removed or a table replaced)"
                        )
    return (
        f"{table_root}: inconsistent nuScenes tables: the devkit found no record or field "
        f"{missing!r} while indexing them (a record lacks a field, or a token refers to nothing)"
    )


def _referenced_table(table: str, field: str) -> str:
    """``calibrated_sensor_token`` -> ``calibrated_sensor``; ``prev``/``next`` -> same table."""
    if field in ("prev", "next"):
        return table
    return field[: -len("_token")] if field.endswith("_token") else field


def table_file(nusc: NuScenes, table: str) -> Path:
    """The JSON file of ``table`` (named in the errors)."""
    return Path(nusc.table_root) / f"{table}.json"


def get_record(nusc: NuScenes, table: str, token: str, referrer: str) -> dict[str, Any]:
    """``nusc.get`` with an error that names the table file and who referred to the token."""
    try:
        record: dict[str, Any] = nusc.get(table, token)
    except KeyError:
        raise ValueError(
            f"{table_file(nusc, table)}: no record with token {token!r} (referred to by {referrer})"
        ) from None
    return record


def _field_array(
    nusc: NuScenes, table: str, record: dict[str, Any], field: str, shape: tuple[int, ...]
) -> np.ndarray:
    where = f"{table_file(nusc, table)}: record {record.get('token')!r} field {field!r}"
    if field not in record:
        raise ValueError(f"{where} is missing")
    try:
        arr = np.asarray(record[field], dtype=np.float64)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.shape != shape:
        raise ValueError(f"{where} = {record[field]!r}: expected {shape} numbers")
    if not np.isfinite(arr).all():
        raise ValueError(f"{where} = {record[field]!r}: expected finite numbers (NaN/inf found)")
    return arr


_QUATERNION_TOLERANCE = 1e-3  # |norm - 1|: the tables store unit quaternions to ~1e-8


def _checked_pose(nusc: NuScenes, table: str, record: dict[str, Any]) -> np.ndarray:
    """4x4 float64 pose of a ``calibrated_sensor`` / ``ego_pose`` record, after validation."""
    from nuscenes.utils.geometry_utils import transform_matrix
    from pyquaternion import Quaternion

    translation = _field_array(nusc, table, record, "translation", (3,))
    rotation = _field_array(nusc, table, record, "rotation", (4,))
    norm = float(np.linalg.norm(rotation))
    if abs(norm - 1.0) > _QUATERNION_TOLERANCE:
        raise ValueError(
            f"{table_file(nusc, table)}: record {record.get('token')!r} field 'rotation' = "
            f"{record['rotation']!r}: expected a unit quaternion [w, x, y, z], got norm {norm:.6g}"
        )
    matrix: np.ndarray = transform_matrix(translation, Quaternion(rotation))
    return matrix


def camera_intrinsic(nusc: NuScenes, cam_sd: dict[str, Any]) -> np.ndarray:
    """The validated ``(3, 3)`` intrinsic matrix of a camera ``sample_data`` record.

    Raises:
        ValueError: naming ``calibrated_sensor.json``, the record and ``camera_intrinsic``, if the
            matrix is missing, not 3x3, not finite, has a focal length <= 0 or a last row other
            than ``[0, 0, 1]`` (a zero matrix would silently project no point into the camera).
    """
    cs = get_record(
        nusc,
        "calibrated_sensor",
        cam_sd["calibrated_sensor_token"],
        f"{table_file(nusc, 'sample_data')} record {cam_sd['token']!r} field "
        "'calibrated_sensor_token'",
    )
    k = _field_array(nusc, "calibrated_sensor", cs, "camera_intrinsic", (3, 3))
    if not (k[0, 0] > 0 and k[1, 1] > 0 and np.array_equal(k[2], [0.0, 0.0, 1.0])):
        raise ValueError(
            f"{table_file(nusc, 'calibrated_sensor')}: record {cs.get('token')!r} field "
            f"'camera_intrinsic' = {cs['camera_intrinsic']!r}: expected a pinhole matrix "
            "[[fx, s, cx], [0, fy, cy], [0, 0, 1]] with fx > 0 and fy > 0"
        )
    return k


def _sensor_pose(nusc: NuScenes, sd: dict[str, Any], table: str) -> np.ndarray:
    field = f"{table}_token"
    referrer = f"{table_file(nusc, 'sample_data')} record {sd.get('token')!r} field {field!r}"
    if not isinstance(sd.get(field), str):
        raise ValueError(f"{referrer}: missing (expected the token of a {table} record)")
    return _checked_pose(nusc, table, get_record(nusc, table, sd[field], referrer))


def lidar_to_camera_matrix(
    nusc: NuScenes, lidar_sd: dict[str, Any], cam_sd: dict[str, Any]
) -> np.ndarray:
    """4x4 float64 transform of the reference chain: lidar -> ego(t_lidar) -> global ->
    ego(t_cam) -> camera.

    Raises:
        ValueError: a referenced ``calibrated_sensor`` / ``ego_pose`` record is missing or has a
            non-finite translation or a non-unit rotation (naming the file, record and field).
    """
    cs_l = _sensor_pose(nusc, lidar_sd, "calibrated_sensor")
    ep_l = _sensor_pose(nusc, lidar_sd, "ego_pose")
    ep_c = _sensor_pose(nusc, cam_sd, "ego_pose")
    cs_c = _sensor_pose(nusc, cam_sd, "calibrated_sensor")
    return np.linalg.inv(cs_c) @ np.linalg.inv(ep_c) @ ep_l @ cs_l


def record_file(
    nusc: NuScenes,
    table: str,
    record: dict[str, Any],
    allow_outside_root: bool = False,
    root: str | os.PathLike[str] | None = None,
) -> Path:
    """The file a ``sample_data`` / ``lidarseg`` record names, inside the dataroot (``root``,
    default ``nusc.dataroot``).

    Raises:
        ValueError: naming the table file, the record and the path, if the ``filename`` is missing
            or resolves outside ``nusc.dataroot`` (``../``, an absolute path, a symlink leading out)
            and ``allow_outside_root`` is false.
    """
    where = f"{table_file(nusc, table)}: record {record.get('token')!r} field 'filename'"
    name = record.get("filename")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where} is {name!r}: expected a path relative to the dataroot")
    base = nusc.dataroot if root is None else root
    return confined_path(base, name, where, allow_outside_root)


def recorded_image_size(nusc: NuScenes, cam_sd: dict[str, Any]) -> tuple[int, int]:
    """``(width, height)`` a camera ``sample_data`` record gives its image.

    Raises:
        ValueError: naming the table file and record, if ``width`` / ``height`` are missing or not
            positive integers.
    """
    where = f"{table_file(nusc, 'sample_data')}: record {cam_sd.get('token')!r}"
    size = []
    for field in ("width", "height"):
        value = cam_sd.get(field)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(
                f"{where} field {field!r} = {value!r}: expected the camera image's {field} in "
                "pixels (a positive integer)"
            )
        size.append(value)
    return size[0], size[1]
