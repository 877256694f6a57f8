"""Section ``minkunet``: ``create_point_encoder("minkunet34c")`` forward + backward on the real
nuScenes sweep, voxelised by the package (``harness.sparse_input``: ``olivine_data.voxelize``,
cylindrical 0.1 m x 1 deg x 0.1 m, intensity feature) and replicated to a batch; fp32 and bf16
(CUDA: also fp16) autocast, on the chosen sparse backend (with spconv, the torch backend too).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.gpu.bench import Bench
from benchmarks.harness import nuscenes_sweep, sparse_input

__all__ = ["bench_minkunet", "load_sweep"]


def load_sweep(quick: bool) -> tuple[np.ndarray, str]:
    """The real sweep (``harness.nuscenes_sweep``); ``quick``: every 32nd point (~400 voxels)."""
    pts, name = nuscenes_sweep()
    if quick:
        pts = pts[::32]  # ~400 voxels: minkunet34c fwd+bwd ~1 s on one CPU thread
    return np.ascontiguousarray(pts), name


def bench_minkunet(bench: Bench) -> dict[str, Any]:
    import torch

    from olivine_models import create_point_encoder

    points, name = load_sweep(bench.quick)
    batch = 2 if bench.quick else 4
    repeats = 2 if bench.quick else 10
    coords_np, feats_np, shape = sparse_input(points, batch)  # olivine_data.voxelize
    coords = torch.from_numpy(coords_np).to(bench.device)
    feats = torch.from_numpy(feats_np).to(bench.device)
    backends = [bench.sparse_backend] + (["torch"] if bench.sparse_backend == "spconv" else [])
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    precisions: list[tuple[str, Any]] = [("fp32", None), ("bf16", torch.bfloat16)]
    if bench.cuda:
        precisions.append(("fp16", torch.float16))
    state: dict[str, Any] | None = None
    for backend, (label, dtype) in [(b, p) for b in backends for p in precisions]:
        if bench.over():
            notes.append(f"{backend} {label}: skipped, section budget spent")
            continue
        torch.manual_seed(0)
        model = create_point_encoder("minkunet34c", backend=backend)
        if state is None:
            state = model.state_dict()
        model.load_state_dict(state)  # the same weights on every backend
        model.to(bench.device)

        def step(dtype: Any = dtype, model: Any = model) -> None:
            model.zero_grad(set_to_none=True)
            with torch.autocast(
                bench.device.type, dtype=dtype or torch.float32, enabled=dtype is not None
            ):
                out = model(coords, feats, shape, batch)
            out.float().square().mean().backward()

        try:
            bench.reset_peak()
            t = bench.timeit(step, repeats, warmup=1 if bench.quick else 3)
        except Exception as exc:  # e.g. spconv's CPU kernels have no bf16 (KeyError)
            msg = f"{type(exc).__name__}: {exc}"[:300]
            notes.append(f"{label} autocast unsupported on {bench.device.type}: {msg}")
            rows.append(
                {
                    "model": "minkunet34c",
                    "backend": backend,
                    "precision": f"{label} autocast",
                    "unsupported": msg,
                }
            )
            continue
        row = {
            "model": "minkunet34c",
            "backend": backend,
            "precision": label if dtype is None else f"{label} autocast",
            "batch": batch,
            "points_per_scan": int(points.shape[0]),
            "voxels": int(coords.shape[0]),
            "median_s": t["median_s"],
            "min_s": t["min_s"],
            "repeats": t["repeats"],
            "scans_per_s": batch / t["median_s"],
            "peak_mib": bench.peak_mib(),
        }
        if "truncated" in t:
            row["truncated"] = t["truncated"]
            notes.append(f"{label}: {t['truncated']}")
        rows.append(row)
    return {"rows": rows, "notes": notes, "sweep": name}
