"""Turning SAM masks into class maps: confidence-ordered painting and majority votes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["paint_masks", "vote_masks"]


def paint_masks(
    masks: np.ndarray,
    class_ids: Sequence[int],
    scores: Sequence[float],
    unlabelled_id: int,
) -> np.ndarray:
    """Paint boolean masks ``(N, H, W)`` into a uint8 ``(H, W)`` label map.

    Masks are painted in increasing score (stable for ties: later masks win), so the highest-scoring
    mask wins at every pixel it covers; uncovered pixels get ``unlabelled_id``.
    """
    if masks.ndim != 3:
        raise ValueError(f"paint_masks: expected (N, H, W) masks, got shape {masks.shape}")
    if len(class_ids) != masks.shape[0] or len(scores) != masks.shape[0]:
        raise ValueError(
            f"paint_masks: {masks.shape[0]} masks but {len(class_ids)} class ids and "
            f"{len(scores)} scores"
        )
    out = np.full(masks.shape[1:], unlabelled_id, dtype=np.uint8)
    for k in np.argsort(np.asarray(scores, dtype=np.float64), kind="stable"):
        out[masks[k]] = class_ids[k]
    return out


def vote_masks(
    coarse: np.ndarray,
    masks: Sequence[np.ndarray],
    num_classes: int,
    unlabelled_id: int,
    ignore_unlabelled: bool = True,
) -> np.ndarray:
    """Majority vote of ``coarse`` labels inside each mask (masks painted largest first).

    Each mask is filled with the most frequent coarse class under it (lowest id on ties); with
    ``ignore_unlabelled``, ``unlabelled_id`` pixels do not vote and a mask covering only unlabelled
    pixels changes nothing. Smaller masks are painted after larger ones so that fine segments
    survive. Pixels outside every mask keep their coarse label.
    """
    refined = coarse.astype(np.uint8, copy=True)
    order = np.argsort([-int(m.sum()) for m in masks], kind="stable")
    for k in order:
        mask = masks[k]
        values = coarse[mask]
        if ignore_unlabelled:
            values = values[values != unlabelled_id]
        if values.size == 0:
            continue
        counts = np.bincount(values.astype(np.int64), minlength=num_classes)
        refined[mask] = np.uint8(int(np.argmax(counts)))
    return refined
