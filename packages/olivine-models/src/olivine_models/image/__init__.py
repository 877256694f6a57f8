"""Frozen 2D teachers (ResNet / DINO / DINOv2 / EfficientNet-Lite0); built through
``create_image_encoder``.
"""

from olivine_models.image.efficientnet import (
    EfficientNetEncoder,
    convert_efficientnet_lite_state_dict,
    packaged_weights_path,
)
from olivine_models.image.encoders import (
    IMAGE_ENCODER_SPECS,
    FrozenImageEncoder,
    ImageEncoderSpec,
    ResNetEncoder,
    ViTEncoder,
    convert_moco_state_dict,
    dilate_resnet,
)

__all__ = [
    "EfficientNetEncoder",
    "IMAGE_ENCODER_SPECS",
    "FrozenImageEncoder",
    "ImageEncoderSpec",
    "ResNetEncoder",
    "ViTEncoder",
    "convert_efficientnet_lite_state_dict",
    "convert_moco_state_dict",
    "dilate_resnet",
    "packaged_weights_path",
]
