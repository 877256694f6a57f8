"""Learning benchmark v4's table (``results_v4.md``) from the result JSONs (PROTOCOL_v4.md): the
pilot's decisions, every run per arm, the controls, the primary family at the matched lr (Holm),
the secondary comparisons, the class directions over the warm-up and at the freeze, the width
comparison and DCAS on the rare classes and range bins.

    python -m benchmarks.learning.run_v4 --table
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from benchmarks.learning import common, stats
from benchmarks.learning.pilot_v4 import load, miou, settings_from
from benchmarks.learning.run_v4 import LR_GRID, MAIN_ARMS, OWN, SECONDARY_ARMS, Settings, base_arm

__all__ = ["table"]

Results = dict[str, dict[int, dict[str, Any]]]
CONTROLS = (("ceiling", "ppkt", "miou"), ("sup_gt", "ppkt", "miou"), ("ppkt", "random", "miou"))
PRIMARY = (
    ("sup_vfm_vmf", "sup_vfm", "miou"),  # H2
    ("sup_gt_vmf", "sup_gt", "miou"),  # H5
    ("olivine_paper", "ppkt", "miou"),  # H4
    ("sup_vfm", "sup_vfm_uniform", "rare"),  # H3r
)
PRIMARY_IDS = ("H2", "H5", "H4", "H3r")
SECONDARY = (
    ("sup_vfm", "ppkt", "miou"),  # H1
    ("sup_vfm", "sup_vfm_uniform", "miou"),  # H3
    ("sup_gt", "sup_vfm", "miou"),  # S1
    ("sup_vfm_vmf_h16", "sup_vfm_h16", "miou"),  # H2w
    ("sup_vfm_vmf" + OWN, "sup_vfm" + OWN, "miou"),  # H2-own
    ("olivine_paper" + OWN, "ppkt" + OWN, "miou"),  # H4-own
)
SECONDARY_IDS = ("H1", "H3", "S1", "H2w", "H2-own", "H4-own")
VMF_ARMS = ("sup_vfm_vmf", "sup_gt_vmf", "olivine_paper", "sup_vfm_vmf_h16")


def rare_miou(rec: dict[str, Any], rare: list[str]) -> float:
    """Mean IoU (%) over the rare classes present in this run's validation split."""
    iou = rec["probe"]["scores"]["iou"]
    vals = [iou[c] for c in rare if iou.get(c) is not None]
    return 100 * statistics.mean(vals) if vals else math.nan


def endpoint(rec: dict[str, Any], which: str, rare: list[str]) -> float:
    return miou(rec) if which == "miou" else rare_miou(rec, rare)


def collect(work: Path, s: Settings, dec: dict[str, Any]) -> Results:
    """Main results per arm and seed, regated; ``x@own`` is ``x``'s run where the lrs agree."""
    res: Results = {}
    for rec in load(work, "main"):
        rec["gate"] = common.gate(base_arm(rec["arm"]), rec.get("health"), s)
        res.setdefault(rec["arm"], {})[int(rec["seed"])] = rec
    for arm, own in dec.get("own_lrs", {}).items():
        if float(own) == float(dec["matched_lr"]) and arm in res:
            res[arm + OWN] = {k: r for k, r in res[arm].items() if k < s.secondary_seeds}
    return res


def compare(res: Results, a: str, b: str, which: str, s: Settings, rare: list[str]) -> Any:
    ra, rb = res.get(a, {}), res.get(b, {})
    seeds = sorted(set(ra) & set(rb))
    va = [endpoint(ra[k], which, rare) for k in seeds]
    vb = [endpoint(rb[k], which, rare) for k in seeds]
    keep = [i for i in range(len(seeds)) if va[i] == va[i] and vb[i] == vb[i]]
    seeds, va, vb = [seeds[i] for i in keep], [va[i] for i in keep], [vb[i] for i in keep]
    test = stats.paired_test(va, vb, s.sesoi)
    fails = {x: [k for k in seeds if not r[k]["gate"]["passed"]] for x, r in ((a, ra), (b, rb))}
    gate_ok = all(len(v) < max(2, math.ceil(0.25 * len(seeds))) for v in fails.values())
    return {"a": a, "b": b, "which": which, "seeds": seeds, "test": test, "gate_ok": gate_ok}


def _rule(key: str, verdict: str, controls: dict[str, str]) -> str:
    """PROTOCOL_v4's control rules (as v3's): C1 first, then C2 for the label hypothesis H4."""
    if verdict.startswith("not run"):
        return verdict
    if not controls.get("ceiling > ppkt", "").startswith("confirmed"):
        return f"inconclusive (insensitive: no dynamic range; alone: {verdict})"
    if key == "olivine_paper > ppkt" and verdict.startswith("refuted"):
        if not controls.get("sup_gt > ppkt", "").startswith("confirmed"):
            return f"inconclusive (insensitive: positive control failed; alone: {verdict})"
    return verdict


def _family(
    lines: list[str], title: str, fam: Any, ids: Any, res: Results, s: Settings, rare: list[str],
    adjust: bool, verdicts: dict[str, str],
) -> None:  # fmt: skip
    comps = [compare(res, a, b, w, s, rare) for a, b, w in fam]
    ps = [c["test"].get("p", math.nan) for c in comps]
    adj = stats.holm(ps) if adjust else ps
    lines += ["", f"## {title}", ""]
    head = "| id | comparison | endpoint | n | mean diff | sd | 95 % CI | a > b | p | p adj |"
    lines.append(head + " verdict |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for i, (c, pa) in enumerate(zip(comps, adj, strict=True)):
        t = c["test"]
        verdict = stats.outcome(t, pa, c["gate_ok"], s) if t.get("n", 0) else "not run yet"
        key = f"{c['a']} > {c['b']}"
        if title.startswith("Primary"):
            verdict = _rule(key, verdict, verdicts)
        verdicts[key] = verdict
        four = any(x in SECONDARY_ARMS or x.endswith(OWN) for x in (c["a"], c["b"]))
        planned = s.secondary_seeds if four else s.main_seeds
        if 0 < t.get("n", 0) < planned:  # the protocol reads a comparison on all its seeds
            verdict = f"interim ({t['n']} of {planned} seeds; not a verdict): {verdict}"
        ci = t.get("ci")
        ci_text = f"[{stats.fmt(ci[0])}, {stats.fmt(ci[1])}]" if ci else "—"
        lines.append(
            f"| {ids[i] if ids else ''} | {key} | {c['which']} | {t.get('n', 0)} | "
            f"{stats.fmt(t.get('mean'))} | {stats.fmt(t.get('sd'))} | {ci_text} | "
            f"{t.get('positive', '—')}/{t.get('n', 0)} | {stats.fmt_p(t.get('p'))} | "
            f"{stats.fmt_p(pa) if adjust else '—'} | {verdict} |"
        )


def _pilot(lines: list[str], dec: dict[str, Any], work: Path) -> None:
    r = dec["range"]
    lines += ["", "## Pilot", "", "Stage A (S = 576, lr 1.0, pilot worlds 1000–1002):", ""]
    lines.append("| ppkt | ceiling | range | sd diff | MDE (n 8, α 0.0125) | 3×MDE reached |")
    lines.append("|---|---|---|---|---|---|")
    lines.append(
        f"| {r['ppkt']:.2f} | {r['ceiling']:.2f} | {r['range']:.2f} | {r['sd_diff']:.2f} | "
        f"{r['mde']:.2f} | {'yes' if r['ok'] else 'no'} |"
    )
    if "lr_grid" not in dec:
        return
    lines += ["", "Stage B (base lr grid, pilot world 1000; probe mIoU, ✗ gate failed, "
              "❄ the vMF prior froze):", ""]  # fmt: skip
    lines.append("| arm | " + " | ".join(f"lr {x:g}" for x in LR_GRID) + " | chosen |")
    lines.append("|---|" + "---|" * (len(LR_GRID) + 1))
    for arm, v in sorted(dec["lr_grid"].items()):
        cells = []
        for x in LR_GRID:
            m, ok = v["grid"].get(f"{x:g}", (None, None))
            froze = "❄" if v.get("vmf_froze", {}).get(f"{x:g}") and arm in VMF_ARMS else ""
            cells.append("—" if m is None else f"{m:.2f}{'' if ok else '✗'}{froze}")
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {v['lr']:g} {v['flag']} |")
    lines += ["", "The pilot's vMF runs at the freeze (pilot world 1000): freeze step, mean / max "
              "cosine of the class directions, the 3 most collinear pairs:", ""]  # fmt: skip
    for r in sorted(load(work, "pilot_lr"), key=lambda r: (r["arm"], r["lr"])):
        f = ((r.get("health") or {}).get("vmf") or {}).get("at_freeze")
        if r["arm"] not in VMF_ARMS:
            continue
        pairs = ", ".join(f"{a}–{b} {c:.3f}" for a, b, c in
                          ((r.get("directions") or {}).get("top_pairs") or [])[:3])  # fmt: skip
        state = (f"step {f['step']:.0f}, {f['mu_cos_mean']:.3f} / {f['mu_cos_max']:.3f}"
                 if f else "never froze")  # fmt: skip
        lines.append(f"- `{r['arm']}` lr {r['lr']:g}: {state}; {pairs}")
    rare = dec["rare"]
    lines += [
        "",
        f"Matched lr (PPKT's choice): **{dec['matched_lr']:g}**; freeze guard "
        f"**{dec['vmf_freeze_max_cosine']}**"
        + (" (fallback: no pilot vMF run froze under 0.5)" if dec.get("guard_fallback") else "")
        + ". Rare classes (≥ 0.1 % of pilot world 1000's labelled training points, the 5 least "
        "frequent): "
        + ", ".join(f"{c} ({100 * rare['share'][c]:.2f} %)" for c in rare["classes"])
        + ".",
    ]


def _arms(lines: list[str], res: Results, dec: dict[str, Any], rare: list[str]) -> None:
    lines += ["", "## Linear-probe mIoU per arm (converged probe; every run)", ""]
    lines.append("| arm | role | lr | seeds | mIoU mean ± sd | per seed | rare-class mIoU | "
                 "gate pass | vMF froze | probe iters |")  # fmt: skip
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    names = [*MAIN_ARMS, *SECONDARY_ARMS, *sorted(a for a in res if a.endswith(OWN))]
    for arm in names:
        r = res.get(arm, {})
        if not r:
            continue
        vals = [miou(r[k]) for k in sorted(r)]
        sd = statistics.stdev(vals) if len(vals) > 1 else math.nan
        per = ", ".join(
            f"{miou(r[k]):.1f}{'' if r[k]['gate']['passed'] else '✗'}" for k in sorted(r)
        )
        rares = [x for k in sorted(r) if (x := rare_miou(r[k], rare)) == x]
        pretrain = base_arm(arm).pretrain
        passed = sum(r[k]["gate"]["passed"] for k in r) if pretrain else "—"
        froze = [((r[k].get("health") or {}).get("vmf") or {}).get("at_freeze") for k in r]
        froze_text = f"{sum(f is not None for f in froze)}/{len(froze)}" if any(
            (r[k].get("health") or {}).get("vmf") for k in r
        ) else "—"  # fmt: skip
        iters = [r[k]["probe"]["iterations"] for k in r]
        role = "secondary" if arm.endswith(OWN) else base_arm(arm).role
        lines.append(
            f"| {arm} | {role} | {r[min(r)]['lr']:g} | {len(vals)} | "
            f"{statistics.mean(vals):.2f} ± {stats.fmt(sd)} | {per} | "
            f"{stats.fmt(statistics.mean(rares)) if rares else '—'} | {passed} | {froze_text} | "
            f"{min(iters)}–{max(iters)} |"
        )


def _at(curve: list[list[Any]], step: int) -> list[Any] | None:
    """The last logged entry at or before ``step``."""
    before = [c for c in curve if c[0] <= step]
    return before[-1] if before else None


def _directions(lines: list[str], res: Results, s: Settings) -> None:
    lines += ["", "## The class directions: over the warm-up and at the freeze", ""]
    checkpoints = (1, s.steps // 8, s.steps // 4, s.steps // 2 - 1)
    lines.append(
        "Mean over seeds of the mean / max pairwise cosine of the observed class directions "
        f"(`vmf/mu_cos_mean`, `vmf/mu_cos_max`) at steps {', '.join(map(str, checkpoints))} "
        "and at the freeze; the freeze step (median); the class pairs most often among the 3 most "
        "collinear at the freeze (seeds)."
    )
    tail = " | at freeze | freeze step | froze | most collinear pairs at the freeze |"
    lines += ["", "| arm | " + " | ".join(f"step {c}" for c in checkpoints) + tail]
    lines.append("|---|" + "---|" * (len(checkpoints) + 4))
    for arm in [a for a in res if a.removesuffix(OWN) in VMF_ARMS]:
        r = res[arm]
        cells = []
        for c in checkpoints:
            means = [x[1] for k in r if (x := _at(r[k]["curves"].get("mu_cos_mean", []), c))]
            maxes = [x[1] for k in r if (x := _at(r[k]["curves"].get("mu_cos_max", []), c))]
            cells.append(
                f"{statistics.mean(means):.2f} / {statistics.mean(maxes):.3f}"
                if means and maxes
                else (f"{statistics.mean(means):.2f} / —" if means else "—")
            )
        frozen = [
            f for k in r if (f := ((r[k].get("health") or {}).get("vmf") or {}).get("at_freeze"))
        ]
        at = "never"
        if frozen:
            at = (f"{statistics.mean(f['mu_cos_mean'] for f in frozen):.2f} / "
                  f"{statistics.mean(f['mu_cos_max'] for f in frozen):.3f}")  # fmt: skip
        step = f"{statistics.median(f['step'] for f in frozen):.0f}" if frozen else "—"
        pairs: dict[str, int] = {}
        for k in r:
            for a, b, _ in ((r[k].get("directions") or {}).get("top_pairs") or [])[:3]:
                key = f"{a}–{b}"
                pairs[key] = pairs.get(key, 0) + 1
        top = ", ".join(f"{p} ({n})" for p, n in sorted(pairs.items(), key=lambda x: -x[1])[:4])
        lines.append(
            f"| {arm} | " + " | ".join(cells)
            + f" | {at} | {step} | {len(frozen)}/{len(r)} | {top or '—'} |"
        )  # fmt: skip


def _dcas(lines: list[str], res: Results, rare: list[str]) -> None:
    a, b = res.get("sup_vfm", {}), res.get("sup_vfm_uniform", {})
    seeds = sorted(set(a) & set(b))
    lines += ["", "## DCAS vs uniform pairs: per class and per range bin", ""]
    if not seeds:
        lines.append("Not run yet.")
        return
    lines.append(f"Seeds {seeds}; IoU % (mean over the seeds where the class is present); "
                 "★ a pre-stated rare class.")  # fmt: skip
    lines += [
        "",
        "| class | DCAS (sup_vfm) | uniform | DCAS − uniform | seeds |",
        "|---|---|---|---|---|",
    ]
    names = list(a[seeds[0]]["probe"]["scores"]["iou"])
    for c in names:
        pairs = [(a[k]["probe"]["scores"]["iou"][c], b[k]["probe"]["scores"]["iou"][c])
                 for k in seeds]  # fmt: skip
        pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
        if not pairs:
            continue
        da, db = (100 * statistics.mean(v) for v in zip(*pairs))
        mark = " ★" if c in rare else ""
        lines.append(f"| {c}{mark} | {da:.2f} | {db:.2f} | {da - db:+.2f} | {len(pairs)} |")
    bins = a[seeds[0]]["probe"].get("scores_by_range") or {}
    if bins:
        lines += ["", "| range bin (m) | DCAS mIoU | uniform mIoU | DCAS − uniform |",
                  "|---|---|---|---|"]  # fmt: skip
        for key in bins:
            da = statistics.mean(
                100 * a[k]["probe"]["scores_by_range"][key]["miou_present"] for k in seeds
            )
            db = statistics.mean(
                100 * b[k]["probe"]["scores_by_range"][key]["miou_present"] for k in seeds
            )
            lines.append(f"| {key} | {da:.2f} | {db:.2f} | {da - db:+.2f} |")


def table(work: Path, out_md: Path) -> str:
    s, dec = settings_from(work)
    rare = list(dec["rare"]["classes"])
    res = collect(work, s, dec)
    runs = load(work, "main")
    snaps = sorted({r["snapshot"].get("commit", "?")[:10] for r in runs})
    total = sum(r["wall_s"] for r in runs)
    lines = [
        "# Learning benchmark v4 (pre-registered; synthetic world, 2-core CPU)",
        "",
        "Protocol: [PROTOCOL_v4.md](PROTOCOL_v4.md), committed before any v4 result. Regenerate: "
        "`python -m benchmarks.learning.run_v4 --table`.",
        "",
        f"Code snapshot(s): {', '.join(snaps) or '—'}. {len(runs)} finished main runs, "
        f"{total / 60:.1f} min of run time (two runs at a time). S = {s.steps} steps, student "
        f"`{s.point_encoder}`, batch 2, matched base lr {dec.get('matched_lr', '—')}, freeze "
        f"guard {s.vmf_freeze_max_cosine}.",
    ]
    cpus = sorted({json.dumps((r["snapshot"].get("cpu") or {}).get("model", "not recorded"))
                   for r in runs})  # fmt: skip
    lines.append(f"CPU(s) of these runs: {', '.join(json.loads(c) for c in cpus) or '—'}.")
    _pilot(lines, dec, work)
    _arms(lines, res, dec, rare)
    conv = [r["probe"] for r in runs]
    lines += ["", f"Probe convergence: {sum(p['converged'] for p in conv)}/{len(conv)} fits "
              f"reached max |gradient| ≤ {s.probe_tol:g}."]  # fmt: skip
    verdicts: dict[str, str] = {}
    _family(lines, "Controls (unadjusted)", CONTROLS, None, res, s, rare, False, verdicts)
    _family(lines, "Primary hypotheses at the matched lr (Holm over the family)", PRIMARY,
            PRIMARY_IDS, res, s, rare, True, verdicts)  # fmt: skip
    _family(lines, "Secondary (unadjusted; H2w and the @own pairs on 4 seeds)", SECONDARY,
            SECONDARY_IDS, res, s, rare, False, verdicts)  # fmt: skip
    _directions(lines, res, s)
    _dcas(lines, res, rare)
    text = "\n".join(lines) + "\n"
    out_md.write_text(text)
    return text
