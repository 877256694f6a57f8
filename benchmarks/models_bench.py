"""olivine-models CPU benchmark: MinkUNet, image teachers, SAM labeler.

Each case runs in its own subprocess so that peak RSS (``ru_maxrss``) belongs to that case alone;
"RSS over baseline" is the peak minus the RSS after imports, input loading and model build.

Cases:
* ``minkunet34c`` / ``minkunet14`` / ``minkunet_tiny``: forward + backward on the real nuScenes
  sweep (34,688 points, cylindrical voxels 0.1 m x 1 deg x 0.1 m, intensity feature), batch 1.
* ``resnet50_dilated`` / ``resnet18_dilated`` / ``dino_vits16``: frozen teacher forward on one
  6-camera batch of 224x416 crops.
* ``sam_tiny_box`` / ``sam_tiny_refine``: labeler throughput (images/s) with the tiny SAM on the
  6 real nuScenes camera images resized to 400x225 (boxes: a fixed 4-box layout).

Usage::

    python -m benchmarks.models_bench [--repeats 3] [--cases a,b] [--threads N] [--json PATH]

Requires the real data (``harness.shared_data``: ``$OLIVINE_SHARED_DATA`` or ``../shared/data``);
the sweep is read and voxelised by the package (``harness.nuscenes_sweep`` / ``sparse_input``:
``olivine_data.voxelize``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import (
    atomic_json,
    current_rss_mib,
    environment,
    machine,
    nuscenes_sweep,
    peak_rss_mib,
    run_module,
    shared_data,
    sparse_input,
    time_call,
)
from olivine_data import NUSCENES_CAMERAS

CAMERAS = NUSCENES_CAMERAS
POINT_CASES = ("minkunet34c", "minkunet14", "minkunet_tiny")
IMAGE_CASES = ("resnet50_dilated", "resnet18_dilated", "dino_vits16")
SAM_CASES = ("sam_tiny_box", "sam_tiny_refine")
ALL_CASES = POINT_CASES + IMAGE_CASES + SAM_CASES


def load_sweep() -> tuple[Any, Any, tuple[int, int, int], int]:
    """The real nuScenes sweep as torch (coords, feats), spatial shape and its point count."""
    import torch

    points, _ = nuscenes_sweep()
    coords, feats, shape = sparse_input(points, batch=1)
    return torch.from_numpy(coords), torch.from_numpy(feats), shape, len(points)


def load_cameras(size: tuple[int, int]) -> list[np.ndarray]:
    from PIL import Image

    samples = shared_data() / "nuscenes/mmdet3d-demo/samples"  # type: ignore[operator]
    images = []
    for cam in CAMERAS:
        files = sorted((samples / cam).glob("*.jpg"))
        if not files:
            raise FileNotFoundError(f"no {cam} image under {samples}")
        images.append(np.asarray(Image.open(files[0]).convert("RGB").resize(size)))
    return images


def run_case(case: str, repeats: int, threads: int = 0) -> dict[str, Any]:
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    result: dict[str, Any] = {"case": case, "threads": torch.get_num_threads()}
    if case in POINT_CASES:
        from olivine_models import create_point_encoder

        coords, feats, shape, npts = load_sweep()
        model = create_point_encoder(case)
        result.update(
            points=npts,
            voxels=int(coords.shape[0]),
            params=sum(p.numel() for p in model.parameters()),
        )
        base = current_rss_mib()

        def step() -> None:
            model.zero_grad(set_to_none=True)
            model(coords, feats, shape, 1).square().mean().backward()

        result.update(what="fwd+bwd, 1 sweep", seconds=time_call(step, repeats).median)
    elif case in IMAGE_CASES:
        from olivine_models import create_image_encoder

        images = load_cameras((416, 224))
        batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
        model = create_image_encoder(case)
        result.update(params=sum(p.numel() for p in model.parameters()))
        base = current_rss_mib()
        seconds = time_call(lambda: model(batch), repeats).median
        out_shape = tuple(model(batch).shape[1:])
        result.update(what=f"fwd, 6x3x224x416 -> {out_shape}", seconds=seconds)
    elif case in SAM_CASES:
        from olivine_models.vfm import (
            Detection,
            FixedBoxProvider,
            SamBoxLabeler,
            SamRefineLabeler,
            build_sam,
        )

        images = load_cameras((400, 225))
        sam = build_sam("tiny")
        result.update(params=sum(p.numel() for p in sam.parameters()))
        base = current_rss_mib()
        if case == "sam_tiny_box":
            boxes = [
                Detection((10, 100, 120, 200), 4, 0.9),
                Detection((150, 90, 260, 180), 1, 0.8),
                Detection((0, 150, 400, 225), 11, 0.5),
                Detection((250, 0, 400, 120), 13, 0.4),
            ]
            labeler = SamBoxLabeler(sam, FixedBoxProvider(boxes), 14, 0, batch_size=6)
            seconds = time_call(lambda: labeler.label_batch(images), repeats).median
            what = "box labeler, 6 images 400x225, 4 boxes each"
        else:
            refiner = SamRefineLabeler(sam, 17, 16, points_per_side=16)
            coarse = [np.zeros(img.shape[:2], np.uint8) for img in images]
            seconds = time_call(lambda: refiner.label_batch(images, coarse), repeats).median
            what = "refine labeler, 6 images 400x225, 16x16 point grid"
        result.update(what=what, seconds=seconds, images_per_s=len(images) / seconds)
    else:
        raise KeyError(f"unknown case {case!r}; known: {list(ALL_CASES)}")
    result.update(rss_peak_mib=peak_rss_mib(), rss_base_mib=base)
    return result


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| case | what | params | median s | images/s | peak RSS MiB | RSS over baseline MiB |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ips = f"{r['images_per_s']:.2f}" if "images_per_s" in r else ""
        what = r["what"] + (f" ({r['voxels']:,} voxels)" if "voxels" in r else "")
        lines.append(
            f"| {r['case']} | {what} | {r['params']:,} | {r['seconds']:.2f} | {ips} | "
            f"{r['rss_peak_mib']:.0f} | {r['rss_peak_mib'] - r['rss_base_mib']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed iterations after warm-up")
    parser.add_argument("--cases", default=",".join(ALL_CASES), help="comma-separated cases")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch intra-op threads per case (0: torch's default). On a shared/oversubscribed "
        "machine 1 is much faster: OpenMP threads spin while waiting for each other",
    )
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--child-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case is not None:
        row = run_case(args.case, args.repeats, args.threads)
        atomic_json(args.child_out, row)
        return 0
    cases = [c for c in args.cases.split(",") if c]
    unknown = sorted(set(cases) - set(ALL_CASES))
    if unknown:
        parser.error(f"unknown case(s) {unknown}; known: {list(ALL_CASES)}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            out = Path(tmp) / f"{case}.json"
            cmd = ["--case", case, "--repeats", str(args.repeats), "--threads", str(args.threads)]
            run_module(__spec__.name, *cmd, "--child-out", str(out))
            rows.append(json.loads(out.read_text()))
            print(f"done {case}: {rows[-1]['seconds']:.2f} s", file=sys.stderr, flush=True)
    print(table(rows))
    print(f"\n(CPU: {os.cpu_count()} cores visible, torch threads {rows[0]['threads']})")
    if args.json is not None:
        env = {**machine(), "code": environment()}
        atomic_json(args.json, {"environment": env, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
