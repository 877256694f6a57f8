"""Backbone layouts and the name maps onto OpenPCDet and mmdetection3d classes.

Two point-encoder families can be exported:

* **VoxelNet** (the paper's detection student): OpenPCDet's ``VoxelBackBone8x``
  (``pcdet/models/backbones_3d/spconv_backbone.py``), 12 sparse convolutions each followed by a
  BatchNorm, 72 tensors named ``conv_input.*``, ``conv1.*`` .. ``conv4.*``, ``conv_out.*``. The
  toolkit stores the encoder under exactly those names, so OpenPCDet needs only the
  ``backbone_3d.`` prefix. mmdetection3d's ``SparseEncoder`` (SECOND's middle encoder) is the
  same network with ``conv{k}.`` renamed ``encoder_layers.encoder_layer{k}.``.
* **MinkUNet** (Res16UNet, e.g. ``minkunet34c``): mmdetection3d's ``MinkUNetBackbone`` with the
  spconv backend (``encoder_blocks=[2, 3, 4, 6]`` for 34C). Its stem is two submanifold
  convolutions (``conv_input.0`` and ``conv_input.1``) where Res16UNet has one, so
  ``conv_input.1`` has no counterpart.

All three hold spconv-2 weights, ``(out, k0, k1, k2, in)`` over the voxel index axes, as the
toolkit does: no tensor is permuted. The names and shapes here are checked against manifests
written from the real classes (``scripts/export_manifests.py``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "MINKUNET_FAMILY",
    "Rename",
    "VOXELNET_FAMILY",
    "MinkUNetLayout",
    "minkunet_layout",
    "mmdet3d_minkunet_shapes",
    "minkunet_to_mmdet3d",
    "mmdet3d_metadata_version",
    "voxelnet_shapes",
    "voxelnet_to_mmdet3d",
    "voxelnet_to_openpcdet",
]

VOXELNET_FAMILY = "voxelnet"
MINKUNET_FAMILY = "minkunet"

Shape = tuple[int, ...]

_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

# (module, out channels, kernel) of VoxelBackBone8x's 12 convolutions, in order
_VOXELNET_CONVS: tuple[tuple[str, int, tuple[int, int, int]], ...] = (
    ("conv_input", 16, (3, 3, 3)),
    ("conv1.0", 16, (3, 3, 3)),
    ("conv2.0", 32, (3, 3, 3)),
    ("conv2.1", 32, (3, 3, 3)),
    ("conv2.2", 32, (3, 3, 3)),
    ("conv3.0", 64, (3, 3, 3)),
    ("conv3.1", 64, (3, 3, 3)),
    ("conv3.2", 64, (3, 3, 3)),
    ("conv4.0", 64, (3, 3, 3)),
    ("conv4.1", 64, (3, 3, 3)),
    ("conv4.2", 64, (3, 3, 3)),
    ("conv_out", 128, (3, 1, 1)),
)


def voxelnet_shapes(in_channels: int) -> dict[str, Shape]:
    """The 72 tensor names and shapes of OpenPCDet's ``VoxelBackBone8x(input_channels=...)``:
    each stage is ``SparseSequential(conv, BatchNorm1d, ReLU)``, the convolution at index 0 and
    the BatchNorm at index 1, no bias.
    """
    shapes: dict[str, Shape] = {}
    width = int(in_channels)
    for module, out, kernel in _VOXELNET_CONVS:
        shapes[f"{module}.0.weight"] = (out, *kernel, width)
        for buf in _BN:
            shapes[f"{module}.1.{buf}"] = () if buf == "num_batches_tracked" else (out,)
        width = out
    return shapes


@dataclass(frozen=True)
class Rename:
    """One mapping rule: a source name that fully matches ``pattern`` becomes ``target(match)``;
    ``what`` names the group in the export report.
    """

    pattern: str
    target: Callable[[re.Match[str]], str]
    what: str

    def apply(self, name: str) -> str | None:
        """The target name, or None when ``name`` does not match."""
        m = re.fullmatch(self.pattern, name)
        return None if m is None else self.target(m)


def voxelnet_to_openpcdet() -> list[Rename]:
    """OpenPCDet keeps the names (SECOND and PV-RCNN hold the backbone as ``backbone_3d``: the
    exporter adds that prefix).
    """
    return [
        Rename(
            r"(conv_input|conv[1-4]|conv_out)\..+", lambda m: m[0], "VoxelBackBone8x, names kept"
        )
    ]


def voxelnet_to_mmdet3d() -> list[Rename]:
    """``SparseEncoder``: ``conv{k}.`` -> ``encoder_layers.encoder_layer{k}.``, the rest kept."""
    return [
        Rename(r"conv_input\..+", lambda m: m[0], "conv_input (stem)"),
        Rename(
            r"conv([1-4])\.(.+)",
            lambda m: f"encoder_layers.encoder_layer{m[1]}.{m[2]}",
            "conv1-4 -> encoder_layers.encoder_layer1-4",
        ),
        Rename(r"conv_out\..+", lambda m: m[0], "conv_out"),
    ]


_TAIL = r"(conv[12]\.weight|downsample\.[01]\..+)"


def minkunet_to_mmdet3d() -> list[Rename]:
    """Toolkit ``MinkUNet`` (:mod:`olivine_models.point.minkunet`) -> mmdetection3d
    ``MinkUNetBackbone`` (spconv backend). Encoder stage ``l`` is ``nn.Sequential(down conv
    module, block, block, ...)``, so toolkit block ``b`` is index ``b + 1``; decoder stage ``j``
    is ``ModuleList([up conv module, nn.Sequential(blocks)])``; ``normK`` is mmdet's ``bnK``.
    """
    return [
        Rename(r"conv0p1s1\.weight", lambda m: "conv_input.0.0.weight", "stem convolution"),
        Rename(r"bn0\.(.+)", lambda m: f"conv_input.0.1.{m[1]}", "stem BatchNorm"),
        Rename(
            r"down_convs\.(\d)\.weight",
            lambda m: f"encoder.{m[1]}.0.0.weight",
            "down convolutions + BatchNorms",
        ),
        Rename(
            r"down_bns\.(\d)\.(.+)",
            lambda m: f"encoder.{m[1]}.0.1.{m[2]}",
            "down convolutions + BatchNorms",
        ),
        Rename(
            r"enc_blocks\.(\d)\.(\d+)\.norm([12])\.(.+)",
            lambda m: f"encoder.{m[1]}.{int(m[2]) + 1}.bn{m[3]}.{m[4]}",
            "encoder blocks",
        ),
        Rename(
            rf"enc_blocks\.(\d)\.(\d+)\.{_TAIL}",
            lambda m: f"encoder.{m[1]}.{int(m[2]) + 1}.{m[3]}",
            "encoder blocks",
        ),
        Rename(
            r"up_convs\.(\d)\.weight",
            lambda m: f"decoder.{m[1]}.0.0.weight",
            "up (inverse) convolutions + BatchNorms",
        ),
        Rename(
            r"up_bns\.(\d)\.(.+)",
            lambda m: f"decoder.{m[1]}.0.1.{m[2]}",
            "up (inverse) convolutions + BatchNorms",
        ),
        Rename(
            r"dec_blocks\.(\d)\.(\d+)\.norm([12])\.(.+)",
            lambda m: f"decoder.{m[1]}.1.{m[2]}.bn{m[3]}.{m[4]}",
            "decoder blocks",
        ),
        Rename(
            rf"dec_blocks\.(\d)\.(\d+)\.{_TAIL}",
            lambda m: f"decoder.{m[1]}.1.{m[2]}.{m[3]}",
            "decoder blocks",
        ),
    ]


@dataclass(frozen=True)
class MinkUNetLayout:
    """The arguments of mmdetection3d's ``MinkUNetBackbone`` that a toolkit MinkUNet fixes."""

    in_channels: int
    base_channels: int
    encoder_channels: tuple[int, ...]
    encoder_blocks: tuple[int, ...]
    decoder_channels: tuple[int, ...]
    decoder_blocks: tuple[int, ...]

    def config_text(self) -> str:
        """The mmdetection3d config ``backbone=dict(...)`` for this layout."""
        return (
            f"dict(type='MinkUNetBackbone', in_channels={self.in_channels}, "
            f"base_channels={self.base_channels}, num_stages={len(self.encoder_blocks)}, "
            f"encoder_channels={list(self.encoder_channels)}, "
            f"encoder_blocks={list(self.encoder_blocks)}, "
            f"decoder_channels={list(self.decoder_channels)}, "
            f"decoder_blocks={list(self.decoder_blocks)}, block_type='basic', "
            "sparseconv_backend='spconv')"
        )


def _count(shapes: dict[str, Shape], pattern: str) -> list[int]:
    """Per stage (group 1), the number of distinct blocks (group 2) of names matching."""
    seen: dict[int, set[int]] = {}
    for name in shapes:
        m = re.match(pattern, name)
        if m is not None:
            seen.setdefault(int(m[1]), set()).add(int(m[2]))
    return [len(seen[k]) for k in sorted(seen)]


def minkunet_layout(shapes: dict[str, Shape]) -> MinkUNetLayout:
    """Read the layout of a toolkit MinkUNet state (names -> shapes); ``KeyError`` when a
    tensor that every MinkUNet has is missing.
    """
    stem = shapes["conv0p1s1.weight"]
    enc_blocks = _count(shapes, r"enc_blocks\.(\d)\.(\d+)\.")
    dec_blocks = _count(shapes, r"dec_blocks\.(\d)\.(\d+)\.")
    return MinkUNetLayout(
        in_channels=int(stem[-1]),
        base_channels=int(stem[0]),
        encoder_channels=tuple(
            int(shapes[f"enc_blocks.{i}.0.conv1.weight"][0]) for i in range(len(enc_blocks))
        ),
        encoder_blocks=tuple(enc_blocks),
        decoder_channels=tuple(
            int(shapes[f"up_convs.{j}.weight"][0]) for j in range(len(dec_blocks))
        ),
        decoder_blocks=tuple(dec_blocks),
    )


def _bn(shapes: dict[str, Shape], prefix: str, width: int) -> None:
    for buf in _BN:
        shapes[f"{prefix}.{buf}"] = () if buf == "num_batches_tracked" else (width,)


def _basic_block(shapes: dict[str, Shape], prefix: str, cin: int, cout: int) -> None:
    shapes[f"{prefix}.conv1.weight"] = (cout, 3, 3, 3, cin)
    _bn(shapes, f"{prefix}.bn1", cout)
    shapes[f"{prefix}.conv2.weight"] = (cout, 3, 3, 3, cout)
    _bn(shapes, f"{prefix}.bn2", cout)
    if cin != cout:
        shapes[f"{prefix}.downsample.0.weight"] = (cout, 1, 1, 1, cin)
        _bn(shapes, f"{prefix}.downsample.1", cout)


def mmdet3d_minkunet_shapes(layout: MinkUNetLayout) -> dict[str, Shape]:
    """Names and shapes of ``MinkUNetBackbone(**layout, sparseconv_backend='spconv')``, in the
    order of its ``__init__`` (mmdetection3d 1.4.0 ``models/backbones/minkunet_backbone.py``).
    """
    shapes: dict[str, Shape] = {}
    base, cin = layout.base_channels, layout.in_channels
    for i, (a, b) in enumerate(((cin, base), (base, base))):
        shapes[f"conv_input.{i}.0.weight"] = (b, 3, 3, 3, a)
        _bn(shapes, f"conv_input.{i}.1", b)
    enc = [base, *layout.encoder_channels]
    dec = [enc[-1], *layout.decoder_channels]
    stages = len(layout.encoder_blocks)
    for i in range(stages):
        shapes[f"encoder.{i}.0.0.weight"] = (enc[i], 2, 2, 2, enc[i])
        _bn(shapes, f"encoder.{i}.0.1", enc[i])
        for j in range(layout.encoder_blocks[i]):
            first = j == 0 and enc[i] != enc[i + 1]
            _basic_block(
                shapes, f"encoder.{i}.{j + 1}", enc[i] if first else enc[i + 1], enc[i + 1]
            )
    for i in range(stages):
        shapes[f"decoder.{i}.0.0.weight"] = (dec[i + 1], 2, 2, 2, dec[i])
        _bn(shapes, f"decoder.{i}.0.1", dec[i + 1])
        for j in range(layout.decoder_blocks[i]):
            cin_j = dec[i + 1] + enc[-2 - i] if j == 0 else dec[i + 1]
            _basic_block(shapes, f"decoder.{i}.1.{j}", cin_j, dec[i + 1])
    return shapes


#: mmdetection3d MinkUNetBackbone containers that are plain ``nn.Sequential`` / ``nn.ModuleList``
_PLAIN_CONTAINERS = re.compile(r"conv_input|encoder(\.\d+)?|decoder(\.\d+(\.1)?)?")


def mmdet3d_metadata_version(family: str, module: str) -> int:
    """The state-dict metadata ``version`` of module ``module`` (a dotted name inside the
    backbone, ``""`` for the backbone itself) as the real mmdetection3d class writes it once
    ``register_spconv2()`` has set ``SparseModule._version = 2``: 2 for every spconv module
    (convolutions, ``SparseSequential``, ``SparseBasicBlock``) and BatchNorm, 1 for the backbone
    class and plain torch containers. Version 2 is what stops the loading hook from permuting a
    sparse weight.
    """
    if module == "":
        return 1
    if family == MINKUNET_FAMILY and _PLAIN_CONTAINERS.fullmatch(module):
        return 1
    return 2
