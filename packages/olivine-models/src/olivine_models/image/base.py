"""What every frozen 2D teacher shares: :class:`FrozenImageEncoder` (ImageNet normalisation,
input checks, frozen eval mode) and :func:`load_weights_file`. The encoder families
(:mod:`.encoders`, :mod:`.efficientnet`) build on it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from olivine_models.safe_load import load_weights_only

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "FrozenImageEncoder", "load_weights_file"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FrozenImageEncoder(nn.Module):
    """Base class: ImageNet normalisation, input checks, frozen eval-mode behaviour.

    Subclasses implement :meth:`forward_features` on normalised images.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        name: str,
        out_channels: int,
        stride: int,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.name = name
        self.out_channels = int(out_channels)
        self.stride = int(stride)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def freeze(self) -> FrozenImageEncoder:
        """Disable gradients for all parameters and switch to eval mode."""
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)
        return self

    def train(self, mode: bool = True) -> FrozenImageEncoder:
        """Always stays in eval mode (frozen teacher; BatchNorm keeps its running statistics)."""
        super().train(False)
        return self

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Spatial size of the feature map for an ``height x width`` input."""
        return math.ceil(height / self.stride), math.ceil(width / self.stride)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map of ImageNet-normalised images."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [0, 1] -> ``(B, out_channels, ceil(H/stride), ceil(W/stride))``."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
            raise ValueError(f"{self.name}: expected images of shape (B, 3, H, W), got {shape}")
        if not images.is_floating_point():
            raise TypeError(
                f"{self.name}: expected float images scaled to [0, 1], got dtype {images.dtype}"
            )
        mean = self.mean.to(images.dtype)
        std = self.std.to(images.dtype)
        with torch.no_grad():
            x = (images - mean) / std
            feats = self.forward_features(x)
        expected = self.output_size(images.shape[2], images.shape[3])
        if tuple(feats.shape[2:]) != expected or feats.shape[1] != self.out_channels:
            raise RuntimeError(  # internal consistency check, not input validation
                f"{self.name}: produced {tuple(feats.shape)}, expected (B, {self.out_channels}, "
                f"{expected[0]}, {expected[1]})"
            )
        return feats


def load_weights_file(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """Read a state dict from ``path`` (``torch.load(weights_only=True)``), unwrapping containers.

    Recognised wrappers: ``{"state_dict": ...}`` (MoCo, Lightning), ``{"model": ...}``,
    ``{"teacher": ...}`` (DINO training checkpoints; the teacher is the released model).
    """
    file = Path(path)
    # one line naming the file for a pickle payload, an empty or a text file (never torch's
    # advice to turn weights_only off)
    obj = load_weights_only(file, what)
    for key in ("state_dict", "model", "teacher"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) for k in obj):
        raise ValueError(f"{what}: {file} does not contain a state dict (name -> tensor)")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
