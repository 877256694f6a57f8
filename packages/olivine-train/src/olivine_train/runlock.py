"""One run per run folder: an exclusive OS file lock held for the life of a run.

:class:`RunLock` takes ``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``<run dir>/.olivine-run.lock`` and
writes the holder (``pid``, ``host``, start time) into that file. The kernel drops an ``flock``
when its process dies, however it dies (``kill -9`` included), so a lock can never outlive its
run; the holder's line may, and a run that finds one left by a process that no longer holds the
lock says that it takes over. Releasing empties the file (so a clean exit leaves no holder line)
and drops the lock; the file itself stays, because deleting a lock file that another process may
be about to lock would let two runs hold two different files of the same name.

A second run into a locked folder raises :class:`RunFolderLockedError` (one line naming the folder
and the holder; the CLI exits with code 6). Under ``torchrun`` rank 0 holds the lock.

``flock`` is reliable on local file systems; on network file systems that do not forward it (some
NFS set-ups) two hosts may both get it, and the holder line is then the only witness. Where the
file system refuses ``flock`` altogether (``ENOLCK``, ``EOPNOTSUPP``, ``ENOSYS``), the run goes on
without the guarantee and says so on stderr.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LOCK_NAME", "LockHolder", "RunFolderLockedError", "RunLock"]

#: name of the lock file inside a run folder
LOCK_NAME = ".olivine-run.lock"

#: ``flock`` errors of a file system without locks (the run goes on, with a warning)
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)


class RunFolderLockedError(RuntimeError):
    """Another live process holds the run folder's lock."""


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or held) a run folder: what the lock file says."""

    pid: int | None
    host: str
    since: str

    @classmethod
    def parse(cls, text: str) -> LockHolder | None:
        """The holder of a lock file's ``pid=<n> host=<name> since=<time>`` line (None if empty)."""
        fields = dict(part.split("=", 1) for part in text.split() if "=" in part)
        if not fields:
            return None
        pid_text = fields.get("pid", "")
        return cls(
            pid=int(pid_text) if pid_text.isdigit() else None,
            host=fields.get("host", "?"),
            since=fields.get("since", "?"),
        )

    def describe(self) -> str:
        pid = self.pid if self.pid is not None else "?"
        return f"pid {pid} on host {self.host}, since {self.since}"


def _this_holder() -> LockHolder:
    since = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return LockHolder(pid=os.getpid(), host=socket.gethostname(), since=since)


class RunLock:
    """The exclusive lock of one run folder (a context manager; :meth:`acquire` / :meth:`release`).

    Args:
        run_dir: the run folder (created if missing). Taking over a stale holder line is said
            on stderr.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None
        #: the holder line left by a process that died without releasing (set by :meth:`acquire`)
        self.took_over: LockHolder | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        """Take the lock or raise :class:`RunFolderLockedError` naming the folder and holder."""
        if self._fd is not None:
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = LockHolder.parse(_read_all(fd))
            os.close(fd)
            who = holder.describe() if holder is not None else "a process that has not said who"
            raise RunFolderLockedError(
                f"{self.run_dir}: the run folder is in use by another run ({who}; lock file "
                f"{self.path}); wait for it to finish or choose another run.name / run.out_dir"
            ) from None
        except OSError as exc:
            if exc.errno not in _NO_LOCKS:
                os.close(fd)
                raise
            print(
                f"[olivine-train] WARNING: {self.path}: the file system does not support file "
                f"locks ({exc.strerror}); running without the one-run-per-folder guarantee",
                file=sys.stderr,
            )
        except BaseException:
            os.close(fd)
            raise
        self.took_over = LockHolder.parse(_read_all(fd))
        me = _this_holder()
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid={me.pid} host={me.host} since={me.since}\n".encode(), 0)
        os.fsync(fd)
        self._fd = fd
        if self.took_over is not None:
            print(
                f"[olivine-train] {self.run_dir}: taking over the run folder from "
                f"{self.took_over.describe()}, which no longer holds its lock (it was killed "
                "or crashed)",
                file=sys.stderr,
            )
        return self

    def release(self) -> None:
        """Empty the holder line and drop the lock (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        finally:
            with contextlib.suppress(OSError):  # not locked where the file system has no locks
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_all(fd: int) -> str:
    data = b""
    while True:
        chunk = os.pread(fd, 4096, len(data))
        if not chunk:
            return data.decode("utf-8", "replace")
        data += chunk
