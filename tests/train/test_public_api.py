"""Public API snapshot of olivine_train and of the CLI subcommands."""

from __future__ import annotations

import olivine_train
from olivine_train.cli import build_parser

EXPECTED = {
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
}


def test_all_snapshot() -> None:
    assert set(olivine_train.__all__) == EXPECTED
    for name in olivine_train.__all__:
        assert hasattr(olivine_train, name), name


def test_cli_subcommands() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == {  # type: ignore[arg-type]
        "pretrain",
        "finetune",
        "evaluate",
        "probe",
        "make-labels",
        "demo",
        "validate-config",
        "ls",
        "export",
    }
