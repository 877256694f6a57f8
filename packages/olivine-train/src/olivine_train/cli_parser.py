"""The ``olivine-train`` argument parser: every subcommand, its arguments and their help texts
(the handlers live in :mod:`olivine_train.cli`).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from olivine_train.export.cli import add_export_command
from olivine_train.recipes.probe import ProbeSettings

__all__ = ["build_parser"]

_OVERRIDES_HELP = (
    "config overrides as dotted key=value pairs, values parsed as YAML "
    "(e.g. optim.lr=0.1 data.batch_size=8 loss.vmf_weight=0 run.resume=auto)"
)


if TYPE_CHECKING:  # argparse's action is generic for the type checker only
    _Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def _config_command(
    sub: _Subparsers,
    name: str,
    help: str,
    description: str,
    config_help: str,
) -> argparse.ArgumentParser:
    """A subcommand taking ``CONFIG [key=value ...]``."""
    p: argparse.ArgumentParser = sub.add_parser(name, help=help, description=description)
    p.add_argument("config", help=config_help)
    p.add_argument("overrides", nargs="*", help=_OVERRIDES_HELP)
    return p


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="olivine-train",
        description="OLIVINE image-to-LiDAR pretraining and LiDAR segmentation downstream.",
        epilog="Run 'olivine-train ls' for the shipped configs; 'olivine-train demo' for a "
        "short end-to-end run on a synthetic world. Multi-process: torchrun --nproc_per_node N "
        "-m olivine_train.cli pretrain CONFIG ...",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_training_commands(sub)
    _add_evaluate_command(sub)
    _add_probe_command(sub)
    _add_make_labels_command(sub)
    _add_demo_command(sub)
    _add_config_commands(sub)
    add_export_command(sub)
    return parser


def _add_training_commands(sub: _Subparsers) -> None:
    """``pretrain`` and ``finetune``: a config and overrides each."""
    _config_command(
        sub,
        "pretrain",
        "pretrain a LiDAR backbone by distilling a frozen image encoder",
        "Pretrain a sparse 3D backbone against a frozen 2D teacher. Writes "
        "<run.out_dir>/<run.name>/{config.yaml,metrics.jsonl,health.json,tb/,last.pt,backbone.pt}"
        ". Resume with run.resume=auto (or a path to last.pt); a resume refuses config changes "
        "that alter the result unless named in run.allow_changes=[...]. SIGTERM/SIGINT/SIGUSR1 "
        "stop after the current step with last.pt written (exit 7).",
        "shipped config name (e.g. olivine_nuscenes) or YAML path",
    )
    _config_command(
        sub,
        "finetune",
        "fine-tune or linearly probe a backbone for semantic segmentation",
        "Downstream semantic segmentation (downstream.mode=finetune|linear_probe), "
        "CE + Lovasz-softmax, evaluated by point-level mIoU (class 0 ignored). Load pretrained "
        "weights with downstream.pretrained=<pretrain run>/backbone.pt.",
        "e.g. finetune_nuscenes_1pct, linear_probe_nuscenes, or a YAML",
    )


def _add_evaluate_command(sub: _Subparsers) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a downstream checkpoint (per-class IoU and mIoU)",
        description="Load a downstream last.pt/best.pt, rebuild the model from its embedded config "
        "and evaluate on the validation split (point-level, class 0 ignored).",
    )
    p.add_argument("checkpoint", help="downstream checkpoint (last.pt or best.pt)")
    p.add_argument("overrides", nargs="*", help=_OVERRIDES_HELP + "; e.g. data.root=/other/path")


def _add_probe_command(sub: _Subparsers) -> None:
    d = ProbeSettings()
    p = _config_command(
        sub,
        "probe",
        "converged linear probe of a frozen trunk (L-BFGS logistic regression)",
        "Encode the training and validation splits of a downstream CONFIG once with a frozen "
        "trunk (eval mode), standardise the training features, fit an L2 multinomial logistic "
        "regression by L-BFGS until max |gradient| <= --tol, and score the validation points "
        "(class 0 ignored). Writes a JSON record (fit iterations, final gradient, per-class IoU, "
        "mIoU) to --out (default <run folder>/probe-<trunk>.json). A fit that does not "
        "converge writes its record and exits 8. For the paper's SGD linear-probing protocol use "
        "'olivine-train finetune linear_probe_nuscenes' instead.",
        "a downstream config (e.g. linear_probe_nuscenes, finetune_semantickitti_1pct) or YAML",
    )
    p.add_argument(
        "--trunk",
        default=None,
        help="backbone.pt, a pretraining last.pt, a pretraining run folder (its backbone.pt, "
        "else last.pt), or 'random' (a random trunk, BatchNorm calibrated); default: the "
        "config's downstream.pretrained",
    )
    p.add_argument(
        "--out", default=None, help="record path (default <run folder>/probe-<trunk>.json)"
    )
    p.add_argument("--l2", type=float, default=d.l2, help="L2 penalty (default %(default)g)")
    p.add_argument(
        "--tol", type=float, default=d.tolerance, help="max |gradient| (default %(default)g)"
    )
    p.add_argument("--max-iter", type=int, default=d.max_iter, help="default %(default)d")
    p.add_argument("--dtype", choices=["float32", "float64"], default=d.dtype)
    p.add_argument(
        "--range-bins",
        type=float,
        nargs="+",
        default=None,
        metavar="M",
        help="also score per horizontal-range bin: increasing edges in metres (e.g. 0 10 20 30)",
    )
    bn = p.add_mutually_exclusive_group()
    bn.add_argument(
        "--calibrate-bn",
        dest="calibrate_bn",
        action="store_true",
        default=None,
        help="recompute BatchNorm statistics on the training split (default: random trunks only)",
    )
    bn.add_argument("--no-calibrate-bn", dest="calibrate_bn", action="store_false")


def _add_make_labels_command(sub: _Subparsers) -> None:
    """``make-labels``: the data to label, the labeler and its SAM settings, the shard."""
    p = sub.add_parser(
        "make-labels",
        help="write VFM camera labels with SAM (resumable, shardable)",
        description="Run the SAM labeler over every keyframe camera image of a nuScenes-format "
        "dataset and write <out>/camseg/<CAM>/<stem>.png (atomic writes). Images whose PNG exists "
        "are skipped, so an interrupted run resumes; --shard i/n processes every n-th image "
        "starting at i, so n processes cover the dataset without overlap.",
    )
    p.add_argument("--root", required=True, help="nuScenes dataroot")
    p.add_argument("--version", default="v1.0-trainval", help="table folder (default %(default)s)")
    p.add_argument("--split", default=None, help="scene split (olivine_splits.json or devkit)")
    p.add_argument("--scenes", nargs="*", default=None, help="explicit scene names")
    p.add_argument("--cameras", nargs="*", default=None, help="camera channels (default: all 6)")
    p.add_argument("--out", required=True, help="label store root (camseg/ is created inside)")
    p.add_argument(
        "--mode",
        choices=["refine", "box"],
        default="refine",
        help="refine: SAM automatic masks vote the majority class of existing coarse labels "
        "(--coarse-root) and SAM superpixels are written; box: SAM masks from box prompts "
        "(--boxes-json or --boxes-3d)",
    )
    p.add_argument("--coarse-root", default=None, help="label store with coarse labels (refine)")
    p.add_argument(
        "--boxes-json",
        default=None,
        help='box mode: JSON list of {"box": [x0, y0, x1, y1], "class_id": k, "score": s}',
    )
    p.add_argument(
        "--boxes-3d",
        default=None,
        help="box mode: 3D boxes projected into every image as prompts: 'annotations' (nuScenes "
        "sample_annotation) or an mmdetection3d info JSON",
    )
    p.add_argument(
        "--preset",
        choices=["cpu", "gpu"],
        default="cpu",
        help="SAM settings: cpu (default: MobileSAM, 16x16 grid at 800 px) or gpu (32x32 grid, "
        "full resolution); the options below override single settings",
    )
    p.add_argument(
        "--sam-variant", default=None, help="vit_t (MobileSAM, default) | vit_b | vit_l | vit_h"
    )
    p.add_argument(
        "--sam-checkpoint", default=None, help="SAM weights (default: packaged MobileSAM weights)"
    )
    p.add_argument("--image-size", type=int, default=None, help="vit_t encoder input side")
    p.add_argument("--points-per-side", type=int, default=None, help="refine: SAM point grid")
    p.add_argument("--max-side", type=int, default=None, help="refine: mask image longest side")
    p.add_argument("--vote", choices=["masks", "superpixels"], default=None, help="refine vote")
    p.add_argument(
        "--no-superpixels", action="store_true", help="refine: do not write SAM superpixels"
    )
    p.add_argument("--vocabulary", default="seem17", help="label vocabulary (default %(default)s)")
    p.add_argument(
        "--allow-outside-root",
        action="store_true",
        help="read image paths of the tables that resolve outside --root (symlinked layouts)",
    )
    p.add_argument("--shard", default="0/1", help="i/n: this process's shard (default %(default)s)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--limit", type=int, default=None, help="stop after this many new images")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_demo_command(sub: _Subparsers) -> None:
    p = sub.add_parser(
        "demo",
        help="end-to-end OLIVINE demo on a synthetic world (~1 min on 2 CPU cores)",
        description="Make a small synthetic nuScenes-format world (unless --world exists), "
        "pretrain a tiny MinkUNet with OLIVINE against the frozen ImageNet EfficientNet-Lite0 "
        "teacher, linearly probe the pretrained and a random backbone, print per-class IoU/mIoU "
        "and the pretraining's health summary.",
    )
    p.add_argument("--out", default="olivine-demo", help="output folder (default %(default)s)")
    p.add_argument("--world", default=None, help="existing synthetic world (default <out>/world)")
    p.add_argument("overrides", nargs="*", help=_OVERRIDES_HELP + " (applied to the demo config)")


def _add_config_commands(sub: _Subparsers) -> None:
    """``validate-config`` and ``ls``."""
    p = _config_command(
        sub,
        "validate-config",
        "check a config and print the resolved YAML",
        "Load a config with overrides, report every problem at once (unknown keys "
        "with suggestions, wrong types, bad values, missing paths); print the resolved YAML.",
        "shipped config name or YAML path",
    )
    p.add_argument("--no-check-paths", action="store_true", help="do not require paths to exist")

    sub.add_parser(
        "ls",
        help="list shipped configs and registered models",
        description="Shipped configs with their descriptions, point encoders and image encoders.",
    )
