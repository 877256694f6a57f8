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

    python benchmarks/models_bench.py [--repeats 3] [--cases a,b] [--json PATH]

Requires the real data (``OLIVINE_SHARED_DATA`` or ``../shared/data``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from olivine_data import NUSCENES_CAMERAS

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("OLIVINE_SHARED_DATA", ROOT.parent / "shared" / "data"))
CAMERAS = NUSCENES_CAMERAS
POINT_CASES = ("minkunet34c", "minkunet14", "minkunet_tiny")
IMAGE_CASES = ("resnet50_dilated", "resnet18_dilated", "dino_vits16")
SAM_CASES = ("sam_tiny_box", "sam_tiny_refine")
ALL_CASES = POINT_CASES + IMAGE_CASES + SAM_CASES


def _rss_mib() -> float:
    """Peak RSS of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def load_sweep() -> tuple[Any, Any, tuple[int, int, int], int]:
    import torch

    files = sorted((DATA / "nuscenes/mmdet3d-demo/samples/LIDAR_TOP").glob("*.pcd.bin"))
    if not files:
        raise FileNotFoundError(f"no nuScenes LIDAR_TOP sweep under {DATA}")
    pts = np.fromfile(files[0], dtype=np.float32).reshape(-1, 5)
    rho = np.hypot(pts[:, 0], pts[:, 1])
    phi = np.degrees(np.arctan2(pts[:, 1], pts[:, 0]))
    grid = np.floor(np.stack([rho / 0.1, phi, pts[:, 2] / 0.1], 1)).astype(np.int64)
    grid -= grid.min(0)
    _, first = np.unique(grid, axis=0, return_index=True)
    first = np.sort(first)
    coords = np.concatenate([np.zeros((len(first), 1), np.int64), grid[first]], 1)
    shape = tuple(int(s) for s in grid.max(0) + 1)
    return (
        torch.from_numpy(coords.astype(np.int32)),
        torch.from_numpy(pts[first, 3:4].copy()),
        (shape[0], shape[1], shape[2]),
        len(pts),
    )


def load_cameras(size: tuple[int, int]) -> list[np.ndarray]:
    from PIL import Image

    images = []
    for cam in CAMERAS:
        files = sorted((DATA / "nuscenes/mmdet3d-demo/samples" / cam).glob("*.jpg"))
        if not files:
            raise FileNotFoundError(f"no {cam} image under {DATA}")
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
        base = _current_rss_mib()
        times = []
        for i in range(repeats + 1):  # first iteration is warm-up
            model.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            out = model(coords, feats, shape, 1)
            out.square().mean().backward()
            if i:
                times.append(time.perf_counter() - t0)
        result.update(what="fwd+bwd, 1 sweep", seconds=float(np.median(times)))
    elif case in IMAGE_CASES:
        from olivine_models import create_image_encoder

        images = load_cameras((416, 224))
        batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
        model = create_image_encoder(case)
        result.update(params=sum(p.numel() for p in model.parameters()))
        base = _current_rss_mib()
        times = []
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            out = model(batch)
            if i:
                times.append(time.perf_counter() - t0)
        result.update(
            what=f"fwd, 6x3x224x416 -> {tuple(out.shape[1:])}", seconds=float(np.median(times))
        )
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
        base = _current_rss_mib()
        times = []
        if case == "sam_tiny_box":
            boxes = [
                Detection((10, 100, 120, 200), 4, 0.9),
                Detection((150, 90, 260, 180), 1, 0.8),
                Detection((0, 150, 400, 225), 11, 0.5),
                Detection((250, 0, 400, 120), 13, 0.4),
            ]
            labeler = SamBoxLabeler(sam, FixedBoxProvider(boxes), 14, 0, batch_size=6)
            for i in range(repeats + 1):
                t0 = time.perf_counter()
                labeler.label_batch(images)
                if i:
                    times.append(time.perf_counter() - t0)
            what = "box labeler, 6 images 400x225, 4 boxes each"
        else:
            refiner = SamRefineLabeler(sam, 17, 16, points_per_side=16)
            coarse = [np.zeros(img.shape[:2], np.uint8) for img in images]
            for i in range(repeats + 1):
                t0 = time.perf_counter()
                refiner.label_batch(images, coarse)
                if i:
                    times.append(time.perf_counter() - t0)
            what = "refine labeler, 6 images 400x225, 16x16 point grid"
        seconds = float(np.median(times))
        result.update(what=what, seconds=seconds, images_per_s=len(images) / seconds)
    else:
        raise KeyError(f"unknown case {case!r}; known: {list(ALL_CASES)}")
    result.update(rss_peak_mib=_rss_mib(), rss_base_mib=base)
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
        args.child_out.write_text(json.dumps(row))
        return 0
    cases = [c for c in args.cases.split(",") if c]
    unknown = sorted(set(cases) - set(ALL_CASES))
    if unknown:
        parser.error(f"unknown case(s) {unknown}; known: {list(ALL_CASES)}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            out = Path(tmp) / f"{case}.json"
            cmd = [sys.executable, __file__, "--case", case, "--repeats", str(args.repeats)]
            cmd += ["--threads", str(args.threads)]
            subprocess.run([*cmd, "--child-out", str(out)], check=True)
            rows.append(json.loads(out.read_text()))
            print(f"done {case}: {rows[-1]['seconds']:.2f} s", file=sys.stderr, flush=True)
    print(table(rows))
    print(f"\n(CPU: {os.cpu_count()} cores visible, torch threads {rows[0]['threads']})")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
