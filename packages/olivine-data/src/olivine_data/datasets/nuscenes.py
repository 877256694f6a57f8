"""nuScenes readers built on nuscenes-devkit (tables, poses, calibration, lidarseg).

Samples are the **keyframes** of the selected scenes, walked from ``first_sample_token`` through
``next``, with **one** LIDAR_TOP sweep each (no multi-sweep aggregation).

Scene selection (``scenes`` / ``split`` / ``skip``):
    * ``scenes``: an explicit list of scene names; every name must exist in the tables.
    * ``split``: a key of ``<root>/olivine_splits.json`` if that file exists and has the key
      (the synthetic export writes it), else an official devkit split from
      ``nuscenes.utils.splits.create_splits_scenes()`` (``train``, ``val``, ``mini_train``,
      ``mini_val``, ...). Scenes of an official split that are missing from the tables are dropped
      with a warning; an empty result is an error.
    * neither: every scene of the tables.
    * ``skip`` (label fractions): keep every ``skip``-th selected scene in table order (1% = 100);
      if that leaves nothing, the first scene is used (with a warning).

Pairing (:class:`NuScenesPretrainDataset`) follows the reference chain exactly, vectorised over
the points and the 6 cameras (see :mod:`olivine_data.projection`). VFM labels are read from a
:class:`~olivine_data.labels.LabelStore` at the **rounded pixel of the original image**.

Table and calibration faults are errors that name the table file, the record and the field: a
table that is not valid JSON (e.g. cut off), a token that no record of the referenced table holds,
and a ``calibrated_sensor`` / ``ego_pose`` record whose ``translation`` is not 3 finite numbers,
whose ``rotation`` is not a unit quaternion ``[w, x, y, z]``, or (cameras) whose
``camera_intrinsic`` is not a finite 3x3 matrix with positive focal lengths and last row
``[0, 0, 1]``. Such a fault would otherwise give a bare ``KeyError``/``JSONDecodeError``/
``Singular matrix``, or silently empty a camera of its pairs.

A keyframe with **no pair in any camera** is skipped with a ``RuntimeWarning``: ``__getitem__``
returns the next keyframe (wrapping around) and records the token in ``skipped_tokens`` (per
process: with DataLoader workers each worker keeps its own list). If no keyframe has pairs, a
``ValueError`` is raised.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from olivine_data._io import read_label_file, read_point_file, read_rgb_image
from olivine_data.datasets._common import (
    SPLITS_FILENAME,
    every_nth,
    first_with_pairs,
    read_scene_splits,
)
from olivine_data.labels import LabelStore, Vocabulary, get_vocabulary
from olivine_data.projection import compose_projection, project_to_cameras
from olivine_data.types import PretrainSample, SegSample

if TYPE_CHECKING:
    from nuscenes import NuScenes

__all__ = [
    "NUSCENES_CAMERAS",
    "LIDARSEG_TO_EVAL16",
    "lidarseg_to_eval16",
    "read_lidarseg_file",
    "read_nuscenes_points",
    "load_nuscenes",
    "select_scenes",
    "NuScenesPretrainDataset",
    "NuScenesSegDataset",
]

NUSCENES_CAMERAS: tuple[str, ...] = (
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK_RIGHT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
    "CAM_FRONT_LEFT",
)

#: nuScenes-lidarseg 32 raw class indices (``category.json`` ``index``) -> 16 evaluation classes
#: (0 = ignore). Same table as nuscenes-devkit's ``LidarsegClassMapper`` and SLidR/OLIVINE.
LIDARSEG_TO_EVAL16: np.ndarray = np.array(
    [
        0,  # 0 noise
        0,  # 1 animal
        7,  # 2 human.pedestrian.adult
        7,  # 3 human.pedestrian.child
        7,  # 4 human.pedestrian.construction_worker
        0,  # 5 human.pedestrian.personal_mobility
        7,  # 6 human.pedestrian.police_officer
        0,  # 7 human.pedestrian.stroller
        0,  # 8 human.pedestrian.wheelchair
        1,  # 9 movable_object.barrier
        0,  # 10 movable_object.debris
        0,  # 11 movable_object.pushable_pullable
        8,  # 12 movable_object.trafficcone
        0,  # 13 static_object.bicycle_rack
        2,  # 14 vehicle.bicycle
        3,  # 15 vehicle.bus.bendy
        3,  # 16 vehicle.bus.rigid
        4,  # 17 vehicle.car
        5,  # 18 vehicle.construction
        0,  # 19 vehicle.emergency.ambulance
        0,  # 20 vehicle.emergency.police
        6,  # 21 vehicle.motorcycle
        9,  # 22 vehicle.trailer
        10,  # 23 vehicle.truck
        11,  # 24 flat.driveable_surface
        12,  # 25 flat.other
        13,  # 26 flat.sidewalk
        14,  # 27 flat.terrain
        15,  # 28 static.manmade
        0,  # 29 static.other
        16,  # 30 static.vegetation
        0,  # 31 vehicle.ego
    ],
    dtype=np.int64,
)
LIDARSEG_TO_EVAL16.setflags(write=False)


def lidarseg_to_eval16(raw: np.ndarray, what: str = "lidarseg labels") -> np.ndarray:
    """Map raw lidarseg indices (0..31) to the 16 evaluation classes (0 = ignore), int64."""
    raw = np.asarray(raw)
    if raw.size and (raw.min() < 0 or raw.max() > 31):
        raise ValueError(f"{what}: lidarseg ids must lie in 0..31, got [{raw.min()}, {raw.max()}]")
    return LIDARSEG_TO_EVAL16[raw.astype(np.int64)]


def read_lidarseg_file(path: str | os.PathLike[str], num_points: int) -> np.ndarray:
    """Read a ``<token>_lidarseg.bin`` (uint8 per point) and map it to 16 classes."""
    raw = read_label_file(path, np.uint8, num_points)
    return lidarseg_to_eval16(raw, str(path))


def read_nuscenes_points(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a nuScenes ``.pcd.bin`` sweep (float32 x5) as ``(N, 4)`` x, y, z, intensity.

    The file is validated (size, finiteness) here, then decoded with the devkit's
    ``LidarPointCloud.from_file`` (the reference reader).
    """
    from nuscenes.utils.data_classes import LidarPointCloud

    checked = read_point_file(path, num_fields=5, keep=4)
    pc = LidarPointCloud.from_file(str(path))
    pts = np.ascontiguousarray(pc.points.T, dtype=np.float32)
    if pts.shape != checked.shape:  # cannot happen unless the devkit changes its layout
        raise ValueError(f"{path}: devkit read {pts.shape}, expected {checked.shape}")
    return pts


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


def _table_file(nusc: NuScenes, table: str) -> Path:
    return Path(nusc.table_root) / f"{table}.json"


def _get(nusc: NuScenes, table: str, token: str, referrer: str) -> dict[str, Any]:
    """``nusc.get`` with an error that names the table file and who referred to the token."""
    try:
        record: dict[str, Any] = nusc.get(table, token)
    except KeyError:
        raise ValueError(
            f"{_table_file(nusc, table)}: no record with token {token!r} (referred to by "
            f"{referrer})"
        ) from None
    return record


def _field_array(
    nusc: NuScenes, table: str, record: dict[str, Any], field: str, shape: tuple[int, ...]
) -> np.ndarray:
    where = f"{_table_file(nusc, table)}: record {record.get('token')!r} field {field!r}"
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
            f"{_table_file(nusc, table)}: record {record.get('token')!r} field 'rotation' = "
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
    cs = _get(
        nusc,
        "calibrated_sensor",
        cam_sd["calibrated_sensor_token"],
        f"{_table_file(nusc, 'sample_data')} record {cam_sd['token']!r} field "
        "'calibrated_sensor_token'",
    )
    k = _field_array(nusc, "calibrated_sensor", cs, "camera_intrinsic", (3, 3))
    if not (k[0, 0] > 0 and k[1, 1] > 0 and np.array_equal(k[2], [0.0, 0.0, 1.0])):
        raise ValueError(
            f"{_table_file(nusc, 'calibrated_sensor')}: record {cs.get('token')!r} field "
            f"'camera_intrinsic' = {cs['camera_intrinsic']!r}: expected a pinhole matrix "
            "[[fx, s, cx], [0, fy, cy], [0, 0, 1]] with fx > 0 and fy > 0"
        )
    return k


def select_scenes(
    available: Sequence[str],
    root: str | os.PathLike[str],
    scenes: Sequence[str] | None = None,
    split: str | None = None,
    skip: int = 1,
) -> list[str]:
    """Resolve ``scenes`` / ``split`` / ``skip`` against the scene names of the tables (in table
    order). See the module docstring for the rules.
    """
    if scenes is not None and split is not None:
        raise ValueError("give either scenes= or split=, not both")
    avail = list(available)
    if scenes is not None:
        if isinstance(scenes, str):
            raise TypeError("scenes: expected a list of scene names, got a single string")
        missing = sorted(set(scenes) - set(avail))
        if missing:
            raise ValueError(
                f"scenes not in the tables at {root}: {missing[:10]} "
                f"({len(missing)} missing; {len(avail)} scenes available)"
            )
        wanted = set(scenes)
        chosen = [s for s in avail if s in wanted]
    elif split is not None:
        names: list[str] | None = None
        custom = Path(root) / SPLITS_FILENAME
        if custom.is_file():
            names = read_scene_splits(root).get(split)
        if names is None:
            from nuscenes.utils.splits import create_splits_scenes

            official = create_splits_scenes(verbose=False)
            if split not in official:
                extra = sorted(read_scene_splits(root)) if custom.is_file() else []
                raise ValueError(
                    f"unknown split {split!r}; official: {sorted(official)}; from {custom}: {extra}"
                )
            names = official[split]
        wanted = set(names)
        chosen = [s for s in avail if s in wanted]
        if len(chosen) < len(wanted):
            missing_n = len(wanted) - len(chosen)
            if not chosen:
                raise ValueError(
                    f"split {split!r}: none of its {len(wanted)} scenes are in the tables at {root}"
                )
            warnings.warn(
                f"split {split!r}: {missing_n} of {len(wanted)} scenes are not in the tables at "
                f"{root}; using the {len(chosen)} present",
                stacklevel=2,
            )
    else:
        chosen = avail
    return every_nth(chosen, skip, f"nuScenes scenes at {root}")


class _NuScenesKeyframes:
    """Keyframe list of the selected scenes (shared by the pretraining and seg datasets)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        version: str,
        scenes: Sequence[str] | None,
        split: str | None,
        skip: int,
        nusc: NuScenes | None,
    ) -> None:
        self.root = Path(root)
        self.version = version
        self.nusc = nusc if nusc is not None else load_nuscenes(root, version)
        table_order = [s["name"] for s in self.nusc.scene]
        self.scene_names = select_scenes(table_order, root, scenes, split, skip)
        by_name = {s["name"]: s for s in self.nusc.scene}
        tokens: list[str] = []
        for name in self.scene_names:
            token = by_name[name]["first_sample_token"]
            while token:
                tokens.append(token)
                token = _get(self.nusc, "sample", token, f"scene {name!r} (first/next)")["next"]
        self.sample_tokens = tokens

    def __len__(self) -> int:
        return len(self.sample_tokens)

    def _lidar(self, sample: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray]:
        sd = _get(
            self.nusc,
            "sample_data",
            sample["data"]["LIDAR_TOP"],
            f"{_table_file(self.nusc, 'sample')} record {sample['token']!r} (LIDAR_TOP)",
        )
        return sd, read_nuscenes_points(self.root / sd["filename"])


def _sensor_pose(nusc: NuScenes, sd: dict[str, Any], table: str) -> np.ndarray:
    field = f"{table}_token"
    referrer = f"{_table_file(nusc, 'sample_data')} record {sd.get('token')!r} field {field!r}"
    if not isinstance(sd.get(field), str):
        raise ValueError(f"{referrer}: missing (expected the token of a {table} record)")
    return _checked_pose(nusc, table, _get(nusc, table, sd[field], referrer))


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


class NuScenesPretrainDataset(_NuScenesKeyframes):
    """Keyframes -> :class:`~olivine_data.types.PretrainSample` (points, 6 images, pairs, labels).

    Args:
        root: nuScenes dataroot (holds ``samples/``, ``<version>/`` and, for labels, ``camseg/``).
        version: table folder, e.g. ``"v1.0-trainval"`` or ``"v1.0-mini"``.
        scenes / split / skip: scene selection (module docstring).
        label_store: a :class:`LabelStore`, a path (``LabelStore(path, vocabulary)``), or None
            (no VFM labels: ``pair_labels`` is None).
        vocabulary: vocabulary of the label store when a path is given (default SEEM17).
        cameras: camera channels, in the order of ``images``.
        min_depth: depth threshold in metres (reference 1.0).
        transform: optional callable applied to each sample (e.g. ``PretrainAugmentation``).
        nusc: an already-opened ``NuScenes`` to share between datasets.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        version: str,
        scenes: Sequence[str] | None = None,
        split: str | None = None,
        label_store: LabelStore | str | os.PathLike[str] | None = None,
        vocabulary: str | Vocabulary = "seem17",
        cameras: Sequence[str] = NUSCENES_CAMERAS,
        skip: int = 1,
        min_depth: float = 1.0,
        transform: Callable[[PretrainSample], PretrainSample] | None = None,
        nusc: NuScenes | None = None,
    ) -> None:
        super().__init__(root, version, scenes, split, skip, nusc)
        if isinstance(label_store, LabelStore):
            self.label_store: LabelStore | None = label_store
        elif label_store is not None:
            self.label_store = LabelStore(label_store, get_vocabulary(vocabulary))
        else:
            self.label_store = None
        if not cameras:
            raise ValueError("cameras: expected at least one camera channel")
        self.cameras = tuple(cameras)
        self.min_depth = float(min_depth)
        self.transform = transform
        self.skipped_tokens: list[str] = []

    def load(self, token: str) -> PretrainSample:
        """Build the sample of keyframe ``token`` (no transform, no skipping)."""
        nusc = self.nusc
        sample = _get(nusc, "sample", token, "the keyframe list")
        lidar_sd, points = self._lidar(sample)
        images = []
        projections = []
        files = []
        for cam in self.cameras:
            if cam not in sample["data"]:
                raise ValueError(f"sample {token}: no {cam} data (has {sorted(sample['data'])})")
            cam_sd = _get(
                nusc,
                "sample_data",
                sample["data"][cam],
                f"{_table_file(nusc, 'sample')} record {token!r} ({cam})",
            )
            img_path = self.root / cam_sd["filename"]
            images.append(read_rgb_image(img_path))
            files.append(img_path)
            k = camera_intrinsic(nusc, cam_sd)
            t = lidar_to_camera_matrix(nusc, lidar_sd, cam_sd)
            projections.append(compose_projection(k, t))
        shapes = {im.shape for im in images}
        if len(shapes) != 1:
            raise ValueError(
                f"sample {token}: camera images differ in size "
                f"{[(f.name, im.shape) for f, im in zip(files, images)]}"
            )
        h, w = images[0].shape[:2]
        proj = project_to_cameras(
            points[:, :3], np.stack(projections), [(h, w)] * len(images), self.min_depth
        )
        pixels = proj.pixels
        labels = None
        if self.label_store is not None:
            lab = np.stack(
                [
                    self.label_store.read(cam, f.name, expected_shape=(h, w))
                    for cam, f in zip(self.cameras, files)
                ]
            )
            labels = lab[pixels[:, 0], pixels[:, 1], pixels[:, 2]].astype(np.int64)
        return PretrainSample(
            points=points,
            images=np.stack(images),
            camera_names=self.cameras,
            pair_points=proj.point_indices,
            pair_pixels=pixels,
            pair_labels=labels,
            token=token,
        )

    def __getitem__(self, idx: int) -> PretrainSample:
        return first_with_pairs(
            idx,
            len(self),
            lambda i: self.load(self.sample_tokens[i]),
            self.transform,
            self.skipped_tokens,
            "nuScenes keyframe",
            f"no point projects into any of {len(self.cameras)} cameras",
            "keyframe",
        )


class NuScenesSegDataset(_NuScenesKeyframes):
    """Keyframes -> :class:`~olivine_data.types.SegSample` with lidarseg labels mapped 32 -> 16.

    Needs nuScenes-lidarseg (``lidarseg.json`` and the ``lidarseg/<version>/*.bin`` files) unless
    ``with_labels=False`` (e.g. for inference on unlabelled sweeps).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        version: str,
        scenes: Sequence[str] | None = None,
        split: str | None = None,
        skip: int = 1,
        with_labels: bool = True,
        transform: Callable[[SegSample], SegSample] | None = None,
        nusc: NuScenes | None = None,
    ) -> None:
        super().__init__(root, version, scenes, split, skip, nusc)
        self.with_labels = with_labels
        self.transform = transform
        if with_labels and not hasattr(self.nusc, "lidarseg"):
            raise FileNotFoundError(
                f"nuScenes-lidarseg not installed: {self.root / version / 'lidarseg.json'} "
                "is missing (pass with_labels=False to read unlabelled sweeps)"
            )

    def __getitem__(self, idx: int) -> SegSample:
        token = self.sample_tokens[idx]
        sample = _get(self.nusc, "sample", token, "the keyframe list")
        lidar_sd, points = self._lidar(sample)
        labels = None
        if self.with_labels:
            rec = self.nusc.get("lidarseg", lidar_sd["token"])
            labels = read_lidarseg_file(self.root / rec["filename"], points.shape[0])
        out = SegSample(points=points, point_labels=labels, token=token)
        return self.transform(out) if self.transform is not None else out
