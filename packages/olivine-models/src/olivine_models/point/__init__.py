"""Sparse 3D backbones (spconv is imported on first construction, not here)."""

from olivine_models.point.minkunet import MINKUNET_CONFIGS, MinkUNet, MinkUNetConfig
from olivine_models.point.voxelnet import VoxelNet

__all__ = ["MINKUNET_CONFIGS", "MinkUNet", "MinkUNetConfig", "VoxelNet"]
