"""Dataset readers: nuScenes (devkit), the SemanticKITTI family (SemanticKITTI, ScribbleKITTI,
RELLIS-3D, SemanticPOSS, SemanticSTF, SynLiDAR, DAPS-3D), KITTI camera pairing.

Heavy backends (nuscenes-devkit, semantic-kitti-api) are imported inside the readers.
"""

from olivine_data._io import read_rgb_image
from olivine_data.datasets._common import confined_path, read_named_split, read_scene_splits
from olivine_data.datasets.kitti import (
    KittiCalib,
    KittiPretrainDataset,
    read_object_calib,
    read_odometry_calib,
    write_odometry_calib,
)
from olivine_data.datasets.lidarseg import LidarSegDataset, LidarSegSpec
from olivine_data.datasets.lidarseg_specs import (
    DAPS3D,
    LIDARSEG_SPECS,
    RELLIS3D,
    SCRIBBLEKITTI,
    SEMANTICPOSS,
    SEMANTICSTF,
    SYNLIDAR,
    get_lidarseg_spec,
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
    semantickitti_spec,
)

__all__ = [
    "DAPS3D",
    "LIDARSEG_SPECS",
    "LidarSegDataset",
    "LidarSegSpec",
    "RELLIS3D",
    "SCRIBBLEKITTI",
    "SEMANTICPOSS",
    "SEMANTICSTF",
    "SYNLIDAR",
    "get_lidarseg_spec",
    "semantickitti_spec",
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
    "confined_path",
    "read_named_split",
    "read_rgb_image",
    "read_scene_splits",
]
