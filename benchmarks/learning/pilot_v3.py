"""Learning benchmark v3's pilot and decisions (PROTOCOL_v3.md, "Pilot"): stage A (steps vs
dynamic range), stage B (lr grid per arm), ``decisions.json``; and the result loaders the table
shares.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.learning import common, stats
from benchmarks.learning.run_v3 import (
    DOSE_ARMS,
    LR_GRID,
    MAIN_ARMS,
    PRIMARY,
    PROVISIONAL_LR,
    SETTINGS,
    STEP_CHOICES,
    Settings,
    run_jobs,
)

__all__ = ["decisions_path", "load", "lr_decision", "miou", "pilot", "range_decision",
           "settings_from"]  # fmt: skip


def load(work: Path, tag: str) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((work / "results" / tag).rglob("*.json"))]


def miou(rec: dict[str, Any]) -> float:
    return 100 * rec["probe"]["scores"]["miou_present"]


def range_decision(work: Path, s: Settings) -> dict[str, Any]:
    """Pilot stage A's rule (PROTOCOL_v3.md): the smallest S with ceiling - PPKT >= 3 x MDE."""
    recs = load(work, "pilot_range")
    rows = []
    alpha = s.alpha / len(PRIMARY)  # Holm's first (strictest) step over the primary family
    for steps in STEP_CHOICES:
        by = {
            a: {r["seed"]: miou(r) for r in recs if r["arm"] == a and r["steps"] == steps}
            for a in ("ppkt", "ceiling")
        }
        seeds = sorted(set(by["ppkt"]) & set(by["ceiling"]))
        if len(seeds) < 2:
            continue
        d = [by["ceiling"][k] - by["ppkt"][k] for k in seeds]
        sd = max(statistics.stdev(d), 0.5)
        m = stats.mde(sd, s.main_seeds, alpha, s.power)
        times = [r["wall_s"] for r in recs if r["steps"] == steps]
        rows.append(
            {
                "steps": steps,
                "seeds": seeds,
                "ppkt": statistics.mean(by["ppkt"][k] for k in seeds),
                "ceiling": statistics.mean(by["ceiling"][k] for k in seeds),
                "range": statistics.mean(d),
                "sd_diff": statistics.stdev(d),
                "mde": m,
                "ok": bool(statistics.mean(d) >= s.range_factor * m),
                "mean_run_s": statistics.mean(times),
            }
        )
    n_main = len(MAIN_ARMS) * s.main_seeds + len(DOSE_ARMS) * s.dose_seeds
    for r in rows:
        r["predicted_main_min"] = r["mean_run_s"] * n_main / 60
    fits = [r for r in rows if r["ok"] and r["predicted_main_min"] <= 120]
    chosen = fits[0]["steps"] if fits else None
    return {"rows": rows, "chosen": chosen, "alpha": alpha, "main_runs": n_main}


def lr_decision(work: Path) -> dict[str, Any]:
    """Pilot stage B's rule: per arm, the grid lr with the best probe among gate-passing runs
    (ties within 0.3 point: the smaller lr; no passing run: the best overall, flagged).
    """
    recs = load(work, "pilot_lr")
    out: dict[str, Any] = {}
    for arm in {r["arm"] for r in recs}:
        out[arm] = common.choose_lr([r for r in recs if r["arm"] == arm], miou)
    return out


def decisions_path(work: Path) -> Path:
    return work / "decisions.json"


def settings_from(work: Path) -> tuple[Settings, dict[str, float]]:
    """The settings and per-arm lrs the pilot fixed (``decisions.json``)."""
    path = decisions_path(work)
    if not path.is_file():
        raise SystemExit(f"{path} missing: run the pilot (--pilot range, then --pilot lr)")
    dec = json.loads(path.read_text())
    return replace(SETTINGS, steps=int(dec["steps"])), {k: float(v) for k, v in dec["lrs"].items()}


def pilot(work: Path, stage: str) -> None:
    if stage == "range":
        # S in increasing order, stopping at the first that reaches the range: the rule takes the
        # smallest such S, so a larger one cannot change the choice (Amendment 0)
        for st in STEP_CHOICES:
            jobs = [
                (
                    arm,
                    k,
                    SETTINGS.pilot_world_offset + k,
                    PROVISIONAL_LR,
                    replace(SETTINGS, steps=st),
                )
                for k in range(3)
                for arm in ("ppkt", "ceiling")
            ]
            run_jobs(jobs, work, "pilot_range")
            dec = range_decision(work, SETTINGS)
            if dec["chosen"] is not None:
                break
        print(json.dumps(dec, indent=2))
        if dec["chosen"] is None:
            raise SystemExit("no step count reaches the dynamic range: stop (PROTOCOL_v3.md)")
        harness.atomic_json(decisions_path(work), {"steps": dec["chosen"], "range": dec, "lrs": {}})
        return
    dec = json.loads(decisions_path(work).read_text())
    s = replace(SETTINGS, steps=int(dec["steps"]))
    arms = [a for a in MAIN_ARMS if a != "random"]
    jobs = [(a, 0, s.pilot_world_offset, lr, s) for a in arms for lr in LR_GRID]
    run_jobs(jobs, work, "pilot_lr")
    lrs = lr_decision(work)
    dec["lr_grid"] = lrs
    dec["lrs"] = {a: v["lr"] for a, v in lrs.items()}
    harness.atomic_json(decisions_path(work), dec)
    print(json.dumps(lrs, indent=2))
