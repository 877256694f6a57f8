"""Section ``models_gpu``: ``benchmarks.gpu.models_gpu``'s ``bench_minkunet`` (adds fp16 and the
CPU-vs-GPU output agreement) and ``bench_sam`` (SAM ViT-H encoder and box labeler). CUDA only;
on CPU an API check runs instead.
"""

from __future__ import annotations

from typing import Any

from benchmarks.gpu import models_gpu
from benchmarks.gpu.bench import Bench

__all__ = ["bench_models_gpu", "models_gpu_api_check"]


def models_gpu_api_check() -> list[str]:
    """What can be checked of models_gpu.py without CUDA: its data helpers run, and the
    olivine_models.vfm calls of ``bench_sam`` bind to the current signatures.
    """
    import inspect

    from olivine_models.vfm import Detection, FixedBoxProvider, SamBoxLabeler, build_sam

    done = []
    pts = models_gpu.sweep_points()
    coords, feats, shape = models_gpu.sparse_input(pts[::32], 2)
    if coords.shape[1] != 4 or feats.shape[0] != coords.shape[0] or len(shape) != 3:
        raise RuntimeError(f"models_gpu.sparse_input: unexpected {coords.shape}, {feats.shape}")
    done.append(f"sweep_points + sparse_input ran ({coords.shape[0]} voxels)")
    inspect.signature(build_sam).bind("vit_h", random_init=True)
    provider = FixedBoxProvider([Detection((100.0, 300.0, 300.0, 700.0), 1, 0.5)])
    inspect.signature(SamBoxLabeler).bind(object(), provider, 14, 0, batch_size=6)
    if not callable(getattr(SamBoxLabeler, "label_batch", None)):
        raise RuntimeError("SamBoxLabeler.label_batch is missing")
    inspect.signature(models_gpu.bench_minkunet).bind(3, 4)  # (repeats, batch), as called below
    inspect.signature(models_gpu.bench_sam).bind(3)  # (repeats)
    done.append("build_sam / FixedBoxProvider / SamBoxLabeler / bench_* signatures bind")
    return done


def bench_models_gpu(bench: Bench) -> dict[str, Any]:
    if not bench.cuda:
        checks = models_gpu_api_check()
        return {
            "status": "skipped",
            "rows": [],
            "api_check": "ok",
            "notes": [
                "CUDA only: benchmarks/gpu/models_gpu.py hard-codes the cuda device",
                *[f"API check: {c}" for c in checks],
            ],
        }
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    repeats = 3
    rows += models_gpu.bench_minkunet(repeats, 4)
    if bench.over():
        notes.append("bench_sam skipped: section budget spent")
    else:
        rows += models_gpu.bench_sam(repeats)
    for r in rows:
        if "peak_gib" in r:
            r["peak_mib"] = r.pop("peak_gib") * 1024
    return {
        "rows": rows,
        "notes": notes,
        "source": "benchmarks/gpu/models_gpu.py",
        "status": "partial" if notes else "ok",
    }
