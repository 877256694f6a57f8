"""Sparse 3D backbones (spconv is imported on first construction, not here)."""

from olivine_models.point.minkunet import MINKUNET_CONFIGS, MinkUNet, MinkUNetConfig

__all__ = ["MINKUNET_CONFIGS", "MinkUNet", "MinkUNetConfig"]
