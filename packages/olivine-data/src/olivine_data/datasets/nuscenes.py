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

Table and calibration faults are errors that name the table file, the record and the field
(:mod:`olivine_data.datasets.nuscenes_tables`).

A keyframe with **no pair in any camera** is skipped with a ``RuntimeWarning``: ``__getitem__``
returns the next keyframe (wrapping around) and records the token in ``skipped_tokens`` (per
process: with DataLoader workers each worker keeps its own list). If no keyframe has pairs, a
``ValueError`` is raised.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from olivine_data._io import read_label_file, read_point_file, read_rgb_image
from olivine_data.cameras import NUSCENES_CAMERAS
from olivine_data.datasets._common import (
    SPLITS_FILENAME,
    every_nth,
    first_with_pairs,
    open_label_store,
    paired_sample,
    read_named_split,
    read_scene_splits,
)
from olivine_data.datasets.nuscenes_tables import (
    camera_intrinsic,
    get_record,
    lidar_to_camera_matrix,
    load_nuscenes,
    record_file,
    recorded_image_size,
    table_file,
)
from olivine_data.labels import LabelStore, Vocabulary
from olivine_data.projection import compose_projection
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
        if not scenes:
            raise ValueError("scenes: an empty list selects no scene (give scene names or None)")
        missing = sorted(set(scenes) - set(avail))
        if missing:
            raise ValueError(
                f"scenes not in the tables at {root}: {missing[:10]} "
                f"({len(missing)} missing; {len(avail)} scenes available)"
            )
        wanted = set(scenes)
        chosen = [s for s in avail if s in wanted]
    elif split is not None:
        custom = Path(root) / SPLITS_FILENAME
        names = read_named_split(root, split)
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
        allow_outside_root: bool = False,
    ) -> None:
        self.root = Path(root)
        self.allow_outside_root = bool(allow_outside_root)
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
                token = get_record(self.nusc, "sample", token, f"scene {name!r} (first/next)")[
                    "next"
                ]
        self.sample_tokens = tokens

    def __len__(self) -> int:
        return len(self.sample_tokens)

    def _lidar(self, sample: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray]:
        sd = get_record(
            self.nusc,
            "sample_data",
            sample["data"]["LIDAR_TOP"],
            f"{table_file(self.nusc, 'sample')} record {sample['token']!r} (LIDAR_TOP)",
        )
        path = record_file(self.nusc, "sample_data", sd, self.allow_outside_root, self.root)
        return sd, read_nuscenes_points(path)


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
        allow_outside_root: read table ``filename``s that resolve outside ``root`` (a dataset
            laid out with symlinks to other folders); by default such a path is an error naming
            the table, the record and the path.

    Every camera image must have the ``width`` x ``height`` its ``sample_data`` record gives
    (the calibration holds for that size), and every label PNG the same size; a mismatch is a
    ``ValueError`` naming the file and both sizes.
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
        allow_outside_root: bool = False,
    ) -> None:
        super().__init__(root, version, scenes, split, skip, nusc, allow_outside_root)
        self.label_store = open_label_store(label_store, vocabulary)
        if not cameras:
            raise ValueError("cameras: expected at least one camera channel")
        self.cameras = tuple(cameras)
        self.min_depth = float(min_depth)
        self.transform = transform
        self.skipped_tokens: list[str] = []

    def load(self, token: str) -> PretrainSample:
        """Build the sample of keyframe ``token`` (no transform, no skipping)."""
        nusc = self.nusc
        sample = get_record(nusc, "sample", token, "the keyframe list")
        lidar_sd, points = self._lidar(sample)
        images = []
        projections = []
        files = []
        for cam in self.cameras:
            if cam not in sample["data"]:
                raise ValueError(f"sample {token}: no {cam} data (has {sorted(sample['data'])})")
            cam_sd = get_record(
                nusc,
                "sample_data",
                sample["data"][cam],
                f"{table_file(nusc, 'sample')} record {token!r} ({cam})",
            )
            img_path = record_file(nusc, "sample_data", cam_sd, self.allow_outside_root, self.root)
            where = f"{table_file(nusc, 'sample_data')} record {cam_sd['token']!r}"
            images.append(read_rgb_image(img_path, recorded_image_size(nusc, cam_sd), where))
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
        return paired_sample(
            points,
            np.stack(images),
            self.cameras,
            np.stack(projections),
            self.min_depth,
            self.label_store,
            [f.name for f in files],
            token,
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
        allow_outside_root: bool = False,
    ) -> None:
        super().__init__(root, version, scenes, split, skip, nusc, allow_outside_root)
        self.with_labels = with_labels
        self.transform = transform
        if with_labels and not hasattr(self.nusc, "lidarseg"):
            raise FileNotFoundError(
                f"nuScenes-lidarseg not installed: {self.root / version / 'lidarseg.json'} "
                "is missing (pass with_labels=False to read unlabelled sweeps)"
            )

    def __getitem__(self, idx: int) -> SegSample:
        token = self.sample_tokens[idx]
        sample = get_record(self.nusc, "sample", token, "the keyframe list")
        lidar_sd, points = self._lidar(sample)
        labels = None
        if self.with_labels:
            rec = self.nusc.get("lidarseg", lidar_sd["token"])
            path = record_file(self.nusc, "lidarseg", rec, self.allow_outside_root, self.root)
            labels = read_lidarseg_file(path, points.shape[0])
        out = SegSample(points=points, point_labels=labels, token=token)
        return self.transform(out) if self.transform is not None else out
