"""Stop signals (``olivine_train.preemption``, issue 23): the first is recorded, a second one
stops at once, the previous handlers come back. Real signals, in fresh processes.
"""

from __future__ import annotations

import signal
import subprocess
import sys

_TWICE = """
import os, signal, sys, time
from olivine_train.preemption import requested_stop, stop_signals

sig = getattr(signal, sys.argv[1])
before = signal.getsignal(sig)
with stop_signals():
    os.kill(os.getpid(), sig)
    time.sleep(0.2)
    print("recorded", requested_stop(), flush=True)
    if sys.argv[2] == "twice":
        try:
            os.kill(os.getpid(), sig)
            time.sleep(5)
        except KeyboardInterrupt:
            print("KeyboardInterrupt", flush=True)
            sys.exit(130)
        print("survived a second signal", flush=True)
print("restored", signal.getsignal(sig) is before, requested_stop(), flush=True)
"""


def _run(sig: str, times: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _TWICE, sig, times], capture_output=True, text=True, timeout=120
    )


def test_first_signal_is_recorded_and_handlers_are_restored() -> None:
    for sig in ("SIGTERM", "SIGINT", "SIGUSR1"):
        proc = _run(sig, "once")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines() == [f"recorded {sig}", "restored True None"]


def test_second_signal_stops_at_once() -> None:
    term = _run("SIGTERM", "twice")
    assert term.returncode == -signal.SIGTERM, term.stderr
    assert term.stdout.splitlines() == ["recorded SIGTERM"]
    usr1 = _run("SIGUSR1", "twice")
    assert usr1.returncode == -signal.SIGUSR1, usr1.stderr
    interrupt = _run("SIGINT", "twice")
    assert interrupt.returncode == 130, interrupt.stderr
    assert interrupt.stdout.splitlines() == ["recorded SIGINT", "KeyboardInterrupt"]
