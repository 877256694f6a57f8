"""Preemption: SIGTERM, SIGINT and SIGUSR1 stop a run cleanly at the end of the current step.

Cluster schedulers stop jobs with SIGTERM and kill them with SIGKILL after a grace period
(SLURM, Kubernetes); SLURM can send SIGUSR1 ahead of the time limit (``--signal=USR1@<s>``), as
PyTorch Lightning supports; a user presses Ctrl-C (SIGINT). While :func:`stop_signals` is active
(the whole of a training run, see :func:`olivine_train.recipes.loop.open_run`) the first of these
signals only *records* the request; the training loop finishes the step it is in, writes
``last.pt`` atomically, logs a ``preempted`` record in ``metrics.jsonl`` and raises
:class:`Preempted`, which the CLI reports in one line with exit code 7. ``run.resume=auto`` then
continues exactly where the run stopped. A second signal of the same kind stops at once (SIGINT:
``KeyboardInterrupt``; SIGTERM/SIGUSR1: the default action), without a new checkpoint.

Schedulers signal every process of a job, data-loader workers included; torch's workers die on a
SIGTERM that their parent did not send, which failed the step in progress. The training data
loaders therefore start their workers with :func:`worker_ignores_stop_signals`: the main process
decides when to stop and shuts its workers down itself.

Under ``torchrun`` every rank checks the request after each step with one all-reduce (MAX), so all
ranks stop after the same step even if only one of them was signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

import torch
import torch.distributed as dist

#: What ``signal.getsignal`` returns: a handler function, SIG_DFL/SIG_IGN, or None.
Handler = Callable[[int, FrameType | None], object] | int | None

__all__ = [
    "STOP_SIGNALS",
    "Preempted",
    "requested_stop",
    "stop_signals",
    "worker_ignores_stop_signals",
]

#: the signals that ask a run to stop after the current step
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class Preempted(Exception):
    """The run stopped on a signal after ``step``; ``checkpoint`` holds that step."""

    def __init__(self, signal_name: str, step: int, checkpoint: Path) -> None:
        self.signal_name = signal_name
        self.step = step
        self.checkpoint = checkpoint
        super().__init__(
            f"preempted by {signal_name} after step {step}: {checkpoint} written; resume with "
            "run.resume=auto"
        )


class _Requests:
    """The installed handlers and the first signal received."""

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self.previous: dict[signal.Signals, Handler] = {}

    def handle(self, signum: int, frame: FrameType | None) -> None:
        sig = signal.Signals(signum)
        if self.received is None:
            self.received = sig  # acted on by the training loop after the current step
            return
        # a second signal: stop now, the way the signal would without us
        if sig == signal.SIGINT:
            signal.signal(sig, signal.default_int_handler)
            raise KeyboardInterrupt
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)


_active: _Requests | None = None


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """Record SIGTERM/SIGINT/SIGUSR1 instead of dying while the block runs (previous handlers
    are restored after it). Outside the main thread signals cannot be handled; nothing changes.
    """
    global _active
    if threading.current_thread() is not threading.main_thread() or _active is not None:
        yield
        return
    req = _Requests()
    for sig in STOP_SIGNALS:
        req.previous[sig] = signal.signal(sig, req.handle)
    _active = req
    try:
        yield
    finally:
        _active = None
        for sig, handler in req.previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def requested_stop(distributed: bool = False, device: torch.device | None = None) -> str | None:
    """The name of the stop signal received (``"SIGTERM"``, ...) or None. With ``distributed``
    every rank must call it at the same point: the ranks agree (all-reduce MAX) so that one
    signalled rank stops them all.
    """
    received = _active.received if _active is not None else None
    if not distributed:
        return received.name if received is not None else None

    code = torch.tensor([STOP_SIGNALS.index(received) + 1 if received is not None else 0])
    code = code.to(device if device is not None else torch.device("cpu"))
    dist.all_reduce(code, op=dist.ReduceOp.MAX)
    value = int(code.item())
    return STOP_SIGNALS[value - 1].name if value else None


def worker_ignores_stop_signals(worker_id: int) -> None:
    """``worker_init_fn`` of the training data loaders: a worker ignores the stop signals (its
    main process finishes the step, writes ``last.pt`` and shuts the workers down).
    """
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
