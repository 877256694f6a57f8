"""The markdown table of a ``run_gpu`` result (printed, and written beside the JSON)."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["render_markdown"]


def _f(x: Any, fmt: str) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, fmt)


def render_markdown(result: dict[str, Any]) -> str:
    env = result["env"]
    where = env["card"] if env["device"].startswith("cuda") else f"CPU ({env['card']})"
    mode = " -- quick smoke sizes, not reportable numbers" if result["quick"] else ""
    out = [
        f"### GPU benchmarks: {where}{mode}",
        "",
        f"torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env.get('cudnn')}, "
        f"spconv {env.get('spconv', '-')}, sparse backend {env.get('sparse_backend', 'spconv')}; "
        f"{result['created']}; total "
        f"{result['elapsed_s']:.0f} s of a {result['budget_s']:.0f} s budget. "
        f"Memory: {result['mem_kind']}.",
    ]
    sec = result["sections"]

    def header(name: str) -> dict[str, Any] | None:
        s = sec.get(name)
        if s is None:
            return None
        out.extend(["", f"**{name}** ({s['status']}, {s.get('elapsed_s', 0):.0f} s)"])
        if s["status"] in ("skipped", "error"):
            out.append("")
            out.extend(f"- {n}" for n in s.get("notes", []))
            if s.get("error"):
                out.append(f"- error: {s['error']}")
            return None
        out.append("")
        return s

    s = header("losses")
    if s:
        out += [
            "| M | dtype | variant | median ms | min ms | x naive | peak MiB |",
            "| ---: | --- | --- | ---: | ---: | ---: | ---: |",
        ]
        for r in s["rows"]:
            v = r["variant"] + (f" ({r['chunk']})" if r.get("chunk") else "")
            out.append(
                f"| {r['M']} | {r['dtype']} | {v} | {_f(r['median_ms'], '.2f')} | "
                f"{_f(r['min_ms'], '.2f')} | {_f(r.get('x_naive'), '.2f')} | "
                f"{_f(r['peak_mib'], ',.0f')} |"
            )
    s = header("minkunet")
    if s:
        out += [
            "| model | backend | precision | batch | voxels | median s | scans/s | peak MiB |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in s["rows"]:
            backend = r.get("backend", "spconv")
            if "unsupported" in r:
                out.append(
                    f"| {r['model']} | {backend} | {r['precision']} | unsupported: "
                    f"{r['unsupported'][:50]} | | | | |"
                )
                continue
            out.append(
                f"| {r['model']} | {backend} | {r['precision']} | {r['batch']} | "
                f"{r['voxels']:,} | "
                f"{_f(r['median_s'], '.4f')} | {_f(r['scans_per_s'], '.1f')} | "
                f"{_f(r['peak_mib'], ',.0f')} |"
            )
    pre_rows = []
    for name in ("pretrain_demo", "pretrain_minkunet34c"):
        s = header(name)
        if s:
            pre_rows += s["rows"]
            out += [
                "| student | teacher | batch | precision | steps | steps/s | scans/s | "
                "median step s | peak MiB |",
                "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
            ]
            for r in s["rows"]:
                out.append(
                    f"| {r['student']} | {r['teacher']} | {r['batch']} | {r['precision']} | "
                    f"{r['steps']} | {_f(r['steps_per_s'], '.2f')} | "
                    f"{_f(r['scans_per_s'], '.2f')} | {_f(r['median_step_s'], '.3f')} | "
                    f"{_f(r['peak_mib'], ',.0f')} |"
                )
    s = header("models_gpu")
    if s:
        out += [
            "| case | what | median s | items/s | peak MiB |",
            "| --- | --- | ---: | ---: | ---: |",
        ]
        for r in s["rows"]:
            out.append(
                f"| {r['case']} | {r['what']} | {_f(r.get('seconds'), '.4f')} | "
                f"{_f(r.get('per_s'), '.2f')} | {_f(r.get('peak_mib'), ',.0f')} |"
            )
    notes = [
        (k, n)
        for k, v in sec.items()
        if v["status"] not in ("skipped", "error")
        for n in v.get("notes", [])
    ]
    if notes:
        out += ["", "Notes:"] + [f"- {k}: {n}" for k, n in notes]
    return "\n".join(out)
