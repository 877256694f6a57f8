"""One reader for the SemanticKITTI family of LiDAR segmentation datasets.

SemanticKITTI, ScribbleKITTI, RELLIS-3D, SemanticPOSS, SemanticSTF, SynLiDAR and DAPS-3D all store
a scan as a float32 ``.bin`` (``point_fields`` values per point, x, y, z, intensity first) and its
labels as a uint32 ``.label`` with the semantic id in the lower 16 bits. They differ in folder
names, the number of floats per point, the intensity scale, the label folder, the ontology and
learning map, and how a split is defined. A :class:`LidarSegSpec` holds those facts for one
dataset (the specs, with their sources, are in :mod:`olivine_data.datasets.lidarseg_specs`) and
:class:`LidarSegDataset` reads any of them.

Frame selection: ``split=`` (the dataset's own definition: sequence folders, or a list file such as
RELLIS-3D's ``pt_train.lst``) or explicit ``sequences=``. Frames are sorted by ``(sequence, file
name)`` and ``skip`` keeps every ``skip``-th (``frames[::skip]``, the reference's
``sorted(list_files)[::dataset_skip_step]``; the first frame is always kept), so a label fraction
is a fixed, reproducible list of scans (:attr:`LidarSegDataset.tokens`).

Errors name the file: a scan whose size is not a multiple of ``4 * point_fields`` bytes, a label
file whose length differs from the scan's point count, a semantic id outside the learning map, a
missing sequence folder or split file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from olivine_data._io import read_label_file, read_point_file
from olivine_data.datasets._common import check_skip, confined_path
from olivine_data.datasets.laserscan import read_kitti_scan
from olivine_data.types import SegSample

__all__ = ["LidarSegSpec", "LidarSegDataset", "learning_lut", "read_family_labels"]

_VAL_ALIASES = {"valid": "val"}


@dataclass(frozen=True)
class LidarSegSpec:
    """The on-disk facts of one SemanticKITTI-family dataset (see ``doc`` for their sources).

    name            registry key (``data.dataset`` in an olivine-train config)
    title           display name used in messages
    classes         learning-id -> class name; id 0 is ignore
    learning_map    raw semantic id (``label & 0xFFFF``) -> learning id; other ids are errors
    splits          split name -> sequence folder names (``train``, ``val``, ``test``)
    split_files     split name -> list file under the root (lines ``<scan> [<label>]``, relative
                    to the root); takes precedence over ``splits``
    sequences_dir   folder holding the sequence folders (``""`` = the root itself)
    scan_dir        scan folder inside a sequence
    label_dir       label folder inside a sequence
    train_label_dir label folder of the train split when it differs (ScribbleKITTI's scribbles)
    point_fields    float32 values per point in a scan (the first four are kept)
    intensity_divisor the stored intensity is divided by this (SemanticSTF stores 0..255)
    laserscan       decode scans with semantic-kitti-api's ``LaserScan`` (SemanticKITTI)
    doc             the facts above with their sources
    """

    name: str
    title: str
    classes: tuple[str, ...]
    learning_map: Mapping[int, int]
    splits: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    split_files: Mapping[str, str] = field(default_factory=dict)
    sequences_dir: str = "sequences"
    scan_dir: str = "velodyne"
    label_dir: str = "labels"
    train_label_dir: str | None = None
    point_fields: int = 4
    intensity_divisor: float = 1.0
    laserscan: bool = False
    doc: str = ""

    def __post_init__(self) -> None:
        bad = {k: v for k, v in self.learning_map.items() if not 0 <= v < len(self.classes)}
        if bad:
            raise ValueError(
                f"{self.title}: learning_map values {bad} outside 0..{len(self.classes) - 1}"
            )
        if self.point_fields < 4:
            raise ValueError(f"{self.title}: point_fields must be >= 4, got {self.point_fields}")

    @property
    def num_classes(self) -> int:
        """Number of learning ids, ignore (0) included."""
        return len(self.classes)

    def split_names(self) -> list[str]:
        """The split names this dataset defines."""
        return sorted(set(self.splits) | set(self.split_files))

    def label_dir_for(self, split: str | None) -> str:
        """The label folder of ``split`` (``train_label_dir`` for ``"train"`` when set)."""
        if split == "train" and self.train_label_dir is not None:
            return self.train_label_dir
        return self.label_dir

    def lut(self) -> np.ndarray:
        """Lookup array raw id -> learning id (-1 for ids absent from the map)."""
        return learning_lut(self.learning_map)


def learning_lut(learning_map: Mapping[int, int]) -> np.ndarray:
    """Lookup array raw semantic id -> learning id; ids absent from the map hold -1."""
    lm = {int(k): int(v) for k, v in learning_map.items()}
    lut = np.full(max(lm) + 1, -1, dtype=np.int64)
    lut[list(lm)] = list(lm.values())
    return lut


def read_family_labels(
    path: str | os.PathLike[str], num_points: int, lut: np.ndarray, title: str = "the"
) -> np.ndarray:
    """Read a ``.label`` (uint32: semantic id in the lower 16 bits) and map it through ``lut``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not ``num_points`` uint32 values, or an id outside the learning map (the
            message names the file, the ids and how many points carry them).
    """
    raw = read_label_file(path, np.uint32, num_points)
    sem = (raw & 0xFFFF).astype(np.int64)
    bad = sem >= lut.shape[0]
    mapped = lut[np.where(bad, 0, sem)]
    bad |= mapped < 0
    if bad.any():
        ids = np.unique(sem[bad])
        raise ValueError(
            f"{path}: semantic ids {ids[:10].tolist()} are not in the {title} learning_map "
            f"({int(bad.sum())} points)"
        )
    return mapped


def _normalise_split(split: str) -> str:
    return _VAL_ALIASES.get(split, split)


class LidarSegDataset:
    """Frames of a SemanticKITTI-family dataset -> :class:`~olivine_data.types.SegSample`.

    Args:
        root: the dataset folder (the one holding ``spec.sequences_dir`` / the split files).
        spec: the dataset's :class:`LidarSegSpec`.
        split: a split the dataset defines (``"val"`` and ``"valid"`` are the same); mutually
            exclusive with ``sequences``.
        sequences: sequence folder names (ints are zero-padded to two digits).
        skip: keep every ``skip``-th frame of the sorted frame list.
        label_dir: label folder (default: the spec's folder for ``split``, else its ``label_dir``).
        with_labels: read labels (False for unlabelled test data).
        transform: optional callable applied to each sample.
        allow_outside_root: read split-file paths that resolve outside ``root`` (symlinked
            layouts); by default such a line is an error naming the file, the line and the path.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        spec: LidarSegSpec,
        split: str | None = None,
        sequences: Sequence[int | str] | None = None,
        skip: int = 1,
        label_dir: str | None = None,
        with_labels: bool = True,
        transform: Callable[[SegSample], SegSample] | None = None,
        allow_outside_root: bool = False,
    ) -> None:
        self.allow_outside_root = bool(allow_outside_root)
        if sequences is not None and split is not None:
            raise ValueError("give either sequences= or split=, not both")
        if sequences is None and split is None:
            raise ValueError("give sequences= or split=")
        self.root = Path(root)
        self.spec = spec
        self.lut = spec.lut()
        self.split = _normalise_split(split) if split is not None else None
        self.label_dir = label_dir or spec.label_dir_for(self.split)
        if self.split is not None and self.split in spec.split_files:
            frames = self._frames_from_list(self.root / spec.split_files[self.split])
            self.sequences = sorted({seq for seq, _, _ in frames})
        else:
            if self.split is not None:
                if self.split not in spec.splits:
                    raise ValueError(
                        f"unknown {spec.title} split {split!r}; known: {spec.split_names()} "
                        "(and 'valid' for 'val')"
                    )
                seqs = list(spec.splits[self.split])
            else:
                seqs = [f"{s:02d}" if isinstance(s, int) else str(s) for s in sequences or ()]
            frames = self._frames_from_folders(seqs)
            self.sequences = seqs
        frames.sort(key=lambda f: (f[0], f[1].name))
        kept = frames[:: check_skip(skip)]
        #: ``(sequence, scan path)`` of every selected frame, in reading order
        self.frames: list[tuple[str, Path]] = [(seq, scan) for seq, scan, _ in kept]
        self._labels: list[Path] = [label for _, _, label in kept]
        self.with_labels = with_labels
        self.transform = transform

    # ------------------------------------------------------------------ frame lists
    def _frames_from_folders(self, seqs: list[str]) -> list[tuple[str, Path, Path]]:
        base = self.root / self.spec.sequences_dir if self.spec.sequences_dir else self.root
        frames: list[tuple[str, Path, Path]] = []
        for seq in seqs:
            scans = base / seq / self.spec.scan_dir
            if not scans.is_dir():
                raise FileNotFoundError(f"{self.spec.title} sequence folder not found: {scans}")
            labels = base / seq / self.label_dir
            frames.extend((seq, f, labels / f"{f.stem}.label") for f in sorted(scans.glob("*.bin")))
        if not frames:
            raise ValueError(f"no .bin scans under {base} for sequences {seqs}")
        return frames

    def _frames_from_list(self, path: Path) -> list[tuple[str, Path, Path]]:
        """Frames of a list file: one ``<scan> [<label>]`` line per frame, relative to the root;
        without a label column the label is ``<sequence>/<label_dir>/<stem>.label``.
        """
        if not path.is_file():
            raise FileNotFoundError(f"{self.spec.title} split file not found: {path}")
        frames: list[tuple[str, Path, Path]] = []
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            cols = line.split()
            if not cols:
                continue
            if len(cols) > 2 or not cols[0].endswith(".bin"):
                raise ValueError(
                    f"{path}:{n}: expected '<scan>.bin [<label>.label]', got {line.strip()!r}"
                )
            scan = Path(cols[0])
            seq = scan.parts[0] if len(scan.parts) > 1 else ""
            label = (
                Path(cols[1])
                if len(cols) == 2
                else scan.parent.parent / self.label_dir / f"{scan.stem}.label"
            )
            where = f"{path}:{n}"
            frames.append(
                (
                    seq,
                    confined_path(self.root, str(scan), f"{where} scan", self.allow_outside_root),
                    confined_path(self.root, str(label), f"{where} label", self.allow_outside_root),
                )
            )
        if not frames:
            raise ValueError(f"{path}: the split file lists no scan")
        return frames

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.frames)

    @property
    def tokens(self) -> list[str]:
        """``<sequence>/<scan stem>`` of every selected frame (the scan list of a run)."""
        return [f"{seq}/{scan.stem}" for seq, scan in self.frames]

    def label_path(self, idx: int) -> Path:
        return self._labels[idx]

    def read_points(self, path: Path) -> np.ndarray:
        """A scan as ``(N, 4)`` float32 x, y, z, intensity (intensity / ``intensity_divisor``)."""
        if self.spec.laserscan:
            return read_kitti_scan(path)
        pts = read_point_file(path, num_fields=self.spec.point_fields, keep=4)
        if self.spec.intensity_divisor != 1.0:
            pts[:, 3] = pts[:, 3] / np.float32(self.spec.intensity_divisor)
        return pts

    def __getitem__(self, idx: int) -> SegSample:
        seq, scan = self.frames[idx]
        points = self.read_points(scan)
        labels = None
        if self.with_labels:
            labels = read_family_labels(
                self.label_path(idx), points.shape[0], self.lut, self.spec.title
            )
        out = SegSample(points=points, point_labels=labels, token=f"{seq}/{scan.stem}")
        return self.transform(out) if self.transform is not None else out
