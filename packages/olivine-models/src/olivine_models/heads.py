"""Projection heads, the downstream classifier, and shape-matching checkpoint loading.

OLIVINE has two decoupled head pairs, each producing 64-d L2-normalised features:

* 3D: ``final`` (h_3D^pp) and ``final_class_level`` (h_3D^sem), each a 1x1 sparse conv with bias
  on the 96-channel MinkUNet output -- a per-voxel linear layer, i.e. :class:`PointHead`;
* 2D: ``decoder`` (h_2D^pp) and ``decoder_class_level`` (h_2D^sem), each a 1x1 conv followed by
  bilinear upsampling (``align_corners=True``) by the teacher's stride -- :class:`ImageHead`.
  :meth:`ImageHead.sample` gives the same features at a set of pixels only (what the losses read),
  without building the full-resolution map.

Downstream, the heads are dropped and a fresh :class:`SegmentationHead` is trained;
:func:`~olivine_models.state.load_matching_state` (re-exported here) reproduces the reference
``load_state_with_same_shape``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from olivine_models.state import LoadReport, load_matching_state

__all__ = [
    "DEFAULT_HEAD_DIM",
    "PointHead",
    "ImageHead",
    "SegmentationHead",
    "Classifier",
    "LoadReport",
    "load_matching_state",
]

DEFAULT_HEAD_DIM = 64
"""Feature dimension of the pp and sem heads in the paper (``model_n_out``)."""

_NORM_EPS = 1e-12
# ImageHead.sample: a strided gather of one channel costs ~1,350 conv multiply-adds on CPU (x 2
# for the backward's weight gradient that only the projection pays): see ImageHead.sample.
_GATHER_COST = 2700


def _check_channels(name: str, x: torch.Tensor, dim: int, expected: int, layout: str) -> None:
    if x.ndim <= dim or x.shape[dim] != expected:
        raise ValueError(
            f"{name}: expected input of layout {layout} with {expected} channels, got shape "
            f"{tuple(x.shape)}"
        )


class PointHead(nn.Module):
    """Per-voxel linear projection (a 1x1 sparse conv with bias), optionally L2-normalised.

    Args:
        in_channels: width of the backbone output (96 for MinkUNet-34C).
        out_channels: head dimension (64 in the paper).
        normalize: L2-normalise each output row. Zero rows stay zero (no NaN, finite gradients).
    """

    def __init__(
        self, in_channels: int, out_channels: int = DEFAULT_HEAD_DIM, normalize: bool = True
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(
                f"PointHead: in_channels and out_channels must be >= 1, got {in_channels}, "
                f"{out_channels}"
            )
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.normalize = bool(normalize)
        self.linear = nn.Linear(self.in_channels, self.out_channels, bias=True)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """``(V, in_channels) -> (V, out_channels)``."""
        if feats.ndim != 2:
            raise ValueError(f"PointHead: expected (V, C) features, got shape {tuple(feats.shape)}")
        _check_channels("PointHead", feats, 1, self.in_channels, "(V, C)")
        out: torch.Tensor = self.linear(feats)
        if self.normalize:
            out = F.normalize(out, p=2.0, dim=1, eps=_NORM_EPS)
        return out


class ImageHead(nn.Module):
    """1x1 conv + bilinear upsampling (``align_corners=True``) + optional L2 normalisation.

    Args:
        in_channels: teacher channels (2048 for ResNet-50, 384/768 for ViT-S/B).
        out_channels: head dimension (64 in the paper).
        upsample: upsampling factor, normally the teacher's ``stride`` (4 for the dilated
            ResNet-50); 1 disables upsampling.
        normalize: L2-normalise each output pixel vector (zero vectors stay zero).

    ``forward(x, output_size=None)``: upsamples ``(B, C, h, w)`` by ``upsample`` to
    ``(B, out_channels, h * upsample, w * upsample)``. With ``output_size=(H, W)`` the result is
    then cropped to its top-left ``H x W`` -- the crop size when the teacher padded its input to a
    multiple of its stride (ViTs); ``H, W`` must not exceed the upsampled size.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = DEFAULT_HEAD_DIM,
        upsample: int = 4,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1 or upsample < 1:
            raise ValueError(
                "ImageHead: in_channels, out_channels and upsample must be >= 1, got "
                f"{in_channels}, {out_channels}, {upsample}"
            )
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.upsample = int(upsample)
        self.normalize = bool(normalize)
        self.conv = nn.Conv2d(self.in_channels, self.out_channels, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor, output_size: Sequence[int] | None = None) -> torch.Tensor:
        """``(B, in_channels, h, w) -> (B, out_channels, h*upsample, w*upsample)`` (or cropped)."""
        if x.ndim != 4:
            raise ValueError(f"ImageHead: expected (B, C, h, w) features, got {tuple(x.shape)}")
        _check_channels("ImageHead", x, 1, self.in_channels, "(B, C, h, w)")
        out: torch.Tensor = self.conv(x)
        if self.upsample != 1:
            size = (x.shape[2] * self.upsample, x.shape[3] * self.upsample)
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=True)
        if output_size is not None:
            height, width = int(output_size[0]), int(output_size[1])
            if height > out.shape[2] or width > out.shape[3] or height < 1 or width < 1:
                raise ValueError(
                    f"ImageHead: output_size {(height, width)} must be within the upsampled size "
                    f"{tuple(out.shape[2:])}"
                )
            out = out[:, :, :height, :width]
        if self.normalize:
            out = F.normalize(out, p=2.0, dim=1, eps=_NORM_EPS)
        return out

    def sample(
        self,
        x: torch.Tensor,
        pixels: torch.Tensor,
        output_size: Sequence[int] | None = None,
        *,
        project_first: bool | None = None,
    ) -> torch.Tensor:
        """The head's features at ``pixels`` only: ``forward(x, output_size)`` gathered there.

        Args:
            x: ``(B, in_channels, h, w)`` teacher features.
            pixels: ``(P, 3)`` integer ``[image, row, col]`` in the output grid (the upsampled
                ``(h * upsample, w * upsample)`` map, or its top-left ``output_size`` crop).
            output_size: as in :meth:`forward`; only bounds the pixel coordinates.
            project_first: apply the 1x1 conv to the teacher-resolution ``(B, C, h, w)`` map
                and sample the ``out_channels`` result (``True``), or sample the ``in_channels``
                teacher vectors and project those (``False``). ``None`` samples first only when
                the pixels are few against the map (``P * 2700 < B * h * w * out_channels``):
                gathering a channel-first map reads ``in_channels`` strided values per tap, which
                on CPU cost about 1,350 times a multiply-add of the conv (measured at the paper's
                shape, 2,048 channels, 4,096 pairs: 0.72 s sampling first vs 0.29 s projecting
                first, forward + backward, one thread).

        Returns:
            ``(P, out_channels)``, L2-normalised rows when ``normalize``.

        Exact, not an approximation: the 1x1 conv and bilinear interpolation are both linear and
        the interpolation weights sum to 1, so interpolating the teacher features and then
        projecting them (bias included) equals projecting and then interpolating; normalising
        only the sampled vectors gives the values that normalising every pixel and gathering
        gives. The cost grows with ``P``, not with the number of pixels of the images.
        """
        if x.ndim != 4:
            raise ValueError(f"ImageHead: expected (B, C, h, w) features, got {tuple(x.shape)}")
        _check_channels("ImageHead", x, 1, self.in_channels, "(B, C, h, w)")
        batch, _, h, w = (int(s) for s in x.shape)
        up_h, up_w = h * self.upsample, w * self.upsample
        height, width = up_h, up_w
        if output_size is not None:
            height, width = int(output_size[0]), int(output_size[1])
            if height > up_h or width > up_w or height < 1 or width < 1:
                raise ValueError(
                    f"ImageHead: output_size {(height, width)} must be within the upsampled size "
                    f"{(up_h, up_w)}"
                )
        _check_pixels(pixels, batch, height, width)
        n = int(pixels.shape[0])
        if project_first is None:
            project_first = n * _GATHER_COST >= batch * h * w * self.out_channels
        source = self.conv(x) if project_first else x
        img = pixels[:, 0].to(x.device)
        rows = _bilinear_taps(pixels[:, 1].to(x.device), h, up_h)
        cols = _bilinear_taps(pixels[:, 2].to(x.device), w, up_w)
        flat = source.flatten(2)  # (B, C, h*w): a view, no copy of the map
        taps = [
            flat[img, :, r * w + c] * (wr * wc).to(flat.dtype).unsqueeze(1)  # (P, C)
            for r, wr in ((rows[0], rows[2]), (rows[1], rows[3]))
            for c, wc in ((cols[0], cols[2]), (cols[1], cols[3]))
        ]
        out = (taps[0] + taps[1]) + (taps[2] + taps[3])
        if not project_first:
            kernel = self.conv.weight.reshape(self.out_channels, self.in_channels)
            out = F.linear(out, kernel, self.conv.bias)
        if self.normalize:
            out = F.normalize(out, p=2.0, dim=1, eps=_NORM_EPS)
        return out


def _check_pixels(pixels: torch.Tensor, batch: int, height: int, width: int) -> None:
    if pixels.ndim != 2 or pixels.shape[1] != 3:
        raise ValueError(
            f"ImageHead.sample: pixels must be (P, 3) [image, row, col], got {tuple(pixels.shape)}"
        )
    if pixels.dtype.is_floating_point or pixels.dtype == torch.bool:
        raise ValueError(f"ImageHead.sample: pixels must be integers, got {pixels.dtype}")
    if pixels.shape[0] == 0:
        return
    low = pixels.amin(dim=0).tolist()
    high = pixels.amax(dim=0).tolist()
    if min(low) < 0 or high[0] >= batch or high[1] >= height or high[2] >= width:
        raise ValueError(
            f"ImageHead.sample: pixels out of range: [image, row, col] span {low}..{high}, "
            f"expected image < {batch}, row < {height}, col < {width}"
        )


def _bilinear_taps(
    dst: torch.Tensor, in_size: int, out_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices and weights of ``F.interpolate(..., align_corners=True)`` along one axis.

    Mirrors PyTorch's kernel: ``src = dst * (in - 1) / (out - 1)`` (0 when ``out == 1``), taps at
    ``floor(src)`` and the next index (clamped to the last one), weights ``1 - frac`` and ``frac``.
    """
    scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
    src = dst.to(torch.float32) * scale
    low = src.floor().to(torch.long).clamp_(0, in_size - 1)
    high = (low + 1).clamp_(max=in_size - 1)
    frac = (src - low.to(torch.float32)).clamp_(0.0, 1.0)
    return low, high, 1.0 - frac, frac


class SegmentationHead(nn.Module):
    """Downstream per-voxel classifier (the reference re-created ``final`` layer, 1x1 + bias).

    Outputs raw logits (not normalised). ``num_classes`` includes the ignore class 0 as in the
    reference (17 for nuScenes, 20 for SemanticKITTI).
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 2:
            raise ValueError(
                "SegmentationHead: needs in_channels >= 1 and num_classes >= 2, got "
                f"{in_channels}, {num_classes}"
            )
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.linear = nn.Linear(self.in_channels, self.num_classes, bias=True)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """``(V, in_channels) -> (V, num_classes)`` logits."""
        if feats.ndim != 2:
            raise ValueError(
                f"SegmentationHead: expected (V, C) features, got shape {tuple(feats.shape)}"
            )
        _check_channels("SegmentationHead", feats, 1, self.in_channels, "(V, C)")
        out: torch.Tensor = self.linear(feats)
        return out


Classifier = SegmentationHead
"""Alias of :class:`SegmentationHead`."""
