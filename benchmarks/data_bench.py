"""olivine-data benchmarks: pairing, voxelisation, DCAS (time and peak memory).

Usage:
    python -m benchmarks.data_bench [--data DIR] [--repeat 5] [--pairs 100000] [--json out.json]

``--data`` defaults to the shared data (``harness.shared_data``: ``$OLIVINE_SHARED_DATA`` or
``../shared/data``).

Rows (each against a reference measured in the same run):
  * pairing of one real nuScenes keyframe (scene-0061, 34,688 points, 6 cameras): our vectorised
    chain (points read + 6 transform chains + one batched projection) vs nuscenes-devkit's
    ``map_pointcloud_to_image`` called once per camera (what a per-camera loader does);
    plus the full ``NuScenesPretrainDataset`` sample (adds decoding 6 JPEGs);
  * voxelisation of the real SemanticKITTI scan (seq 07 frame 964, 120,485 points);
  * DCAS probabilities at P = 100,000 pairs (ranges from the KITTI scan, 17 random labels): ours
    (KDE on the range-bin histogram) vs the reference formulation (KDE evaluated on the U unique
    bins against all P values, a U x P matrix). Peak memory is the rise of the process peak RSS
    (``VmHWM`` after resetting it through ``/proc/self/clear_refs``), so torch allocations count.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.harness import (
    atomic_json,
    environment,
    machine,
    run_module,
    shared_data,
    time_call,
)


def _timeit(fn: Callable[[], Any], repeat: int) -> float:
    """Median seconds of ``repeat`` calls after one warm-up (``harness.time_call``)."""
    return time_call(fn, repeats=repeat, warmup=1).median


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def _peak_mb(fn: Callable[[], Any]) -> float:
    """Rise of the peak resident set while running ``fn`` (Linux), in MiB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    except OSError:
        return float("nan")
    base = _status_kb("VmRSS")
    fn()
    return (_status_kb("VmHWM") - base) / 1024.0


def bench_pairing(data: Path, repeat: int) -> list[dict[str, Any]]:
    from olivine_data.datasets.nuscenes import (
        NUSCENES_CAMERAS,
        NuScenesPretrainDataset,
        lidar_to_camera_matrix,
        load_nuscenes,
        read_nuscenes_points,
    )
    from olivine_data.projection import compose_projection, project_to_cameras

    root = data / "nuscenes" / "mmdet3d-demo"
    nusc = load_nuscenes(root, "v1.0-mini")
    ds = NuScenesPretrainDataset(root, "v1.0-mini", nusc=nusc)
    sample = nusc.get("sample", ds.sample_tokens[0])
    lidar_sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    cams = [nusc.get("sample_data", sample["data"][c]) for c in NUSCENES_CAMERAS]

    def ours() -> int:
        pts = read_nuscenes_points(root / lidar_sd["filename"])
        proj = np.stack(
            [
                compose_projection(
                    np.array(
                        nusc.get("calibrated_sensor", c["calibrated_sensor_token"])[
                            "camera_intrinsic"
                        ]
                    ),
                    lidar_to_camera_matrix(nusc, lidar_sd, c),
                )
                for c in cams
            ]
        )
        sizes = [(c["height"], c["width"]) for c in cams]
        return int(project_to_cameras(pts[:, :3], proj, sizes).point_indices.size)

    def devkit() -> int:
        return sum(
            nusc.explorer.map_pointcloud_to_image(lidar_sd["token"], c["token"], min_dist=1.0)[
                0
            ].shape[1]
            for c in cams
        )

    t_ours = _timeit(ours, repeat)
    t_dev = _timeit(devkit, repeat)
    t_full = _timeit(lambda: ds.load(ds.sample_tokens[0]), max(1, repeat // 2))
    n_ours, n_dev = ours(), devkit()
    return [
        {
            "name": "pairing, 1 nuScenes keyframe, 6 cameras (ours, vectorised)",
            "seconds": t_ours,
            "reference": "devkit map_pointcloud_to_image x6",
            "reference_seconds": t_dev,
            "speedup": t_dev / t_ours,
            "note": f"{n_ours} pairs (devkit: {n_dev}, 1-px margin)",
        },
        {
            "name": "full PretrainSample (pairing + 6 JPEG decodes)",
            "seconds": t_full,
            "reference": "",
            "reference_seconds": None,
            "speedup": None,
            "note": "",
        },
    ]


def bench_voxelize(data: Path, repeat: int) -> list[dict[str, Any]]:
    from olivine_data.voxelize import voxelize

    scan = data / "semantickitti/keonhee-han-KI_DT/sequences/07/velodyne/000964.bin"
    xyz = np.fromfile(scan, np.float32).reshape(-1, 4)[:, :3]
    rows = []
    for mode, size in (("cylindrical", (0.1, 1.0, 0.1)), ("cartesian", (0.1, 0.1, 0.1))):
        t = _timeit(lambda m=mode, s=size: voxelize(xyz, m, s), repeat)
        v = voxelize(xyz, mode, size)
        rows.append(
            {
                "name": f"voxelize {mode} {size}, {len(xyz):,} points",
                "seconds": t,
                "reference": "",
                "reference_seconds": None,
                "speedup": None,
                "note": f"{v.num_voxels:,} voxels",
            }
        )
    return rows


def reference_dcas(range_bins: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The reference formulation: KDE at the U unique bins against all P values (U x P)."""
    r = range_bins.to(torch.float64)
    p = r.numel()
    h = 1.06 * float(r.std()) * p ** (-0.2)
    uniq, inv = torch.unique(r, return_inverse=True)
    k = torch.exp(-0.5 * ((uniq[:, None] - r[None, :]) / h) ** 2) / (h * math.sqrt(2 * math.pi))
    f = k.mean(dim=1)[inv]
    _, lab_inv, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    w = 1.0 / (f * counts.to(torch.float64)[lab_inv])
    return w / w.sum()


def _dcas_inputs(data: Path, num_pairs: int) -> tuple[torch.Tensor, torch.Tensor]:
    scan = data / "semantickitti/keonhee-han-KI_DT/sequences/07/velodyne/000964.bin"
    xyz = np.fromfile(scan, np.float32).reshape(-1, 4)[:, :3].astype(np.float64)
    g = np.random.default_rng(0)
    idx = g.choice(len(xyz), num_pairs, replace=num_pairs > len(xyz))
    r = torch.from_numpy(np.floor(np.hypot(xyz[idx, 0], xyz[idx, 1]) / 0.1).astype(np.int64))
    y = torch.from_numpy(g.integers(0, 17, num_pairs))
    return r, y


def _peak_in_subprocess(data: Path, num_pairs: int, which: str) -> float:
    """Peak-RSS rise of one call, in a fresh interpreter (no allocator reuse between rows)."""
    args = ("--data", str(data), "--pairs", str(num_pairs), "--peak-only", which)
    out = run_module(__spec__.name, *args, capture=True)
    return float(out.stdout.strip().splitlines()[-1])


def _peak_only(data: Path, num_pairs: int, which: str) -> None:
    from olivine_data.sampling import dcas_probabilities

    r, y = _dcas_inputs(data, num_pairs)
    fn = dcas_probabilities if which == "ours" else reference_dcas
    fn(r[:1000], y[:1000])  # load kernels and code paths on a small input first
    print(_peak_mb(lambda: fn(r, y)))


def bench_dcas(data: Path, repeat: int, num_pairs: int) -> list[dict[str, Any]]:
    from olivine_data.sampling import dcas_probabilities

    r, y = _dcas_inputs(data, num_pairs)
    ours = dcas_probabilities(r, y)
    ref = reference_dcas(r, y)
    rel = float(((ours - ref).abs() / ref).max())
    t_ours = _timeit(lambda: dcas_probabilities(r, y), repeat)
    t_ref = _timeit(lambda: reference_dcas(r, y), max(1, repeat // 2))
    m_ours = _peak_in_subprocess(data, num_pairs, "ours")
    m_ref = _peak_in_subprocess(data, num_pairs, "reference")
    u = int(torch.unique(r).numel())
    return [
        {
            "name": f"DCAS probabilities, P = {num_pairs:,} ({u} range bins)",
            "seconds": t_ours,
            "reference": "reference U x P KDE",
            "reference_seconds": t_ref,
            "speedup": t_ref / t_ours,
            "peak_mb": m_ours,
            "reference_peak_mb": m_ref,
            "note": f"max rel. diff {rel:.1e}",
        }
    ]


def _fmt(x: float | None, unit: str = "") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if unit == "s":
        return f"{x * 1e3:.1f} ms"
    if unit == "MiB":
        return f"{x:.1f} MiB"
    return f"{x:.1f}x"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None, help="default: harness.shared_data()")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--pairs", type=int, default=100_000)
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    ap.add_argument("--peak-only", choices=("ours", "reference"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.data is None:
        args.data = shared_data()
    if args.peak_only:
        _peak_only(args.data, args.pairs, args.peak_only)
        return 0
    if not (args.data / "README.md").is_file():
        print(f"real data not found at {args.data} (use --data)", file=sys.stderr)
        return 2
    rows = (
        bench_pairing(args.data, args.repeat)
        + bench_voxelize(args.data, args.repeat)
        + bench_dcas(args.data, args.repeat, args.pairs)
    )
    env = {
        **machine(),
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "code": environment(),
    }
    print(f"environment: {env}\n")
    print(
        "| benchmark | ours | reference | reference time | ratio | peak mem (ours / ref) | note |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        mem = ""
        if "peak_mb" in r:
            mem = f"{_fmt(r['peak_mb'], 'MiB')} / {_fmt(r['reference_peak_mb'], 'MiB')}"
        print(
            f"| {r['name']} | {_fmt(r['seconds'], 's')} | {r['reference']} | "
            f"{_fmt(r['reference_seconds'], 's')} | {_fmt(r['speedup'])} | {mem} | {r['note']} |"
        )
    if args.json is not None:
        atomic_json(args.json, {"environment": env, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
