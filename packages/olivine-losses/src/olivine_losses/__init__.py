"""olivine-losses: exact, numerically stable image-to-LiDAR contrastive distillation losses.

Pure functions live in :mod:`olivine_losses.functional`; typed ``nn.Module`` wrappers, the
stateful :class:`VMFClassPrior` and :class:`WeightedSum` are defined in the submodules, chance
levels and collapse measures in :mod:`olivine_losses.health`; everything
is re-exported here. The package depends on torch only.
"""

from olivine_losses._version import __version__
from olivine_losses.combine import OLIVINE_WEIGHTS, WeightedSum
from olivine_losses.contrastive import info_nce, pool_by_segment, superpixel_info_nce
from olivine_losses.health import (
    direction_cosines,
    effective_rank,
    info_nce_chance,
    most_collinear_pair,
    semantic_contrastive_chance,
    superpixel_chance,
)
from olivine_losses.modules import InfoNCELoss, SemanticContrastiveLoss, SuperpixelInfoNCELoss
from olivine_losses.semantic import SemanticVariant, semantic_contrastive
from olivine_losses.special import log_bessel_iv, vmf_log_normalizer
from olivine_losses.vmf import VMFClassPrior, banerjee_kappa, vmf_nll

__all__ = [
    "OLIVINE_WEIGHTS",
    "InfoNCELoss",
    "SemanticContrastiveLoss",
    "SemanticVariant",
    "SuperpixelInfoNCELoss",
    "VMFClassPrior",
    "WeightedSum",
    "__version__",
    "banerjee_kappa",
    "direction_cosines",
    "most_collinear_pair",
    "effective_rank",
    "info_nce",
    "info_nce_chance",
    "log_bessel_iv",
    "pool_by_segment",
    "semantic_contrastive",
    "semantic_contrastive_chance",
    "superpixel_chance",
    "superpixel_info_nce",
    "vmf_log_normalizer",
    "vmf_nll",
]
