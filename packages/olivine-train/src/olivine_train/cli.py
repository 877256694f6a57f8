"""The ``olivine-train`` command line.

Subcommands (``olivine-train <cmd> --help`` for each)::

    pretrain CONFIG [key=value ...]        image-to-LiDAR pretraining (OLIVINE / PPKT / SLidR)
    finetune CONFIG [key=value ...]        fine-tuning or linear probing + validation mIoU
    evaluate CHECKPOINT [key=value ...]    validation mIoU of a downstream checkpoint
    make-labels ...                        VFM camera labels (SAM), resumable and shardable
    demo [--out DIR] [key=value ...]       synthetic world -> pretrain -> linear probes -> table
    validate-config CONFIG [key=value ...] report every problem of a config at once
    ls                                     shipped configs and registered models
    export SOURCE --to T -o FILE           a pretrained backbone for OpenPCDet / mmdetection3d

CONFIG is a shipped config name (``olivine-train ls``) or a YAML path. Multi-GPU / multi-process:
``torchrun --nproc_per_node N -m olivine_train.cli pretrain CONFIG ...``.

Every failure is one ``olivine-train: error: ...`` line on stderr (no traceback) and an exit code:

    0  success
    1  bad input: a data, weights or checkpoint file (missing, corrupt, of another model)
    2  bad configuration or command line (every problem listed)
    3  a loss became NaN/inf (training stopped; the message says which checkpoint survives)
    4  the file system refused a write or read: permission denied, read-only folder, disk full
    5  an unexpected error (a bug: set OLIVINE_TRACEBACK=1 to see the traceback)
    6  the run folder is in use by another run (the message names the holder: pid, host)
    7  preempted: SIGTERM, SIGINT or SIGUSR1 stopped the run after a step; last.pt holds that
       step; continue with run.resume=auto
  130  a second SIGINT (Ctrl-C) stopped the run at once, without writing a checkpoint

docs/failure-modes.md lists the known failures, their messages and what survives them.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import yaml

from olivine_models import list_image_encoders, list_point_encoders
from olivine_train.config import ConfigError, config_to_dict, list_configs, load_config
from olivine_train.export.cli import add_export_command, cmd_export
from olivine_train.health import format_summary
from olivine_train.preemption import Preempted

# modules, not functions: a command looks its recipe up when it runs (tests replace run_pretrain)
from olivine_train.recipes import demo, downstream, make_labels, pretrain
from olivine_train.recipes.common import NonFiniteLossError
from olivine_train.runlock import RunFolderLockedError

__all__ = ["build_parser", "main"]

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


def _print_err(msg: str) -> None:
    print(f"olivine-train: error: {msg}", file=sys.stderr)


_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
_DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)


def _os_error_line(exc: OSError) -> str:
    """``<file>: <what happened> (<hint>)`` for a file-system error."""
    text = exc.strerror or str(exc)
    name = type(exc).__name__
    head = f"{name}: {exc.filename}: {text}" if exc.filename is not None else f"{name}: {text}"
    if exc.errno in _DENIED:
        return f"{head} (not writable: choose another run.out_dir or fix the permissions)"
    if exc.errno in _FULL:
        return f"{head} (the disk or quota is full: free space, then resume with run.resume=auto)"
    return head


def _cmd_ls() -> int:
    print("configs:")
    for name in list_configs():
        cfg = load_config(name, check_paths=False)
        print(f"  {name:<30} [{cfg.recipe}] {cfg.description}")
    print("point encoders:  " + ", ".join(list_point_encoders()))
    print("image encoders:  " + ", ".join(list_image_encoders()))
    return 0


def _parse_shard(text: str) -> tuple[int, int]:
    try:
        i_text, n_text = text.split("/")
        i, n = int(i_text), int(n_text)
    except ValueError:
        raise ValueError(f"--shard: expected i/n (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard: need 0 <= i < n, got {text!r}")
    return i, n


def _cmd_validate_config(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides, check_paths=not args.no_check_paths)
    print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")
    print(f"# {args.config}: OK", file=sys.stderr)
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    res = pretrain.run_pretrain(load_config(args.config, args.overrides))
    print(
        f"[olivine-train] pretraining finished at step {res.step} "
        f"({res.wall_time_s:.1f} s); backbone: {res.run_dir}/backbone.pt, "
        f"TensorBoard: {res.run_dir}/tb"
    )
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    down = downstream.run_downstream(cfg)
    if down.scores is not None:
        print(downstream.format_scores(down.scores, f"validation ({cfg.downstream.mode})"))
    print(f"[olivine-train] run folder: {down.run_dir}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    ev = downstream.run_evaluate(args.checkpoint, args.overrides)
    if ev.scores is not None:
        print(downstream.format_scores(ev.scores, f"validation ({args.checkpoint})"))
    return 0


def _cmd_make_labels(args: argparse.Namespace) -> int:
    shard = _parse_shard(args.shard)
    options = (
        "root", "version", "split", "scenes", "cameras", "out", "mode", "coarse_root",
        "boxes_json", "boxes_3d", "sam_variant", "sam_checkpoint", "vocabulary", "device",
        "points_per_side", "image_size", "max_side", "vote", "limit", "preset",
    )  # fmt: skip
    summary = make_labels.run_make_labels(
        shard=shard,
        progress=not args.no_progress,
        superpixels=False if args.no_superpixels else None,
        **{k: getattr(args, k) for k in options},
    )
    print(f"[olivine-train] make-labels shard {shard[0]}/{shard[1]}: {summary}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    result = demo.run_demo(args.out, args.world, args.overrides)
    pre = result.pretrain
    print()
    print("Linear probing on the synthetic validation scenes (IoU %, class 0 ignored):")
    print(result.table)
    print()
    print(f"teacher:          {result.teacher}")
    print(f"world:            {result.world}")
    print(f"pretraining run:  {pre.run_dir} (step {pre.step})")
    print(f"  checkpoints:    {pre.run_dir}/last.pt, backbone.pt")
    print(f"  TensorBoard:    tensorboard --logdir {pre.run_dir}/tb")
    print(f"probe runs:       {result.probe_pretrained.run_dir}, {result.probe_random.run_dir}")
    print(f"wall time:        {result.wall_time_s:.1f} s")
    if pre.health is not None:
        print()
        print(f"pretraining {format_summary(pre.health)}")
    return 0


#: subcommand -> handler (the parsers are built in :func:`build_parser`)
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "ls": lambda args: _cmd_ls(),
    "validate-config": _cmd_validate_config,
    "pretrain": _cmd_pretrain,
    "finetune": _cmd_finetune,
    "evaluate": _cmd_evaluate,
    "make-labels": _cmd_make_labels,
    "demo": _cmd_demo,
    "export": cmd_export,
}


def _failure(exc: BaseException) -> tuple[int, str]:
    """The exit code and the one error line of a failed command (see the module docstring)."""
    if isinstance(exc, ConfigError):
        return 2, str(exc)
    if isinstance(exc, NonFiniteLossError):
        return 3, str(exc)
    if isinstance(exc, RunFolderLockedError):
        return 6, str(exc)
    if isinstance(exc, Preempted):
        return 7, str(exc)
    if isinstance(exc, (ValueError, FileNotFoundError, KeyError)):
        return 1, f"{type(exc).__name__}: {exc}"
    if isinstance(exc, OSError):  # permission denied, read-only folder, disk full
        return 4, _os_error_line(exc)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    hint = "(set OLIVINE_TRACEBACK=1 for the traceback)"
    return 5, f"unexpected {type(exc).__name__}: {first} {hint}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    handler = COMMANDS.get(args.command)
    if handler is None:
        _print_err(f"unknown command {args.command!r}")
        return 2
    try:
        return handler(args)
    except KeyboardInterrupt:  # the second Ctrl-C (the first stops after the step, exit 7)
        _print_err("interrupted twice: stopped at once without writing a checkpoint")
        return 130
    except Exception as exc:  # one line, not a traceback; OLIVINE_TRACEBACK=1 shows bugs
        code, line = _failure(exc)
        if code == 5 and os.environ.get("OLIVINE_TRACEBACK"):
            raise
        _print_err(line)
        return code


if __name__ == "__main__":
    sys.exit(main())
