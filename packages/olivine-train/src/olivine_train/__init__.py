"""olivine-train: configs, recipes, checkpoints, logging, torchrun support and the CLI.

The recipes live in :mod:`olivine_train.recipes` (``pretrain``, ``downstream``, ``make_labels``,
``demo``) and are imported on demand; the command line is :func:`olivine_train.cli.main`.
:func:`export_backbone` (:mod:`olivine_train.export`) writes a pretrained backbone for OpenPCDet
or mmdetection3d.
"""

from olivine_train._version import __version__
from olivine_train.checkpoint import (
    CheckpointError,
    atomic_save,
    load_backbone_state,
    load_checkpoint,
    save_backbone,
)
from olivine_train.config import (
    Config,
    ConfigError,
    list_configs,
    load_config,
    parse_overrides,
    save_config,
    validate,
)
from olivine_train.distributed import ResumableSampler
from olivine_train.export import export_backbone
from olivine_train.logging import RunLogger, read_jsonl
from olivine_train.metrics import (
    ConfusionMatrix,
    SegmentationScores,
    confusion_matrix,
    cross_entropy_lovasz,
    iou_from_confusion,
    lovasz_softmax,
)

__all__ = [
    "CheckpointError",
    "Config",
    "ConfigError",
    "ConfusionMatrix",
    "ResumableSampler",
    "RunLogger",
    "SegmentationScores",
    "__version__",
    "atomic_save",
    "confusion_matrix",
    "cross_entropy_lovasz",
    "export_backbone",
    "iou_from_confusion",
    "list_configs",
    "load_backbone_state",
    "load_checkpoint",
    "load_config",
    "lovasz_softmax",
    "parse_overrides",
    "read_jsonl",
    "save_backbone",
    "save_config",
    "validate",
]
