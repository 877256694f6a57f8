"""SemanticKITTI downstream reader: ``sequences/NN/velodyne/*.bin`` + ``labels/*.label``.

* Scans are decoded with semantic-kitti-api's ``auxiliary.laserscan.LaserScan`` (after a size and
  finiteness check here). The extra is optional: without it an ``ImportError`` names
  ``pip install 'olivine-data[semantickitti]'`` (``--no-deps semantic-kitti-api`` suffices).
  ``SemLaserScan`` is not used for labels: its constructor needs a colour map and draws 300k
  numbers from numpy's *global* RNG; labels are read here with the same rule (``label & 0xFFFF``).
* Labels go through the YAML ``learning_map`` (the official ``semantic-kitti.yaml`` ships as a
  package resource): 19 classes + 0 = ignore. A raw id missing from the map is an error that names
  the file.
* Splits come from the YAML (train 00-07, 09-10; valid 08; test 11-21); ``split="val"`` is an
  alias of ``"valid"``.
* Label fractions: ``skip`` keeps every ``skip``-th frame of the sorted frame list
  (``frames[::skip]``, the reference rule; the first frame is always kept).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from olivine_data._io import read_label_file, read_point_file
from olivine_data.datasets._common import check_skip
from olivine_data.types import SegSample

__all__ = [
    "SEMANTICKITTI_CLASSES",
    "load_semantickitti_config",
    "learning_map_lut",
    "semantickitti_split",
    "read_semantickitti_labels",
    "read_kitti_scan",
    "SemanticKITTISegDataset",
]

SEMANTICKITTI_CLASSES: tuple[str, ...] = (
    "ignore",
    "car",
    "bicycle",
    "motorcycle",
    "truck",
    "other-vehicle",
    "person",
    "bicyclist",
    "motorcyclist",
    "road",
    "parking",
    "sidewalk",
    "other-ground",
    "building",
    "fence",
    "vegetation",
    "trunk",
    "terrain",
    "pole",
    "traffic-sign",
)


def load_semantickitti_config(
    config_yaml: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Load a semantic-kitti label YAML (default: the packaged official ``semantic-kitti.yaml``)."""
    if config_yaml is None:
        text = resources.files("olivine_data").joinpath("resources/semantic-kitti.yaml").read_text()
        where = "olivine_data/resources/semantic-kitti.yaml"
    else:
        p = Path(config_yaml)
        if not p.is_file():
            raise FileNotFoundError(f"SemanticKITTI config not found: {p}")
        text, where = p.read_text(), str(p)
    cfg = yaml.safe_load(text)
    for key in ("learning_map", "split"):
        if not isinstance(cfg, dict) or key not in cfg:
            raise ValueError(f"{where}: missing the {key!r} section")
    return dict(cfg)


def learning_map_lut(config: dict[str, Any]) -> np.ndarray:
    """Lookup array raw semantic id -> learning id; ids absent from the map hold -1."""
    lm = {int(k): int(v) for k, v in config["learning_map"].items()}
    lut = np.full(max(lm) + 1, -1, dtype=np.int64)
    lut[list(lm)] = list(lm.values())
    return lut


def semantickitti_split(split: str, config: dict[str, Any]) -> list[str]:
    """Sequence folder names (``"00"``...) of a YAML split (train, valid or val, test)."""
    key = "valid" if split == "val" else split
    if key not in config["split"]:
        raise ValueError(
            f"unknown SemanticKITTI split {split!r}; known: {sorted(config['split'])} (and 'val')"
        )
    return [f"{int(s):02d}" for s in config["split"][key]]


def _laserscan() -> Any:
    try:
        from auxiliary.laserscan import LaserScan
    except ImportError as exc:
        raise ImportError(
            "SemanticKITTI reading needs semantic-kitti-api (module 'auxiliary'): "
            "pip install 'olivine-data[semantickitti]' (or pip install --no-deps "
            "semantic-kitti-api pyyaml)"
        ) from exc
    return LaserScan


def read_kitti_scan(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a KITTI ``.bin`` scan (float32 x, y, z, remission) as ``(N, 4)`` float32.

    Validated here (size multiple of 16 bytes, finite), decoded by semantic-kitti-api.
    """
    checked = read_point_file(path, num_fields=4, keep=4)
    scan = _laserscan()(project=False)
    scan.open_scan(str(path))
    pts = np.concatenate([scan.points, scan.remissions[:, None]], axis=1).astype(np.float32)
    if pts.shape != checked.shape:  # pragma: no cover - defensive, layouts agree
        raise ValueError(f"{path}: backend read {pts.shape}, expected {checked.shape}")
    return np.ascontiguousarray(pts)


def read_semantickitti_labels(
    path: str | os.PathLike[str], num_points: int, lut: np.ndarray
) -> np.ndarray:
    """Read a ``.label`` (uint32: semantic id in the lower 16 bits), map through ``lut``."""
    raw = read_label_file(path, np.uint32, num_points)
    sem = (raw & 0xFFFF).astype(np.int64)
    bad = sem >= lut.shape[0]
    if not bad.any():
        mapped = lut[sem]
        bad = mapped < 0
    if bad.any():
        ids = np.unique(sem[bad])
        raise ValueError(
            f"{path}: semantic ids {ids[:10].tolist()} are not in the learning_map "
            f"({int(bad.sum())} points)"
        )
    return mapped


class SemanticKITTISegDataset:
    """SemanticKITTI frames -> :class:`~olivine_data.types.SegSample` (19 classes + 0 ignore).

    Args:
        root: the folder holding ``sequences/`` (``.../dataset``).
        sequences: sequence ids (int or ``"07"``); mutually exclusive with ``split``.
        split: ``"train"``, ``"valid"``/``"val"`` or ``"test"`` from the YAML.
        skip: keep every ``skip``-th frame (``frames[::skip]``).
        config_yaml: label YAML (default: the packaged official one).
        with_labels: read ``labels/*.label`` (False for the test split).
        transform: optional callable applied to each sample.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        sequences: Sequence[int | str] | None = None,
        split: str | None = None,
        skip: int = 1,
        config_yaml: str | os.PathLike[str] | None = None,
        with_labels: bool = True,
        transform: Callable[[SegSample], SegSample] | None = None,
    ) -> None:
        _laserscan()  # fail early, with the install hint, if the backend is missing
        self.root = Path(root)
        self.config = load_semantickitti_config(config_yaml)
        self.lut = learning_map_lut(self.config)
        if sequences is not None and split is not None:
            raise ValueError("give either sequences= or split=, not both")
        if sequences is None and split is None:
            raise ValueError("give sequences= or split=")
        seqs = (
            semantickitti_split(split, self.config)
            if split is not None
            else [f"{int(s):02d}" for s in sequences or ()]
        )
        frames: list[tuple[str, Path]] = []
        for seq in seqs:
            vel = self.root / "sequences" / seq / "velodyne"
            if not vel.is_dir():
                raise FileNotFoundError(f"SemanticKITTI sequence folder not found: {vel}")
            frames.extend((seq, f) for f in sorted(vel.glob("*.bin")))
        if not frames:
            raise ValueError(f"no .bin scans under {self.root / 'sequences'} for sequences {seqs}")
        self.sequences = seqs
        self.frames = frames[:: check_skip(skip)]
        self.with_labels = with_labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.frames)

    def label_path(self, idx: int) -> Path:
        seq, scan = self.frames[idx]
        return scan.parent.parent / "labels" / f"{scan.stem}.label"

    def __getitem__(self, idx: int) -> SegSample:
        seq, scan = self.frames[idx]
        points = read_kitti_scan(scan)
        labels = None
        if self.with_labels:
            labels = read_semantickitti_labels(self.label_path(idx), points.shape[0], self.lut)
        out = SegSample(points=points, point_labels=labels, token=f"{seq}/{scan.stem}")
        return self.transform(out) if self.transform is not None else out
