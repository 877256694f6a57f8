"""Segmentation pieces shared by the downstream recipes: the network, the datasets, the class
names, evaluation (point level, through the inverse indices) and the frozen-trunk feature cache.

Evaluation predicts per voxel with the class-0 logit masked, maps every raw point to its voxel's
prediction through ``point_to_voxel`` (the inverse indices) and accumulates a confusion matrix
without ground-truth-0 points; mIoU is over classes ``1..K-1``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from olivine_data import datasets
from olivine_data.collate import SegBatch
from olivine_data.datasets import LIDARSEG_SPECS, read_named_split
from olivine_data.labels import NUSCENES16
from olivine_data.progress import progress_bar
from olivine_data.types import SegSample
from olivine_models import SegmentationHead, load_matching_state
from olivine_train.checkpoint import load_backbone_state
from olivine_train.config import Config
from olivine_train.distributed import DistInfo
from olivine_train.metrics import ConfusionMatrix, SegmentationScores, mask_ignore_logits
from olivine_train.preemption import worker_ignores_stop_signals
from olivine_train.recipes.common import Runtime, SampleSource, kitti_sequences, nuscenes_scenes

__all__ = [
    "CachedSample",
    "SegNet",
    "build_seg_dataset",
    "cache_trunk_features",
    "class_names_for",
    "evaluate_model",
    "format_scores",
    "lidarseg_selection",
    "load_pretrained_backbone",
    "score_points",
    "validation_loader",
    "write_scan_list",
]


def score_points(
    cm: ConfusionMatrix,
    voxel_logits: torch.Tensor,
    point_to_voxel: torch.Tensor,
    point_labels: torch.Tensor | None,
) -> None:
    """Add one sample's point predictions to ``cm``: per-voxel argmax (class-0 logit masked)
    mapped to the raw points through ``point_to_voxel``.
    """
    if point_labels is None:
        raise ValueError("evaluation samples have no point labels")
    pred_voxel = mask_ignore_logits(voxel_logits.float(), 0).argmax(1)
    cm.update(pred_voxel[point_to_voxel], point_labels)


def load_pretrained_backbone(backbone: nn.Module, path: str | None, point_encoder: str) -> str:
    """Load the trunk weights at ``path`` (``backbone.pt``, a pretraining ``last.pt``/``best.pt``
    or a plain state dict) into ``backbone``; returns the load report. ``None``: nothing is
    loaded (a random trunk).
    """
    if path is None:
        return "random initialisation (downstream.pretrained is null)"
    state, name = load_backbone_state(path)
    if name is not None and name != point_encoder:
        raise ValueError(
            f"downstream.pretrained: {path} holds a {name!r} backbone but "
            f"model.point_encoder is {point_encoder!r}"
        )
    # refuses (ValueError naming the file) when only BatchNorm counters would match
    report = load_matching_state(
        backbone, state, source=f"downstream.pretrained={path} (for {point_encoder!r})"
    )
    return f"{path}: {report.summary()}"


class SegNet(nn.Module):
    """Point encoder + per-voxel classifier."""

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = SegmentationHead(int(backbone.out_channels), num_classes)  # type: ignore[arg-type]

    def forward(self, batch: SegBatch) -> torch.Tensor:
        feats = self.backbone(
            batch.voxel_coords,
            batch.voxel_features,
            tuple(batch.spatial_shape),
            int(batch.batch_size),
        )
        return self.classifier(feats)  # type: ignore[no-any-return]


def class_names_for(cfg: Config) -> tuple[str, ...]:
    """Evaluation class names (index 0 = ignore) of the downstream dataset."""
    spec = LIDARSEG_SPECS.get(cfg.data.dataset)
    names = tuple(spec.classes) if spec is not None else tuple(NUSCENES16.class_names)
    if len(names) != cfg.downstream.num_classes:
        raise ValueError(
            f"downstream.num_classes: {cfg.data.dataset} has {len(names)} classes "
            f"(0 = ignore), got {cfg.downstream.num_classes}"
        )
    return names


def lidarseg_selection(cfg: Config, split: str) -> tuple[list[str] | None, str | None]:
    """``(sequences, named split)`` of a SemanticKITTI-family ``split`` ("train" or "val"):
    ``data.train_scenes``/``val_scenes`` if given, else the sequences ``<root>/olivine_splits.json``
    names for the split (synthetic exports write one), else the dataset's own split
    ``data.train_split``/``val_split`` (its sequence folders or list file).
    """
    d = cfg.data
    explicit = d.train_scenes if split == "train" else d.val_scenes
    if explicit is not None:
        return list(explicit), None
    name = d.train_split if split == "train" else d.val_split
    named = read_named_split(d.root, name)
    if named is not None:
        return list(named), None
    return None, name


SegDataset = datasets.NuScenesSegDataset | datasets.LidarSegDataset


def build_seg_dataset(cfg: Config, split: str) -> SegDataset:
    """The downstream dataset for ``split``: "train" keeps every ``data.skip``-th scene/frame,
    "val" every ``data.val_skip``-th frame (SemanticKITTI family; nuScenes validates on all).
    """
    d = cfg.data
    skip = d.skip if split == "train" else d.val_skip
    if d.dataset == "nuscenes":
        scenes, named = nuscenes_scenes(cfg, split)
        return datasets.NuScenesSegDataset(
            d.root,
            d.version,
            scenes=scenes,
            split=named,
            skip=skip if split == "train" else 1,
            allow_outside_root=d.allow_outside_root,
        )
    if d.dataset == "semantickitti":
        return datasets.SemanticKITTISegDataset(
            d.root, sequences=kitti_sequences(cfg, split), skip=skip
        )
    spec = LIDARSEG_SPECS.get(d.dataset)
    if spec is None:
        raise ValueError(f"data.dataset: {d.dataset!r} has no per-point labels for segmentation")
    sequences, named = lidarseg_selection(cfg, split)
    label_dir = d.val_label_dir if split == "val" else None
    return datasets.LidarSegDataset(
        d.root,
        spec,
        split=named,
        sequences=sequences,
        skip=skip,
        label_dir=label_dir or spec.label_dir_for(split),
        allow_outside_root=d.allow_outside_root,
    )


def write_scan_list(dataset: SampleSource[SegSample], limit: int, path: Path) -> None:
    """Write the scans a run trains on (``<sequence>/<scan>``, one per line, the first ``limit``
    of the selection) to ``path``, for readers that list them (the SemanticKITTI family).
    """
    tokens = getattr(dataset, "tokens", None)
    if tokens is not None:
        path.write_text("".join(f"{t}\n" for t in list(tokens)[:limit]))


def format_scores(scores: SegmentationScores, title: str = "") -> str:
    """A plain-text IoU table (per class, then mIoU)."""
    rows = [f"{title}" if title else ""]
    width = max(*(len(n) for n in scores.class_names[1:]), 26) + 2
    present = scores.present if scores.present is not None else [True] * len(scores.iou)
    for name, iou, here in zip(scores.class_names[1:], scores.iou[1:], present[1:]):
        note = "" if here else "  (absent from the ground truth)"
        rows.append(f"  {name:<{width}} {100 * iou:6.2f}{note}")
    n = int(np.asarray(present[1:], bool).sum())
    rows.append(f"  {f'mIoU ({n} classes present)':<{width}} {100 * scores.miou_present:6.2f}")
    rows.append(
        f"  {'mIoU, ref. convention':<{width}} {100 * scores.miou:6.2f}"
        "  (absent and never predicted = 100)"
    )
    return "\n".join(r for r in rows if r)


@torch.no_grad()
def validation_loader(
    val_set: SampleSource[SegSample],
    cfg: Config,
    info: DistInfo,
    collate: Callable[[list[SegSample]], SegBatch],
) -> torch.utils.data.DataLoader[SegSample]:
    """The one validation loader (fine-tuning's evaluation and ``olivine-train evaluate``): in
    order, ``data.batch_size`` split over the ranks (at least 1 per rank), sharded without
    shuffling under ``torchrun``, and workers that leave SIGINT/SIGTERM to the main process like
    the training loaders' (:func:`~olivine_train.preemption.worker_ignores_stop_signals`).
    """
    sampler: torch.utils.data.Sampler[int] | None = None
    if info.distributed:
        sampler = torch.utils.data.distributed.DistributedSampler(
            val_set,  # type: ignore[arg-type]
            shuffle=False,
            drop_last=False,
        )
    return torch.utils.data.DataLoader(
        val_set,  # type: ignore[arg-type]
        batch_size=max(cfg.data.batch_size // info.world_size, 1),
        sampler=sampler,
        shuffle=False,
        collate_fn=collate,
        num_workers=cfg.data.num_workers,
        worker_init_fn=worker_ignores_stop_signals,
    )


def evaluate_model(
    model: SegNet,
    loader: Iterable[SegBatch],
    num_classes: int,
    class_names: tuple[str, ...],
    rt: Runtime,
    progress: bool = False,
) -> SegmentationScores:
    """Point-level confusion matrix (inverse indices, class 0 masked and ignored), all ranks."""
    model.eval()
    cm = ConfusionMatrix(num_classes, ignore_index=0)
    for batch in progress_bar(
        loader, enabled=progress and rt.is_main, desc="evaluate", unit="batch", leave=False
    ):
        batch = batch.to(rt.device)
        if batch.point_labels is None:
            raise ValueError(f"evaluation batch {batch.tokens} has no point labels")
        with rt.autocast():
            logits = model(batch)
        score_points(cm, logits, batch.point_to_voxel, batch.point_labels)
    cm.all_reduce()
    return cm.scores(class_names)


@dataclass
class CachedSample:
    """Frozen-trunk output of one sweep (linear probing with ``cache_features``)."""

    features: torch.Tensor  # (V, C)
    voxel_labels: torch.Tensor | None  # (V,)
    point_to_voxel: torch.Tensor  # (N,)
    point_labels: torch.Tensor | None  # (N,)


@torch.no_grad()
def cache_trunk_features(
    backbone: nn.Module,
    dataset: SampleSource[SegSample],
    collate: Callable[[Sequence[SegSample]], SegBatch],
    rt: Runtime,
    desc: str,
    progress: bool,
) -> list[CachedSample]:
    """Run the (eval-mode) trunk once per sample; features stay on the run device."""
    backbone.eval()
    out: list[CachedSample] = []
    samples = range(len(dataset))
    for i in progress_bar(
        samples, enabled=progress and rt.is_main, desc=desc, unit="sample", leave=False
    ):
        batch = collate([dataset[i]]).to(rt.device)
        with rt.autocast():
            feats = backbone(
                batch.voxel_coords, batch.voxel_features, tuple(batch.spatial_shape), 1
            )
        out.append(
            CachedSample(
                feats.float(), batch.voxel_labels, batch.point_to_voxel, batch.point_labels
            )
        )
    return out
