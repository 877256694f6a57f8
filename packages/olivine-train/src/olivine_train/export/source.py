"""Read a pretrained point encoder for export: a run folder, ``backbone.pt`` or a checkpoint.

The point encoder is identified by the name the run recorded (``backbone.pt``'s ``model_name``,
a training checkpoint's ``model_name`` and ``config.model.point_encoder``) and checked against
its tensors, so a file whose name and tensors disagree is refused instead of exported wrongly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from olivine_train.checkpoint import CheckpointError, load_backbone_state, load_checkpoint
from olivine_train.export.layouts import MINKUNET_FAMILY, VOXELNET_FAMILY, voxelnet_shapes

__all__ = ["ExportError", "PretrainedBackbone", "read_backbone"]


class ExportError(ValueError):
    """The source cannot be exported to the target (wrong kind of backbone, not a checkpoint,
    tensors that do not fit the target class); the message is one line.
    """


@dataclass(frozen=True)
class PretrainedBackbone:
    """A point encoder's state as stored by a pretraining (or fine-tuning) run.

    Attributes:
        path: the file read (inside the run folder when a folder was given).
        state: the point encoder's tensors (the training module's ``backbone.`` prefix removed).
        point_encoder: the recorded encoder name (None for a plain state dict).
        family: ``"voxelnet"`` or ``"minkunet"``, read from the tensors and checked against
            the recorded name.
        outside: tensors of the training checkpoint outside the point encoder (projection
            heads, a segmentation classifier), left out of every export.
        kind: ``"pretrain"`` / ``"downstream"`` for a training checkpoint, ``"backbone"`` for
            ``backbone.pt``, ``"state_dict"`` for a plain state dict.
    """

    path: Path
    state: dict[str, torch.Tensor]
    point_encoder: str | None
    family: str
    outside: tuple[str, ...]
    kind: str


def _resolve(path: Path) -> Path:
    if not path.is_dir():
        if not path.exists():
            raise ExportError(f"{path}: no such file or run folder")
        return path
    for name in ("backbone.pt", "last.pt", "best.pt"):
        if (path / name).is_file():
            return path / name
    raise ExportError(
        f"{path}: run folder holds no backbone.pt, last.pt or best.pt (is it a pretraining run "
        "folder?)"
    )


def _family_of_name(name: str) -> str | None:
    if name.startswith(VOXELNET_FAMILY):
        return VOXELNET_FAMILY
    if name.startswith(MINKUNET_FAMILY):
        return MINKUNET_FAMILY
    return None


def _family_of_tensors(state: dict[str, torch.Tensor]) -> str | None:
    if "conv_input.0.weight" in state:
        in_channels = int(state["conv_input.0.weight"].shape[-1])
        if set(voxelnet_shapes(in_channels)) <= set(state):
            return VOXELNET_FAMILY
    if "conv0p1s1.weight" in state:
        return MINKUNET_FAMILY
    return None


def read_backbone(path: str | Path) -> PretrainedBackbone:
    """Read the point encoder of a run folder (``backbone.pt``, else ``last.pt``/``best.pt``), a
    ``backbone.pt``, a training checkpoint or a plain state dict.

    Raises:
        ExportError: the path is missing, is not a checkpoint of this toolkit, holds no point
            encoder that can be exported, or its recorded encoder name contradicts its tensors.
    """
    file = _resolve(Path(path))
    try:
        state, model_name = load_backbone_state(file)
    except CheckpointError as exc:
        raise ExportError(f"not a pretrained backbone: {exc}") from None
    outside: tuple[str, ...] = ()
    kind = "backbone" if model_name is not None else "state_dict"
    names = [n for n in (model_name,) if n]
    try:
        ckpt = load_checkpoint(file, mmap=True)
    except CheckpointError:
        ckpt = None  # backbone.pt or a plain state dict (load_backbone_state read it above)
    if ckpt is not None:
        kind = str(ckpt.get("kind"))
        outside = tuple(k for k in ckpt["model"] if not k.startswith("backbone."))
        recorded = (ckpt.get("config") or {}).get("model", {}).get("point_encoder")
        if recorded:
            names.append(str(recorded))
    if len(set(names)) > 1:
        raise ExportError(
            f"{file}: the checkpoint records two point encoders ({' and '.join(names)})"
        )
    point_encoder = names[0] if names else None
    by_tensors = _family_of_tensors(state)
    if by_tensors is None:
        raise ExportError(
            f"{file}: holds no VoxelNet (OpenPCDet VoxelBackBone8x names) or MinkUNet "
            f"(Res16UNet) point encoder; its tensors start {sorted(state)[:3]}"
        )
    # a name of a known family must agree with the tensors; another name (a registered encoder
    # this module does not know by name) is identified by its tensors alone
    by_name = _family_of_name(point_encoder) if point_encoder else None
    if by_name is not None and by_name != by_tensors:
        raise ExportError(
            f"{file}: records point encoder {point_encoder!r} but its tensors are a "
            f"{by_tensors}; the file is inconsistent"
        )
    return PretrainedBackbone(file, state, point_encoder, by_tensors, outside, kind)
