"""Section ``losses``: forward + backward of ``L_PPNCE + L_sup`` (``olivine_losses.info_nce`` +
``semantic_contrastive``) dense and chunked, fp32 and bf16, against the naive reference and the
matmul + logsumexp floor of ``benchmarks.losses_bench`` (the CPU and GPU benchmarks time the
same code); then a large M (chunked, and dense / naive where their predicted peak fits).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks.gpu.bench import NUM_CLASSES, TAU, Bench

__all__ = ["bench_losses"]


def _loss_step() -> tuple[Callable[..., None], str]:
    """One fwd+bwd of a loss variant (floor / dense / chunked / naive reference), taken from
    ``benchmarks.losses_bench`` so that CPU and GPU benchmarks time the same code.
    """
    from benchmarks.losses_bench import TAU as bench_tau
    from benchmarks.losses_bench import step

    if bench_tau != TAU:
        raise RuntimeError(f"losses_bench.TAU={bench_tau} differs from this section's {TAU}")
    return step, "benchmarks/losses_bench.py"


def bench_losses(bench: Bench) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    step, naive_src = _loss_step()
    quick = bench.quick
    d = 64
    m_small, chunk_small = (512, 128) if quick else (4096, 1024)
    m_large, chunk_large = (1024, 256) if quick else (32768, 4096)
    repeats_small, repeats_large = (2, 2) if quick else (20, 5)
    dtypes = (("fp32", torch.float32), ("bf16", torch.bfloat16))

    def inputs(m: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        x = {
            n: F.normalize(torch.randn(m, d, generator=g), dim=1)
            .to(bench.device, dtype)
            .requires_grad_(True)
            for n in ("k_pp", "q_pp", "k_sem", "q_sem")
        }
        x["labels"] = torch.randint(0, NUM_CLASSES, (m,), generator=g).to(bench.device)
        return x

    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    # peak-memory growth per (variant, dtype) at m_small, used to predict the m_large peak
    small_peak: dict[tuple[str, str], float] = {}

    def run(variant: str, m: int, chunk: int, dname: str, dtype: torch.dtype, reps: int) -> None:
        x = inputs(m, dtype)
        bench.sync()
        bench.reset_peak()
        base = bench.allocated_mib()
        step(variant, x, chunk)  # the first call also serves as warm-up
        bench.sync()
        peak = bench.peak_mib()
        t = bench.timeit(lambda: step(variant, x, chunk), reps, warmup=1)
        row = {
            "M": m,
            "D": d,
            "dtype": dname,
            "variant": variant,
            "chunk": chunk if variant == "chunked" else None,
            "median_ms": 1e3 * t["median_s"],
            "min_ms": 1e3 * t["min_s"],
            "repeats": t["repeats"],
            "peak_mib": peak,
            "peak_over_inputs_mib": peak - base if bench.cuda else None,
        }
        if "truncated" in t:
            row["truncated"] = t["truncated"]
            notes.append(f"M={m} {dname} {variant}: {t['truncated']}")
        rows.append(row)
        if m == m_small:
            small_peak[(variant, dname)] = max(peak - base, 1.0) * 2**20

    for dname, dtype in dtypes:
        for variant in ("floor", "dense", "chunked", "naive"):
            if bench.over():
                notes.append(f"M={m_small} {dname} {variant}: skipped, section budget spent")
                continue
            run(variant, m_small, chunk_small, dname, dtype, repeats_small)
    for dname, dtype in dtypes:
        for variant in ("chunked", "dense", "naive"):
            if bench.over():
                notes.append(f"M={m_large} {dname} {variant}: skipped, section budget spent")
                continue
            if variant != "chunked" and bench.cuda:
                # O(M^2): scale the measured M=m_small growth quadratically
                predicted = small_peak.get((variant, dname), 0.0) * (m_large / m_small) ** 2
                if predicted > 0.8 * bench.free_bytes():
                    notes.append(
                        f"M={m_large} {dname} {variant}: skipped, predicted peak "
                        f"{predicted / 2**30:.1f} GiB > 80% of free memory"
                    )
                    continue
            try:
                run(variant, m_large, chunk_large, dname, dtype, repeats_large)
            except torch.OutOfMemoryError:
                bench.reset_peak()
                notes.append(f"M={m_large} {dname} {variant}: out of memory")
    # ratios against the naive reference of the same size and dtype
    naive = {(r["M"], r["dtype"]): r["median_ms"] for r in rows if r["variant"] == "naive"}
    for r in rows:
        ref = naive.get((r["M"], r["dtype"]))
        r["x_naive"] = r["median_ms"] / ref if ref else None
    return {
        "rows": rows,
        "notes": notes,
        "naive_reference": naive_src,
        "config": {"tau": TAU, "num_classes": NUM_CLASSES, "sizes": [m_small, m_large]},
    }
