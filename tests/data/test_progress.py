"""progress_bar: live on a terminal; in a log the first state, a line per tenth, the last."""

from __future__ import annotations

import io

from olivine_data.progress import is_interactive, progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _states(log: io.StringIO) -> list[str]:
    return [s for s in log.getvalue().replace("\r", "\n").split("\n") if s.strip()]


def test_log_gets_a_line_per_tenth_of_the_work() -> None:
    log = io.StringIO()
    bar = progress_bar(total=500, desc="work", unit="item", file=log)
    for _ in range(500):
        bar.update(1)
    bar.close()
    states = _states(log)
    assert "0/500" in states[0] and "500/500" in states[-1]
    counts = [int(s.split("|")[2].split("/")[0]) for s in states]
    # 0, every tenth, and the closing state (which may repeat the last update): at most 12 lines
    assert counts == sorted(counts) and sorted(set(counts)) == list(range(0, 501, 50)), states
    assert len(states) <= 12, states


def test_log_without_a_total_gets_the_first_and_last_state_only() -> None:
    log = io.StringIO()
    bar = progress_bar(iter(range(300)), desc="work", unit="item", file=log)
    assert list(bar) == list(range(300))
    states = _states(log)
    assert len(states) == 2, states
    assert states[0].startswith("work: 0") and "300" in states[1]


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
