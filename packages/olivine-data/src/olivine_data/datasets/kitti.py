"""KITTI camera pairing for pretraining: a LiDAR scan, ``image_2`` and its calibration.

Two layouts:

``layout="odometry"`` (SemanticKITTI / KITTI odometry)
    ``<root>/sequences/NN/{velodyne/*.bin, image_2/*.png, calib.txt}``; ``calib.txt`` has ``P2``
    (3x4) and ``Tr`` (3x4 velodyne -> camera 0 rectified).
``layout="object"`` (KITTI 3D object)
    ``<root>/{velodyne, image_2, calib}/NNNNNN.*``; each calib has ``P2``, ``R0_rect`` (3x3) and
    ``Tr_velo_to_cam`` (3x4). The adapter :func:`read_object_calib` folds them into the odometry
    form, ``Tr = R0_rect @ Tr_velo_to_cam``, and :func:`write_odometry_calib` writes such a
    ``calib.txt`` so an object frame can be laid out as an odometry sequence.

Projection is ``P2 @ Tr`` with the pairing rule of :mod:`olivine_data.projection` (depth > 1 m,
strict image bounds). The camera is named ``"image_2"``; VFM labels are looked up in a
:class:`~olivine_data.labels.LabelStore` under ``camseg/image_2/<NN>_<frame>.png`` (odometry) or
``camseg/image_2/<frame>.png`` (object). A frame with no pair is skipped as in the nuScenes reader.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from olivine_data._io import read_rgb_image
from olivine_data.datasets._common import (
    check_skip,
    first_with_pairs,
    open_label_store,
    paired_sample,
)
from olivine_data.datasets.semantickitti import read_kitti_scan
from olivine_data.labels import LabelStore, Vocabulary
from olivine_data.projection import compose_projection
from olivine_data.types import PretrainSample

__all__ = [
    "KittiCalib",
    "read_calib_file",
    "read_odometry_calib",
    "read_object_calib",
    "write_odometry_calib",
    "KittiPretrainDataset",
]

CAMERA = "image_2"


@dataclass(frozen=True)
class KittiCalib:
    """``P2`` (3, 4) camera-2 projection and ``Tr`` (4, 4) velodyne -> rectified camera 0."""

    P2: np.ndarray
    Tr: np.ndarray

    @property
    def projection(self) -> np.ndarray:
        """(3, 4) ``P2 @ Tr``."""
        return compose_projection(self.P2, self.Tr)


def read_calib_file(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Parse ``KEY: v1 v2 ...`` lines into float64 arrays (blank lines ignored)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"calibration file not found: {p}")
    out: dict[str, np.ndarray] = {}
    for n, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        key, sep, values = line.partition(":")
        if not sep:
            raise ValueError(f"{p}:{n}: expected 'KEY: values', got {line[:40]!r}")
        try:
            out[key.strip()] = np.array(values.split(), dtype=np.float64)
        except ValueError as exc:
            raise ValueError(f"{p}:{n}: non-numeric value in {key.strip()!r}") from exc
    return out


def _get(cal: dict[str, np.ndarray], key: str, size: int, path: Path) -> np.ndarray:
    if key not in cal:
        raise ValueError(f"{path}: missing calibration entry {key!r} (has {sorted(cal)})")
    if cal[key].size != size:
        raise ValueError(f"{path}: {key!r} has {cal[key].size} values, expected {size}")
    return cal[key]


def _rigid(m34: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3] = m34.reshape(3, 4)
    return out


def read_odometry_calib(path: str | os.PathLike[str]) -> KittiCalib:
    """Odometry ``calib.txt``: ``P2`` and ``Tr``."""
    p = Path(path)
    cal = read_calib_file(p)
    return KittiCalib(P2=_get(cal, "P2", 12, p).reshape(3, 4), Tr=_rigid(_get(cal, "Tr", 12, p)))


def read_object_calib(path: str | os.PathLike[str]) -> KittiCalib:
    """Object-benchmark calib: ``Tr = R0_rect @ Tr_velo_to_cam`` (R0_rect padded to 4x4)."""
    p = Path(path)
    cal = read_calib_file(p)
    r0 = np.eye(4)
    r0[:3, :3] = _get(cal, "R0_rect", 9, p).reshape(3, 3)
    tr = r0 @ _rigid(_get(cal, "Tr_velo_to_cam", 12, p))
    return KittiCalib(P2=_get(cal, "P2", 12, p).reshape(3, 4), Tr=tr)


def write_odometry_calib(calib: KittiCalib, path: str | os.PathLike[str]) -> Path:
    """Write ``P2`` and ``Tr`` as an odometry-style ``calib.txt``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)

    def fmt(m: np.ndarray) -> str:
        return " ".join(f"{x:.12e}" for x in np.asarray(m).reshape(-1)[:12])

    p.write_text(f"P2: {fmt(calib.P2)}\nTr: {fmt(calib.Tr[:3])}\n")
    return p


class KittiPretrainDataset:
    """KITTI frames with ``image_2`` -> :class:`~olivine_data.types.PretrainSample`.

    Args:
        root: ``.../dataset`` (holding ``sequences/``) for ``layout="odometry"``, or
            ``.../object/training`` for ``layout="object"``.
        sequences: odometry sequence ids (default: every sequence that has ``image_2``).
        label_store: LabelStore, path, or None.
        vocabulary: vocabulary of the label store when a path is given.
        layout: ``"odometry"`` or ``"object"``.
        skip: keep every ``skip``-th frame.
        min_depth: depth threshold (m).
        transform: optional callable applied to each sample.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        sequences: Sequence[int | str] | None = None,
        label_store: LabelStore | str | os.PathLike[str] | None = None,
        vocabulary: str | Vocabulary = "seem17",
        layout: str = "odometry",
        skip: int = 1,
        min_depth: float = 1.0,
        transform: Callable[[PretrainSample], PretrainSample] | None = None,
    ) -> None:
        self.root = Path(root)
        if layout not in ("odometry", "object"):
            raise ValueError(f"layout: expected 'odometry' or 'object', got {layout!r}")
        self.layout = layout
        # (token, label stem, scan, image, calib path)
        frames: list[tuple[str, str, Path, Path, Path]] = []
        if layout == "odometry":
            seq_root = self.root / "sequences"
            if not seq_root.is_dir():
                raise FileNotFoundError(f"KITTI sequences folder not found: {seq_root}")
            if sequences is None:
                seqs = sorted(d.name for d in seq_root.iterdir() if (d / CAMERA).is_dir())
            else:
                seqs = [f"{int(s):02d}" for s in sequences]
            for seq in seqs:
                d = seq_root / seq
                if not (d / "velodyne").is_dir():
                    raise FileNotFoundError(f"KITTI velodyne folder not found: {d / 'velodyne'}")
                for scan in sorted((d / "velodyne").glob("*.bin")):
                    frames.append(
                        (
                            f"{seq}/{scan.stem}",
                            f"{seq}_{scan.stem}",
                            scan,
                            d / CAMERA / f"{scan.stem}.png",
                            d / "calib.txt",
                        )
                    )
        else:
            if sequences is not None:
                raise ValueError("sequences= applies to layout='odometry' only")
            vel = self.root / "velodyne"
            if not vel.is_dir():
                raise FileNotFoundError(f"KITTI velodyne folder not found: {vel}")
            for scan in sorted(vel.glob("*.bin")):
                frames.append(
                    (
                        scan.stem,
                        scan.stem,
                        scan,
                        self.root / CAMERA / f"{scan.stem}.png",
                        self.root / "calib" / f"{scan.stem}.txt",
                    )
                )
        if not frames:
            raise ValueError(f"no KITTI .bin scans found under {self.root} ({layout} layout)")
        self.frames = frames[:: check_skip(skip)]
        self.label_store = open_label_store(label_store, vocabulary)
        self.min_depth = float(min_depth)
        self.transform = transform
        self.skipped_tokens: list[str] = []

    def __len__(self) -> int:
        return len(self.frames)

    def calib(self, idx: int) -> KittiCalib:
        path = self.frames[idx][4]
        return read_odometry_calib(path) if self.layout == "odometry" else read_object_calib(path)

    def load(self, idx: int) -> PretrainSample:
        """Build frame ``idx`` (no transform, no skipping)."""
        token, stem, scan, image_path, _ = self.frames[idx]
        points = read_kitti_scan(scan)
        image = read_rgb_image(image_path)
        return paired_sample(
            points,
            image[None],
            (CAMERA,),
            self.calib(idx).projection[None],
            self.min_depth,
            self.label_store,
            (stem,),
            token,
        )

    def __getitem__(self, idx: int) -> PretrainSample:
        return first_with_pairs(
            idx,
            len(self),
            self.load,
            self.transform,
            self.skipped_tokens,
            "KITTI frame",
            f"no point projects into {CAMERA}",
            "frame",
        )
