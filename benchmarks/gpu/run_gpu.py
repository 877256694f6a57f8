"""Every GPU measurement of the project in one invocation (<= 10 minutes on one H100/H200).

Sections, in priority order (a later section is skipped when the total budget runs out):

* ``losses``: forward + backward of ``L_PPNCE + L_sup`` (``olivine_losses.info_nce`` +
  ``semantic_contrastive`` on two independent (M, D) feature pairs) at M=4096, D=64, dense and
  chunked, fp32 and bf16 inputs, against the naive materialised-``exp`` reference of
  ``benchmarks/losses_bench.py`` and a matmul + logsumexp floor; then M=32768 (chunked, and dense /
  naive where their predicted peak fits the free memory). Median wall time of N runs around
  ``torch.cuda.synchronize()``, peak memory from ``torch.cuda.max_memory_allocated``.
* ``minkunet``: ``create_point_encoder("minkunet34c")`` forward + backward on the real nuScenes
  sweep (``$OLIVINE_SHARED_DATA/nuscenes/mmdet3d-demo/samples/LIDAR_TOP``), voxelised with
  ``olivine_data.voxelize`` (``harness.sparse_input``; cylindrical 0.1 m x 1 deg x 0.1 m,
  intensity feature), replicated to batch 4; fp32 and bf16 autocast; scans/s and peak memory.
  Runs on the sparse backend of ``--sparse-backend`` (``auto``: spconv when it imports, else the
  PyTorch-only ``olivine_models.point.sparse_torch``); when that is spconv, the torch backend is
  measured too.
* ``pretrain_demo``: ``olivine_train`` pretraining recipe (``run_pretrain``) on the synthetic demo
  world, ``run.device=cuda``, ``run.precision=bf16``, ``optim.max_steps`` steps; steps/s, scans/s,
  peak memory. The numbers are the recipe's: data loading, pair sampling, the teacher, all three
  losses, the optimiser and the per-epoch checkpoint are inside.
* ``pretrain_minkunet34c``: the same with the paper's networks (minkunet34c student,
  resnet50_dilated teacher, random weights), batch 4, on the same world.
* ``models_gpu``: CUDA only: ``benchmarks/gpu/models_gpu.py``'s ``bench_minkunet`` (adds fp16 and
  the CPU-vs-GPU output agreement) and ``bench_sam`` (SAM ViT-H encoder and box labeler).

Each section is a module of ``benchmarks.gpu.sections``; the shared state (device, budgets,
timing through ``benchmarks.harness``) is ``benchmarks.gpu.bench.Bench``, the table
``benchmarks.gpu.report``.

Budget guard: every section has a time budget (capped by what is left of ``--budget-s``); timing
loops stop repeating and pretraining stops stepping once it is spent, and the JSON says so
(``status: "partial"`` plus a note). The JSON is rewritten (atomically) after each section, so a
killed run still leaves the finished sections on disk.

Usage::

    python -m benchmarks.gpu.run_gpu [--json benchmarks/results/gpu.json] [--budget-s 540]
    python -m benchmarks.gpu.run_gpu --device cpu --quick     # CPU smoke run of every code path

(from the repository root, with the four packages installed).

Without ``--device`` the script needs CUDA and exits with code 2 when there is none. Without
spconv installed (no wheel for CUDA >= 12.8 / 13, or not brought to an offline machine) every
MinkUNet runs on the PyTorch-only backend; ``--sparse-backend torch`` forces it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.gpu.bench import Bench, gpu_environment, watchdog
from benchmarks.gpu.report import render_markdown
from benchmarks.gpu.sections.losses import bench_losses
from benchmarks.gpu.sections.minkunet import bench_minkunet
from benchmarks.gpu.sections.models import bench_models_gpu
from benchmarks.gpu.sections.pretrain import bench_pretrain
from benchmarks.harness import REPO_ROOT, atomic_json

DEFAULT_JSON = REPO_ROOT / "benchmarks" / "results" / "gpu.json"
SECTIONS = ("losses", "minkunet", "pretrain_demo", "pretrain_minkunet34c", "models_gpu")
# seconds per section on a GPU (full run); quick CPU runs use QUICK_BUDGETS
BUDGETS = {
    "losses": 90.0,
    "minkunet": 75.0,
    "pretrain_demo": 110.0,
    "pretrain_minkunet34c": 120.0,
    "models_gpu": 120.0,
}
QUICK_BUDGETS = {k: 90.0 for k in SECTIONS}  # generous: shared, loaded CPUs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--device",
        default=None,
        help="cuda (default), cuda:N or cpu (cpu: a smoke run, use with --quick)",
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes: verifies every code path")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"default {DEFAULT_JSON}")
    p.add_argument(
        "--markdown",
        type=Path,
        default=None,
        help="where the markdown table goes (default: the --json path with suffix .md)",
    )
    p.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="total time budget in seconds (default 540, quick 300)",
    )
    p.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)}",
    )
    p.add_argument(
        "--sparse-backend",
        choices=("auto", "spconv", "torch"),
        default="auto",
        help="MinkUNet backend: auto (spconv when it imports, else torch), spconv or torch",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: 1 on CPU, torch's default on CUDA)",
    )
    p.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="where the synthetic world and runs go (default: a temporary folder); "
        "an existing world there is reused",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        print(f"run_gpu.py: unknown sections {unknown}; known: {list(SECTIONS)}", file=sys.stderr)
        return 2
    import torch

    device = args.device or "cuda"
    if device.startswith("cuda") and not torch.cuda.is_available():
        print(
            "run_gpu.py: no CUDA device available (torch.cuda.is_available() is False; torch "
            f"{torch.__version__}, built for CUDA {torch.version.cuda}). This benchmark needs a "
            "GPU; for a CPU smoke run of every code path use: "
            "python -m benchmarks.gpu.run_gpu --device cpu --quick",
            file=sys.stderr,
        )
        return 2
    threads = args.threads or (1 if device == "cpu" else None)
    if threads:
        # a shared, loaded CPU makes multi-threaded OpenMP kernels spin: one thread is the
        # steadier smoke-run setting
        torch.set_num_threads(threads)
    budget = args.budget_s if args.budget_s is not None else (300.0 if args.quick else 540.0)
    bench = Bench(device, args.quick, budget)
    from olivine_models.point.backends import resolve_sparse_backend

    bench.sparse_backend = resolve_sparse_backend(args.sparse_backend)
    budgets = QUICK_BUDGETS if args.quick else BUDGETS
    env = gpu_environment(bench)
    print(
        f"[run_gpu] device {env['device']}: {env['card']}; torch {env['torch']}, "
        f"CUDA {env['cuda']}, cuDNN {env['cudnn']}; sparse backend {env['sparse_backend']}",
        flush=True,
    )

    result: dict[str, Any] = {
        "schema": 1,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv[1:] if argv is None else list(argv),
        "quick": args.quick,
        "env": env,
        "mem_kind": bench.mem_kind,
        "budget_s": budget,
        "elapsed_s": 0.0,
        "sections": {},
    }
    if args.quick and bench.cuda:
        print("[run_gpu] --quick on CUDA: smoke sizes, not reportable numbers", flush=True)

    tmp_ctx = (
        contextlib.nullcontext(str(args.work_dir))
        if args.work_dir is not None
        else tempfile.TemporaryDirectory(prefix="olivine-gpu-bench-")
    )
    with tmp_ctx as work_name, watchdog(budget + 45):
        work = Path(work_name)
        work.mkdir(parents=True, exist_ok=True)
        runners: dict[str, Callable[[], dict[str, Any]]] = {
            "losses": lambda: bench_losses(bench),
            "minkunet": lambda: bench_minkunet(bench),
            "pretrain_demo": lambda: bench_pretrain(bench, work, paper_nets=False),
            "pretrain_minkunet34c": lambda: bench_pretrain(bench, work, paper_nets=True),
            "models_gpu": lambda: bench_models_gpu(bench),
        }
        for name in sections:
            left = bench.remaining()
            want = budgets[name]
            entry: dict[str, Any]
            if left < min(want, 20.0 if not args.quick else 1.0):
                entry = {
                    "status": "skipped",
                    "rows": [],
                    "budget_s": want,
                    "notes": [f"skipped: {left:.0f} s left of the total budget"],
                }
            else:
                bench.start_section(min(want, left))
                print(f"[run_gpu] {name} (budget {min(want, left):.0f} s) ...", flush=True)
                t0 = time.perf_counter()
                try:
                    entry = runners[name]()
                    entry.setdefault("status", "ok")
                    if entry["status"] == "ok" and any("truncated" in r for r in entry["rows"]):
                        entry["status"] = "partial"
                    if entry["status"] == "ok" and any("skipped" in n for n in entry["notes"]):
                        entry["status"] = "partial"
                    if not any("unsupported" not in r for r in entry["rows"]):
                        entry["status"] = "skipped"  # nothing was measured
                except Exception as exc:  # one failing section must not lose the others
                    entry = {
                        "status": "error",
                        "rows": [],
                        "notes": [],
                        "error": f"{type(exc).__name__}: {exc}"[:2000],
                        "traceback": traceback.format_exc()[-4000:],
                    }
                    print(f"[run_gpu] {name} failed: {entry['error']}", file=sys.stderr, flush=True)
                entry["elapsed_s"] = time.perf_counter() - t0
                entry["budget_s"] = min(want, left)
                if bench.cuda:
                    torch.cuda.empty_cache()
            result["sections"][name] = entry
            result["elapsed_s"] = bench.total.used()
            atomic_json(args.json, result)

    markdown = render_markdown(result)
    md_path = args.markdown or args.json.with_suffix(".md")
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(markdown + "\n")
    print()
    print(markdown)
    print(f"\n[run_gpu] wrote {args.json} and {md_path}")
    failed = [k for k, v in result["sections"].items() if v["status"] == "error"]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
