"""Sparse backends on CPU: the PyTorch-only MinkUNet against spconv, same weights, one run.

For each of ``minkunet34c`` / ``minkunet14`` / ``minkunet_tiny``: forward + backward (loss
``out.square().mean()``, train mode) on the real nuScenes LIDAR_TOP sweep (34,688 points,
cylindrical voxels 0.1 m x 1 deg x 0.1 m, intensity feature, batch 1).

* Time: both backends in this process with one state dict, measured alternately (spconv, torch,
  spconv, ...) after warm-up; the median of ``--repeats`` runs each, and the ratio torch / spconv.
* Memory: each (model, backend) runs once more in its own subprocess, so that peak RSS
  (``ru_maxrss``) belongs to it alone; "RSS over baseline" is that peak minus the RSS after
  imports, input loading and model build.
* Where the torch backend's time goes: ``torch.profiler`` over one forward + backward, bucketed
  into kernel-map building (the ``sparse_torch.kernel_map`` label), gather (``index_select``),
  GEMM (``mm``), scatter (``index_add_``) and everything else (BatchNorm, ReLU, concatenation,
  autograd).

Without spconv installed only the torch backend is measured. Usage::

    python -m benchmarks.sparse_backend_bench [--repeats 5] [--threads 1] [--models a,b]
        [--no-memory] [--json PATH]

Requires the real data (``harness.shared_data``: ``$OLIVINE_SHARED_DATA`` or ``../shared/data``);
the sweep is read and voxelised by the package (``harness.nuscenes_sweep`` / ``sparse_input``:
``olivine_data.voxelize``). Times: ``harness.round_robin``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    REPO_ROOT,
    atomic_json,
    current_rss_mib,
    environment,
    machine,
    nuscenes_sweep,
    peak_rss_mib,
    round_robin,
    run_module,
    sparse_input,
)

MODELS = ("minkunet34c", "minkunet14", "minkunet_tiny")
DEFAULT_JSON = REPO_ROOT / "benchmarks" / "results" / "sparse_backend.json"


def load_sweep() -> tuple[Any, Any, tuple[int, int, int], int]:
    """The real nuScenes sweep as torch (coords, feats), spatial shape and its point count."""
    import torch

    points, _ = nuscenes_sweep()
    coords, feats, shape = sparse_input(points, batch=1)
    return torch.from_numpy(coords), torch.from_numpy(feats), shape, len(points)


def _step(model: Any, coords: Any, feats: Any, shape: tuple[int, int, int]) -> None:
    model.zero_grad(set_to_none=True)
    out = model(coords, feats, shape, 1)
    out.square().mean().backward()


def memory_child(model_name: str, backend: str, threads: int) -> dict[str, float]:
    """Peak RSS of one forward + backward (run in a subprocess of its own)."""
    import torch

    torch.set_num_threads(threads)
    from olivine_models import create_point_encoder

    coords, feats, shape, _ = load_sweep()
    torch.manual_seed(0)
    model = create_point_encoder(model_name, backend=backend)
    base = current_rss_mib()
    _step(model, coords, feats, shape)
    _step(model, coords, feats, shape)
    return {"rss_peak_mib": peak_rss_mib(), "rss_base_mib": base}


def profile_torch(model: Any, coords: Any, feats: Any, shape: tuple[int, int, int]) -> dict:
    """Milliseconds of one torch-backend forward + backward, by where they go."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from olivine_models.point.sparse_torch import KERNEL_MAP_LABEL

    _step(model, coords, feats, shape)
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        _step(model, coords, feats, shape)
    wall = (time.perf_counter() - t0) * 1e3
    buckets = {"kernel_map": 0.0, "gather": 0.0, "gemm": 0.0, "scatter": 0.0}
    total = 0.0
    for ev in prof.key_averages():
        ms = ev.self_cpu_time_total / 1e3
        if ev.key == KERNEL_MAP_LABEL:
            buckets["kernel_map"] = ev.cpu_time_total / 1e3  # everything under the label
            continue
        total += ms
        if ev.key == "aten::mm":
            buckets["gemm"] += ms
        elif ev.key == "aten::index_select":
            buckets["gather"] += ms
        elif ev.key in ("aten::index_add_", "aten::scatter_add_", "aten::index_add"):
            buckets["scatter"] += ms
    # ops under the kernel-map label were counted in `total` too: take them out of "other"
    buckets["other"] = max(
        total - buckets["gemm"] - buckets["gather"] - buckets["scatter"] - buckets["kernel_map"],
        0.0,
    )
    buckets["profiled_ms"] = total
    buckets["wall_ms_under_profiler"] = wall
    del torch
    return buckets


def run(repeats: int, threads: int, models: list[str]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    from olivine_models import create_point_encoder

    has_spconv = importlib.util.find_spec("spconv") is not None
    backends = ["spconv", "torch"] if has_spconv else ["torch"]
    coords, feats, shape, npts = load_sweep()
    rows = []
    for name in models:
        torch.manual_seed(0)
        nets = {b: create_point_encoder(name, backend=b) for b in backends}
        state = nets[backends[0]].state_dict()
        for net in nets.values():
            net.load_state_dict(state)
        # warm-up (spconv's first call, allocator growth), then alternating timed rounds
        times = round_robin(
            {b: (lambda n=nets[b]: _step(n, coords, feats, shape)) for b in backends}, repeats
        )
        row: dict[str, Any] = {
            "model": name,
            "points": npts,
            "voxels": int(coords.shape[0]),
            "params": sum(p.numel() for p in nets["torch"].parameters()),
        }
        for b in backends:
            row[f"{b}_median_s"] = times[b].median
            row[f"{b}_min_s"] = times[b].best
        if has_spconv:
            row["ratio_torch_over_spconv"] = row["torch_median_s"] / row["spconv_median_s"]
        row["torch_profile_ms"] = profile_torch(nets["torch"], coords, feats, shape)
        rows.append(row)
        print(f"done {name}", file=sys.stderr, flush=True)
    return {"rows": rows, "backends": backends}


def table(rows: list[dict[str, Any]], backends: list[str]) -> str:
    both = "spconv" in backends
    head = "| model | voxels | params |"
    rule = "|---|---:|---:|"
    if both:
        head += " spconv s | torch s | torch / spconv | spconv RSS MiB | torch RSS MiB |"
        rule += "---:|---:|---:|---:|---:|"
    else:
        head += " torch s | torch RSS MiB |"
        rule += "---:|---:|"
    lines = [head, rule]
    for r in rows:
        line = f"| {r['model']} | {r['voxels']:,} | {r['params']:,} |"
        if both:
            line += (
                f" {r['spconv_median_s']:.3f} | {r['torch_median_s']:.3f} | "
                f"{r['ratio_torch_over_spconv']:.2f} | "
                f"{r.get('spconv_rss_mib', float('nan')):.0f} | "
                f"{r.get('torch_rss_mib', float('nan')):.0f} |"
            )
        else:
            line += f" {r['torch_median_s']:.3f} | {r.get('torch_rss_mib', float('nan')):.0f} |"
        lines.append(line)
    lines += [
        "",
        "| model (torch backend) | kernel maps ms | gather ms | GEMM ms | scatter ms | other ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        p = r["torch_profile_ms"]
        lines.append(
            f"| {r['model']} | {p['kernel_map']:.0f} | {p['gather']:.0f} | {p['gemm']:.0f} | "
            f"{p['scatter']:.0f} | {p['other']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per backend")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated models")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"({DEFAULT_JSON})")
    parser.add_argument("--no-memory", action="store_true", help="skip the RSS subprocesses")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)  # model:backend
    parser.add_argument("--child-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child is not None:
        name, backend = args.memory_child.split(":")
        atomic_json(args.child_out, memory_child(name, backend, args.threads))
        return 0
    models = [m for m in args.models.split(",") if m]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {unknown}; known: {list(MODELS)}")
    t0 = time.perf_counter()
    # Memory first, while this process is still small: a child's ru_maxrss starts at its parent's
    # RSS at fork time (Linux keeps it across exec), so it must be forked before torch is loaded.
    memory: dict[str, dict[str, float]] = {}
    backends = ["spconv", "torch"] if importlib.util.find_spec("spconv") else ["torch"]
    if not args.no_memory:
        with tempfile.TemporaryDirectory() as tmp:
            for name in models:
                for b in backends:
                    out = Path(tmp) / f"{name}-{b}.json"
                    cmd = ["--memory-child", f"{name}:{b}", "--threads", str(args.threads)]
                    run_module(__spec__.name, *cmd, "--child-out", str(out))
                    memory[f"{name}:{b}"] = json.loads(out.read_text())
    result = run(args.repeats, args.threads, models)
    for row in result["rows"]:
        for b in result["backends"]:
            mem = memory.get(f"{row['model']}:{b}")
            if mem is not None:
                row[f"{b}_rss_mib"] = mem["rss_peak_mib"] - mem["rss_base_mib"]
                row[f"{b}_rss_peak_mib"] = mem["rss_peak_mib"]
    mach = machine()
    result.update(
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        threads=args.threads,
        repeats=args.repeats,
        cpu_count=mach["cores"],
        load_average=mach["load_average"],
        python=mach["python"],
        torch=mach["torch"],
        code=environment(),
        elapsed_s=time.perf_counter() - t0,
    )
    if "spconv" in result["backends"]:
        import spconv

        result["spconv"] = getattr(spconv, "__version__", "?")
    print(table(result["rows"], result["backends"]))
    print(
        f"\n(CPU, {args.threads} torch thread(s), {os.cpu_count()} cores visible, load average "
        f"{result['load_average'][0]:.1f} at the end; RSS = peak RSS over the post-build baseline "
        "of a separate process per cell)"
    )
    atomic_json(args.json, result)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
