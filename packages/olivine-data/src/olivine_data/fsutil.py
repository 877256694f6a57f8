"""File-system helpers shared by the packages that write files: atomic writes and the liveness
check behind orphaned-temporary-file clean-up.

``olivine-data`` is a leaf, so these live here and ``olivine-train`` (checkpoints, configs, run
records) imports them; the VFM label store (:mod:`olivine_data.labels`) uses them too.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write", "host_name", "pid_alive"]


def host_name() -> str:
    """This host's name, reduced to characters safe in a file name."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "unknown-host"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host exists (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def atomic_write(
    path: str | os.PathLike[str],
    write: Callable[[BinaryIO], object],
    *,
    temp_name: str | None = None,
) -> Path:
    """``write(fh)`` into a temporary file beside ``path``, flush and fsync it, then
    ``os.replace`` it onto ``path`` (atomic on POSIX): readers see the old file or the new one,
    never a part. The temporary file never survives a failed write (the error propagates); after
    a ``kill -9`` its name says which process left it.

    Args:
        path: the file to write (its folder is created).
        write: writes the content to the binary file object it is given.
        temp_name: the temporary file's name in ``path``'s folder; default
            ``.<name>.tmp<pid>`` (what :func:`olivine_train.checkpoint.remove_orphan_temp_files`
            recognises).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(temp_name or f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
