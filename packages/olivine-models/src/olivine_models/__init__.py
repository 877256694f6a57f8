"""olivine-models: sparse 3D backbones, frozen 2D teachers, projection heads and a SAM labeler.

Importing this package is light: spconv, timm, torchvision and segment-anything are imported when a
model that needs them is built. The VFM labeler lives in :mod:`olivine_models.vfm`.
"""

from olivine_models._version import __version__
from olivine_models.heads import (
    DEFAULT_HEAD_DIM,
    Classifier,
    ImageHead,
    PointHead,
    SegmentationHead,
)
from olivine_models.image.encoders import FrozenImageEncoder
from olivine_models.point.bev import BEVGrid, SparseBEVHead, height_compression, sample_bev
from olivine_models.point.minkunet import MinkUNet, MinkUNetConfig
from olivine_models.point.voxelnet import VoxelNet
from olivine_models.registry import (
    create_image_encoder,
    create_point_encoder,
    list_image_encoders,
    list_point_encoders,
)
from olivine_models.safe_load import UnsafeWeightsError, load_weights_only, weights_file_problem
from olivine_models.state import LoadReport, StateMismatchError, load_matching_state, load_state

__all__ = [
    "BEVGrid",
    "DEFAULT_HEAD_DIM",
    "Classifier",
    "FrozenImageEncoder",
    "ImageHead",
    "LoadReport",
    "MinkUNet",
    "MinkUNetConfig",
    "PointHead",
    "SegmentationHead",
    "SparseBEVHead",
    "StateMismatchError",
    "UnsafeWeightsError",
    "VoxelNet",
    "__version__",
    "create_image_encoder",
    "create_point_encoder",
    "height_compression",
    "list_image_encoders",
    "list_point_encoders",
    "load_matching_state",
    "load_state",
    "load_weights_only",
    "weights_file_problem",
    "sample_bev",
]
