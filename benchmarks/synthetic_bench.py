"""Synthetic-world benchmarks: keyframes per second (render and full nuScenes export).

Usage:
    python -m benchmarks.synthetic_bench [--keyframes 6] [--repeat 3] [--json out.json]

Rows:
  * one camera (CAM_FRONT_LEFT, 400x225) ray cast with windowed, front-to-back culled primitives
    (ours) vs the naive cast (every primitive against every ray), same scene, same hits;
  * render of a keyframe (HDL-32E sweep + 6 cameras at 400x225 + VFM labels);
  * full export of a keyframe (render + JPEG/PNG/bin files + tables), via ``export_nuscenes``.
CPU time (``time.process_time``) is reported next to wall time: on a shared machine wall time
includes waiting for a core, CPU time is what one core spends (so this script times with
``time.process_time`` itself; ``harness.time_call`` measures wall time only).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import atomic_json, environment, machine
from olivine_data.synthetic import SyntheticWorldConfig, export_nuscenes, generate_world
from olivine_data.synthetic.render import camera_rays, camera_windows, cast
from olivine_data.synthetic.sensors import scaled_intrinsics
from olivine_data.synthetic.world import sensor_to_ego


def _timed(fn: Any, repeat: int) -> tuple[float, float]:
    """Best (wall, cpu) seconds of ``repeat`` calls."""
    best_wall, best_cpu = float("inf"), float("inf")
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        best_wall = min(best_wall, time.perf_counter() - w0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return best_wall, best_cpu


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keyframes", type=int, default=6, help="keyframes per timed export")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = ap.parse_args(argv)
    rows: list[dict[str, Any]] = []

    cfg = SyntheticWorldConfig(scenes=1, samples_per_scene=max(args.keyframes, 2), seed=0)
    world = generate_world(cfg)
    t = world.lidar_timestamp(0, 1)
    c2s = world.ego_to_scene(0, t) @ sensor_to_ego("CAM_FRONT_LEFT")
    k = scaled_intrinsics("CAM_FRONT_LEFT", cfg.image_size)
    dirs = camera_rays(k, c2s, cfg.image_size)
    windows = camera_windows(
        world.bounds[0], np.linalg.inv(c2s), k, cfg.image_size, cfg.camera_max_range
    )
    w, h = cfg.image_size
    naive = [(i, slice(0, h), slice(0, w), 0.0) for i in range(len(world.layouts[0].primitives))]
    ours_hits = cast(world.layouts[0], c2s[:3, 3], dirs, cfg.camera_max_range, windows)
    naive_hits = cast(world.layouts[0], c2s[:3, 3], dirs, cfg.camera_max_range, naive)
    same = float((ours_hits.material == naive_hits.material).mean())
    o_wall, o_cpu = _timed(
        lambda: cast(world.layouts[0], c2s[:3, 3], dirs, cfg.camera_max_range, windows), args.repeat
    )
    n_wall, n_cpu = _timed(
        lambda: cast(world.layouts[0], c2s[:3, 3], dirs, cfg.camera_max_range, naive), 1
    )
    rows.append(
        {
            "case": "camera ray cast 400x225",
            "ours_cpu_ms": 1e3 * o_cpu,
            "naive_cpu_ms": 1e3 * n_cpu,
            "speedup": n_cpu / o_cpu,
            "same_hits": same,
            "primitives": len(naive),
        }
    )

    r_wall, r_cpu = _timed(lambda: world.render_keyframe(0, 1), args.repeat)
    n_pts = len(world.render_keyframe(0, 1).lidar.points)
    rows.append(
        {
            "case": "render keyframe (LiDAR + 6 cams 400x225 + VFM)",
            "wall_s": r_wall,
            "cpu_s": r_cpu,
            "keyframes_per_cpu_s": 1 / r_cpu,
            "points": n_pts,
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        ecfg = SyntheticWorldConfig(scenes=1, samples_per_scene=args.keyframes, seed=0)
        w0, c0 = time.perf_counter(), time.process_time()
        export_nuscenes(ecfg, Path(tmp) / "out", progress=False)
        e_wall = (time.perf_counter() - w0) / args.keyframes
        e_cpu = (time.process_time() - c0) / args.keyframes
    rows.append(
        {
            "case": f"export_nuscenes ({args.keyframes} keyframes)",
            "wall_s": e_wall,
            "cpu_s": e_cpu,
            "keyframes_per_cpu_s": 1 / e_cpu,
        }
    )

    env = {**machine(), "numpy": np.__version__, "code": environment()}
    print(f"environment: {env}")
    print(f"{'case':50s} {'value':>40s}")
    for row in rows:
        rest = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in row.items()
            if k != "case"
        )
        print(f"{row['case']:50s} {rest}")
    if args.json is not None:
        atomic_json(args.json, {"environment": env, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
