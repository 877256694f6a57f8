"""olivine-train: configs, recipes, checkpoints, logging, torchrun support and the CLI.

The recipes live in :mod:`olivine_train.recipes` (``pretrain``, ``downstream``, ``make_labels``,
``demo``) and are imported on demand; the command line is :func:`olivine_train.cli.main`.
Pretraining loss terms register from outside with :func:`register_term` (a :class:`LossTerm`
subclass and its ``loss.<name>_weight``; ``docs/architecture.md``, "Adding a loss term").
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
from olivine_train.recipes.pretrain_outputs import Head
from olivine_train.recipes.pretrain_terms import LossTerm, PairBatch, TermContext, TermResult
from olivine_train.recipes.term_registry import register_term, registered_terms, unregister_term

__all__ = [
    "CheckpointError",
    "Config",
    "ConfigError",
    "ConfusionMatrix",
    "Head",
    "LossTerm",
    "PairBatch",
    "ResumableSampler",
    "RunLogger",
    "SegmentationScores",
    "TermContext",
    "TermResult",
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
    "register_term",
    "registered_terms",
    "save_backbone",
    "save_config",
    "unregister_term",
    "validate",
]
