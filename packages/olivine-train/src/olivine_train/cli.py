"""The ``olivine-train`` command line.

Subcommands (``olivine-train <cmd> --help`` for each)::

    pretrain CONFIG [key=value ...]        image-to-LiDAR pretraining (OLIVINE / PPKT / SLidR)
    finetune CONFIG [key=value ...]        fine-tuning or linear probing + validation mIoU
    evaluate CHECKPOINT [key=value ...]    validation mIoU of a downstream checkpoint
    probe CONFIG [--trunk T] [key=value ...] converged linear probe of a frozen trunk (L-BFGS)
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
    2  bad configuration or command line (every problem listed); a new run (no run.resume)
       into a run folder that holds last.pt (continue, rename, or run.overwrite=true)
    3  a loss became NaN/inf (training stopped; the message says which checkpoint survives)
    4  the file system refused a write or read: permission denied, read-only folder, disk full
    5  an unexpected error (a bug: set OLIVINE_TRACEBACK=1 to see the traceback)
    6  the run folder is in use by another run (the message names the holder: pid, host)
    7  preempted: SIGTERM, SIGINT or SIGUSR1 stopped the run after a step; last.pt holds that
       step; continue with run.resume=auto
    8  ``probe``: the fit did not converge (its record is written and says ``converged: false``)
  130  a second SIGINT (Ctrl-C) stopped the run at once, without writing a checkpoint

docs/failure-modes.md lists the known failures, their messages and what survives them.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from olivine_models import list_image_encoders, list_point_encoders, weights_file_problem
from olivine_train.cli_parser import build_parser
from olivine_train.config import ConfigError, config_to_dict, list_configs, load_config
from olivine_train.export.cli import cmd_export
from olivine_train.health import format_summary
from olivine_train.preemption import Preempted

# modules, not functions: a command looks its recipe up when it runs (tests replace run_pretrain)
from olivine_train.recipes import demo, downstream, make_labels, pretrain, probe
from olivine_train.recipes.common import NonFiniteLossError
from olivine_train.recipes.term_registry import PluginError, load_term_plugins
from olivine_train.runfolder import ExistingRunError, existing_run_problem
from olivine_train.runlock import RunFolderLockedError

__all__ = ["build_parser", "main"]


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
    if cfg.recipe in ("pretrain", "downstream") and not (args.no_check_paths or cfg.run.overwrite):
        problem = existing_run_problem(cfg.run_dir, resuming=cfg.run.resume is not None)
        if problem is not None:  # what the run would refuse, before any work
            raise ExistingRunError(problem)
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


def _trunk_override(trunk: str | None) -> list[str]:
    """``downstream.pretrained=...`` for ``--trunk`` (a run folder resolves to its weights)."""
    if trunk is None:
        return []
    if trunk == "random":
        return ["downstream.pretrained=null"]
    path = Path(trunk)
    if path.is_dir():
        found = [path / n for n in ("backbone.pt", "last.pt") if (path / n).is_file()]
        if not found:
            raise FileNotFoundError(f"--trunk {trunk}: a folder without backbone.pt or last.pt")
        path = found[0]
    quoted = str(path).replace("'", "''")  # a YAML single-quoted string: the path as written
    return [f"downstream.pretrained='{quoted}'"]


def _cmd_probe(args: argparse.Namespace) -> int:
    try:
        settings = probe.ProbeSettings(
            l2=args.l2,
            tolerance=args.tol,
            max_iter=args.max_iter,
            dtype=args.dtype,
            calibrate_bn=args.calibrate_bn,
            range_bins=tuple(args.range_bins or ()),
        )
    except ValueError as exc:  # a bad option is a command-line problem (exit 2)
        raise ConfigError([str(exc)], "olivine-train probe's options") from None
    cfg = load_config(args.config, [*args.overrides, *_trunk_override(args.trunk)])
    res = probe.run_probe(cfg, settings, args.out)
    print(downstream.format_scores(res.scores, "validation (converged linear probe)"))
    print(
        f"[olivine-train] probe converged in {res.fit.iterations} L-BFGS iterations "
        f"(max |gradient| {res.fit.max_abs_grad:.2g} <= {settings.tolerance:g}); "
        f"record: {res.path}"
    )
    return 0


def _cmd_make_labels(args: argparse.Namespace) -> int:
    shard = _parse_shard(args.shard)
    options = (
        "root", "version", "split", "scenes", "cameras", "out", "mode", "coarse_root",
        "boxes_json", "boxes_3d", "sam_variant", "sam_checkpoint", "vocabulary", "device",
        "points_per_side", "image_size", "max_side", "vote", "limit", "preset",
        "allow_outside_root",
    )  # fmt: skip
    if args.sam_checkpoint is not None:  # before any work: a payload, an empty or a text file
        problem = weights_file_problem(args.sam_checkpoint, "--sam-checkpoint")
        if problem is not None:
            raise ConfigError([problem], "the make-labels arguments")
    summary = make_labels.run_make_labels(
        shard=shard,
        progress=not args.no_progress,
        superpixels=False if args.no_superpixels else None,
        **{k: getattr(args, k) for k in options},
    )
    print(f"[olivine-train] make-labels shard {shard[0]}/{shard[1]}: {summary}")
    summary.raise_for_failures(shard)  # exit 1 listing the images that could not be labelled
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
    "probe": _cmd_probe,
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
    if isinstance(exc, ExistingRunError):
        return 2, str(exc)
    if isinstance(exc, RunFolderLockedError):
        return 6, str(exc)
    if isinstance(exc, Preempted):
        return 7, str(exc)
    if isinstance(exc, probe.ProbeNotConverged):
        return 8, str(exc)
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
        load_term_plugins()  # modules that register loss terms (OLIVINE_PLUGINS, entry points)
    except PluginError as exc:
        _print_err(str(exc))
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
