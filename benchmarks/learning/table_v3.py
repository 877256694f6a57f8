"""Learning benchmark v3's table (``results_v3.md``) from the result JSONs: the pilot's decisions,
the per-arm probe mIoU, the paired tests with the protocol's control rules, the dose-response.

    python -m benchmarks.learning.run_v3 --table
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from benchmarks.learning import common, stats
from benchmarks.learning.pilot_v3 import decisions_path, load, miou, settings_from
from benchmarks.learning.run_v3 import (
    ARMS,
    CONTROLS,
    DOSE_ARMS,
    LR_GRID,
    MAIN_ARMS,
    PRIMARY,
    SECONDARY,
    Settings,
    arm_lr,
)

__all__ = ["compare", "control_rules", "table"]


def compare(res: dict[str, dict[int, dict[str, Any]]], a: str, b: str, s: Settings) -> Any:
    seeds = sorted(set(res.get(a, {})) & set(res.get(b, {})))
    ra, rb = res.get(a, {}), res.get(b, {})
    test = stats.paired_test([miou(ra[k]) for k in seeds], [miou(rb[k]) for k in seeds], s.sesoi)
    fails = {x: [k for k in seeds if not r[k]["gate"]["passed"]] for x, r in ((a, ra), (b, rb))}
    gate_ok = all(len(v) < max(2, math.ceil(0.25 * len(seeds))) for v in fails.values())
    return {"a": a, "b": b, "seeds": seeds, "test": test, "gate_fails": fails, "gate_ok": gate_ok}


LABEL_HYPOTHESES = ("sup_vfm > ppkt", "olivine_paper > ppkt")  # H1, H4


def control_rules(key: str, verdict: str, controls: dict[str, str]) -> str:
    """PROTOCOL_v3.md's control rules applied to one primary verdict (controls come first)."""
    if not controls.get("ceiling > ppkt", "").startswith("confirmed"):
        return f"inconclusive (insensitive: no dynamic range; alone: {verdict})"
    if key in LABEL_HYPOTHESES:
        if verdict.startswith("refuted") and not controls.get("sup_gt > ppkt", "").startswith(
            "confirmed"
        ):
            return f"inconclusive (insensitive: positive control failed; alone: {verdict})"
        if controls.get("sup_shuffled > ppkt", "").startswith("confirmed"):
            return f"{verdict} (negative control also beat PPKT: not the labels' content)"
    return verdict


def table(work: Path, out_md: Path) -> str:
    s, lrs = settings_from(work)
    res: dict[str, dict[int, dict[str, Any]]] = {}
    for rec in load(work, "main"):
        rec["gate"] = common.gate(ARMS[rec["arm"]], rec.get("health"), s)  # type: ignore[arg-type]
        res.setdefault(rec["arm"], {})[int(rec["seed"])] = rec
    dec = json.loads(decisions_path(work).read_text())
    lines = [
        "# Learning benchmark v3 (pre-registered; synthetic world, 2-core CPU)",
        "",
        "Protocol: [PROTOCOL_v3.md](PROTOCOL_v3.md), committed before any v3 result. Regenerate: "
        "`python -m benchmarks.learning.run_v3 --table`.",
        "",
    ]
    snaps = sorted({r["snapshot"].get("commit", "?") for a in res.values() for r in a.values()})
    total = sum(r["wall_s"] for a in res.values() for r in a.values())
    n_runs = sum(len(a) for a in res.values())
    lines.append(
        f"Code snapshot(s): {', '.join(snaps)}. {n_runs} finished runs, {total / 60:.1f} min of "
        f"run time. Steps S = {s.steps} (pilot stage A), student `{s.point_encoder}`, batch 2."
    )
    lines += ["", "## Pilot", "", "Stage A (steps vs dynamic range; 3 pilot worlds, lr 1.0):", ""]
    lines.append("| S | ppkt | ceiling | range | sd diff | MDE (n=8) | 3×MDE reached | s/run |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for r in dec["range"]["rows"]:
        lines.append(
            f"| {r['steps']} | {r['ppkt']:.2f} | {r['ceiling']:.2f} | {r['range']:.2f} | "
            f"{r['sd_diff']:.2f} | {r['mde']:.2f} | {'yes' if r['ok'] else 'no'} | "
            f"{r['mean_run_s']:.0f} |"
        )
    lines += ["", "Stage B (base lr grid per arm, pilot world 1000; probe mIoU, gate):", ""]
    lines.append("| arm | " + " | ".join(f"lr {x:g}" for x in LR_GRID) + " | chosen |")
    lines.append("|---|" + "---|" * (len(LR_GRID) + 1))
    for arm, v in sorted(dec.get("lr_grid", {}).items()):
        cells = []
        for x in LR_GRID:
            m, ok = v["grid"].get(f"{x:g}", (None, None))
            cells.append("—" if m is None else f"{m:.2f}{'' if ok else '✗'}")
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {v['lr']:g} {v['flag']} |")
    lines += ["", "## Linear-probe mIoU per arm (converged probe)", ""]
    lines.append(
        "| arm | role | lr | seeds | mIoU mean ± sd | per seed | gate pass | probe iters |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    for arm in (*MAIN_ARMS, *DOSE_ARMS):
        r = res.get(arm, {})
        if not r:
            continue
        vals = [miou(r[k]) for k in sorted(r)]
        sd = statistics.stdev(vals) if len(vals) > 1 else math.nan
        per = ", ".join(
            f"{miou(r[k]):.1f}{'' if r[k]['gate']['passed'] else '✗'}" for k in sorted(r)
        )
        passed = sum(r[k]["gate"]["passed"] for k in r) if ARMS[arm].pretrain else "—"
        iters = [r[k]["probe"]["iterations"] for k in r]
        lines.append(
            f"| {arm} | {ARMS[arm].role} | {arm_lr(arm, lrs):g} | {len(vals)} | "
            f"{statistics.mean(vals):.2f} ± {stats.fmt(sd)} | {per} | {passed} | "
            f"{min(iters)}–{max(iters)} |"
        )
    # probe (and run) noise: the pilot ran some identical configurations in both stages
    twins = {(r["arm"], r["seed"], r["lr"], r["steps"]): miou(r) for r in load(work, "pilot_range")}
    repeat = [
        (key, twins[key], miou(r))
        for r in load(work, "pilot_lr")
        if (key := (r["arm"], r["seed"], r["lr"], r["steps"])) in twins
    ]
    if repeat:
        worst = max(abs(a - b) for _, a, b in repeat)
        lines += [
            "",
            f"Probe and run noise: {len(repeat)} configurations ran twice in the pilot "
            f"({', '.join(k[0] for k, _, _ in repeat)}); largest mIoU difference {worst:.4f} "
            "(pretraining and probe are deterministic on one machine; the probe's objective "
            "is strictly convex). Across machines float rounding compounds: re-run on another "
            "CPU (AVX-512), `sup_vfm_vmf` seed 0 gives 17.523880 against the stored 17.288969 "
            "and `random` seed 0 8.173180 against 8.173331 — identically with v3's own commit "
            "b5cc006, with the runner before issue 27's move (facbe99) and with the moved code: "
            "the step-1 losses agree to the last bit, step 2 by 1 ulp.",
        ]
    conv = [r["probe"] for a in res.values() for r in a.values()]
    largest = max((p["max_abs_grad"] for p in conv), default=0.0)
    lines += [
        "",
        f"Probe convergence: {sum(p['converged'] for p in conv)}/{len(conv)} fits reached max "
        f"|gradient| ≤ {s.probe_tol:g} (largest {largest:.1e}).",
    ]
    verdicts: dict[str, str] = {}
    for title, fam, adjust in (
        ("Controls (unadjusted)", CONTROLS, False),
        ("Primary hypotheses (Holm over the family)", PRIMARY, True),
        ("Secondary (unadjusted)", SECONDARY, False),
    ):
        comps = [compare(res, a, b, s) for a, b in fam]
        ps = [c["test"].get("p", math.nan) for c in comps]
        adj = stats.holm(ps) if adjust else ps
        lines += ["", f"## {title}", ""]
        lines.append(
            "| comparison | n | mean diff | sd | 95 % CI | seeds a > b | p | p adj | verdict |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for c, pa in zip(comps, adj, strict=True):
            t = c["test"]
            verdict = stats.outcome(t, pa, c["gate_ok"], s) if t.get("n", 0) else "not run"  # type: ignore[arg-type]
            key = f"{c['a']} > {c['b']}"
            if fam is PRIMARY:
                verdict = control_rules(key, verdict, verdicts)
            verdicts[key] = verdict
            ci = t.get("ci")
            lines.append(
                f"| {key} | {t.get('n', 0)} | {stats.fmt(t.get('mean'))} | "
                f"{stats.fmt(t.get('sd'))} | "
                f"{'[' + stats.fmt(ci[0]) + ', ' + stats.fmt(ci[1]) + ']' if ci else '—'} | "
                f"{t.get('positive', '—')}/{t.get('n', 0)} | {stats.fmt_p(t.get('p'))} | "
                f"{stats.fmt_p(pa) if adjust else '—'} | {verdict} |"
            )
    ceiling_ok = verdicts.get("ceiling > ppkt", "").startswith("confirmed")
    positive_ok = verdicts.get("sup_gt > ppkt", "").startswith("confirmed")
    negative_ok = not verdicts.get("sup_shuffled > ppkt", "").startswith("confirmed")
    lines += [
        "",
        "Control verdicts:",
        f"- dynamic range (ceiling > PPKT): **{'passed' if ceiling_ok else 'FAILED'}**",
        f"- positive control (GT labels > PPKT): **{'passed' if positive_ok else 'FAILED'}**"
        + ("" if positive_ok else " — a 'refuted' H1/H4 reads 'inconclusive (insensitive)'"),
        f"- negative control (shuffled labels not > PPKT): "
        f"**{'passed' if negative_ok else 'FAILED'}**",
    ]
    # dose-response: fraction of (ceiling - ppkt) recovered
    lines += ["", "## Dose-response (secondary): fraction of (ceiling − PPKT) recovered", ""]
    lines.append("| arm | seeds | mean gain over PPKT | fraction of ceiling − PPKT |")
    lines.append("|---|---|---|---|")
    # the same seeds for every row (the dose arms ran on fewer seeds than sup_gt)
    dose = ("sup_gt", *DOSE_ARMS)
    shared = set(res.get("ppkt", {})) & set(res.get("ceiling", {}))
    for arm in dose:
        shared &= set(res.get(arm, {}))
    seeds = sorted(shared)
    if seeds:
        span = statistics.mean(miou(res["ceiling"][k]) - miou(res["ppkt"][k]) for k in seeds)
        for arm in dose:
            gain = statistics.mean(miou(res[arm][k]) - miou(res["ppkt"][k]) for k in seeds)
            lines.append(f"| {arm} | {len(seeds)} | {gain:.2f} | {gain / span:.2f} |")
    text = "\n".join(lines) + "\n"
    out_md.write_text(text)
    return text
