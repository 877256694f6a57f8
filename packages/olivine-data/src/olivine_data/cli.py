"""The ``olivine-data`` command line.

Commands:
    synth   render a synthetic driving world into a nuScenes or SemanticKITTI folder

Example::

    olivine-data synth --out data/synth --scenes 4 --samples-per-scene 8 --seed 0
    olivine-data synth --out data/synth-kitti --format semantickitti --scenes 2
    olivine-data synth --out data/synth-rellis --format rellis3d --scenes 2
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["main", "build_parser", "LIDARSEG_FORMATS"]

#: The SemanticKITTI-family layouts of ``olivine_data.synthetic.export_lidarseg`` (named here so
#: that building the parser imports nothing heavy; a test checks they agree).
LIDARSEG_FORMATS = (
    "scribblekitti",
    "rellis3d",
    "semanticposs",
    "semanticstf",
    "synlidar",
    "daps3d",
)


def _image_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT such as 400x225, got {text!r}"
        ) from None
    return w, h


# ``olivine-data synth`` options that set a SyntheticWorldConfig field:
# (flag, config field, type, metavar or None for the flag's name, help)
_WORLD_OPTIONS: tuple[tuple[str, str, Callable[[str], Any], str | None, str], ...] = (
    ("--scenes", "scenes", int, None, "number of scenes"),
    ("--samples-per-scene", "samples_per_scene", int, None, "keyframes per scene (2 Hz)"),
    ("--seed", "seed", int, None, "master seed"),
    (
        "--image-size",
        "image_size",
        _image_size,
        "WxH",
        "camera resolution (nuScenes intrinsics are scaled)",
    ),
    (
        "--vfm-noise",
        "vfm_noise",
        float,
        None,
        "fraction of labelled pixels whose simulated VFM label is wrong",
    ),
    (
        "--val-fraction",
        "val_fraction",
        float,
        None,
        "fraction of scenes in the val split (olivine_splits.json)",
    ),
    (
        "--azimuth-steps",
        "lidar_azimuth_steps",
        int,
        None,
        "LiDAR firings per revolution (points per sweep scale with it)",
    ),
    ("--nuscenes-version", "version", str, None, "nuScenes table folder name"),
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``olivine-data`` (exposed for documentation and tests)."""
    from olivine_data._version import __version__
    from olivine_data.synthetic.config import SyntheticWorldConfig

    defaults = SyntheticWorldConfig()
    parser = argparse.ArgumentParser(
        prog="olivine-data",
        description="OLIVINE data tools: make datasets that the olivine-data readers load "
        "exactly like real nuScenes / SemanticKITTI.",
    )
    parser.add_argument("--version", action="version", version=f"olivine-data {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    synth = sub.add_parser(
        "synth",
        help="render a synthetic driving world (LiDAR, 6 cameras, lidarseg, VFM labels)",
        description=(
            "Render a deterministic synthetic driving world and write it as a nuScenes folder "
            "(13 tables + lidarseg + camseg VFM labels + olivine_splits.json; NuScenes("
            "version, dataroot) loads it) or as SemanticKITTI sequences (velodyne, labels, "
            "image_2, calib, poses), or the LiDAR sweeps in a SemanticKITTI-family layout "
            "(ScribbleKITTI, RELLIS-3D, SemanticPOSS, SemanticSTF, SynLiDAR, DAPS-3D). Same "
            "seed, same bytes."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    synth.add_argument("--out", required=True, help="output folder (created if missing)")
    synth.add_argument(
        "--format",
        choices=("nuscenes", "semantickitti", *LIDARSEG_FORMATS),
        default="nuscenes",
        help="dataset layout to write",
    )
    for flag, name, kind, metavar, text in _WORLD_OPTIONS:
        synth.add_argument(
            flag,
            dest=name,
            type=kind,
            default=getattr(defaults, name),
            metavar=metavar or flag[2:].upper().replace("-", "_"),
            help=text,
        )
    synth.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a previous export in a non-empty --out folder",
    )
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _synth(args: argparse.Namespace) -> int:
    from olivine_data.synthetic import (
        SyntheticWorldConfig,
        export_lidarseg,
        export_nuscenes,
        export_semantickitti,
    )

    try:
        config = SyntheticWorldConfig(
            **{name: getattr(args, name) for _, name, *_ in _WORLD_OPTIONS}
        )
    except ValueError as exc:
        print(f"olivine-data synth: {exc}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        if args.format == "nuscenes":
            root = export_nuscenes(
                config, args.out, progress=not args.quiet, overwrite=args.overwrite
            )
            hint = f"NuScenes(version={config.version!r}, dataroot={str(root)!r})"
        elif args.format == "semantickitti":
            root = export_semantickitti(
                config, args.out, progress=not args.quiet, overwrite=args.overwrite
            )
            hint = f"SemanticKITTISegDataset({str(root)!r}, sequences=[...])"
        else:
            root = export_lidarseg(
                config, args.out, args.format, progress=not args.quiet, overwrite=args.overwrite
            )
            hint = f"olivine-train finetune finetune_{args.format}_<fraction> data.root={root}"
    except ValueError as exc:
        print(f"olivine-data synth: {exc}", file=sys.stderr)
        return 2
    n = config.scenes * config.samples_per_scene
    elapsed = time.perf_counter() - start
    print(
        f"wrote {n} keyframes ({config.scenes} scenes) to {root} in {elapsed:.1f} s "
        f"({n / elapsed:.2f} keyframes/s); load with {hint}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``olivine-data`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "synth":
        return _synth(args)
    parser.print_help()
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
