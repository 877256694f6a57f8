"""The work list of ``make-labels``: every keyframe camera image of a selection, in a fixed order
(scene, sample, camera) so that every process computes the same list; ``--shard i/n``'s part of
it; the items still to label (their PNG is not in the label store yet, or is not sound: resume
verifies every stored PNG).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from olivine_data.datasets import (
    NUSCENES_CAMERAS,
    NuScenesPretrainDataset,
    confined_path,
    read_rgb_image,
)
from olivine_data.datasets.nuscenes_tables import recorded_image_size, table_file
from olivine_data.labels import LabelStore

__all__ = ["ImageItem", "list_camera_images", "pending_items", "shard_items"]


@dataclass(frozen=True)
class ImageItem:
    """One camera image to label: its channel, path (relative to the dataroot) and sample."""

    camera: str
    filename: str
    sample_token: str = ""
    #: ``(width, height)`` its ``sample_data`` record gives (None: not known, not checked)
    size: tuple[int, int] | None = None
    #: where the ``filename`` comes from (named in the errors), e.g. "<table>: record '<token>'"
    record: str = ""

    @property
    def name(self) -> str:
        return Path(self.filename).name

    def read(self, root: Path, allow_outside_root: bool = False) -> np.ndarray:
        """The image as ``(H, W, 3)`` uint8, refused (``ValueError`` naming the file) when it is
        outside ``root``, does not decode (e.g. a truncated JPEG) or has another size than its
        record gives.
        """
        where = f"{self.record or 'the work list'} field 'filename'"
        path = confined_path(root, self.filename, where, allow_outside_root)
        return read_rgb_image(path, self.size, self.record or "its table")


def list_camera_images(
    root: str | Path,
    version: str,
    split: str | None = None,
    scenes: Sequence[str] | None = None,
    cameras: Sequence[str] | None = None,
) -> list[ImageItem]:
    """Every keyframe camera image of the selection, ordered by (scene, sample, camera);
    ``cameras=None`` takes every camera channel each sample has.
    """
    ds = NuScenesPretrainDataset(
        root,
        version,
        scenes=list(scenes) if scenes else None,
        split=split if not scenes else None,
        cameras=tuple(cameras) if cameras else NUSCENES_CAMERAS,
    )
    order = {name: i for i, name in enumerate(NUSCENES_CAMERAS)}
    items = []
    for token in ds.sample_tokens:
        sample = ds.nusc.get("sample", token)
        if cameras:
            channels = list(cameras)
        else:  # every camera of the sample, in the nuScenes order
            present = [ch for ch in sample["data"] if ch.startswith("CAM")]
            channels = sorted(present, key=lambda ch: (order.get(ch, len(order)), ch))
        for cam in channels:
            if cam not in sample["data"]:
                raise ValueError(f"sample {token}: no {cam} image (has {sorted(sample['data'])})")
            sd = ds.nusc.get("sample_data", sample["data"][cam])
            record = f"{table_file(ds.nusc, 'sample_data')} record {sd['token']!r}"
            size = recorded_image_size(ds.nusc, sd)
            items.append(ImageItem(cam, sd["filename"], token, size, record))
    return items


def shard_items(items: Sequence[ImageItem], index: int, count: int) -> list[ImageItem]:
    """Items ``index, index + count, ...`` (disjoint shards whose union is ``items``)."""
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard: need 0 <= index < count, got {index}/{count}")
    return list(items[index::count])


def pending_items(
    items: Sequence[ImageItem], store: LabelStore, verify: bool = True
) -> tuple[list[ImageItem], int]:
    """Items to label: those whose label PNG is not in ``store`` and (``verify``) those whose PNG
    is not sound: it must decode as a single-channel 8-bit PNG of the size the item's record
    gives, with ids in the store's vocabulary (a zero-byte or cut-off PNG is made again).
    Returns the items and how many of them had a PNG that was not sound.
    """
    todo, bad = [], 0
    for it in items:
        if not store.exists(it.camera, it.name):
            todo.append(it)
            continue
        if not verify:
            continue
        shape = (it.size[1], it.size[0]) if it.size is not None else None
        try:
            store.read(it.camera, it.name, expected_shape=shape)
        except (ValueError, OSError):
            todo.append(it)
            bad += 1
    return todo, bad
