"""progress_bar: live on a terminal, only the first and last state in a log."""

from __future__ import annotations

import io

from olivine_data.progress import is_interactive, progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_gets_the_first_and_last_state_only() -> None:
    log = io.StringIO()
    bar = progress_bar(total=500, desc="work", unit="item", file=log)
    for _ in range(500):
        bar.update(1)
    bar.close()
    states = [s for s in log.getvalue().replace("\r", "\n").split("\n") if s.strip()]
    assert len(states) == 2, states
    assert "0/500" in states[0] and "500/500" in states[1]


def test_terminal_keeps_tqdm_defaults_and_disabled_prints_nothing() -> None:
    term = _Terminal()
    assert is_interactive(term) and not is_interactive(io.StringIO())
    bar = progress_bar(total=3, desc="work", file=term)
    assert bar.mininterval == 0.1
    bar.close()
    quiet = io.StringIO()
    bar = progress_bar(range(3), enabled=False, file=quiet)
    assert list(bar) == [0, 1, 2]
    assert quiet.getvalue() == ""
