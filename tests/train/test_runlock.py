"""The run-folder lock within one process (the multi-process behaviour, with real processes, is
in tests/integration/test_run_reliability.py).
"""

from __future__ import annotations

import errno
import fcntl
from pathlib import Path

import pytest

from olivine_train.runlock import LOCK_NAME, LockHolder, RunFolderLockedError, RunLock


def test_a_second_lock_in_the_same_process_is_refused_and_release_is_idempotent(
    tmp_path: Path,
) -> None:
    first = RunLock(tmp_path / "run").acquire()
    try:
        # flock locks belong to open file descriptions: a second open file is refused too
        with pytest.raises(RunFolderLockedError, match="the run folder is in use by another"):
            RunLock(tmp_path / "run").acquire()
    finally:
        first.release()
        first.release()
    assert (tmp_path / "run" / LOCK_NAME).read_text() == ""
    with RunLock(tmp_path / "run") as again:
        assert again.held and again.took_over is None


def test_holder_line_round_trip() -> None:
    holder = LockHolder.parse("pid=12 host=node-3.cluster since=2026-12-05T06:00:00+0000\n")
    assert holder == LockHolder(12, "node-3.cluster", "2026-12-05T06:00:00+0000")
    assert holder.describe() == "pid 12 on host node-3.cluster, since 2026-12-05T06:00:00+0000"
    assert LockHolder.parse("") is None


def test_a_file_system_without_locks_runs_on_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # simulates what flock returns on a network file system without lock support (ENOLCK);
    # this machine's file systems all support flock
    def no_locks(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with RunLock(tmp_path / "nfs") as lock:
        assert lock.held
        assert "pid=" in (tmp_path / "nfs" / LOCK_NAME).read_text()
    err = capsys.readouterr().err
    assert "the file system does not support file locks (No locks available)" in err
    assert "without the one-run-per-folder guarantee" in err


def test_other_flock_errors_are_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def io_error(fd: int, op: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(fcntl, "flock", io_error)
    with pytest.raises(OSError, match="Input/output error"):
        RunLock(tmp_path / "bad").acquire()
