"""olivine-data: dataset readers, point-pixel pairing, voxelisation, augmentation, collate, DCAS.

Importing the package is light: the nuScenes devkit and semantic-kitti-api are imported only
inside the readers that need them.
"""

from olivine_data._version import __version__
from olivine_data.labels import (
    GSAM14,
    NUSCENES16,
    SEEM17,
    LabelStore,
    Vocabulary,
    get_vocabulary,
)
from olivine_data.types import PretrainBatch, PretrainSample, SegBatch, SegSample

__all__ = [
    "GSAM14",
    "NUSCENES16",
    "SEEM17",
    "LabelStore",
    "PretrainBatch",
    "PretrainSample",
    "SegBatch",
    "SegSample",
    "Vocabulary",
    "__version__",
    "get_vocabulary",
]
