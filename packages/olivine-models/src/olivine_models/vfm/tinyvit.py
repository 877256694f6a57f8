"""TinyViT image encoder in MobileSAM's configuration (TinyViT-5M with a SAM neck).

Architecture of TinyViT (Wu et al., "TinyViT: Fast Pretraining Distillation for Small Vision
Transformers", ECCV 2022, github.com/wkcn/TinyViT) as adapted by MobileSAM (Zhang et al., "Faster
Segment Anything: Towards Lightweight SAM for Mobile Applications", arXiv 2306.14289,
github.com/ChaoningZhang/MobileSAM, ``mobile_sam/modeling/tiny_vit_sam.py``):

* a convolutional stem (two 3x3 stride-2 conv+BN, GELU between) to 1/4 resolution;
* stage 0: MBConv blocks (1x1 expand, 3x3 depthwise, 1x1 project, residual);
* stages 1-3: TinyViT blocks = windowed multi-head attention with a learned bias per head and
  per relative offset inside the window, a 3x3 depthwise conv+BN between attention and MLP, and a
  pre-norm MLP; stages are joined by patch-merging convs (1x1, 3x3 depthwise stride 2, 1x1);
* MobileSAM's changes: the last patch merging (to 320 channels) has stride 1, so the encoder
  outputs at 1/16 of the input like SAM's ViT, followed by SAM's neck (1x1 conv, LayerNorm2d,
  3x3 conv, LayerNorm2d) to 256 channels. The ImageNet classification head is kept (the
  checkpoint has it) but never used.

Parameter names follow that code, so the official ``mobile_sam.pt`` loads strictly. The input
size is free (a multiple of 16; SAM's prompt encoder must be built for ``image_size // 16``):
the attention biases depend only on the window, not on the image.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TinyViT", "MOBILE_SAM_TINYVIT"]

MOBILE_SAM_TINYVIT: dict[str, tuple[int, ...]] = {
    "embed_dims": (64, 128, 160, 320),
    "depths": (2, 2, 6, 2),
    "num_heads": (2, 4, 5, 10),
    "window_sizes": (7, 7, 14, 7),
}
"""MobileSAM's TinyViT-5M settings (``build_sam_vit_t`` in the MobileSAM repository)."""


class ConvBN(nn.Sequential):
    """Bias-free convolution ``c`` followed by batch norm ``bn`` (TinyViT's ``Conv2d_BN``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        bn_weight_init: float = 1.0,
    ) -> None:
        super().__init__()
        self.add_module(
            "c",
            nn.Conv2d(
                in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False
            ),
        )
        bn = nn.BatchNorm2d(out_channels)
        nn.init.constant_(bn.weight, bn_weight_init)
        nn.init.constant_(bn.bias, 0.0)
        self.add_module("bn", bn)


class PatchEmbed(nn.Module):
    """Stem: two 3x3 stride-2 ConvBN with GELU between, to 1/4 of the input resolution."""

    def __init__(self, in_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            ConvBN(in_channels, embed_dim // 2, 3, 2, 1),
            nn.GELU(),
            ConvBN(embed_dim // 2, embed_dim, 3, 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)  # type: ignore[no-any-return]


class MBConv(nn.Module):
    """Inverted residual block (MobileNetV2): 1x1 expand, 3x3 depthwise, 1x1 project, + input."""

    def __init__(self, channels: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(channels * expand_ratio)
        self.conv1 = ConvBN(channels, hidden, 1)
        self.act1 = nn.GELU()
        self.conv2 = ConvBN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = ConvBN(hidden, channels, 1, bn_weight_init=0.0)
        self.act3 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.conv1(x))
        y = self.act2(self.conv2(y))
        return self.act3(self.conv3(y) + x)  # type: ignore[no-any-return]


class PatchMerging(nn.Module):
    """1x1 conv, 3x3 depthwise conv (stride ``stride``), 1x1 conv; GELU between. Tokens out."""

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.act = nn.GELU()
        self.conv1 = ConvBN(dim, out_dim, 1)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim, 1)

    def forward(self, x: torch.Tensor, resolution: tuple[int, int]) -> torch.Tensor:
        if x.ndim == 3:  # (B, H*W, C) tokens -> (B, C, H, W)
            b, _, c = x.shape
            x = x.view(b, resolution[0], resolution[1], c).permute(0, 3, 1, 2)
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        x = self.conv3(x)
        return x.flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention over one window with a learned bias per (head, |dy|, |dx|).

    As in LeViT/TinyViT: the bias table has one entry per distinct absolute offset between two
    positions of the ``window x window`` grid; ``attention_bias_idxs`` (not saved) maps every
    query/key pair to its entry.
    """

    attention_bias_idxs: torch.Tensor

    def __init__(self, dim: int, key_dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.scale = key_dim**-0.5
        self.value_dim = key_dim  # attn_ratio 1 in TinyViT blocks
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, num_heads * (2 * key_dim + self.value_dim))
        self.proj = nn.Linear(num_heads * self.value_dim, dim)
        points = list(itertools.product(range(window), range(window)))
        offsets: dict[tuple[int, int], int] = {}
        idxs = []
        for p1 in points:
            for p2 in points:
                off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
                idxs.append(offsets.setdefault(off, len(offsets)))
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, len(offsets)))
        n = len(points)
        self.register_buffer(
            "attention_bias_idxs", torch.tensor(idxs, dtype=torch.long).view(n, n), persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, self.num_heads, -1)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.value_dim], dim=3)
        q, k, v = (t.permute(0, 2, 1, 3) for t in (q, k, v))
        bias = self.attention_biases[:, self.attention_bias_idxs]
        attn = (q @ k.transpose(-2, -1)) * self.scale + bias.to(q.dtype)
        out = attn.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))  # type: ignore[no-any-return]


class Mlp(nn.Module):
    """Pre-norm two-layer MLP with GELU."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))  # type: ignore[no-any-return]


class TinyViTBlock(nn.Module):
    """Windowed attention (padded to whole windows) + residual, depthwise conv, MLP + residual."""

    def __init__(self, dim: int, num_heads: int, window: int, mlp_ratio: float) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"TinyViTBlock: dim {dim} is not divisible by num_heads {num_heads}")
        self.window = window
        self.attn = Attention(dim, dim // num_heads, num_heads, window)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = ConvBN(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor, resolution: tuple[int, int]) -> torch.Tensor:
        h, w = resolution
        b, n, c = x.shape
        ws = self.window
        if h == ws and w == ws:
            y = self.attn(x)
        else:
            y = x.view(b, h, w, c)
            pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
            if pad_b or pad_r:
                y = F.pad(y, (0, 0, 0, pad_r, 0, pad_b))
            ph, pw = h + pad_b, w + pad_r
            nh, nw = ph // ws, pw // ws
            y = y.view(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c)
            y = self.attn(y)
            y = y.view(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, ph, pw, c)
            y = y[:, :h, :w].reshape(b, n, c)
        x = x + y
        x = self.local_conv(x.transpose(1, 2).reshape(b, c, h, w)).view(b, c, n).transpose(1, 2)
        return x + self.mlp(x)


class ConvStage(nn.Module):
    """Stage 0: MBConv blocks then a patch merging."""

    def __init__(self, dim: int, depth: int, out_dim: int, expand_ratio: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = PatchMerging(dim, out_dim, stride=2)

    def forward(self, x: torch.Tensor, resolution: tuple[int, int]) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x, resolution)  # type: ignore[no-any-return]


class AttentionStage(nn.Module):
    """Stages 1-3: TinyViT blocks, then a patch merging unless it is the last stage."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window: int,
        mlp_ratio: float,
        out_dim: int | None,
        stride: int,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, num_heads, window, mlp_ratio) for _ in range(depth)
        )
        self.downsample = PatchMerging(dim, out_dim, stride) if out_dim is not None else None

    def forward(self, x: torch.Tensor, resolution: tuple[int, int]) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x, resolution)
        if self.downsample is not None:
            x = self.downsample(x, resolution)
        return x


class TinyViT(nn.Module):
    """TinyViT image encoder with SAM's neck: ``(B, 3, S, S)`` -> ``(B, 256, S/16, S/16)``.

    Args:
        img_size: square input side (SAM pads every image to it); a multiple of 16. Segment
            anything's ``SamPredictor`` and ``Sam.preprocess`` read it as ``img_size``.
        embed_dims, depths, num_heads, window_sizes: per stage (defaults: MobileSAM).
        mlp_ratio: MLP hidden width / dim in the attention stages.
        mbconv_expand_ratio: hidden width / dim in the MBConv stage.
        out_chans: channels after the neck (SAM's prompt/mask space, 256).
        num_classes: width of the (unused) ImageNet head kept for strict loading.
    """

    def __init__(
        self,
        img_size: int = 1024,
        embed_dims: Sequence[int] = MOBILE_SAM_TINYVIT["embed_dims"],
        depths: Sequence[int] = MOBILE_SAM_TINYVIT["depths"],
        num_heads: Sequence[int] = MOBILE_SAM_TINYVIT["num_heads"],
        window_sizes: Sequence[int] = MOBILE_SAM_TINYVIT["window_sizes"],
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        out_chans: int = 256,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        from segment_anything.modeling.common import LayerNorm2d

        if img_size < 16 or img_size % 16:
            raise ValueError(f"TinyViT: img_size must be a positive multiple of 16, got {img_size}")
        lengths = {len(embed_dims), len(depths), len(num_heads), len(window_sizes)}
        if lengths != {4}:
            raise ValueError(
                "TinyViT: embed_dims, depths, num_heads and window_sizes need 4 entries each, got "
                f"{list(embed_dims)}, {list(depths)}, {list(num_heads)}, {list(window_sizes)}"
            )
        self.img_size = int(img_size)
        self.patch_embed = PatchEmbed(3, embed_dims[0])
        stages: list[nn.Module] = [
            ConvStage(embed_dims[0], depths[0], embed_dims[1], mbconv_expand_ratio)
        ]
        for i in range(1, 4):
            last = i == 3
            stages.append(
                AttentionStage(
                    embed_dims[i],
                    depths[i],
                    num_heads[i],
                    window_sizes[i],
                    mlp_ratio,
                    out_dim=None if last else embed_dims[i + 1],
                    stride=1 if i == 2 else 2,  # MobileSAM: the last merging keeps 1/16
                )
            )
        self.layers = nn.ModuleList(stages)
        self.norm_head = nn.LayerNorm(embed_dims[-1])
        self.head = nn.Linear(embed_dims[-1], num_classes)
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"TinyViT: expected (B, 3, H, W) input, got {tuple(x.shape)}")
        x = self.patch_embed(x)
        res = (x.shape[2], x.shape[3])
        x = self.layers[0](x, res)
        # resolutions of stages 1..3: merging halves it after stages 0 and 1 (stride 1 after 2)
        res = ((res[0] + 1) // 2, (res[1] + 1) // 2)
        x = self.layers[1](x, res)
        res = ((res[0] + 1) // 2, (res[1] + 1) // 2)
        x = self.layers[2](x, res)
        x = self.layers[3](x, res)
        b, _, c = x.shape
        x = x.view(b, res[0], res[1], c).permute(0, 3, 1, 2)
        return self.neck(x)  # type: ignore[no-any-return]
