"""The ``olivine-train export`` subcommand (parser and handler)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from olivine_train.export.exporter import EXPORT_TARGETS, STEM_CHOICES, export_backbone

if TYPE_CHECKING:
    _Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["add_export_command", "cmd_export"]


def add_export_command(sub: _Subparsers) -> None:
    """Add ``export SOURCE --to openpcdet|mmdet3d -o FILE``."""
    p = sub.add_parser(
        "export",
        help="export a pretrained backbone for OpenPCDet or mmdetection3d",
        description="Write the point encoder of a pretraining run as a checkpoint that "
        "OpenPCDet (--to openpcdet: VoxelNet -> SECOND / PV-RCNN backbone_3d, for train.py "
        "--pretrained_model) or mmdetection3d (--to mmdet3d: VoxelNet -> SparseEncoder, "
        "MinkUNet -> MinkUNetBackbone, for load_from) loads. Prints what was mapped, what was "
        "left out and why, and the commands that load the file. A backbone of the wrong kind "
        "is refused (exit 1).",
    )
    p.add_argument("source", help="pretraining run folder, backbone.pt, last.pt or best.pt")
    p.add_argument("--to", required=True, choices=EXPORT_TARGETS, help="target toolbox")
    p.add_argument("-o", "--output", required=True, help="file to write (atomically)")
    p.add_argument(
        "--prefix",
        default=None,
        help="key prefix inside the target model (default: backbone_3d. for OpenPCDet, "
        "middle_encoder. / backbone. for mmdetection3d; '' for module-relative keys)",
    )
    p.add_argument(
        "--stem",
        choices=STEM_CHOICES,
        default="identity",
        help="MinkUNet -> mmdet3d: set MinkUNetBackbone's extra stem conv conv_input.1 to the "
        "identity (default) or leave it out",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="print every name mapping")


def cmd_export(args: argparse.Namespace) -> int:
    """Run the export and print its report."""
    report = export_backbone(args.source, args.to, args.output, prefix=args.prefix, stem=args.stem)
    print(report.format(verbose=args.verbose))
    return 0
