"""Frozen 2D teachers (ResNet / DINO / DINOv2); built through ``create_image_encoder``."""

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
    "IMAGE_ENCODER_SPECS",
    "FrozenImageEncoder",
    "ImageEncoderSpec",
    "ResNetEncoder",
    "ViTEncoder",
    "convert_moco_state_dict",
    "dilate_resnet",
]
