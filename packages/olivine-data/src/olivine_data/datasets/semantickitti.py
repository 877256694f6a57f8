"""SemanticKITTI downstream reader: ``sequences/NN/velodyne/*.bin`` + ``labels/*.label``.

The SemanticKITTI member of the family reader :mod:`olivine_data.datasets.lidarseg`.

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

import functools
import os
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from olivine_data.datasets.laserscan import laserscan_class, read_kitti_scan
from olivine_data.datasets.lidarseg import (
    LidarSegDataset,
    LidarSegSpec,
    learning_lut,
    read_family_labels,
)
from olivine_data.types import SegSample

__all__ = [
    "SEMANTICKITTI_CLASSES",
    "load_semantickitti_config",
    "learning_map_lut",
    "semantickitti_split",
    "semantickitti_spec",
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
    return learning_lut(config["learning_map"])


def semantickitti_split(split: str, config: dict[str, Any]) -> list[str]:
    """Sequence folder names (``"00"``...) of a YAML split (train, valid or val, test)."""
    key = "valid" if split == "val" else split
    if key not in config["split"]:
        raise ValueError(
            f"unknown SemanticKITTI split {split!r}; known: {sorted(config['split'])} (and 'val')"
        )
    return [f"{int(s):02d}" for s in config["split"][key]]


def semantickitti_spec(config_yaml: str | os.PathLike[str] | None = None) -> LidarSegSpec:
    """The SemanticKITTI :class:`~olivine_data.datasets.lidarseg.LidarSegSpec` of a label YAML
    (default: the packaged official ``semantic-kitti.yaml``): its learning map and splits.
    """
    return _spec_of(None if config_yaml is None else os.fspath(config_yaml))


@functools.lru_cache(maxsize=8)
def _spec_of(config_yaml: str | None) -> LidarSegSpec:
    cfg = load_semantickitti_config(config_yaml)
    splits = {
        ("val" if key == "valid" else key): tuple(f"{int(s):02d}" for s in seqs)
        for key, seqs in cfg["split"].items()
    }
    return LidarSegSpec(
        name="semantickitti",
        title="SemanticKITTI",
        classes=SEMANTICKITTI_CLASSES,
        learning_map={int(k): int(v) for k, v in cfg["learning_map"].items()},
        splits=splits,
        laserscan=True,
        doc=(
            "SemanticKITTI (Behley et al., ICCV 2019, semantic-kitti.org): sequences/NN/velodyne/"
            "*.bin (float32 x, y, z, remission) and labels/*.label (uint32, semantic id in the "
            "lower 16 bits); learning map and splits from semantic-kitti.yaml (train 00-07, "
            "09, 10 / valid 08 / test 11-21), as the reference's dataloader_kitti.py."
        ),
    )


def read_semantickitti_labels(
    path: str | os.PathLike[str], num_points: int, lut: np.ndarray
) -> np.ndarray:
    """Read a ``.label`` (uint32: semantic id in the lower 16 bits), map through ``lut``."""
    return read_family_labels(path, num_points, lut, "SemanticKITTI")


class SemanticKITTISegDataset(LidarSegDataset):
    """SemanticKITTI frames -> :class:`~olivine_data.types.SegSample` (19 classes + 0 ignore).

    The SemanticKITTI case of :class:`~olivine_data.datasets.lidarseg.LidarSegDataset`.

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
        laserscan_class()  # fail early, with the install hint, if the backend is missing
        self.config = load_semantickitti_config(config_yaml)
        if split is not None:
            semantickitti_split(split, self.config)  # the YAML's error for an unknown split
        super().__init__(
            root,
            semantickitti_spec(config_yaml),
            split=split,
            sequences=[f"{int(s):02d}" for s in sequences] if sequences is not None else None,
            skip=skip,
            with_labels=with_labels,
            transform=transform,
        )
