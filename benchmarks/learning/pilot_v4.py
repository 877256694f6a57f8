"""Learning benchmark v4's pilot (PROTOCOL_v4.md, "Pilot"): stage A (dynamic range at S = 576),
stage B (the lr grid of the tuned arms: the matched lr, the own lrs, the freeze-guard fallback),
the rare classes; everything written to ``decisions.json`` before the first main run.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.learning import common, stats
from benchmarks.learning.run_v4 import (
    FALLBACK_GUARD,
    LR_GRID,
    PROVISIONAL_LR,
    SETTINGS,
    TUNED,
    Settings,
    run_jobs,
)

__all__ = ["decisions_path", "load", "miou", "pilot", "rare_classes", "settings_from"]


def load(work: Path, tag: str) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((work / "results" / tag).rglob("*.json"))]


def miou(rec: dict[str, Any]) -> float:
    return 100 * rec["probe"]["scores"]["miou_present"]


def decisions_path(work: Path) -> Path:
    return work / "decisions.json"


def range_decision(work: Path, s: Settings) -> dict[str, Any]:
    import statistics

    recs = load(work, "pilot_range")
    by = {a: {r["seed"]: miou(r) for r in recs if r["arm"] == a} for a in ("ppkt", "ceiling")}
    seeds = sorted(set(by["ppkt"]) & set(by["ceiling"]))
    d = [by["ceiling"][k] - by["ppkt"][k] for k in seeds]
    alpha = s.alpha / 4
    m = stats.mde(max(statistics.stdev(d), 0.5), s.main_seeds, alpha, s.power)
    return {
        "steps": s.steps, "seeds": seeds, "ppkt": statistics.mean(by["ppkt"].values()),
        "ceiling": statistics.mean(by["ceiling"].values()), "range": statistics.mean(d),
        "sd_diff": statistics.stdev(d), "mde": m, "alpha": alpha,
        "ok": bool(statistics.mean(d) >= s.range_factor * m),
        "mean_run_s": {a: statistics.mean(r["wall_s"] for r in recs if r["arm"] == a)
                       for a in ("ppkt", "ceiling")},
    }  # fmt: skip


def lr_decision(work: Path) -> dict[str, Any]:
    """v3's rule per tuned arm: best probe among gate-passing runs, the smaller lr within 0.3."""
    recs = load(work, "pilot_lr")
    out: dict[str, Any] = {}
    for arm in sorted({r["arm"] for r in recs}):
        runs = sorted((r for r in recs if r["arm"] == arm), key=lambda r: r["lr"])
        out[arm] = common.choose_lr(runs, miou) | {
            "vmf_froze": {
                f"{r['lr']:g}": ((r.get("health") or {}).get("vmf") or {}).get("at_freeze")
                is not None
                for r in runs
            },
        }
    return out


def rare_classes(work: Path, s: Settings) -> dict[str, Any]:
    """The ``s.rare_classes`` least frequent classes of pilot world 1000's training split (GT
    point labels, evaluation space), among those with at least ``s.rare_min_share`` of its
    labelled points (rarer ones are too few to be scored in most validation splits).
    """
    import numpy as np

    from olivine_train.config import load_config
    from olivine_train.recipes.segmentation import build_seg_dataset, class_names_for

    world = common.ensure_world(s, work, s.pilot_world_offset)
    pre = load_config("demo", [*common.PINNED, f"data.root={world}"])
    cfg = common.probe_cfg(pre, None)
    names = class_names_for(cfg)
    counts = np.zeros(len(names), np.int64)
    ds = build_seg_dataset(cfg, "train")
    for i in range(len(ds)):
        lab = ds[i].point_labels
        counts += np.bincount(lab, minlength=len(names))[: len(names)]
    total = counts[1:].sum()
    present = [c for c in range(1, len(names)) if counts[c] > 0]
    eligible = [c for c in present if counts[c] >= s.rare_min_share * total]
    rare = sorted(eligible, key=lambda c: (counts[c], c))[: s.rare_classes]
    return {
        "classes": [names[c] for c in rare],
        "counts": {names[c]: int(counts[c]) for c in present},
        "share": {names[c]: float(counts[c] / total) for c in present},
        "min_share": s.rare_min_share,
    }


def pilot(work: Path, workers: int) -> None:
    s = SETTINGS
    stage_a = [(a, k, s.pilot_world_offset + k, PROVISIONAL_LR if a == "ppkt" else s.ceiling_lr, s)
               for k in range(3) for a in ("ppkt", "ceiling")]  # fmt: skip
    run_jobs(stage_a, work, "pilot_range", workers)
    dec: dict[str, Any] = {"range": range_decision(work, s)}
    harness.log(f"stage A: {json.dumps(dec['range'])}")
    if not dec["range"]["ok"]:
        harness.atomic_json(decisions_path(work), dec | {"stop": "no dynamic range at S=576"})
        raise SystemExit("no dynamic range at S = 576: stop before the main runs (PROTOCOL_v4)")
    stage_b = [(a, 0, s.pilot_world_offset, lr, s) for a in TUNED for lr in LR_GRID]
    run_jobs(stage_b, work, "pilot_lr", workers)
    lrs = lr_decision(work)
    matched = lrs["ppkt"]["lr"]
    froze = [
        lrs[a]["vmf_froze"].get(f"{matched:g}", False) for a in ("sup_vfm_vmf", "olivine_paper")
    ]
    guard = s.vmf_freeze_max_cosine if any(froze) else FALLBACK_GUARD
    dec |= {
        "lr_grid": lrs,
        "matched_lr": matched,
        "own_lrs": {a: v["lr"] for a, v in lrs.items()},
        "vmf_freeze_max_cosine": guard,
        "guard_fallback": not any(froze),
        "rare": rare_classes(work, s),
    }
    harness.atomic_json(decisions_path(work), dec)
    print(json.dumps(dec, indent=1))


def settings_from(work: Path) -> tuple[Settings, dict[str, Any]]:
    path = decisions_path(work)
    if not path.is_file():
        raise SystemExit(f"{path} missing: run the pilot first (--pilot)")
    dec = json.loads(path.read_text())
    if "stop" in dec:
        raise SystemExit(f"the pilot stopped the benchmark: {dec['stop']}")
    return replace(SETTINGS, vmf_freeze_max_cosine=float(dec["vmf_freeze_max_cosine"])), dec
