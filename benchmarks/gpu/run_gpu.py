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
  ``olivine_data.voxelize.voxelize`` (cylindrical 0.1 m x 1 deg x 0.1 m, intensity feature),
  replicated to batch 4; fp32 and bf16 autocast; scans/s and peak memory. Runs on the sparse
  backend of ``--sparse-backend`` (``auto``: spconv when it imports, else the PyTorch-only
  ``olivine_models.point.sparse_torch``); when that is spconv, the torch backend is measured too.
* ``pretrain_demo``: ``olivine_train`` pretraining recipe (``run_pretrain``) on the synthetic demo
  world, ``run.device=cuda``, ``run.precision=bf16``, ``optim.max_steps`` steps; steps/s, scans/s,
  peak memory. The numbers are the recipe's: data loading, pair sampling, the teacher, all three
  losses, the optimiser and the per-epoch checkpoint are inside.
* ``pretrain_minkunet34c``: the same with the paper's networks (minkunet34c student,
  resnet50_dilated teacher, random weights), batch 4, on the same world.
* ``models_gpu``: CUDA only: ``benchmarks/gpu/models_gpu.py``'s ``bench_minkunet`` (adds fp16 and
  the CPU-vs-GPU output agreement) and ``bench_sam`` (SAM ViT-H encoder and box labeler).

Budget guard: every section has a time budget (capped by what is left of ``--budget-s``); timing
loops stop repeating and pretraining stops stepping once it is spent, and the JSON says so
(``status: "partial"`` plus a note). The JSON is rewritten (atomically) after each section, so a
killed run still leaves the finished sections on disk.

Usage::

    python benchmarks/gpu/run_gpu.py [--json benchmarks/results/gpu.json] [--budget-s 540]
    python benchmarks/gpu/run_gpu.py --device cpu --quick     # CPU smoke run of every code path

Without ``--device`` the script needs CUDA and exits with code 2 when there is none. Without
spconv installed (no wheel for CUDA >= 12.8 / 13, or not brought to an offline machine) every
MinkUNet runs on the PyTorch-only backend; ``--sparse-backend torch`` forces it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import math
import os
import platform
import resource
import signal
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
# Installed packages win; the source tree is the fallback (e.g. a bare GPU machine that has torch
# but where the four packages were not pip-installed).
for _src in sorted((ROOT / "packages").glob("olivine-*/src")):
    if str(_src) not in sys.path:
        sys.path.append(str(_src))
DATA = Path(os.environ.get("OLIVINE_SHARED_DATA", ROOT.parent / "shared" / "data"))
SWEEP_DIR = "nuscenes/mmdet3d-demo/samples/LIDAR_TOP"
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "gpu.json"
TAU = 0.07
NUM_CLASSES = 17

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


class BudgetExceeded(RuntimeError):
    """Raised (from a pretraining step callback) when a section's time budget is spent."""


class HardDeadline(RuntimeError):
    """Raised by the SIGALRM watchdog when the whole invocation runs past its deadline."""


# ----------------------------------------------------------------------------- helpers


class Bench:
    """Device, sync, peak memory and the time budget of the current section."""

    sparse_backend = "torch"  # set in main() from --sparse-backend

    def __init__(self, device: str, quick: bool, budget_s: float) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.quick = quick
        self.t_start = time.perf_counter()
        self.deadline = self.t_start + budget_s
        self.section_deadline = self.deadline
        self.notes: list[str] = []

    # time ---------------------------------------------------------------
    def remaining(self) -> float:
        return self.deadline - time.perf_counter()

    def section_left(self) -> float:
        return min(self.section_deadline, self.deadline) - time.perf_counter()

    def over(self) -> bool:
        return self.section_left() <= 0

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    # memory -------------------------------------------------------------
    @property
    def mem_kind(self) -> str:
        if self.cuda:
            return "torch.cuda.max_memory_allocated (per case)"
        return "process peak RSS, ru_maxrss (CPU: whole process, monotone, not per case)"

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats(self.device)

    def allocated_mib(self) -> float:
        if self.cuda:
            return self.torch.cuda.memory_allocated(self.device) / 2**20
        return 0.0

    def peak_mib(self) -> float:
        if self.cuda:
            return self.torch.cuda.max_memory_allocated(self.device) / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux

    def free_bytes(self) -> float:
        if self.cuda:
            return float(self.torch.cuda.mem_get_info(self.device)[0])
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024.0
        return 0.0

    # timing -------------------------------------------------------------
    def timeit(self, fn: Callable[[], None], repeats: int, warmup: int) -> dict[str, Any]:
        """Median / min seconds of ``repeats`` calls after ``warmup``; stops early (keeping at
        least one measured call) when the section budget is spent.
        """
        for _ in range(warmup):
            fn()
        self.sync()
        times: list[float] = []
        for _ in range(repeats):
            if times and self.over():
                break
            t0 = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - t0)
        out: dict[str, Any] = {
            "median_s": statistics.median(times),
            "min_s": min(times),
            "repeats": len(times),
        }
        if len(times) < repeats:
            out["truncated"] = f"budget spent: {len(times)} of {repeats} repeats"
        return out


def write_json_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, default=str)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _cpu_name() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def environment(bench: Bench) -> dict[str, Any]:
    torch = bench.torch
    env: dict[str, Any] = {
        "device": str(bench.device),
        "card": torch.cuda.get_device_name(bench.device) if bench.cuda else _cpu_name(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(),
        "host_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if bench.cuda:
        props = torch.cuda.get_device_properties(bench.device)
        env["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        env["capability"] = f"{props.major}.{props.minor}"
        env["bf16_supported"] = bool(torch.cuda.is_bf16_supported())
    env["sparse_backend"] = bench.sparse_backend
    if bench.sparse_backend == "spconv":
        import spconv

        env["spconv"] = getattr(spconv, "__version__", "?")
    return env


# ----------------------------------------------------------------------------- losses


def _loss_step() -> tuple[Callable[..., None], str]:
    """One fwd+bwd of a loss variant (floor / dense / chunked / naive reference), taken from
    benchmarks/losses_bench.py so that CPU and GPU benchmarks time the same code.
    """
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from losses_bench import TAU as bench_tau
        from losses_bench import step
    finally:
        sys.path.pop(0)
    if bench_tau != TAU:
        raise RuntimeError(f"losses_bench.TAU={bench_tau} differs from this script's {TAU}")
    return step, "benchmarks/losses_bench.py"


def bench_losses(bench: Bench) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    step, naive_src = _loss_step()
    quick = bench.quick
    d = 64
    m_small, chunk_small = (512, 128) if quick else (4096, 1024)
    m_large, chunk_large = (1024, 256) if quick else (32768, 4096)
    repeats_small, repeats_large = (2, 2) if quick else (20, 5)
    dtypes = (("fp32", torch.float32), ("bf16", torch.bfloat16))

    def inputs(m: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        x = {
            n: F.normalize(torch.randn(m, d, generator=g), dim=1)
            .to(bench.device, dtype)
            .requires_grad_(True)
            for n in ("k_pp", "q_pp", "k_sem", "q_sem")
        }
        x["labels"] = torch.randint(0, NUM_CLASSES, (m,), generator=g).to(bench.device)
        return x

    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    # peak-memory growth per (variant, dtype) at m_small, used to predict the m_large peak
    small_peak: dict[tuple[str, str], float] = {}

    def run(variant: str, m: int, chunk: int, dname: str, dtype: torch.dtype, reps: int) -> None:
        x = inputs(m, dtype)
        bench.sync()
        bench.reset_peak()
        base = bench.allocated_mib()
        step(variant, x, chunk)  # the first call also serves as warm-up
        bench.sync()
        peak = bench.peak_mib()
        t = bench.timeit(lambda: step(variant, x, chunk), reps, warmup=1)
        row = {
            "M": m,
            "D": d,
            "dtype": dname,
            "variant": variant,
            "chunk": chunk if variant == "chunked" else None,
            "median_ms": 1e3 * t["median_s"],
            "min_ms": 1e3 * t["min_s"],
            "repeats": t["repeats"],
            "peak_mib": peak,
            "peak_over_inputs_mib": peak - base if bench.cuda else None,
        }
        if "truncated" in t:
            row["truncated"] = t["truncated"]
            notes.append(f"M={m} {dname} {variant}: {t['truncated']}")
        rows.append(row)
        if m == m_small:
            small_peak[(variant, dname)] = max(peak - base, 1.0) * 2**20

    for dname, dtype in dtypes:
        for variant in ("floor", "dense", "chunked", "naive"):
            if bench.over():
                notes.append(f"M={m_small} {dname} {variant}: skipped, section budget spent")
                continue
            run(variant, m_small, chunk_small, dname, dtype, repeats_small)
    for dname, dtype in dtypes:
        for variant in ("chunked", "dense", "naive"):
            if bench.over():
                notes.append(f"M={m_large} {dname} {variant}: skipped, section budget spent")
                continue
            if variant != "chunked" and bench.cuda:
                # O(M^2): scale the measured M=m_small growth quadratically
                predicted = small_peak.get((variant, dname), 0.0) * (m_large / m_small) ** 2
                if predicted > 0.8 * bench.free_bytes():
                    notes.append(
                        f"M={m_large} {dname} {variant}: skipped, predicted peak "
                        f"{predicted / 2**30:.1f} GiB > 80% of free memory"
                    )
                    continue
            try:
                run(variant, m_large, chunk_large, dname, dtype, repeats_large)
            except torch.OutOfMemoryError:
                bench.reset_peak()
                notes.append(f"M={m_large} {dname} {variant}: out of memory")
    # ratios against the naive reference of the same size and dtype
    naive = {(r["M"], r["dtype"]): r["median_ms"] for r in rows if r["variant"] == "naive"}
    for r in rows:
        ref = naive.get((r["M"], r["dtype"]))
        r["x_naive"] = r["median_ms"] / ref if ref else None
    return {
        "rows": rows,
        "notes": notes,
        "naive_reference": naive_src,
        "config": {"tau": TAU, "num_classes": NUM_CLASSES, "sizes": [m_small, m_large]},
    }


# ----------------------------------------------------------------------------- MinkUNet


def load_sweep(quick: bool) -> tuple[np.ndarray, str]:
    files = sorted((DATA / SWEEP_DIR).glob("*.pcd.bin"))
    if not files:
        raise FileNotFoundError(
            f"no nuScenes sweep under {DATA / SWEEP_DIR} (set OLIVINE_SHARED_DATA)"
        )
    pts = np.fromfile(files[0], dtype=np.float32).reshape(-1, 5)[:, :4]
    if quick:
        pts = pts[::32]  # ~400 voxels: minkunet34c fwd+bwd ~1 s on one CPU thread
    return np.ascontiguousarray(pts), files[0].name


def bench_minkunet(bench: Bench) -> dict[str, Any]:
    import torch

    from olivine_data.voxelize import voxelize
    from olivine_models import create_point_encoder

    points, name = load_sweep(bench.quick)
    vox = voxelize(points[:, :3], "cylindrical", (0.1, 1.0, 0.1))
    batch = 2 if bench.quick else 4
    repeats = 2 if bench.quick else 10
    v = vox.num_voxels
    coords_np = np.concatenate(
        [np.concatenate([np.full((v, 1), b, np.int32), vox.coords], 1) for b in range(batch)]
    )
    feats_np = np.tile(points[vox.representative, 3:4], (batch, 1))
    shape = tuple(int(s) for s in vox.coords.max(0) + 1)
    coords = torch.from_numpy(coords_np).to(bench.device)
    feats = torch.from_numpy(np.ascontiguousarray(feats_np)).to(bench.device)
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


# ----------------------------------------------------------------------------- pretraining


def pretrain_overrides(bench: Bench, world: Path, runs: Path, paper_nets: bool) -> list[str]:
    quick = bench.quick
    workers = 0 if quick else min(4, max((os.cpu_count() or 1) - 2, 0))
    ov = [
        f"data.root={world}",
        f"run.out_dir={runs}",
        f"run.device={bench.device}",
        f"run.precision={'bf16' if bench.cuda else 'fp32'}",
        f"model.sparse_backend={bench.sparse_backend}",
        "run.progress=false",
        "run.image_log_every=0",
        "run.log_every=1000000",
        f"data.num_workers={workers}",
    ]
    if quick:
        ov += [
            "demo.scenes=1",
            "demo.samples_per_scene=2",
            "demo.lidar_azimuth_steps=90",
            "data.cameras=[CAM_FRONT]",
            "loss.num_pairs=256",
        ]
    if paper_nets:
        ov += [
            "run.name=pretrain_minkunet34c",
            "model.point_encoder=minkunet34c",
            "model.image_encoder=resnet50_dilated",
            "model.image_pretrained=false",  # no MoCo weights offline: a random teacher
            f"data.batch_size={1 if quick else 4}",
            f"optim.max_steps={2 if quick else 24}",
        ]
    else:
        ov += [
            "run.name=pretrain_demo",
            f"data.batch_size={1 if quick else 2}",
            f"optim.max_steps={2 if quick else 40}",
        ]
    return ov


def bench_pretrain(bench: Bench, work: Path, paper_nets: bool) -> dict[str, Any]:
    from olivine_train.config import load_config
    from olivine_train.recipes.demo import ensure_world
    from olivine_train.recipes.pretrain import describe_teacher, run_pretrain

    world = work / ("world-quick" if bench.quick else "world")
    runs = work / "runs"
    cfg = load_config("demo", pretrain_overrides(bench, world, runs, paper_nets), check_paths=False)
    t0 = time.perf_counter()
    existed = (world / "olivine_splits.json").is_file()
    ensure_world(cfg, world, progress=False)
    world_s = time.perf_counter() - t0

    stamps: list[float] = []
    last: dict[str, float] = {}
    notes: list[str] = []

    def callback(step: int, scalars: dict[str, float]) -> None:
        # scalars are python floats: the step's losses were synchronised to the host already
        stamps.append(time.perf_counter())
        last.update(scalars)
        # keep at least two steps (step 1 is the warm-up) so that a step can be timed
        if len(stamps) >= 2 and bench.over() and step < (cfg.optim.max_steps or 0):
            raise BudgetExceeded(f"section budget spent after {step} steps")

    bench.reset_peak()
    t_run = time.perf_counter()
    status = "ok"
    try:
        run_pretrain(cfg, [callback])
    except BudgetExceeded as exc:
        status = "partial"
        notes.append(str(exc))
    wall = time.perf_counter() - t_run
    if len(stamps) < 2:
        raise RuntimeError(f"only {len(stamps)} step(s) ran; need 2 to time a step")
    # step 1 is warm-up (cuDNN / spconv tuning, loader start); time the steps after it
    intervals = np.diff(stamps)
    batch = cfg.data.batch_size
    timed_steps = len(intervals)
    steps_per_s = timed_steps / float(stamps[-1] - stamps[0])
    row = {
        "student": cfg.model.point_encoder,
        "teacher": describe_teacher(cfg),
        "batch": batch,
        "cameras": len(cfg.data.cameras),
        "image_size": list(cfg.data.image_size),
        "num_pairs": cfg.loss.num_pairs,
        "precision": cfg.run.precision,
        "steps": len(stamps),
        "timed_steps": timed_steps,
        "steps_per_s": steps_per_s,
        "scans_per_s": steps_per_s * batch,
        "median_step_s": float(np.median(intervals)),
        "first_step_s": float(stamps[0] - t_run),
        "peak_mib": bench.peak_mib(),
        "wall_s": wall,
        "final_total_loss": last.get("loss/total"),
    }
    return {
        "status": status,
        "rows": [row],
        "notes": notes,
        "world": {
            "path": str(world),
            "export_s": None if existed else world_s,
            "scenes": cfg.demo.scenes,
            "samples_per_scene": cfg.demo.samples_per_scene,
        },
        "overrides": pretrain_overrides(bench, world, runs, paper_nets),
    }


# ----------------------------------------------------------------------------- models_gpu.py


def _import_models_gpu() -> Any:
    sys.path.insert(0, str(HERE))
    try:
        import models_gpu
    finally:
        sys.path.pop(0)
    return models_gpu


def models_gpu_api_check(models_gpu: Any) -> list[str]:
    """What can be checked of models_gpu.py without CUDA: its data helpers run, and the
    olivine_models.vfm calls of ``bench_sam`` bind to the current signatures.
    """
    import inspect

    from olivine_models.vfm import Detection, FixedBoxProvider, SamBoxLabeler, build_sam

    done = []
    pts = models_gpu.sweep_points()
    coords, feats, shape = models_gpu.voxelise(pts[::32], 2)
    if coords.shape[1] != 4 or feats.shape[0] != coords.shape[0] or len(shape) != 3:
        raise RuntimeError(f"models_gpu.voxelise: unexpected {coords.shape}, {feats.shape}")
    done.append(f"sweep_points + voxelise ran ({coords.shape[0]} voxels)")
    inspect.signature(build_sam).bind("vit_h", random_init=True)
    provider = FixedBoxProvider([Detection((100.0, 300.0, 300.0, 700.0), 1, 0.5)])
    inspect.signature(SamBoxLabeler).bind(object(), provider, 14, 0, batch_size=6)
    if not callable(getattr(SamBoxLabeler, "label_batch", None)):
        raise RuntimeError("SamBoxLabeler.label_batch is missing")
    inspect.signature(models_gpu.bench_minkunet).bind(3, 4)  # (repeats, batch), as called below
    inspect.signature(models_gpu.bench_sam).bind(3)  # (repeats)
    done.append("build_sam / FixedBoxProvider / SamBoxLabeler / bench_* signatures bind")
    return done


def bench_models_gpu(bench: Bench) -> dict[str, Any]:
    models_gpu = _import_models_gpu()
    if not bench.cuda:
        checks = models_gpu_api_check(models_gpu)
        return {
            "status": "skipped",
            "rows": [],
            "api_check": "ok",
            "notes": [
                "CUDA only: benchmarks/gpu/models_gpu.py hard-codes the cuda device",
                *[f"API check: {c}" for c in checks],
            ],
        }
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    repeats = 3
    rows += models_gpu.bench_minkunet(repeats, 4)
    if bench.over():
        notes.append("bench_sam skipped: section budget spent")
    else:
        rows += models_gpu.bench_sam(repeats)
    for r in rows:
        if "peak_gib" in r:
            r["peak_mib"] = r.pop("peak_gib") * 1024
    return {
        "rows": rows,
        "notes": notes,
        "source": "benchmarks/gpu/models_gpu.py",
        "status": "partial" if notes else "ok",
    }


# ----------------------------------------------------------------------------- report


def _f(x: Any, fmt: str) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, fmt)


def render_markdown(result: dict[str, Any]) -> str:
    env = result["env"]
    where = env["card"] if env["device"].startswith("cuda") else f"CPU ({env['card']})"
    mode = " -- quick smoke sizes, not reportable numbers" if result["quick"] else ""
    out = [
        f"### GPU benchmarks: {where}{mode}",
        "",
        f"torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env.get('cudnn')}, "
        f"spconv {env.get('spconv', '-')}, sparse backend {env.get('sparse_backend', 'spconv')}; "
        f"{result['created']}; total "
        f"{result['elapsed_s']:.0f} s of a {result['budget_s']:.0f} s budget. "
        f"Memory: {result['mem_kind']}.",
    ]
    sec = result["sections"]

    def header(name: str) -> dict[str, Any] | None:
        s = sec.get(name)
        if s is None:
            return None
        out.extend(["", f"**{name}** ({s['status']}, {s.get('elapsed_s', 0):.0f} s)"])
        if s["status"] in ("skipped", "error"):
            out.append("")
            out.extend(f"- {n}" for n in s.get("notes", []))
            if s.get("error"):
                out.append(f"- error: {s['error']}")
            return None
        out.append("")
        return s

    s = header("losses")
    if s:
        out += [
            "| M | dtype | variant | median ms | min ms | x naive | peak MiB |",
            "| ---: | --- | --- | ---: | ---: | ---: | ---: |",
        ]
        for r in s["rows"]:
            v = r["variant"] + (f" ({r['chunk']})" if r.get("chunk") else "")
            out.append(
                f"| {r['M']} | {r['dtype']} | {v} | {_f(r['median_ms'], '.2f')} | "
                f"{_f(r['min_ms'], '.2f')} | {_f(r.get('x_naive'), '.2f')} | "
                f"{_f(r['peak_mib'], ',.0f')} |"
            )
    s = header("minkunet")
    if s:
        out += [
            "| model | backend | precision | batch | voxels | median s | scans/s | peak MiB |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in s["rows"]:
            backend = r.get("backend", "spconv")
            if "unsupported" in r:
                out.append(
                    f"| {r['model']} | {backend} | {r['precision']} | unsupported: "
                    f"{r['unsupported'][:50]} | | | | |"
                )
                continue
            out.append(
                f"| {r['model']} | {backend} | {r['precision']} | {r['batch']} | "
                f"{r['voxels']:,} | "
                f"{_f(r['median_s'], '.4f')} | {_f(r['scans_per_s'], '.1f')} | "
                f"{_f(r['peak_mib'], ',.0f')} |"
            )
    pre_rows = []
    for name in ("pretrain_demo", "pretrain_minkunet34c"):
        s = header(name)
        if s:
            pre_rows += s["rows"]
            out += [
                "| student | teacher | batch | precision | steps | steps/s | scans/s | "
                "median step s | peak MiB |",
                "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
            ]
            for r in s["rows"]:
                out.append(
                    f"| {r['student']} | {r['teacher']} | {r['batch']} | {r['precision']} | "
                    f"{r['steps']} | {_f(r['steps_per_s'], '.2f')} | "
                    f"{_f(r['scans_per_s'], '.2f')} | {_f(r['median_step_s'], '.3f')} | "
                    f"{_f(r['peak_mib'], ',.0f')} |"
                )
    s = header("models_gpu")
    if s:
        out += [
            "| case | what | median s | items/s | peak MiB |",
            "| --- | --- | ---: | ---: | ---: |",
        ]
        for r in s["rows"]:
            out.append(
                f"| {r['case']} | {r['what']} | {_f(r.get('seconds'), '.4f')} | "
                f"{_f(r.get('per_s'), '.2f')} | {_f(r.get('peak_mib'), ',.0f')} |"
            )
    notes = [
        (k, n)
        for k, v in sec.items()
        if v["status"] not in ("skipped", "error")
        for n in v.get("notes", [])
    ]
    if notes:
        out += ["", "Notes:"] + [f"- {k}: {n}" for k, n in notes]
    return "\n".join(out)


# ----------------------------------------------------------------------------- main


@contextlib.contextmanager
def watchdog(seconds: float) -> Iterator[None]:
    """Raise HardDeadline in the main thread after ``seconds`` (Python-level interrupt)."""

    def fire(signum: int, frame: Any) -> None:
        raise HardDeadline(f"hard deadline of {seconds:.0f} s reached")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(max(int(seconds), 1))
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


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
            "python benchmarks/gpu/run_gpu.py --device cpu --quick",
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
    env = environment(bench)
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
                bench.section_deadline = time.perf_counter() + min(want, left)
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
            result["elapsed_s"] = time.perf_counter() - bench.t_start
            write_json_atomic(args.json, result)

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
