"""Scene/frame selection and sample-skipping helpers shared by the dataset readers."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from olivine_data.labels import LabelStore, Vocabulary, get_vocabulary
from olivine_data.projection import project_to_cameras
from olivine_data.types import PretrainSample

__all__ = [
    "SPLITS_FILENAME",
    "read_scene_splits",
    "read_named_split",
    "every_nth",
    "check_skip",
    "first_with_pairs",
    "open_label_store",
    "paired_sample",
    "confined_path",
    "OUTSIDE_ROOT_HINT",
]

SPLITS_FILENAME = "olivine_splits.json"


def read_scene_splits(root: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Read ``<root>/olivine_splits.json``: ``{"train": [scene names], "val": [...], ...}``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not a JSON object of lists of strings.
    """
    p = Path(root) / SPLITS_FILENAME
    if not p.is_file():
        raise FileNotFoundError(f"scene split file not found: {p}")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: invalid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{p}: expected a JSON object of split name -> scene list")
    out: dict[str, list[str]] = {}
    for key, names in data.items():
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{p}: split {key!r} must be a list of scene names (strings)")
        out[str(key)] = list(names)
    return out


#: What a reader's error says to do when a table names a file outside the dataset root.
OUTSIDE_ROOT_HINT = (
    "a dataset table must name files inside its root; if this dataset is laid out with "
    "symlinks to other folders, allow it with allow_outside_root=True (config: "
    "data.allow_outside_root=true)"
)


def confined_path(
    root: str | os.PathLike[str], relative: str, where: str, allow_outside_root: bool = False
) -> Path:
    """``root / relative``, refused when it resolves (symlinks followed) outside ``root``.

    ``relative`` is a path read from a dataset table (a nuScenes ``filename``, a split-file line);
    ``where`` names the table, the record and the field for the error. A table that names
    ``../../elsewhere/x.jpg``, an absolute path, or a symlink leading out of the dataset is one
    ``ValueError`` unless ``allow_outside_root`` (a dataset laid out with symlinks on purpose).
    """
    path = Path(root) / relative
    if allow_outside_root:
        return path
    base = Path(root).resolve()
    resolved = path.resolve()
    if resolved != base and base not in resolved.parents:
        raise ValueError(
            f"{where} = {relative!r} resolves to {resolved}, outside the dataset root {base}: "
            f"refusing to read it ({OUTSIDE_ROOT_HINT})"
        )
    return path


def read_named_split(root: str | os.PathLike[str], split: str) -> list[str] | None:
    """The scene (or sequence) names ``<root>/olivine_splits.json`` gives ``split``; None when
    the file does not exist or has no such key.

    Raises:
        ValueError: the file gives ``split`` an empty list (naming the split and the file): an
            empty selection would fail later with no word of where it came from.
    """
    if not (Path(root) / SPLITS_FILENAME).is_file():
        return None
    names = read_scene_splits(root).get(split)
    if names == []:
        raise ValueError(
            f"split {split!r}: {Path(root) / SPLITS_FILENAME} lists no scene for it (an empty "
            "list): add its scene names there or choose another split"
        )
    return names


def check_skip(skip: int) -> int:
    """Validate a label-fraction step (keep every ``skip``-th scene/frame)."""
    if isinstance(skip, bool) or not isinstance(skip, int):
        raise TypeError(f"skip: expected an int >= 1, got {type(skip).__name__}")
    if skip < 1:
        raise ValueError(f"skip: expected an int >= 1, got {skip}")
    return skip


def every_nth(items: Sequence[str], skip: int, what: str) -> list[str]:
    """Keep every ``skip``-th item, counting from 1 as the reference does (items ``skip-1``,
    ``2*skip-1``, ...). If that leaves nothing (fewer than ``skip`` items), fall back to the first
    item with a warning: the reference's hard-coded ``scene-0392`` fallback, made generic.
    """
    skip = check_skip(skip)
    if not items:
        raise ValueError(f"{what}: nothing to select from")
    if skip == 1:
        return list(items)
    kept = [x for i, x in enumerate(items) if (i + 1) % skip == 0]
    if not kept:
        warnings.warn(
            f"{what}: skip={skip} keeps none of {len(items)} items; falling back to the first "
            f"({items[0]!r})",
            stacklevel=3,
        )
        kept = [items[0]]
    return kept


def first_with_pairs(
    idx: int,
    n: int,
    load: Callable[[int], PretrainSample],
    transform: Callable[[PretrainSample], PretrainSample] | None,
    skipped: list[str],
    what: str,
    why: str,
    unit: str,
) -> PretrainSample:
    """Sample ``idx`` or, if it has no point-pixel pair, the next one that has (wrapping around).

    Every sample passed over is recorded in ``skipped`` and announced with a ``RuntimeWarning``
    ("<what> <token>: <why>; skipped"); ``ValueError`` if none of the ``n`` samples has a pair.
    ``unit`` names one sample in the errors ("frame", "keyframe").
    """
    if not -n <= idx < n:
        raise IndexError(f"index {idx} out of range for {n} {unit}s")
    idx %= n
    for step in range(n):
        sample = load((idx + step) % n)
        if sample.num_pairs > 0:
            return transform(sample) if transform is not None else sample
        skipped.append(sample.token)
        warnings.warn(
            f"{what} {sample.token}: {why}; skipped ({len(skipped)} skipped so far)",
            RuntimeWarning,
            stacklevel=3,
        )
    raise ValueError(f"no {unit} of the {n} selected has any point-pixel pair")


def open_label_store(
    label_store: LabelStore | str | os.PathLike[str] | None, vocabulary: str | Vocabulary
) -> LabelStore | None:
    """A reader's VFM label store: the given :class:`LabelStore`, one opened at a path with
    ``vocabulary``, or None (no labels).
    """
    if isinstance(label_store, LabelStore) or label_store is None:
        return label_store
    return LabelStore(label_store, get_vocabulary(vocabulary))


def paired_sample(
    points: np.ndarray,
    images: np.ndarray,
    cameras: Sequence[str],
    projections: np.ndarray,
    min_depth: float,
    label_store: LabelStore | None,
    label_names: Sequence[str],
    token: str,
) -> PretrainSample:
    """Pair ``points`` with the pixels of ``images`` ``(C, H, W, 3)`` they project to (through the
    ``(C, 3, 4)`` ``projections``) and read each pair's VFM label from ``label_store`` (label file
    ``label_names[c]`` of camera ``cameras[c]``), or no labels without a store.
    """
    h, w = images.shape[1:3]
    proj = project_to_cameras(points[:, :3], projections, [(h, w)] * len(images), min_depth)
    pixels = proj.pixels
    labels = None
    if label_store is not None:
        lab = np.stack(
            [
                label_store.read(cam, name, expected_shape=(h, w))
                for cam, name in zip(cameras, label_names)
            ]
        )
        labels = lab[pixels[:, 0], pixels[:, 1], pixels[:, 2]].astype(np.int64)
    return PretrainSample(
        points=points,
        images=images,
        camera_names=tuple(cameras),
        pair_points=proj.point_indices,
        pair_pixels=pixels,
        pair_labels=labels,
        token=token,
    )
