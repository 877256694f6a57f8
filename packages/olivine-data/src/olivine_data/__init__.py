"""olivine-data: dataset readers, point-pixel pairing, voxelisation, augmentation, collate, DCAS.

Importing the package is light (numpy, torch, Pillow): the dataset readers live in
``olivine_data.datasets`` and import nuscenes-devkit / semantic-kitti-api only when used.
"""

from olivine_data._version import __version__
from olivine_data.cameras import NUSCENES_CAMERAS
from olivine_data.collate import Collator
from olivine_data.labels import (
    GSAM14,
    NUSCENES16,
    SEEM17,
    LabelStore,
    Vocabulary,
    get_vocabulary,
)
from olivine_data.projection import CameraProjection, compose_projection, project_to_cameras
from olivine_data.sampling import dcas_probabilities, dcas_sample, uniform_pairs
from olivine_data.transforms import PretrainAugmentation, ResizeImages, SegAugmentation
from olivine_data.types import PretrainBatch, PretrainSample, SegBatch, SegSample
from olivine_data.voxel_grid import (
    VOXELNET_NUSCENES_GRID,
    MeanVoxelization,
    RangeFilter,
    VoxelDrops,
    VoxelGrid,
    voxelize_mean,
)
from olivine_data.voxelize import Voxelization, voxelize

__all__ = [
    "GSAM14",
    "NUSCENES16",
    "NUSCENES_CAMERAS",
    "SEEM17",
    "VOXELNET_NUSCENES_GRID",
    "CameraProjection",
    "Collator",
    "LabelStore",
    "MeanVoxelization",
    "PretrainAugmentation",
    "PretrainBatch",
    "PretrainSample",
    "RangeFilter",
    "ResizeImages",
    "SegAugmentation",
    "SegBatch",
    "SegSample",
    "Vocabulary",
    "VoxelDrops",
    "VoxelGrid",
    "Voxelization",
    "__version__",
    "compose_projection",
    "dcas_probabilities",
    "dcas_sample",
    "get_vocabulary",
    "project_to_cameras",
    "uniform_pairs",
    "voxelize",
    "voxelize_mean",
]
