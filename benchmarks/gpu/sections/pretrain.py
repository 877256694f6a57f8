"""Sections ``pretrain_demo`` and ``pretrain_minkunet34c``: the pretraining recipe itself
(``olivine_train.recipes.pretrain.run_pretrain``) on the synthetic demo world, timed per step
through its step callback; the paper's networks (minkunet34c + resnet50_dilated, random
weights) for the second.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.gpu.bench import Bench, BudgetExceeded

__all__ = ["bench_pretrain", "pretrain_overrides"]


def pretrain_overrides(bench: Bench, world: Path, runs: Path, paper_nets: bool) -> list[str]:
    quick = bench.quick
    workers = 0 if quick else min(4, max((os.cpu_count() or 1) - 2, 0))
    ov = [
        f"data.root={world}",
        f"run.out_dir={runs}",
        f"run.device={bench.device}",
        f"run.precision={'bf16' if bench.cuda else 'fp32'}",
        f"model.sparse_backend={bench.sparse_backend}",
        "run.progress=false",
        "run.image_log_every=0",
        "run.log_every=1000000",
        f"data.num_workers={workers}",
    ]
    if quick:
        ov += [
            "demo.scenes=1",
            "demo.samples_per_scene=2",
            "demo.lidar_azimuth_steps=90",
            "data.cameras=[CAM_FRONT]",
            "loss.num_pairs=256",
        ]
    if paper_nets:
        ov += [
            "run.name=pretrain_minkunet34c",
            "model.point_encoder=minkunet34c",
            "model.image_encoder=resnet50_dilated",
            "model.image_pretrained=false",  # no MoCo weights offline: a random teacher
            f"data.batch_size={1 if quick else 4}",
            f"optim.max_steps={2 if quick else 24}",
        ]
    else:
        ov += [
            "run.name=pretrain_demo",
            f"data.batch_size={1 if quick else 2}",
            f"optim.max_steps={2 if quick else 40}",
        ]
    return ov


def bench_pretrain(bench: Bench, work: Path, paper_nets: bool) -> dict[str, Any]:
    from olivine_train.config import load_config
    from olivine_train.recipes.demo import ensure_world
    from olivine_train.recipes.pretrain import describe_teacher, run_pretrain

    world = work / ("world-quick" if bench.quick else "world")
    runs = work / "runs"
    cfg = load_config("demo", pretrain_overrides(bench, world, runs, paper_nets), check_paths=False)
    t0 = time.perf_counter()
    existed = (world / "olivine_splits.json").is_file()
    ensure_world(cfg, world, progress=False)
    world_s = time.perf_counter() - t0

    stamps: list[float] = []
    last: dict[str, float] = {}
    notes: list[str] = []

    def callback(step: int, scalars: dict[str, float]) -> None:
        # scalars are python floats: the step's losses were synchronised to the host already
        stamps.append(time.perf_counter())
        last.update(scalars)
        # keep at least two steps (step 1 is the warm-up) so that a step can be timed
        if len(stamps) >= 2 and bench.over() and step < (cfg.optim.max_steps or 0):
            raise BudgetExceeded(f"section budget spent after {step} steps")

    bench.reset_peak()
    t_run = time.perf_counter()
    status = "ok"
    try:
        run_pretrain(cfg, [callback])
    except BudgetExceeded as exc:
        status = "partial"
        notes.append(str(exc))
    wall = time.perf_counter() - t_run
    if len(stamps) < 2:
        raise RuntimeError(f"only {len(stamps)} step(s) ran; need 2 to time a step")
    # step 1 is warm-up (cuDNN / spconv tuning, loader start); time the steps after it
    intervals = np.diff(stamps)
    batch = cfg.data.batch_size
    timed_steps = len(intervals)
    steps_per_s = timed_steps / float(stamps[-1] - stamps[0])
    row = {
        "student": cfg.model.point_encoder,
        "teacher": describe_teacher(cfg),
        "batch": batch,
        "cameras": len(cfg.data.cameras),
        "image_size": list(cfg.data.image_size),
        "num_pairs": cfg.loss.num_pairs,
        "precision": cfg.run.precision,
        "steps": len(stamps),
        "timed_steps": timed_steps,
        "steps_per_s": steps_per_s,
        "scans_per_s": steps_per_s * batch,
        "median_step_s": float(np.median(intervals)),
        "first_step_s": float(stamps[0] - t_run),
        "peak_mib": bench.peak_mib(),
        "wall_s": wall,
        "final_total_loss": last.get("loss/total"),
    }
    return {
        "status": status,
        "rows": [row],
        "notes": notes,
        "world": {
            "path": str(world),
            "export_s": None if existed else world_s,
            "scenes": cfg.demo.scenes,
            "samples_per_scene": cfg.demo.samples_per_scene,
        },
        "overrides": pretrain_overrides(bench, world, runs, paper_nets),
    }
