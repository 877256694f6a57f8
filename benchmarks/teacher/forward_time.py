"""Teacher forward time on CPU: pretrained EfficientNet-Lite0 vs the random resnet18_dilated.

One batch of the 6 real nuScenes camera images (``harness.shared_data``: ``$OLIVINE_SHARED_DATA``
or ``../shared/data``; random images with ``--random-images``) resized to 224x416, frozen forward
only, in one process and one run: the teachers alternate repeat by repeat
(``harness.round_robin``) so that a change of machine load hits both. Median (and min) of
``--repeats`` timed forwards after one warm-up each.

    python -m benchmarks.teacher.forward_time [--repeats 5] [--threads 1] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.harness import atomic_json, environment, machine, round_robin, shared_data
from olivine_data import NUSCENES_CAMERAS

CAMERAS = NUSCENES_CAMERAS
SIZE = (224, 416)
TEACHERS = {  # row name -> (registry name, create_image_encoder keywords)
    "efficientnet_lite0 (pretrained)": ("efficientnet_lite0", {"pretrained": True}),
    "resnet18_dilated (random)": ("resnet18_dilated", {}),
}


def load_images(random_images: bool) -> torch.Tensor:
    if random_images:
        return torch.rand(len(CAMERAS), 3, *SIZE, generator=torch.Generator().manual_seed(0))
    from PIL import Image

    samples = shared_data() / "nuscenes/mmdet3d-demo/samples"  # type: ignore[operator]
    out = []
    for cam in CAMERAS:
        files = sorted((samples / cam).glob("*.jpg"))
        if len(files) != 1:
            raise SystemExit(
                f"expected one {cam} image under {samples}, found {files} "
                "(set OLIVINE_SHARED_DATA or pass --random-images)"
            )
        img = Image.open(files[0]).convert("RGB").resize((SIZE[1], SIZE[0]), Image.BILINEAR)
        out.append(torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255.0)
    return torch.stack(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (1 is fastest on a shared 2-core machine)",
    )
    parser.add_argument("--random-images", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from olivine_models import create_image_encoder

    images = load_images(args.random_images)
    teachers = {}
    for row, (name, kw) in TEACHERS.items():
        torch.manual_seed(0)
        teachers[row] = create_image_encoder(name, **kw)
    shapes: dict[str, tuple[int, ...]] = {}
    params: dict[str, int] = {}
    for row, teacher in teachers.items():  # the warm-up call of each
        shapes[row] = tuple(teacher(images).shape)
        params[row] = sum(p.numel() for p in teacher.parameters())
    timings = round_robin(
        {row: (lambda t=teacher: t(images)) for row, teacher in teachers.items()},
        rounds=args.repeats,
        warmup=0,
    )
    rows: list[dict[str, Any]] = []
    ref = timings["resnet18_dilated (random)"].median
    print(
        f"Teacher forward, 6 cameras x 3 x {SIZE[0]} x {SIZE[1]}, CPU, torch threads "
        f"{torch.get_num_threads()}, {os.cpu_count()} cores visible, median of {args.repeats}"
        f"{' (random images)' if args.random_images else ' (real nuScenes cameras)'}\n"
    )
    print("| teacher | params | output | median s | min s | vs resnet18_dilated |")
    print("|---|---:|---|---:|---:|---:|")
    for row in teachers:
        med, low = timings[row].median, timings[row].best
        rows.append(
            {
                "teacher": row,
                "params": params[row],
                "output": shapes[row],
                "median_s": med,
                "min_s": low,
                "speedup_vs_resnet18_dilated": ref / med,
            }
        )
        print(
            f"| {row} | {params[row]:,} | {shapes[row]} | {med:.2f} | {low:.2f} | "
            f"{ref / med:.1f}x faster |"
            if row.startswith("eff")
            else f"| {row} | {params[row]:,} | {shapes[row]} | {med:.2f} | {low:.2f} | 1.0x |"
        )
    if args.json:
        payload = {
            "size": SIZE,
            "threads": torch.get_num_threads(),
            "repeats": args.repeats,
            "rows": rows,
            "environment": {**machine(), "code": environment()},
        }
        atomic_json(args.json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
