"""VFM labelers on segment-anything (Grounded-SAM style boxes, SAM mask-vote refinement)."""

from olivine_models.vfm.sam import (
    SAM_CHECKPOINT_URLS,
    SAM_VARIANTS,
    BoxProvider,
    Detection,
    FixedBoxProvider,
    SamBoxLabeler,
    SamRefineLabeler,
    build_sam,
    build_tiny_sam,
    paint_masks,
    vote_masks,
)

SamLabeler = SamBoxLabeler
"""Alias of :class:`SamBoxLabeler` (the name used in the cross-package contract)."""

__all__ = [
    "SAM_CHECKPOINT_URLS",
    "SAM_VARIANTS",
    "BoxProvider",
    "Detection",
    "FixedBoxProvider",
    "SamBoxLabeler",
    "SamLabeler",
    "SamRefineLabeler",
    "build_sam",
    "build_tiny_sam",
    "paint_masks",
    "vote_masks",
]
