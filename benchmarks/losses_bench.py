"""Speed and memory benchmark of olivine-losses (not a test).

Speed: forward + backward of ``L_PPNCE + L_sup`` (two independent (M, D) feature pairs, as OLIVINE's
pp and sem heads) at M=4096, D=64 on CPU, for

* ``olivine-losses dense``: ``info_nce`` + ``semantic_contrastive`` (``chunk_size=None``);
* ``olivine-losses chunked``: the same with ``chunk_size`` (custom autograd, O(M * chunk) memory);
* ``naive (reference)``: the reference code's formulation: ``F.cross_entropy`` on the logit matrix
  for PPNCE and a materialised ``exp`` matrix for SupCon (``-log(sum(S * mask) / sum(S))``);
* ``floor``: one ``(M x D) @ (D x M)`` matmul + a row ``logsumexp``, forward only. Any exact
  implementation of the two losses costs more: two forward matmuls plus four backward ones.

Memory: peak resident-set growth of one forward + backward, at large M, each variant in a fresh
subprocess: the kernel's peak-RSS mark ``VmHWM`` is reset (``/proc/self/clear_refs``) right after
the inputs are allocated, and the result is ``VmHWM - VmRSS`` at that point after the step
(``ru_maxrss`` is the fallback where the reset is not allowed; it also counts import-time
transients). torch's CPU allocator returns large blocks to the OS, so RSS follows the tensors
that are live; the number includes allocator and page granularity overheads (it is what the
machine has to have, not an allocator counter). The dense variants need ~O(M^2) memory; before a
dense run the script checks that its predicted peak (a quadratic fit of the smaller runs) fits in
60% of MemAvailable, and otherwise reports it as skipped with the prediction.

Usage::

    python -m benchmarks.losses_bench [--json out.json] [--threads 1] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.harness import atomic_json, environment, machine, round_robin, run_module
from olivine_losses import info_nce, semantic_contrastive

TAU = 0.07
NUM_CLASSES = 17


# ----------------------------------------------------------------------------- variants


def naive_nce(k: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Reference ``NCELoss``: cross-entropy on the logit matrix, diagonal targets."""
    logits = k @ q.T / TAU
    return F.cross_entropy(logits, torch.arange(k.shape[0], device=k.device))


def naive_supcon(k: torch.Tensor, q: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Reference ``SupConLoss``: materialised exp matrix, sum of positives inside the log."""
    sim = torch.exp(k @ q.T / TAU)
    mask = (labels[:, None] == labels[None, :]).float()
    return -torch.log((sim * mask).sum(1) / sim.sum(1)).mean()


def make_inputs(m: int, d: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {
        name: F.normalize(torch.randn(m, d, generator=g), dim=1).requires_grad_(True)
        for name in ("k_pp", "q_pp", "k_sem", "q_sem")
    }
    out["labels"] = torch.randint(0, NUM_CLASSES, (m,), generator=g)
    return out


def step(variant: str, x: dict[str, torch.Tensor], chunk: int) -> None:
    """One forward + backward of the variant (the floor: forward only)."""
    if variant == "floor":
        with torch.no_grad():
            torch.logsumexp(x["k_pp"] @ x["q_pp"].T, dim=1)
        return
    if variant == "naive":
        loss = naive_nce(x["k_pp"], x["q_pp"]) + naive_supcon(x["k_sem"], x["q_sem"], x["labels"])
    else:
        c = None if variant == "dense" else chunk
        loss = info_nce(x["k_pp"], x["q_pp"], TAU, chunk_size=c) + semantic_contrastive(
            x["k_sem"], x["q_sem"], x["labels"], TAU, chunk_size=c
        )
    loss.backward()
    for name in ("k_pp", "q_pp", "k_sem", "q_sem"):
        x[name].grad = None


def time_interleaved(
    fns: dict[str, Callable[[], None]], repeats: int, warmup: int = 1
) -> dict[str, dict[str, float]]:
    """Round-robin timing (``harness.round_robin``): median and min milliseconds per variant."""
    timings = round_robin(fns, rounds=repeats, warmup=warmup)
    return {n: {"median_ms": 1e3 * t.median, "min_ms": 1e3 * t.best} for n, t in timings.items()}


# ----------------------------------------------------------------------------- memory


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _mem_child(variant: str, m: int, d: int, chunk: int) -> None:
    # a tiny warm-up first, so that one-off initialisation (thread pools, BLAS workspaces, the
    # autograd engine) is in the baseline and not in the delta
    step(variant, make_inputs(64, d), chunk)
    x = make_inputs(m, d)
    reset = _reset_peak_rss()
    base = _status_kib("VmRSS") * 1024
    step(variant, x, chunk)
    if reset:  # peak of this step only
        peak, method = _status_kib("VmHWM") * 1024, "VmHWM after clear_refs"
    else:  # peak of the whole process (includes import-time transients)
        peak, method = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "ru_maxrss"
    print(
        json.dumps(
            {"peak_delta_bytes": max(peak - base, 0), "baseline_bytes": base, "method": method}
        )
    )


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def measure_memory(variant: str, m: int, d: int, chunk: int, threads: int) -> dict[str, Any]:
    args = ("--_mem-child", variant, str(m), str(d), str(chunk), "--threads", str(threads))
    out = run_module(__spec__.name, *args, capture=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def quadratic_prediction(points: list[tuple[int, int]], m: int) -> float:
    """Least-squares fit of bytes = a M^2 + b M to (M, bytes) points, evaluated at m."""
    s4 = sum(p**4 for p, _ in points)
    s3 = sum(p**3 for p, _ in points)
    s2 = sum(p**2 for p, _ in points)
    y2 = sum(v * p**2 for p, v in points)
    y1 = sum(v * p for p, v in points)
    det = s4 * s2 - s3 * s3
    a = (y2 * s2 - y1 * s3) / det
    b = (s4 * y1 - s3 * y2) / det
    return a * m * m + b * m


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the results as JSON to this path")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--m", type=int, default=4096, help="pairs for the speed benchmark")
    parser.add_argument("--d", type=int, default=64, help="feature size")
    parser.add_argument("--chunk", type=int, default=1024, help="chunk_size of the chunked path")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--mem-m", type=int, default=32768, help="pairs for the memory benchmark")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--_mem-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args._mem_child:
        variant, m, d, chunk = args._mem_child
        _mem_child(variant, int(m), int(d), int(chunk))
        return

    if args.quick:
        args.m, args.mem_m, args.repeats = 512, 2048, 3

    env = {
        **machine(),
        "code": environment(),
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "loadavg_before": os.getloadavg(),
        "mem_available_bytes": mem_available(),
    }

    # --- speed
    x = make_inputs(args.m, args.d)
    speed = time_interleaved(
        {v: (lambda v=v: step(v, x, args.chunk)) for v in ("floor", "dense", "chunked", "naive")},
        args.repeats,
    )

    # --- memory: chunked at every size, dense only where it is predicted to fit
    sizes = sorted({args.mem_m // 8, args.mem_m // 4, args.mem_m // 2, args.mem_m})
    memory: dict[str, dict[int, dict[str, Any]]] = {"chunked": {}, "dense": {}, "naive": {}}
    for variant in ("chunked", "dense", "naive"):
        points: list[tuple[int, int]] = []
        for m in sizes:
            if variant != "chunked" and len(points) >= 2:
                predicted = quadratic_prediction(points, m)
                if predicted > 0.6 * mem_available():
                    memory[variant][m] = {
                        "skipped": True,
                        "predicted_peak_delta_bytes": predicted,
                        "mem_available_bytes": mem_available(),
                    }
                    continue
            res = measure_memory(variant, m, args.d, args.chunk, args.threads)
            memory[variant][m] = res
            points.append((m, res["peak_delta_bytes"]))

    env["loadavg_after"] = os.getloadavg()
    result = {
        "env": env,
        "config": {"M": args.m, "D": args.d, "chunk": args.chunk, "repeats": args.repeats},
        "speed": speed,
        "memory": {v: {str(m): r for m, r in d.items()} for v, d in memory.items()},
    }
    print(render_markdown(result, sizes))
    if args.json:
        atomic_json(args.json, result)


def render_markdown(result: dict[str, Any], sizes: list[int]) -> str:
    cfg, env, speed = result["config"], result["env"], result["speed"]
    names = {
        "floor": "floor: 1 matmul + row logsumexp (forward only)",
        "dense": "olivine-losses, dense (`chunk_size=None`)",
        "chunked": f"olivine-losses, chunked (`chunk_size={cfg['chunk']}`)",
        "naive": "naive (reference: CE + materialised `exp` matrix)",
    }
    lines = [
        f"Forward + backward of L_PPNCE + L_sup, M={cfg['M']}, D={cfg['D']}, float32, CPU, "
        f"{env['threads']} thread(s), torch {env['torch']}, median and min of {cfg['repeats']} "
        "interleaved rounds:",
        "",
        "| variant | median ms | min ms | x floor | x naive |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    floor, naive = speed["floor"]["median_ms"], speed["naive"]["median_ms"]
    for v in ("floor", "dense", "chunked", "naive"):
        s = speed[v]
        lines.append(
            f"| {names[v]} | {s['median_ms']:.1f} | {s['min_ms']:.1f} | "
            f"{s['median_ms'] / floor:.2f} | {s['median_ms'] / naive:.2f} |"
        )
    lines += [
        "",
        "Peak RSS growth of one forward + backward of L_PPNCE + L_sup (fresh subprocess per cell, "
        "peak RSS of the step, `VmHWM` reset after allocating the inputs, minus RSS before it), "
        "MiB:",
        "",
        "| variant | " + " | ".join(f"M={m}" for m in sizes) + " |",
        "| --- | " + " | ".join("---:" for _ in sizes) + " |",
    ]
    for v in ("chunked", "dense", "naive"):
        cells = []
        for m in sizes:
            r = result["memory"][v].get(str(m))
            if r is None:
                cells.append("-")
            elif r.get("skipped"):
                cells.append(f"skipped (~{r['predicted_peak_delta_bytes'] / 2**20:,.0f} predicted)")
            else:
                cells.append(f"{r['peak_delta_bytes'] / 2**20:,.0f}")
        label = names[v].split(" (")[0] if v != "chunked" else names[v]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
