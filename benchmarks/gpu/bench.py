"""The state every GPU-benchmark section shares: device, synchronisation, peak memory, the
section's time budget (``harness.Budget``) and timing (``harness.time_call``); the watchdog and
the environment record of ``run_gpu``.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

from benchmarks.harness import Budget, environment, machine, peak_rss_mib, time_call

__all__ = ["Bench", "BudgetExceeded", "HardDeadline", "gpu_environment", "watchdog"]

TAU = 0.07  # the temperature of the losses (the reference's NCE / SupCon tau)
NUM_CLASSES = 17  # labels drawn for L_sup (SEEM17's class count)


class BudgetExceeded(RuntimeError):
    """Raised (from a pretraining step callback) when a section's time budget is spent."""


class HardDeadline(RuntimeError):
    """Raised by the SIGALRM watchdog when the whole invocation runs past its deadline."""


class Bench:
    """Device, sync, peak memory and the time budgets (``total``; ``section``, the current
    section's, set by ``run_gpu.main`` and never longer than what is left of ``total``).
    """

    sparse_backend = "torch"  # set in run_gpu.main from --sparse-backend

    def __init__(self, device: str, quick: bool, budget_s: float) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        if self.cuda:
            torch.cuda.set_device(self.device)  # harness.time_call syncs the current device
        self.quick = quick
        self.total = Budget(budget_s)
        self.section = Budget(budget_s)
        self.notes: list[str] = []

    # time ---------------------------------------------------------------
    def remaining(self) -> float:
        return self.total.left()

    def start_section(self, seconds: float) -> None:
        self.section = Budget(min(seconds, self.total.left()))

    def over(self) -> bool:
        return self.section.left() <= 0 or self.total.left() <= 0

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
        return peak_rss_mib()

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
        """Median / min seconds of ``repeats`` calls after ``warmup`` (``harness.time_call``);
        stops early (keeping at least one measured call) when the section budget is spent.
        """
        t = time_call(fn, repeats=repeats, warmup=warmup, budget=self.section)
        out: dict[str, Any] = {"median_s": t.median, "min_s": t.best, "repeats": len(t.times)}
        if len(t.times) < repeats:
            out["truncated"] = f"budget spent: {len(t.times)} of {repeats} repeats"
        return out


def _cpu_name() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return str(machine()["cpu"])


def gpu_environment(bench: Bench) -> dict[str, Any]:
    """The card (or CPU), the CUDA stack, the sparse backend, plus ``harness.environment()``
    (the code snapshot and package versions) under ``code``.
    """
    torch = bench.torch
    env: dict[str, Any] = {
        "device": str(bench.device),
        "card": torch.cuda.get_device_name(bench.device) if bench.cuda else _cpu_name(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": machine()["python"],
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
    try:
        env["code"] = environment()
    except ImportError as exc:  # e.g. only olivine-losses on the path (the losses section alone)
        env["code"] = {"error": f"{type(exc).__name__}: {exc}"}
    return env


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
