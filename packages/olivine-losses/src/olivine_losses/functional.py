"""Pure functions: every loss and special function of the package, without state.

============================  =================================================================
``info_nce``                  point-pixel InfoNCE, diagonal positives (PPKT, ``L_PPNCE``)
``semantic_contrastive``      VFM-label contrastive loss (``L_sup``), sum-in-log or SupCon form
``superpixel_info_nce``       SLidR's superpoint/superpixel-pooled InfoNCE
``vmf_nll``                   class-averaged vMF negative log-likelihood (``L_kl``)
``banerjee_kappa``            ``kappa ~ R (C - R^2) / (1 - R^2)``
``log_bessel_iv``             ``log I_nu(kappa)``
``vmf_log_normalizer``        ``log C_C(kappa)`` of the vMF density
``pool_by_segment``           per-segment mean pooling used by ``superpixel_info_nce``
============================  =================================================================
"""

from __future__ import annotations

from olivine_losses.contrastive import info_nce, pool_by_segment, superpixel_info_nce
from olivine_losses.semantic import semantic_contrastive
from olivine_losses.special import log_bessel_iv, vmf_log_normalizer
from olivine_losses.vmf import banerjee_kappa, vmf_nll

__all__ = [
    "banerjee_kappa",
    "info_nce",
    "log_bessel_iv",
    "pool_by_segment",
    "semantic_contrastive",
    "superpixel_info_nce",
    "vmf_log_normalizer",
    "vmf_nll",
]
