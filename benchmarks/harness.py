"""The one harness every benchmark uses: timing, environment capture, atomic JSON, the real-data
path, time budgets and logging.

Benchmarks are modules of the ``benchmarks`` package and run from the repository root::

    python -m benchmarks.losses_bench
    python -m benchmarks.perf.run_all
    python -m benchmarks.learning.run_v3 --table

They import the toolkit's public APIs only (the four packages installed, e.g. ``nox -s tests
--install-only`` or ``pip install ./packages/...``); nothing here re-implements package code.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "REPO_ROOT",
    "Budget",
    "Timing",
    "atomic_json",
    "environment",
    "jsonable",
    "log",
    "machine",
    "peak_rss_mib",
    "round_robin",
    "shared_data",
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


def atomic_json(path: str | Path, payload: Any) -> Path:
    """Write ``payload`` as JSON to ``path`` atomically (temporary file beside it, fsync,
    ``os.replace``): a killed benchmark never leaves a half-written result.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w") as fh:
            fh.write(json.dumps(payload, indent=1, default=jsonable) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


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
    """Which CPU kernels did the arithmetic (float rounding differs between machines)."""
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


def time_call(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed ones (GC collected before
    each, CUDA synchronised when available so asynchronous kernels are counted).
    """
    sync = _cuda_sync()
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
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
