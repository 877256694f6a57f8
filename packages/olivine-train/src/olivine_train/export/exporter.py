"""Export a pretrained point encoder to OpenPCDet or mmdetection3d checkpoint files.

* ``openpcdet``: ``{"model_state": {"backbone_3d.<name>": tensor}, "version": ...}``, what
  OpenPCDet's ``Detector3DTemplate.load_params_from_file`` (``tools/train.py
  --pretrained_model``) reads: it keeps every key of ``model_state`` that exists in the model
  with an equal shape, so all 72 ``VoxelBackBone8x`` tensors load into SECOND's and PV-RCNN's
  ``backbone_3d``.
* ``mmdet3d``: ``{"state_dict": OrderedDict, "meta": {...}}`` for mmengine's ``load_from`` (or
  ``init_cfg=dict(type='Pretrained')`` with ``prefix=""``). The state dict carries the
  ``_metadata`` that ``Module.state_dict()`` writes, with ``version: 2`` for every sparse
  module: mmdetection3d's spconv-2 loading hook (``models/layers/spconv/overwrite_spconv/
  write_spconv2.py``) permutes each sparse weight from the spconv-1 layout unless its module's
  metadata version is 2, and our weights are already spconv-2.

Nothing is permuted: the toolkit, OpenPCDet and mmdetection3d all hold spconv-2 weights.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from olivine_train._version import __version__
from olivine_train.checkpoint import atomic_save
from olivine_train.export.layouts import (
    MINKUNET_FAMILY,
    VOXELNET_FAMILY,
    Rename,
    minkunet_layout,
    minkunet_to_mmdet3d,
    mmdet3d_metadata_version,
    mmdet3d_minkunet_shapes,
    voxelnet_shapes,
    voxelnet_to_mmdet3d,
    voxelnet_to_openpcdet,
)
from olivine_train.export.source import ExportError, PretrainedBackbone, read_backbone
from olivine_train.export.usage import usage_text

__all__ = ["EXPORT_FORMAT", "EXPORT_TARGETS", "ExportReport", "export_backbone", "map_state"]

EXPORT_FORMAT = "olivine-export/1"
EXPORT_TARGETS = ("openpcdet", "mmdet3d")
#: BatchNorm eps of mmdetection3d's ``BN1d`` (torch's default), used by ``MinkUNetBackbone``
MMDET3D_BN_EPS = 1e-5
STEM_CHOICES = ("identity", "omit")

_DEFAULT_PREFIX = {
    ("openpcdet", VOXELNET_FAMILY): "backbone_3d.",
    ("mmdet3d", VOXELNET_FAMILY): "middle_encoder.",
    ("mmdet3d", MINKUNET_FAMILY): "backbone.",
}
_TARGET_CLASS = {
    ("openpcdet", VOXELNET_FAMILY): "OpenPCDet VoxelBackBone8x",
    ("mmdet3d", VOXELNET_FAMILY): "mmdetection3d SparseEncoder",
    ("mmdet3d", MINKUNET_FAMILY): "mmdetection3d MinkUNetBackbone",
}
_STEM = "conv_input.1"


@dataclass
class ExportReport:
    """What an export mapped, left out and added, and how to load the file."""

    source: Path
    target: str
    target_class: str
    out: Path
    point_encoder: str | None
    family: str
    mapped: list[tuple[str, str, str]] = field(default_factory=list)  # (source, target, group)
    left_out: list[tuple[str, str]] = field(default_factory=list)  # (names, reason)
    added: list[tuple[str, str]] = field(default_factory=list)  # (names, reason)
    usage: str = ""

    def format(self, verbose: bool = False) -> str:
        """The human-readable report the CLI prints."""
        enc = self.point_encoder or f"unnamed {self.family}"
        lines = [f"export {self.source} ({enc}) -> {self.out} [{self.target_class}]"]
        groups: dict[str, list[tuple[str, str]]] = {}
        for src, dst, group in self.mapped:
            groups.setdefault(group, []).append((src, dst))
        lines.append(f"mapped {len(self.mapped)} tensors (no tensor permuted):")
        for group, pairs in groups.items():
            lines.append(f"  {len(pairs):4d}  {group}: {pairs[0][0]} -> {pairs[0][1]} ...")
            if verbose:
                lines.extend(f"          {s} -> {d}" for s, d in pairs)
        for names, reason in self.added:
            lines.append(f"added    {names}: {reason}")
        if not self.left_out:
            lines.append("left out: nothing")
        for names, reason in self.left_out:
            lines.append(f"left out {names}: {reason}")
        lines.append(self.usage)
        return "\n".join(lines)


def _group(names: list[str]) -> list[tuple[str, int]]:
    """``prefix.*`` groups (first dotted component) with their counts, in first-seen order."""
    counts: dict[str, int] = {}
    for name in names:
        head = name.split(".", 1)[0]
        counts[head] = counts.get(head, 0) + 1
    return list(counts.items())


def map_state(
    state: dict[str, torch.Tensor], rules: list[Rename]
) -> tuple[dict[str, torch.Tensor], list[tuple[str, str, str]], list[str]]:
    """Rename ``state`` by the first matching rule: (renamed state, (source, target, group)
    triples, names no rule matched).
    """
    out: dict[str, torch.Tensor] = {}
    pairs: list[tuple[str, str, str]] = []
    unmatched: list[str] = []
    for name, tensor in state.items():
        for rule in rules:
            target = rule.apply(name)
            if target is not None:
                out[target] = tensor.detach().cpu().contiguous()
                pairs.append((name, target, rule.what))
                break
        else:
            unmatched.append(name)
    return out, pairs, unmatched


def _check_shapes(
    got: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], src: PretrainedBackbone
) -> None:
    missing = [k for k in expected if k not in got]
    extra = [k for k in got if k not in expected]
    wrong = [
        f"{k} {tuple(got[k].shape)} != {expected[k]}"
        for k in expected
        if k in got and tuple(got[k].shape) != expected[k]
    ]
    if missing or extra or wrong:
        parts = [
            f"{len(v)} {what} (e.g. {v[0]})"
            for what, v in (("missing", missing), ("unexpected", extra), ("mis-shaped", wrong))
            if v
        ]
        raise ExportError(
            f"{src.path}: the {src.family} tensors do not fit the target class: " + "; ".join(parts)
        )


def _identity_stem(width: int) -> dict[str, torch.Tensor]:
    """``conv_input.1`` as an exact identity on post-ReLU features: a 3x3x3 submanifold conv
    whose centre tap is the identity matrix, a BatchNorm with mean 0 and var ``1 - eps``, ReLU.
    """
    weight = torch.zeros(width, 3, 3, 3, width)
    weight[:, 1, 1, 1, :] = torch.eye(width)
    return {
        f"{_STEM}.0.weight": weight,
        f"{_STEM}.1.weight": torch.ones(width),
        f"{_STEM}.1.bias": torch.zeros(width),
        f"{_STEM}.1.running_mean": torch.zeros(width),
        f"{_STEM}.1.running_var": torch.full((width,), 1.0 - MMDET3D_BN_EPS),
        f"{_STEM}.1.num_batches_tracked": torch.tensor(0),
    }


def _metadata(family: str, names: list[str], prefix: str) -> dict[str, dict[str, int]]:
    """``state_dict()._metadata`` for the modules owning ``names`` and their parents."""
    modules = {""}
    for name in names:
        parts = name.split(".")[:-1]
        modules.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    base = prefix.rstrip(".")
    meta: dict[str, dict[str, int]] = {}
    for module in sorted(modules, key=lambda m: (m.count("."), m)):
        key = f"{base}.{module}" if base and module else (base or module)
        meta[key] = {"version": mmdet3d_metadata_version(family, module)}
    return meta


def _build(src: PretrainedBackbone, to: str, stem: str, rep: ExportReport) -> dict[str, Any]:
    """The target-class state dict (unprefixed names); fills ``rep``."""
    state = src.state
    if src.family == VOXELNET_FAMILY:
        in_channels = int(state["conv_input.0.weight"].shape[-1])
        expected = voxelnet_shapes(in_channels)
        backbone = {k: v for k, v in state.items() if k in expected}
        extra = [k for k in state if k not in expected]
        if extra:
            rep.left_out.append(
                (
                    ", ".join(f"{h}.* ({n})" for h, n in _group(extra)),
                    "pretraining heads (pp/sem sparse convolutions), not part of VoxelBackBone8x",
                )
            )
        rules = voxelnet_to_openpcdet() if to == "openpcdet" else voxelnet_to_mmdet3d()
        _check_shapes(backbone, expected, src)
        mapped, pairs, _ = map_state(backbone, rules)
        rep.mapped.extend(pairs)
        return mapped
    layout = minkunet_layout({k: tuple(v.shape) for k, v in state.items()})
    mapped, pairs, unmatched = map_state(state, minkunet_to_mmdet3d())
    if unmatched:
        raise ExportError(
            f"{src.path}: {len(unmatched)} MinkUNet tensor(s) have no MinkUNetBackbone "
            f"counterpart (e.g. {unmatched[0]})"
        )
    expected = mmdet3d_minkunet_shapes(layout)
    stem_names = [k for k in expected if k.startswith(f"{_STEM}.")]
    _check_shapes(mapped, {k: v for k, v in expected.items() if k not in stem_names}, src)
    rep.mapped.extend(pairs)
    reason = "MinkUNetBackbone's second stem convolution; Res16UNet has one stem convolution"
    if stem == "identity":
        mapped.update(_identity_stem(layout.base_channels))
        rep.added.append(
            (
                f"{_STEM}.* ({len(stem_names)})",
                f"{reason}, so it is set to the identity (the "
                "exported network computes what the pretrained one does)",
            ),
        )
    else:
        rep.left_out.append(
            (f"{_STEM}.* ({len(stem_names)})", f"{reason}: mmdetection3d initialises it")
        )
    rep.usage = usage_text(to, src.family, rep.out, layout.config_text(), layout.in_channels)
    return {k: mapped[k] for k in expected if k in mapped}


def export_backbone(
    source: str | Path,
    to: str,
    out: str | Path,
    *,
    prefix: str | None = None,
    stem: str = "identity",
) -> ExportReport:
    """Export the point encoder of ``source`` (run folder, ``backbone.pt`` or checkpoint) to
    ``out`` for ``to`` = ``"openpcdet"`` or ``"mmdet3d"``, written atomically.

    Args:
        prefix: key prefix of the backbone inside the target detector/segmentor (default
            ``backbone_3d.`` for OpenPCDet, ``middle_encoder.`` for mmdetection3d's SECOND /
            PV-RCNN, ``backbone.`` for its MinkUNet segmentor; ``""`` for module-relative keys).
        stem: MinkUNet -> mmdetection3d only: ``"identity"`` sets the extra stem convolution
            ``conv_input.1`` to the identity, ``"omit"`` leaves it out.

    Raises:
        ExportError: wrong kind of backbone for the target, not a checkpoint, tensors that do
            not fit (one-line message).
    """
    if to not in EXPORT_TARGETS:
        raise ExportError(f"--to: expected one of {list(EXPORT_TARGETS)}, got {to!r}")
    if stem not in STEM_CHOICES:
        raise ExportError(f"--stem: expected one of {list(STEM_CHOICES)}, got {stem!r}")
    src = read_backbone(source)
    key = (to, src.family)
    if key not in _TARGET_CLASS:
        raise ExportError(
            f"{src.path}: --to {to} exports a VoxelNet (OpenPCDet VoxelBackBone8x); this file "
            f"holds a {src.family} ({src.point_encoder or 'unnamed'}): export it with --to mmdet3d"
        )
    out = Path(out)
    if out.exists() and out.resolve() == src.path.resolve():
        raise ExportError(f"{out}: the output would overwrite the source; choose another -o")
    rep = ExportReport(src.path, to, _TARGET_CLASS[key], out, src.point_encoder, src.family)
    state = _build(src, to, stem, rep)
    if src.outside:
        rep.left_out.append(
            (
                ", ".join(f"{h}.* ({n})" for h, n in _group(list(src.outside))),
                f"outside the point encoder of this {src.kind} checkpoint (projection heads / "
                "classifier)",
            )
        )
    meta = {
        "format": EXPORT_FORMAT,
        "exported_by": f"olivine-train {__version__}",
        "source": str(src.path),
        "point_encoder": src.point_encoder or "",
        "family": src.family,
        "target": rep.target_class,
    }
    pre = _DEFAULT_PREFIX[key] if prefix is None else prefix
    rep.mapped = [(s, pre + d, g) for s, d, g in rep.mapped]
    if to == "openpcdet":
        payload: dict[str, Any] = {
            "model_state": {pre + k: v for k, v in state.items()},
            "version": f"olivine-train {__version__}",
            "olivine_export": meta,
        }
    else:
        sd: OrderedDict[str, torch.Tensor] = OrderedDict((pre + k, v) for k, v in state.items())
        sd._metadata = _metadata(src.family, list(state), pre)  # type: ignore[attr-defined]
        payload = {"state_dict": sd, "meta": meta}
    if src.family == VOXELNET_FAMILY:
        in_channels = int(src.state["conv_input.0.weight"].shape[-1])
        rep.usage = usage_text(to, src.family, out, "", in_channels)
    atomic_save(payload, out)
    return rep
