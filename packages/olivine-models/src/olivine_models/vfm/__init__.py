"""VFM labelers on segment-anything: Grounded-SAM style boxes, SAM mask-vote refinement,
MobileSAM with its official weights offline, and SAM superpixels.
"""

from olivine_models.vfm.build import (
    MOBILE_SAM_BYTES,
    MOBILE_SAM_PACKAGE,
    MOBILE_SAM_SHA256,
    build_mobile_sam,
    mobile_sam_checkpoint,
)
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
    mask_superpixels,
    paint_masks,
    vote_masks,
    vote_superpixels,
)
from olivine_models.vfm.tinyvit import TinyViT

SamLabeler = SamBoxLabeler
"""Alias of :class:`SamBoxLabeler` (the name used in the cross-package contract)."""

__all__ = [
    "MOBILE_SAM_BYTES",
    "MOBILE_SAM_PACKAGE",
    "MOBILE_SAM_SHA256",
    "SAM_CHECKPOINT_URLS",
    "SAM_VARIANTS",
    "BoxProvider",
    "Detection",
    "FixedBoxProvider",
    "SamBoxLabeler",
    "SamLabeler",
    "SamRefineLabeler",
    "TinyViT",
    "build_mobile_sam",
    "build_sam",
    "build_tiny_sam",
    "mask_superpixels",
    "mobile_sam_checkpoint",
    "paint_masks",
    "vote_masks",
    "vote_superpixels",
]
