"""The learning benchmarks' statistics: one-sided paired t-tests with CIs, Holm's step-down
adjustment, the protocols' verdict rule, the minimum detectable effect and number formatting.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

__all__ = ["fmt", "fmt_p", "holm", "mde", "outcome", "paired_test"]


def paired_test(a: list[float], b: list[float], sesoi: float) -> dict[str, Any]:
    """One-sided paired t-test of mean(a - b) > 0, the 95 % two-sided CI, outcome inputs."""
    from scipy import stats

    d = [x - y for x, y in zip(a, b)]
    n = len(d)
    out: dict[str, Any] = {"n": n, "diffs": d}
    if n < 2:
        return out | {"mean": d[0] if d else math.nan, "sd": math.nan, "p": math.nan}
    mean, sd = statistics.mean(d), statistics.stdev(d)
    se = sd / math.sqrt(n)
    if se == 0:
        t, p = (math.inf if mean > 0 else -math.inf), (0.0 if mean > 0 else 1.0)
    else:
        t = mean / se
        p = float(stats.t.sf(t, n - 1))
    half = float(stats.t.ppf(0.975, n - 1)) * se
    return out | {
        "mean": mean,
        "sd": sd,
        "t": t,
        "p": p,
        "ci": (mean - half, mean + half),
        "positive": sum(x > 0 for x in d),
    }


def holm(ps: list[float]) -> list[float]:
    """Holm-adjusted p-values (step-down, monotone)."""
    m = len(ps)
    order = sorted(range(m), key=lambda i: ps[i])
    adj = [math.nan] * m
    running = 0.0
    for rank, i in enumerate(order):
        val = min(1.0, (m - rank) * ps[i]) if ps[i] == ps[i] else math.nan
        running = max(running, val) if val == val else running
        adj[i] = running if val == val else math.nan
    return adj


def outcome(test: dict[str, Any], p_adj: float, gate_ok: bool, s: Any) -> str:
    """The protocol's verdict for one comparison."""
    if test.get("n", 0) < 3 or "ci" not in test:
        return "not enough seeds"
    if not gate_ok:
        return "inconclusive (gate)"
    lo, hi = test["ci"]
    if p_adj < s.alpha:
        return "confirmed" if test["mean"] >= s.sesoi else "confirmed, below SESOI"
    if hi < s.sesoi:
        return "refuted" if hi < 0 or test["mean"] <= 0 else "refuted (< SESOI)"
    return "inconclusive"


def mde(sd_diff: float, n: int, alpha: float, power: float) -> float:
    """Minimum detectable mean paired difference (one-sided paired t, normal-t approximation)."""
    from scipy import stats

    t = stats.t.ppf(1 - alpha, n - 1) + stats.t.ppf(power, n - 1)
    return float(t) * sd_diff / math.sqrt(n)


def fmt(x: float, digits: int = 2) -> str:
    return "—" if x is None or x != x else f"{x:.{digits}f}"


def fmt_p(p: float) -> str:
    if p is None or p != p:
        return "—"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"
