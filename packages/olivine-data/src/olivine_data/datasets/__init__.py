"""Dataset readers: nuScenes (devkit), SemanticKITTI, KITTI camera pairing.

Heavy backends (nuscenes-devkit, semantic-kitti-api) are imported inside the readers.
"""

from olivine_data.datasets._common import read_scene_splits
from olivine_data.datasets.kitti import (
    KittiCalib,
    KittiPretrainDataset,
    read_object_calib,
    read_odometry_calib,
    write_odometry_calib,
)
from olivine_data.datasets.nuscenes import (
    LIDARSEG_TO_EVAL16,
    NUSCENES_CAMERAS,
    NuScenesPretrainDataset,
    NuScenesSegDataset,
    lidarseg_to_eval16,
)
from olivine_data.datasets.semantickitti import (
    SEMANTICKITTI_CLASSES,
    SemanticKITTISegDataset,
    load_semantickitti_config,
)

__all__ = [
    "SEMANTICKITTI_CLASSES",
    "KittiCalib",
    "KittiPretrainDataset",
    "SemanticKITTISegDataset",
    "load_semantickitti_config",
    "read_object_calib",
    "read_odometry_calib",
    "write_odometry_calib",
    "LIDARSEG_TO_EVAL16",
    "NUSCENES_CAMERAS",
    "NuScenesPretrainDataset",
    "NuScenesSegDataset",
    "lidarseg_to_eval16",
    "read_scene_splits",
]
