"""A run folder is never restarted from step 0 silently, and a run that never started leaves none.

* A training run that is not resuming (``run.resume`` unset, or ``auto`` with no ``last.pt``)
  into a folder that holds a ``last.pt`` is refused (:class:`ExistingRunError`, exit code 2) with
  one line naming the checkpoint, its step and the three choices: ``run.resume=auto`` (continue
  it), another ``run.name``, or ``run.overwrite=true``, which **moves the old folder aside** to
  ``<name>.old-<UTC time>`` (:func:`move_aside`) and starts in a new, empty folder. Nothing is
  ever deleted. (Before, such a run started at step 0, overwrote ``last.pt`` and ``config.yaml``
  and appended its steps to the old ``metrics.jsonl`` a second time.)
* The same holds for a folder whose ``metrics.jsonl`` holds records but no ``last.pt`` (a run
  killed before its first checkpoint): a new run is refused the same way; under
  ``run.resume=auto`` (nothing to resume from) the old log is moved aside to
  ``metrics.old-<UTC time>.jsonl`` (:func:`move_log_aside`) and the run starts, saying so.
* A run that fails before it logged anything, into a folder it created itself, removes that
  folder again (:func:`remove_if_unused`): no ``config.yaml``, empty ``metrics.jsonl``, ``tb/``
  and lock file of a run that never started.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path

__all__ = [
    "ExistingRunError",
    "check_existing_run",
    "existing_run_problem",
    "move_aside",
    "move_log_aside",
    "remove_if_unused",
]

#: what a run folder holds that a run writes (the lock file is its own)
_RUN_FILES = ("config.yaml", "metrics.jsonl", "tb", ".olivine-run.lock")


class ExistingRunError(ValueError):
    """A new run into a folder that holds a checkpoint (exit code 2: a configuration choice)."""


def _checkpoint_step(last: Path) -> str:
    """The step ``last.pt`` holds, as text ("unknown (…)" when it cannot be read)."""
    from olivine_train.checkpoint import load_checkpoint

    try:
        return str(int(load_checkpoint(last, mmap=True)["step"]))
    except Exception as exc:  # a damaged file is still a run not to overwrite
        return f"unknown ({exc})"


def check_existing_run(
    run_dir: Path, resuming: bool, overwrite: bool, auto: bool = False
) -> Path | None:
    """Refuse to start a run from step 0 in a folder that holds ``last.pt`` or a non-empty log.

    Returns None when there is nothing to protect (resuming, or neither), or where the old run
    (``overwrite``: the folder) or its log (``auto``: ``run.resume=auto`` found no checkpoint)
    was moved. Call it holding the folder's lock.

    Raises:
        ExistingRunError: the folder holds a run, the run does not resume, ``overwrite`` is false
            (and, for a log without checkpoint, ``auto`` is false).
    """
    problem = existing_run_problem(run_dir, resuming)
    if problem is None:
        return None
    if overwrite:
        return move_aside(run_dir)
    if auto and not (run_dir / "last.pt").is_file():
        return move_log_aside(run_dir)
    raise ExistingRunError(problem)


def _log_records(log: Path) -> int:
    """Lines of ``metrics.jsonl`` (0 when absent)."""
    try:
        with open(log, "rb") as fh:
            return sum(1 for line in fh if line.strip())
    except FileNotFoundError:
        return 0


def existing_run_problem(run_dir: Path, resuming: bool) -> str | None:
    """The refusal of :func:`check_existing_run` without ``run.overwrite`` (None: nothing to
    protect); ``validate-config`` reports it too.
    """
    last = run_dir / "last.pt"
    if resuming:
        return None
    if not last.is_file():
        log = run_dir / "metrics.jsonl"
        n = _log_records(log)
        if n == 0:
            return None
        return (
            f"{log}: this run folder holds the log of an earlier run ({n} records, no "
            "checkpoint); refusing to start a new run over it: start a new run with another "
            "run.name, set run.resume=auto to keep that log as metrics.old-<time>.jsonl and start "
            f"afresh, or run.overwrite=true to move the old run aside to {run_dir.name}.old-<time>"
        )
    return (
        f"{last}: this run folder holds a checkpoint at step {_checkpoint_step(last)}; refusing "
        "to start it again from step 0 (that would overwrite last.pt, config.yaml and "
        "metrics.jsonl): continue it with run.resume=auto, start a new run with another "
        f"run.name, or set run.overwrite=true to move the old run aside to "
        f"{run_dir.name}.old-<time> and start afresh"
    )


def move_aside(run_dir: Path) -> Path:
    """Rename ``run_dir`` to ``<name>.old-<UTC YYYYmmddTHHMMSSZ>`` (``-2``, ``-3``… if taken) and
    create an empty ``run_dir``; returns the new name of the old folder.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = run_dir.with_name(f"{run_dir.name}.old-{stamp}")
    n = 2
    while target.exists():
        target = run_dir.with_name(f"{run_dir.name}.old-{stamp}-{n}")
        n += 1
    run_dir.rename(target)
    run_dir.mkdir()
    return target


def move_log_aside(run_dir: Path) -> Path:
    """Rename ``metrics.jsonl`` to ``metrics.old-<UTC YYYYmmddTHHMMSSZ>.jsonl`` (``-2``... if
    taken); returns the new path.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = run_dir / f"metrics.old-{stamp}.jsonl"
    n = 2
    while target.exists():
        target = run_dir / f"metrics.old-{stamp}-{n}.jsonl"
        n += 1
    (run_dir / "metrics.jsonl").rename(target)
    return target


def remove_if_unused(run_dir: Path) -> bool:
    """Remove ``run_dir`` (a folder this run created) if it holds only what a run writes before
    its first step: ``config.yaml``, an empty ``metrics.jsonl``, ``tb/`` and the lock file.
    Returns whether it was removed.
    """
    if not run_dir.is_dir():
        return False
    names = {p.name for p in run_dir.iterdir()}
    jsonl = run_dir / "metrics.jsonl"
    if not names <= set(_RUN_FILES) or (jsonl.is_file() and jsonl.stat().st_size > 0):
        return False
    with contextlib.suppress(OSError):
        shutil.rmtree(run_dir)
    return not run_dir.exists()
