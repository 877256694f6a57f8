"""Turning SAM masks into class maps and superpixels: painting, majority votes, segment ids."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["mask_superpixels", "paint_masks", "vote_masks", "vote_superpixels"]

SUPERPIXEL_DTYPE = np.uint16
"""Superpixel maps hold segment ids ``1..N`` (``N < 65536``) and ``0`` for unassigned pixels."""


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


def mask_superpixels(
    masks: Sequence[np.ndarray], shape: tuple[int, int] | None = None
) -> np.ndarray:
    """SAM masks -> a superpixel map: one segment id per pixel, as Seal builds its superpixels.

    Seal (Liu et al., "Segment Any Point Cloud Sequences by Distilling Vision Foundation Models",
    NeurIPS 2023, github.com/youquanl/Segment-Any-Point-Cloud) turns SAM's automatic masks into
    superpixels by painting every mask with its own id, larger masks first, so later (smaller)
    masks overwrite earlier ones and fine parts survive inside large segments. Ids are ``1..N``
    in painting order (largest mask = 1; equal areas keep the generator's order); pixels no mask
    covers are ``0`` (unassigned). Only ids of masks visible somewhere survive, so ids may skip.

    Args:
        masks: boolean ``(H, W)`` arrays (e.g. ``SamAutomaticMaskGenerator`` segmentations).
        shape: ``(H, W)`` when ``masks`` may be empty.

    Returns:
        ``(H, W)`` uint16 map.
    """
    if not masks:
        if shape is None:
            raise ValueError("mask_superpixels: no masks and no shape given")
        return np.zeros(shape, dtype=SUPERPIXEL_DTYPE)
    first = np.asarray(masks[0])
    if first.ndim != 2 or any(np.asarray(m).shape != first.shape for m in masks):
        raise ValueError(
            "mask_superpixels: expected boolean (H, W) masks of one shape, got "
            f"{sorted({np.asarray(m).shape for m in masks})}"
        )
    if shape is not None and tuple(shape) != first.shape:
        raise ValueError(f"mask_superpixels: masks are {first.shape}, shape says {tuple(shape)}")
    if len(masks) >= np.iinfo(SUPERPIXEL_DTYPE).max:
        raise ValueError(f"mask_superpixels: {len(masks)} masks do not fit uint16 ids")
    out = np.zeros(first.shape, dtype=SUPERPIXEL_DTYPE)
    order = np.argsort([-int(np.count_nonzero(m)) for m in masks], kind="stable")
    for new_id, k in enumerate(order, start=1):
        out[np.asarray(masks[k], dtype=bool)] = new_id
    return out


def vote_superpixels(
    coarse: np.ndarray,
    superpixels: np.ndarray,
    num_classes: int,
    unlabelled_id: int,
    ignore_unlabelled: bool = True,
) -> np.ndarray:
    """Majority vote of ``coarse`` labels inside each superpixel (ids > 0; 0 keeps ``coarse``).

    Every segment takes the most frequent coarse class among its pixels (lowest id on ties);
    with ``ignore_unlabelled`` the ``unlabelled_id`` pixels do not vote, and a segment with only
    unlabelled pixels keeps its coarse labels. Unlike :func:`vote_masks`, segments do not overlap,
    so each pixel's vote is counted once.
    """
    if coarse.shape != superpixels.shape:
        raise ValueError(
            f"vote_superpixels: coarse {coarse.shape} and superpixels {superpixels.shape} differ"
        )
    seg = superpixels.astype(np.int64).ravel()
    cls = coarse.astype(np.int64).ravel()
    if cls.size and (cls.min() < 0 or cls.max() >= num_classes):
        raise ValueError(f"vote_superpixels: coarse labels must be in 0..{num_classes - 1}")
    n_seg = int(seg.max()) + 1 if seg.size else 1
    keep = seg > 0
    if ignore_unlabelled:
        keep &= cls != unlabelled_id
    counts = np.zeros((n_seg, num_classes), dtype=np.int64)
    np.add.at(counts, (seg[keep], cls[keep]), 1)
    winner = np.argmax(counts, axis=1)
    has_vote = counts.sum(axis=1) > 0
    has_vote[0] = False
    refined = cls.copy()
    change = has_vote[seg]
    refined[change] = winner[seg[change]]
    return refined.reshape(coarse.shape).astype(np.uint8)
