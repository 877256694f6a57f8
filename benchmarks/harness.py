"""The one harness every benchmark uses: timing, environment capture, atomic JSON, the real-data
path, time budgets, logging, child processes, and the real LiDAR sweep as a point encoder's input.

Benchmarks are modules of the ``benchmarks`` package and run from the repository root::

    python -m benchmarks.losses_bench
    python -m benchmarks.perf.run_all
    python -m benchmarks.learning.run_v3 --table

They import the toolkit's public APIs only (the four packages installed, e.g. ``nox -s tests
--install-only`` or ``pip install ./packages/...``); nothing here re-implements package code
(the sweep is read by ``olivine_data.datasets.nuscenes``, voxelised by ``olivine_data.voxelize``).
A benchmark that needs a case in a process of its own (so that its peak memory is its own) starts
it with :func:`run_module`, never by file path: the children are modules too.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from olivine_data.fsutil import atomic_write

__all__ = [
    "NUSCENES_SWEEP",
    "REPO_ROOT",
    "Budget",
    "Timing",
    "atomic_json",
    "cpu_identity",
    "current_rss_mib",
    "environment",
    "jsonable",
    "log",
    "machine",
    "nuscenes_sweep",
    "peak_rss_mib",
    "round_robin",
    "run_module",
    "shared_data",
    "sparse_input",
    "threads",
    "time_call",
]

REPO_ROOT = Path(__file__).resolve().parents[1]


def log(msg: str) -> None:
    """A time-stamped progress line, flushed at once (benchmarks run in the background)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def jsonable(obj: Any) -> Any:
    """``json.dumps`` default: numpy scalars/arrays, paths and dataclass-free tuples."""
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def atomic_json(path: str | Path, payload: Any, *, sort_keys: bool = False) -> Path:
    """Write ``payload`` as JSON to ``path`` atomically (temporary file beside it, fsync,
    ``os.replace``): a killed benchmark never leaves a half-written result. ``sort_keys``: keys
    in sorted order (a recorded file that is regenerated then diffs line by line).
    """
    text = json.dumps(payload, indent=1, sort_keys=sort_keys, default=jsonable) + "\n"
    return atomic_write(Path(path), lambda fh: fh.write(text.encode("utf-8")))


def shared_data(required: bool = True) -> Path | None:
    """The real data fragments: ``$OLIVINE_SHARED_DATA``, else ``../shared/data`` beside the
    repository. ``required``: exit with one line naming the path when it is missing.
    """
    root = Path(os.environ.get("OLIVINE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    if (root / "README.md").is_file():
        return root
    if required:
        raise SystemExit(f"real data not found at {root} (set OLIVINE_SHARED_DATA)")
    return None


def environment() -> dict[str, Any]:
    """What a result needs to be read later: the code snapshot (where ``olivine_train`` is
    imported from, the commit of that checkout and whether its packages differ from it), the
    package and library versions, the machine and its load.
    """
    import torch

    import olivine_data
    import olivine_losses
    import olivine_models
    import olivine_train

    src = Path(olivine_train.__file__).resolve()
    root = src.parents[4]  # <root>/packages/olivine-train/src/olivine_train/__init__.py
    info: dict[str, Any] = {"olivine_train_file": str(src), "root": str(root)}
    try:
        info["commit"] = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
            check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "packages"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        info["packages_dirty"] = bool(dirty)
    except (OSError, subprocess.CalledProcessError) as exc:
        info["commit"] = None
        info["error"] = str(exc)
    info["versions"] = {
        "olivine_train": olivine_train.__version__,
        "olivine_data": olivine_data.__version__,
        "olivine_models": olivine_models.__version__,
        "olivine_losses": olivine_losses.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    info["cpu"] = cpu_identity()
    return info


def cpu_identity() -> dict[str, Any]:
    """Which CPU kernels did the arithmetic: the CPU model, its vector extensions and torch's
    dispatch level. Float rounding differs between machines, so a trained run reproduces to the
    last digit only on the same kind of machine (a v3 run re-run on another CPU moved by 0.23
    mIoU): results compared run by run should record this.
    """
    import torch

    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    wanted = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile")
    return {
        "model": model,
        "extensions": [f for f in wanted if f in flags],
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cores": os.cpu_count(),
    }


def machine() -> dict[str, Any]:
    """The machine a timing ran on (printed first by every performance benchmark)."""
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def peak_rss_mib() -> float:
    """This process's peak resident set size so far, MiB (Linux ``ru_maxrss`` is KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    """This process's resident set size now, MiB (Linux ``/proc/self/statm``): the baseline a
    case's peak is measured over.
    """
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@dataclass(frozen=True)
class Timing:
    """Seconds per call over ``repeats`` timed calls after ``warmup`` untimed ones."""

    times: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def best(self) -> float:
        return min(self.times)

    def as_dict(self) -> dict[str, Any]:
        return {"median_s": self.median, "best_s": self.best, "times_s": list(self.times)}


def time_call(
    fn: Callable[[], Any], repeats: int = 5, warmup: int = 1, budget: Budget | None = None
) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed ones (GC collected before
    each, CUDA synchronised when available so asynchronous kernels are counted). With a
    ``budget``, repeating stops once it is spent (at least one call is always timed):
    ``len(result.times) < repeats`` then says so.
    """
    sync = _cuda_sync()
    for _ in range(warmup):
        fn()
    times: list[float] = []
    for _ in range(repeats):
        if times and budget is not None and budget.left() <= 0:
            break
        gc.collect()
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return Timing(tuple(times))


def round_robin(
    variants: dict[str, Callable[[], Any]], rounds: int = 5, warmup: int = 1
) -> dict[str, Timing]:
    """Time several variants in alternation (every round runs each once), so that a load change
    on a shared machine hits all of them alike; ratios between them are then meaningful.
    """
    sync = _cuda_sync()
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            gc.collect()
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return {k: Timing(tuple(v)) for k, v in times.items()}


def _cuda_sync() -> Callable[[], None]:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.synchronize
    except ImportError:  # pragma: no cover
        pass
    return lambda: None


class Budget:
    """A wall-clock budget: ``left()`` seconds remain; ``fits(seconds)`` says whether a job of
    that predicted length still fits (long benchmarks stop starting new runs, never cut one).
    """

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.start = time.monotonic()

    def used(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return float("inf") if self.seconds is None else self.seconds - self.used()

    def fits(self, seconds: float) -> bool:
        return seconds <= self.left()


@contextmanager
def threads(n: int | None) -> Iterator[None]:
    """Run a block with ``torch.set_num_threads(n)`` (``None``: unchanged), restoring after."""
    import torch

    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def run_module(
    module: str,
    *args: str,
    capture: bool = False,
    check: bool = True,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m module args`` with this interpreter, from the repository root: a benchmark's
    child process (one case per process, so that its peak RSS is its own; one benchmark of
    ``perf.run_all``). ``capture``: keep stdout/stderr (text) instead of passing them through.
    """
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        capture_output=capture,
        text=True,
        check=check,
        env=env,
        timeout=timeout,
    )


NUSCENES_SWEEP = "nuscenes/mmdet3d-demo/samples/LIDAR_TOP"


def nuscenes_sweep(data: Path | None = None) -> tuple[Any, str]:
    """The real nuScenes LIDAR_TOP sweep of the shared data (scene-0061, 34,688 points) as an
    ``(N, 4)`` float32 array (x, y, z, intensity), read by the package's
    ``olivine_data.datasets.nuscenes.read_nuscenes_points``, and its file name; ``data`` defaults
    to :func:`shared_data`. Raises ``FileNotFoundError`` naming the folder when it has no sweep.
    """
    from olivine_data.datasets.nuscenes import read_nuscenes_points

    folder = (data if data is not None else shared_data()) / NUSCENES_SWEEP  # type: ignore[operator]
    files = sorted(folder.glob("*.pcd.bin"))
    if not files:
        raise FileNotFoundError(f"no nuScenes sweep (*.pcd.bin) under {folder}")
    return read_nuscenes_points(files[0]), files[0].name


def sparse_input(
    points: Any,
    batch: int = 1,
    mode: str = "cylindrical",
    voxel_size: tuple[float, float, float] = (0.1, 1.0, 0.1),
) -> tuple[Any, Any, tuple[int, int, int]]:
    """A point encoder's input from an ``(N, 4)`` cloud, voxelised by the package's
    ``olivine_data.voxelize`` (default: the reference's cylindrical 0.1 m x 1 deg x 0.1 m) and
    replicated ``batch`` times: ``coords`` ``(batch * V, 4)`` int32 ``(b, i, j, k)``, ``feats``
    ``(batch * V, 1)`` float32 (the intensity of each voxel's representative point) and the
    spatial shape (the voxel grid's extent), as numpy arrays.
    """
    import numpy as np

    from olivine_data import voxelize

    vox = voxelize(np.asarray(points)[:, :3], mode, voxel_size)
    v = vox.num_voxels
    column = np.repeat(np.arange(batch, dtype=np.int32), v)[:, None]
    coords = np.concatenate([column, np.tile(vox.coords, (batch, 1))], axis=1)
    feats = np.ascontiguousarray(np.tile(np.asarray(points)[vox.representative, 3:4], (batch, 1)))
    shape = tuple(int(s) for s in vox.coords.max(axis=0) + 1) if v else (1, 1, 1)
    return coords.astype(np.int32), feats.astype(np.float32), (shape[0], shape[1], shape[2])
