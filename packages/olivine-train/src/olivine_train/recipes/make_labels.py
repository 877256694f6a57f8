"""``olivine-train make-labels``: VFM (SAM) labels for every keyframe camera image.

* The work list is every (camera, image file) of the selected keyframes, in a fixed order
  (scene, sample, camera), so every process computes the same list.
* ``--shard i/n`` keeps items ``i, i+n, i+2n, ...``: n processes cover the list exactly once.
* Items whose PNG already exists in the output :class:`~olivine_data.labels.LabelStore` are
  skipped, so an interrupted run resumes where it stopped; writes are atomic (temporary file +
  ``os.replace``), so a killed process never leaves a half-written PNG.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from olivine_data.progress import progress_bar

__all__ = [
    "ImageItem",
    "MakeLabelsSummary",
    "list_camera_images",
    "pending_items",
    "run_make_labels",
    "shard_items",
]


@dataclass(frozen=True)
class ImageItem:
    """One camera image to label: its channel and path (relative to the dataroot)."""

    camera: str
    filename: str

    @property
    def name(self) -> str:
        return Path(self.filename).name


@dataclass(frozen=True)
class MakeLabelsSummary:
    """Counts of one make-labels invocation."""

    total: int  # images in the whole dataset selection
    in_shard: int  # images assigned to this shard
    already_done: int  # skipped because their PNG existed
    written: int  # labelled now
    seconds: float

    def __str__(self) -> str:
        return (
            f"{self.written} written, {self.already_done} already done, {self.in_shard} in shard, "
            f"{self.total} total ({self.seconds:.1f} s)"
        )


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
    from olivine_data.datasets import NUSCENES_CAMERAS, NuScenesPretrainDataset

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
            items.append(ImageItem(cam, sd["filename"]))
    return items


def shard_items(items: Sequence[ImageItem], index: int, count: int) -> list[ImageItem]:
    """Items ``index, index + count, ...`` (disjoint shards whose union is ``items``)."""
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard: need 0 <= index < count, got {index}/{count}")
    return list(items[index::count])


def pending_items(items: Sequence[ImageItem], store: Any) -> list[ImageItem]:
    """Items whose label PNG does not exist yet in ``store``."""
    return [it for it in items if not store.exists(it.camera, it.name)]


Labeler = Callable[[np.ndarray, ImageItem], np.ndarray]
"""``labeler(image (H, W, 3) uint8, item) -> (H, W) uint8`` label map."""


def read_boxes(path: str | Path, vocabulary_size: int) -> list[Any]:
    """Detections from a JSON list of ``{"box": [x0, y0, x1, y1], "class_id": k, "score": s}``
    (score optional, default 1.0).
    """
    from olivine_models.vfm import Detection

    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"--boxes-json {path}: cannot read ({exc})") from exc
    if not isinstance(raw, list):
        raise ValueError(f"--boxes-json {path}: expected a JSON list, got {type(raw).__name__}")
    out = []
    for i, det in enumerate(raw):
        if not isinstance(det, dict) or "box" not in det or "class_id" not in det:
            raise ValueError(f"--boxes-json {path}: entry {i} needs 'box' and 'class_id': {det}")
        cls = int(det["class_id"])
        if not 0 <= cls < vocabulary_size:
            raise ValueError(
                f"--boxes-json {path}: entry {i} class_id {cls} outside 0..{vocabulary_size - 1}"
            )
        x0, y0, x1, y1 = (float(v) for v in det["box"])
        out.append(Detection((x0, y0, x1, y1), cls, float(det.get("score", 1.0))))
    return out


def build_labeler(
    mode: str,
    *,
    root: Path,
    vocabulary: str,
    sam_variant: str,
    sam_checkpoint: str | None,
    coarse_root: str | None,
    boxes_json: str | None,
    device: str,
    points_per_side: int = 32,
) -> Labeler:
    """SAM labeler for ``mode`` (``refine``: boxes from coarse labels; ``box``: fixed boxes)."""
    from olivine_data.labels import LabelStore, get_vocabulary
    from olivine_models import vfm
    from olivine_train.distributed import resolve_device

    vocab = get_vocabulary(vocabulary)
    size, unlabelled = len(vocab.class_names), vocab.unlabelled_id
    dev = resolve_device(device)
    sam = vfm.build_sam(sam_variant, sam_checkpoint).to(dev).eval()
    if mode == "refine":
        if coarse_root is None:
            raise ValueError("--coarse-root is required with --mode refine")
        coarse = LabelStore(coarse_root, vocab)
        refine = vfm.SamRefineLabeler(
            sam, num_classes=size, unlabelled_id=unlabelled, points_per_side=points_per_side
        )

        def label_refine(image: np.ndarray, item: ImageItem) -> np.ndarray:
            h, w = image.shape[:2]
            prior = coarse.read(item.camera, item.name, expected_shape=(h, w))
            return np.asarray(refine(image, prior), dtype=np.uint8)

        return label_refine
    if mode == "box":
        if boxes_json is None:
            raise ValueError("--boxes-json is required with --mode box")
        provider = vfm.FixedBoxProvider(read_boxes(boxes_json, size))
        box = vfm.SamBoxLabeler(sam, provider, vocabulary_size=size, unlabelled_id=unlabelled)

        def label_box(image: np.ndarray, item: ImageItem) -> np.ndarray:
            return np.asarray(box(image), dtype=np.uint8)

        return label_box
    raise ValueError(f"--mode: expected 'refine' or 'box', got {mode!r}")


def label_items(
    items: Sequence[ImageItem],
    root: Path,
    store: Any,
    labeler: Labeler,
    progress: bool = True,
    limit: int | None = None,
) -> int:
    """Label ``items`` in order and write them atomically; returns how many were written."""
    from PIL import Image

    todo = list(items if limit is None else items[:limit])
    written = 0
    for item in progress_bar(todo, enabled=progress, desc="make-labels", unit="img"):
        with Image.open(root / item.filename) as im:
            image = np.asarray(im.convert("RGB"))
        labels = labeler(image, item)
        if labels.shape != image.shape[:2]:
            raise ValueError(
                f"labeler returned shape {labels.shape} for {item.filename} "
                f"of size {image.shape[:2]}"
            )
        store.write(item.camera, item.name, labels)
        written += 1
    return written


def run_make_labels(
    *,
    root: str,
    version: str,
    split: str | None,
    scenes: Sequence[str] | None,
    cameras: Sequence[str] | None,
    out: str,
    mode: str,
    coarse_root: str | None,
    boxes_json: str | None,
    sam_variant: str,
    sam_checkpoint: str | None,
    vocabulary: str,
    shard: tuple[int, int],
    device: str = "auto",
    limit: int | None = None,
    progress: bool = True,
    points_per_side: int = 32,
    labeler: Labeler | None = None,
) -> MakeLabelsSummary:
    """List, shard, skip finished, label, write. ``labeler`` overrides the SAM labeler."""
    from olivine_data.labels import LabelStore, get_vocabulary

    t0 = time.perf_counter()
    root_p = Path(root)
    items = list_camera_images(root_p, version, split, scenes, cameras)
    mine = shard_items(items, *shard)
    store = LabelStore(out, get_vocabulary(vocabulary))
    store.remove_stale_temp_files()  # of shards of this host killed mid-write
    todo = pending_items(mine, store)
    if todo and labeler is None:
        labeler = build_labeler(
            mode,
            root=root_p,
            vocabulary=vocabulary,
            sam_variant=sam_variant,
            sam_checkpoint=sam_checkpoint,
            coarse_root=coarse_root,
            boxes_json=boxes_json,
            device=device,
            points_per_side=points_per_side,
        )
    written = label_items(todo, root_p, store, labeler, progress, limit) if labeler else 0
    return MakeLabelsSummary(
        total=len(items),
        in_shard=len(mine),
        already_done=len(mine) - len(todo),
        written=written,
        seconds=time.perf_counter() - t0,
    )
