"""olivine_data.fsutil: the one atomic write and pid check (label store, checkpoints, configs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import BinaryIO

import pytest

from olivine_data.fsutil import atomic_write, host_name, pid_alive


def test_atomic_write_replaces_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.json"
    assert atomic_write(target, lambda fh: fh.write(b"one")) == target  # folder created
    atomic_write(target, lambda fh: fh.write(b"two"))
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")

    def fail(fh: BinaryIO) -> None:
        fh.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, fail, temp_name=".a.bin.custom.tmp")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_pid_alive_tells_a_running_process_from_a_finished_one() -> None:
    assert pid_alive(os.getpid())
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: the pid no longer exists (until reused, which is not immediate)
    assert not pid_alive(proc.pid)
    assert "/" not in host_name() and host_name()
