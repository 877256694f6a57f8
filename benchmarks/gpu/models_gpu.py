"""olivine-models GPU benchmark (needs CUDA; exits with a message otherwise).

* MinkUNet-34C forward+backward throughput on the real nuScenes sweep (or, if the shared data is
  absent, a synthetic cylindrical sweep of the same size), voxelised by the package
  (``harness.sparse_input``: ``olivine_data.voxelize``, cylindrical 0.1 m x 1 deg x 0.1 m),
  fp32 and bf16/fp16 autocast, batch of ``--batch`` copies of the sweep; spconv's implicit-GEMM
  algorithm is chosen automatically for CUDA inputs. Also checks that CPU (Native) and GPU
  (implicit GEMM) outputs agree for the same weights.
* SAM ViT-H-sized model with random weights (``build_sam("vit_h", random_init=True)``): image
  encoder images/s at 1024x1024 under fp16 autocast, and box-labeler images/s on 1600x900 images.

Usage::

    python -m benchmarks.gpu.models_gpu [--repeats 5] [--batch 4] [--skip-sam] [--json PATH]

Times: median of ``--repeats`` calls after one warm-up (``harness.time_call``, CUDA synchronised).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import (
    atomic_json,
    environment,
    machine,
    nuscenes_sweep,
    shared_data,
    sparse_input,
    time_call,
)

__all__ = ["bench_minkunet", "bench_sam", "sparse_input", "sweep_points"]


def sweep_points() -> np.ndarray:
    """The real sweep (``harness.nuscenes_sweep``), else a synthetic one of the same size."""
    data = shared_data(required=False)
    if data is not None:
        try:
            return nuscenes_sweep(data)[0]
        except FileNotFoundError:
            pass
    rng = np.random.default_rng(0)
    n = 34688
    rho = rng.uniform(2.0, 60.0, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    z = rng.uniform(-2.0, 2.0, n)
    return np.stack([rho * np.cos(phi), rho * np.sin(phi), z, rng.uniform(0, 255, n)], 1).astype(
        np.float32
    )


def timed(fn: Any, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up, CUDA synchronised."""
    return time_call(fn, repeats=repeats, warmup=1).median


def bench_minkunet(repeats: int, batch: int) -> list[dict[str, Any]]:
    import torch

    from olivine_models import create_point_encoder

    coords_np, feats_np, shape = sparse_input(sweep_points(), batch)
    dev = torch.device("cuda")
    coords = torch.from_numpy(coords_np).to(dev)
    feats = torch.from_numpy(feats_np).to(dev)
    torch.manual_seed(0)
    model = create_point_encoder("minkunet34c").to(dev)
    rows = []
    for label, dtype in (("fp32", None), ("bf16", torch.bfloat16), ("fp16", torch.float16)):

        def step(dtype: Any = dtype) -> None:
            model.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
                out = model(coords, feats, shape, batch)
            out.float().square().mean().backward()

        try:
            torch.cuda.reset_peak_memory_stats()
            seconds = timed(step, repeats)
            rows.append(
                {
                    "case": f"minkunet34c {label}",
                    "what": f"fwd+bwd, batch {batch} ({coords.shape[0]:,} voxels)",
                    "seconds": seconds,
                    "per_s": batch / seconds,
                    "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
                }
            )
        except Exception as exc:  # report unsupported precisions instead of failing the run
            rows.append({"case": f"minkunet34c {label}", "what": f"unsupported: {exc!r}"[:120]})
    # same weights on CPU (Native) and GPU (implicit GEMM)
    model.eval()
    n = int((coords[:, 0] == 0).sum())
    with torch.no_grad():
        gpu = model(coords[:n], feats[:n], shape, 1).cpu()
        cpu_model = model.to("cpu")
        cpu = cpu_model(coords[:n].cpu(), feats[:n].cpu(), shape, 1)
    rows.append(
        {
            "case": "minkunet34c cpu-vs-gpu",
            "what": f"max |diff| eval outputs: {float((gpu - cpu).abs().max()):.2e}",
        }
    )
    return rows


def bench_sam(repeats: int) -> list[dict[str, Any]]:
    import torch

    from olivine_models.vfm import Detection, FixedBoxProvider, SamBoxLabeler, build_sam

    dev = torch.device("cuda")
    sam = build_sam("vit_h", random_init=True).to(dev)
    rows = []
    for b in (1, 4):
        x = torch.randn(b, 3, 1024, 1024, device=dev)  # already "preprocessed" input

        def encode(x: torch.Tensor = x) -> None:
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
                sam.image_encoder(x)

        seconds = timed(encode, repeats)
        rows.append(
            {
                "case": "sam vit_h encoder fp16",
                "what": f"batch {b} at 1024x1024 (random weights)",
                "seconds": seconds,
                "per_s": b / seconds,
            }
        )
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (900, 1600, 3), dtype=np.uint8) for _ in range(6)]
    boxes = [
        Detection((100.0 + 200 * i, 300.0, 300.0 + 200 * i, 700.0), i + 1, 0.5) for i in range(6)
    ]
    labeler = SamBoxLabeler(sam, FixedBoxProvider(boxes), 14, 0, batch_size=6)
    seconds = timed(lambda: labeler.label_batch(images), repeats)
    rows.append(
        {
            "case": "sam vit_h box labeler",
            "what": "6 images 1600x900, 6 boxes each, fp16 autocast",
            "seconds": seconds,
            "per_s": 6 / seconds,
        }
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4, help="sweeps per MinkUNet batch")
    parser.add_argument("--skip-sam", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print(
            "models_gpu.py: no CUDA device available; this benchmark needs a GPU.", file=sys.stderr
        )
        return 2
    rows = bench_minkunet(args.repeats, args.batch)
    if not args.skip_sam:
        rows += bench_sam(args.repeats)
    print(f"device: {torch.cuda.get_device_name(0)}\n")
    print("| case | what | median s | items/s | peak GiB |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        s = f"{r['seconds']:.4f}" if "seconds" in r else ""
        ps = f"{r['per_s']:.2f}" if "per_s" in r else ""
        mem = f"{r['peak_gib']:.2f}" if "peak_gib" in r else ""
        print(f"| {r['case']} | {r['what']} | {s} | {ps} | {mem} |")
    if args.json is not None:
        env = {**machine(), "code": environment()}
        atomic_json(args.json, {"environment": env, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
