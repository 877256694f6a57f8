"""Segmentation metrics and the Lovász-softmax loss.

Conventions (the evaluation of the reference code, github.com/Eaphan/OLIVINE and SLidR): class 0
is *ignore*. Its logit is masked before the argmax (so a point is never predicted as 0),
ground-truth-0 points are dropped, and IoU/mIoU are over classes ``1..K-1``. A class with an
empty union (absent from both prediction and ground truth) gets IoU 1.0 like the reference code;
:func:`iou_from_confusion` can report NaN instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

__all__ = [
    "ConfusionMatrix",
    "SegmentationScores",
    "confusion_matrix",
    "cross_entropy_lovasz",
    "iou_from_confusion",
    "lovasz_softmax",
    "mask_ignore_logits",
]

IGNORE_LOGIT = -1e6


def mask_ignore_logits(logits: torch.Tensor, ignore_index: int = 0) -> torch.Tensor:
    """Return a copy of ``logits`` (N, K) whose ``ignore_index`` column is -1e6."""
    if logits.ndim != 2:
        raise ValueError(f"logits: expected shape (N, K), got {tuple(logits.shape)}")
    out = logits.clone()
    out[:, ignore_index] = IGNORE_LOGIT
    return out


def confusion_matrix(
    pred: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    num_classes: int,
    ignore_index: int | None = 0,
) -> np.ndarray:
    """(K, K) int64 matrix, rows = ground truth, columns = prediction; GT ``ignore_index`` rows
    are dropped (their points are not counted at all).
    """
    p = torch.as_tensor(pred).reshape(-1).long().cpu()
    t = torch.as_tensor(target).reshape(-1).long().cpu()
    if p.shape != t.shape:
        raise ValueError(f"pred and target differ in size: {tuple(p.shape)} vs {tuple(t.shape)}")
    for name, v in (("pred", p), ("target", t)):
        if v.numel() and (int(v.min()) < 0 or int(v.max()) >= num_classes):
            raise ValueError(
                f"{name}: labels must lie in [0, {num_classes}), "
                f"got [{int(v.min())}, {int(v.max())}]"
            )
    if ignore_index is not None:
        keep = t != ignore_index
        p, t = p[keep], t[keep]
    counts = torch.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).numpy().astype(np.int64)


def iou_from_confusion(
    conf: np.ndarray, ignore_index: int | None = 0, empty: float = 1.0
) -> tuple[np.ndarray, float]:
    """Per-class IoU (length K; the ignored class is NaN) and mIoU over the other classes.

    ``empty`` is the IoU of a class whose union is 0 (1.0 as in the reference code; pass
    ``float('nan')`` to exclude such classes from the mean).
    """
    conf = np.asarray(conf, dtype=np.float64)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise ValueError(f"conf: expected a square matrix, got shape {conf.shape}")
    tp = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / np.maximum(union, 1e-12), empty)
    if ignore_index is not None:
        iou[ignore_index] = np.nan
    return iou, float(np.nanmean(iou))


class ConfusionMatrix:
    """Accumulates a confusion matrix over batches (and across ranks with :meth:`all_reduce`)."""

    def __init__(self, num_classes: int, ignore_index: int | None = 0) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes: expected >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        self.matrix += confusion_matrix(pred, target, self.num_classes, self.ignore_index)

    def update_logits(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Argmax with the ignore class masked, then :meth:`update`."""
        if self.ignore_index is not None:
            logits = mask_ignore_logits(logits, self.ignore_index)
        self.update(logits.argmax(1), target)

    def all_reduce(self) -> None:
        """Sum the matrix over all ranks (no-op without an initialised process group)."""
        if dist.is_available() and dist.is_initialized():
            t = torch.from_numpy(self.matrix.copy())
            if dist.get_backend() == "nccl":
                t = t.cuda()  # NCCL needs device tensors; only reached under torchrun on GPU
            dist.all_reduce(t)
            self.matrix = t.cpu().numpy()

    def scores(self, class_names: list[str] | tuple[str, ...] | None = None) -> SegmentationScores:
        iou, miou = iou_from_confusion(self.matrix, self.ignore_index)
        names = (
            list(class_names)
            if class_names is not None
            else [str(i) for i in range(self.num_classes)]
        )
        if len(names) != self.num_classes:
            raise ValueError(f"class_names: expected {self.num_classes} names, got {len(names)}")
        total = self.matrix.sum()
        acc = float(np.diag(self.matrix).sum() / total) if total else float("nan")
        return SegmentationScores(
            class_names=tuple(names),
            iou=iou,
            miou=miou,
            accuracy=acc,
            num_points=int(total),
            present=self.matrix.sum(1) > 0,
        )


@dataclass(frozen=True)
class SegmentationScores:
    """IoU per class (NaN for the ignored class), mIoU, point accuracy, evaluated point count,
    and which classes occur in the ground truth (``present``).
    """

    class_names: tuple[str, ...]
    iou: np.ndarray
    miou: float
    accuracy: float
    num_points: int
    present: np.ndarray | None = None

    @property
    def miou_present(self) -> float:
        """mIoU over the classes that occur in the ground truth (the headline figure).

        ``miou`` follows the reference convention instead: a class absent from both prediction
        and ground truth counts as IoU 1, so a few evaluated scans inflate it.
        """
        present = np.ones(len(self.iou), bool) if self.present is None else self.present
        vals = self.iou[np.asarray(present, bool) & ~np.isnan(self.iou)]
        return float(vals.mean()) if vals.size else float("nan")

    def as_dict(self) -> dict[str, float]:
        out = {"miou": self.miou, "miou_present": self.miou_present, "accuracy": self.accuracy}
        for name, value in zip(self.class_names, self.iou):
            if not np.isnan(value):
                out[f"iou/{name}"] = float(value)
        return out


def _lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1.0 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if gt_sorted.numel() > 1:
        jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard


def lovasz_softmax(
    probs: torch.Tensor, labels: torch.Tensor, ignore_index: int | None = 0
) -> torch.Tensor:
    """Lovász-softmax loss (Berman et al. 2018), "present classes" variant, flat inputs.

    probs (N, K) softmax probabilities; labels (N,) int64. Points labelled ``ignore_index`` are
    dropped and that class is never a target. Returns a 0-dim tensor (0 if nothing is left).
    """
    if probs.ndim != 2 or labels.shape != probs.shape[:1]:
        raise ValueError(
            f"probs (N, K) and labels (N,) expected, got {tuple(probs.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if ignore_index is not None:
        keep = labels != ignore_index
        probs, labels = probs[keep], labels[keep]
    if probs.numel() == 0:
        return probs.sum() * 0.0
    probs = probs.float()
    losses = []
    for c in torch.unique(labels).tolist():
        if c == ignore_index:
            continue
        fg = (labels == c).float()
        errors = (fg - probs[:, c]).abs()
        errors_sorted, perm = torch.sort(errors, descending=True)
        losses.append(torch.dot(errors_sorted, _lovasz_grad(fg[perm])))
    if not losses:
        return probs.sum() * 0.0
    return torch.stack(losses).mean()


def cross_entropy_lovasz(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = 0,
    lovasz_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Downstream loss: CE + ``lovasz_weight`` * Lovász-softmax on non-ignored voxels.

    Returns (total, ce, lovasz).
    """
    ce = F.cross_entropy(logits.float(), labels, ignore_index=ignore_index)
    if torch.all(labels == ignore_index):
        ce = logits.sum() * 0.0
    lov = lovasz_softmax(F.softmax(logits.float(), dim=1), labels, ignore_index)
    return ce + lovasz_weight * lov, ce, lov
