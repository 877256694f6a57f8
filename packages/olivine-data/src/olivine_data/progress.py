"""Progress bars that suit where they run: live on a terminal, a few plain lines in a log.

In a non-interactive log (CI, ``nox -s demo``, a file) every tqdm refresh becomes a new line;
:func:`progress_bar` keeps tqdm's live bar when its stream is a terminal and otherwise prints the
first state, one line per tenth of the work (when the total is known) and the last state (e.g.
``synthetic nuScenes: 100%|...| 8/8 [00:05<00:00, ...]``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sized
from typing import IO, Any

__all__ = ["progress_bar", "is_interactive"]


def is_interactive(stream: IO[str] | None = None) -> bool:
    """Whether ``stream`` (default ``sys.stderr``, where tqdm writes) is a terminal."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (OSError, ValueError):  # a closed or detached stream
        return False


def progress_bar(
    iterable: Iterable[Any] | None = None, *, enabled: bool = True, **kwargs: Any
) -> Any:
    """A ``tqdm`` bar (same arguments) that refreshes live only on a terminal.

    ``enabled=False`` disables it (tqdm's ``disable=True``). When its ``file`` (default stderr) is
    not a terminal, time-based refreshes are switched off: the bar is written when it starts, at
    every tenth of ``total`` (if known) and when it closes. Updating it, ``set_postfix(...,
    refresh=False)`` and ``close()`` work as with tqdm.
    """
    from tqdm import tqdm  # type: ignore[import-untyped]

    kwargs.setdefault("disable", not enabled)
    if not is_interactive(kwargs.get("file")):
        total = kwargs.get("total", len(iterable) if isinstance(iterable, Sized) else None)
        kwargs.setdefault("maxinterval", float("inf"))
        if total:  # a line at every tenth of the work
            kwargs.setdefault("mininterval", 0.0)
            kwargs.setdefault("miniters", max(-(-int(total) // 10), 1))  # ceil(total / 10)
        else:
            kwargs.setdefault("mininterval", float("inf"))
    return tqdm(iterable, **kwargs)
