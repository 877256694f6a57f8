"""The work list of ``make-labels``: every keyframe camera image of a selection, in a fixed order
(scene, sample, camera) so that every process computes the same list; ``--shard i/n``'s part of
it; the items still to label (their PNG is not in the label store yet).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from olivine_data.datasets import NUSCENES_CAMERAS, NuScenesPretrainDataset
from olivine_data.labels import LabelStore

__all__ = ["ImageItem", "list_camera_images", "pending_items", "shard_items"]


@dataclass(frozen=True)
class ImageItem:
    """One camera image to label: its channel, path (relative to the dataroot) and sample."""

    camera: str
    filename: str
    sample_token: str = ""

    @property
    def name(self) -> str:
        return Path(self.filename).name


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
            items.append(ImageItem(cam, sd["filename"], token))
    return items


def shard_items(items: Sequence[ImageItem], index: int, count: int) -> list[ImageItem]:
    """Items ``index, index + count, ...`` (disjoint shards whose union is ``items``)."""
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard: need 0 <= index < count, got {index}/{count}")
    return list(items[index::count])


def pending_items(items: Sequence[ImageItem], store: LabelStore) -> list[ImageItem]:
    """Items whose label PNG does not exist yet in ``store``."""
    return [it for it in items if not store.exists(it.camera, it.name)]
