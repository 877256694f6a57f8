"""Dataset readers: nuScenes (devkit), SemanticKITTI, KITTI camera pairing.

Heavy backends (nuscenes-devkit, semantic-kitti-api) are imported inside the readers.
"""

from olivine_data.datasets._common import read_scene_splits
from olivine_data.datasets.nuscenes import (
    LIDARSEG_TO_EVAL16,
    NUSCENES_CAMERAS,
    NuScenesPretrainDataset,
    NuScenesSegDataset,
    lidarseg_to_eval16,
)

__all__ = [
    "LIDARSEG_TO_EVAL16",
    "NUSCENES_CAMERAS",
    "NuScenesPretrainDataset",
    "NuScenesSegDataset",
    "lidarseg_to_eval16",
    "read_scene_splits",
]
