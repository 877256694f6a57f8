"""Per-phase profile of one pretraining step: full-map 2D heads ("before") vs heads evaluated at
the paired pixels ("after", ``model.image_head=pairs``), in the same run.

Phases: data loading (dataset + collate, in the training process: ``data.num_workers=0``),
teacher forward, student (3D backbone) forward, heads (3D + 2D), pair draws, each loss term,
the rest of the forward step, backward, optimiser step (+ scheduler), health bookkeeping.
Each (shape, head path) runs in its own subprocess so that its peak RSS (``ru_maxrss``) is its own.

Shapes:
* ``demo``: ``configs/demo.yaml`` as shipped (tiny MinkUNet, ImageNet EfficientNet-Lite0 teacher,
  3 cameras at 128x256, batch 2, 1,024 pairs per term) on the demo's synthetic world.
* ``voxelnet``: ``configs/demo_voxelnet.yaml`` (the VoxelNet detection student, reference grid and
  caps, BEV point sampling) on the demo's synthetic world, otherwise as ``demo``.
* ``paper``: ``configs/olivine_nuscenes.yaml`` (MinkUNet-34C, dilated ResNet-50 teacher with
  random weights -- same cost as MoCo's, 6 cameras at 224x416, 4,096 pairs per term) at batch 2
  on a 1-scene synthetic world with nuScenes-like sweeps (~30k points).

Usage::

    python -m benchmarks.step_profile [--shapes demo,paper] [--steps 5] [--threads 1]
        [--repeats 2] [--json benchmarks/results/step_profile.json]

Times are medians over ``--steps`` steps after one warm-up step (the paper shape: 1 step after the
warm-up by default, it takes tens of seconds on a CPU); the two head paths run alternately
``--repeats`` times and each keeps its fastest run. The trainer is the recipe's own
(``Pretrainer`` on the runtime of ``olivine_train.recipes.common.make_runtime``, CPU, fp32).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks.harness import atomic_json, environment, machine, peak_rss_mib, run_module

MODES = ("full_map", "pairs")
PHASES = (
    "data",
    "teacher",
    "student",
    "heads",
    "draw pairs",
    "loss ppnce",
    "loss sup",
    "loss vmf",
    "forward other",
    "backward",
    "optimiser",
    "health",
)
DEFAULT_STEPS = {"demo": 5, "voxelnet": 3, "paper": 1}


class Timers:
    """Accumulates wall time per phase for the current step."""

    def __init__(self) -> None:
        self.now: dict[str, float] = defaultdict(float)

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.now[name] += time.perf_counter() - t0

        return timed


class TimedTerm:
    """A loss term whose ``draw`` and ``__call__`` are timed (attributes delegate)."""

    def __init__(self, name: str, term: Any, timers: Timers) -> None:
        self._name, self._term, self._timers = name, term, timers
        self.draw = timers.wrap("draw pairs", term.draw)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._term, attr)

    def __call__(self, *args: Any) -> Any:
        return self._timers.wrap(f"loss {self._name}", self._term)(*args)


def _world(shape: str, base: Path) -> Path:
    from olivine_data import NUSCENES_CAMERAS
    from olivine_data.synthetic import SyntheticWorldConfig, export_nuscenes

    root = base / f"world_{shape}"
    if (root / "olivine_splits.json").is_file():
        return root
    if shape in ("demo", "voxelnet"):
        from olivine_train.config import load_config
        from olivine_train.recipes.demo import ensure_world

        return ensure_world(load_config("demo", check_paths=False), root, progress=False)
    cfg = SyntheticWorldConfig(
        scenes=2,
        samples_per_scene=2,
        seed=0,
        image_size=(480, 270),
        cameras=NUSCENES_CAMERAS,
        val_fraction=0.5,
    )
    export_nuscenes(cfg, root, progress=False)
    return root


def _config(shape: str, mode: str, world: Path, out: Path, steps: int, threads: int) -> Any:
    from olivine_train.config import load_config

    common = [
        "run.device=cpu",
        "run.precision=fp32",
        f"run.num_threads={threads}",
        f"data.root={world}",
        "data.version=v1.0-mini",
        "data.num_workers=0",
        f"model.image_head={mode}",
        f"optim.max_steps={steps + 1}",
        f"run.out_dir={out}",
        f"run.name={shape}_{mode}",
        "run.progress=false",
        "run.image_log_every=0",
    ]
    if shape in ("demo", "voxelnet"):
        return load_config("demo" if shape == "demo" else "demo_voxelnet", common)
    paper = ["data.batch_size=2", "model.image_weights=null"]
    return load_config("olivine_nuscenes", [*common, *paper])


def _batches(trainer: Any) -> Iterator[Any]:
    while True:
        trainer.start_epoch()
        yield from trainer.batches()
        trainer.counters.epoch += 1
        trainer.counters.step_in_epoch = 0


def profile(shape: str, mode: str, steps: int, threads: int, base: Path) -> dict[str, Any]:
    """Run ``steps`` + 1 steps of one shape and head path; per-phase medians of the last ones."""
    import numpy as np
    import torch

    from olivine_train.recipes.common import make_runtime
    from olivine_train.recipes.pretrain import Pretrainer

    torch.set_num_threads(threads)
    world = _world(shape, base)
    cfg = _config(shape, mode, world, base / "runs", steps, threads)
    rt = make_runtime(cfg)  # CPU, fp32, ``threads`` intra-op threads, the run folder created
    torch.manual_seed(0)
    tr = Pretrainer(cfg, rt)
    timers = Timers()
    tr.teacher.forward = timers.wrap("teacher", tr.teacher.forward)  # type: ignore[method-assign]
    net = tr.net
    net.backbone.forward = timers.wrap("student", net.backbone.forward)  # type: ignore[method-assign]
    for head in (net.point_pp, net.point_sem, net.image_pp, net.image_sem):
        if head is not None:
            head.forward = timers.wrap("heads", head.forward)  # type: ignore[method-assign]
            if hasattr(head, "sample"):
                head.sample = timers.wrap("heads", head.sample)  # type: ignore[method-assign]
    tr.terms.terms = {n: TimedTerm(n, t, timers) for n, t in tr.terms.terms.items()}  # type: ignore[misc]
    rows: list[dict[str, float]] = []
    it = _batches(tr)
    rss0 = peak_rss_mib()
    for _ in range(steps + 1):
        timers.now.clear()
        t0 = time.perf_counter()
        batch = next(it)
        t1 = time.perf_counter()
        tr.optimizer.zero_grad(set_to_none=True)
        out = tr.compute(batch)
        t2 = time.perf_counter()
        out.total.backward()
        t3 = time.perf_counter()
        tr.optimizer.step()
        tr.scheduler.step()
        t4 = time.perf_counter()
        tr.counters.step += 1
        tr.counters.step_in_epoch += 1
        tr.after_step(out)
        t5 = time.perf_counter()
        inner = sum(v for k, v in timers.now.items())
        row = dict(timers.now)
        row.update(
            {
                "data": t1 - t0,
                "forward other": (t2 - t1) - inner,
                "backward": t3 - t2,
                "optimiser": t4 - t3,
                "health": t5 - t4,
                "step": t5 - t0,
                "pairs": float(batch.pair_voxels.shape[0]),
                "voxels": float(batch.voxel_coords.shape[0]),
            }
        )
        rows.append(row)
    timed = rows[1:]
    keys = sorted({k for r in timed for k in r})
    return {
        "shape": shape,
        "mode": mode,
        "steps": steps,
        "threads": threads,
        "median_s": {k: float(np.median([r.get(k, 0.0) for r in timed])) for k in keys},
        "peak_rss_mib": peak_rss_mib(),
        "rss_before_steps_mib": rss0,
        "config": {
            "point_encoder": cfg.model.point_encoder,
            "image_encoder": cfg.model.image_encoder,
            "cameras": len(cfg.data.cameras),
            "image_size": list(cfg.data.image_size),
            "batch_size": cfg.data.batch_size,
            "num_pairs": cfg.loss.num_pairs,
        },
    }


def _spconv_import_s() -> float:
    code = (
        "import time; t = time.perf_counter(); import spconv.pytorch; "
        "print(time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return float(out.stdout.strip()) if out.returncode == 0 else float("nan")


def table(results: list[dict[str, Any]]) -> str:
    lines = []
    by = {(r["shape"], r["mode"]): r for r in results}
    for shape in dict.fromkeys(r["shape"] for r in results):
        before, after = by.get((shape, "full_map")), by.get((shape, "pairs"))
        if before is None or after is None:
            continue
        c = after["config"]
        lines.append(
            f"\n{shape}: {c['point_encoder']} + {c['image_encoder']}, {c['cameras']} cameras at "
            f"{c['image_size'][0]}x{c['image_size'][1]}, batch {c['batch_size']}, "
            f"{c['num_pairs']} pairs/term, {after['threads']} thread(s), median of "
            f"{after['steps']} step(s)"
        )
        lines.append("| phase | full map (s) | pairs (s) | ratio |\n|---|---|---|---|")
        for phase in (*PHASES, "step"):
            b = before["median_s"].get(phase)
            a = after["median_s"].get(phase)
            if b is None and a is None:
                continue
            b, a = b or 0.0, a or 0.0
            ratio = f"{b / a:.1f}x" if a > 1e-4 else "-"
            name = f"**{phase}**" if phase == "step" else phase
            lines.append(f"| {name} | {b:.3f} | {a:.3f} | {ratio} |")
        lines.append(
            f"| peak RSS (MiB) | {before['peak_rss_mib']:.0f} | {after['peak_rss_mib']:.0f} | "
            f"{before['peak_rss_mib'] / after['peak_rss_mib']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="demo,paper")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (after 1 warm-up)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs per path")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=None, help="world/run folder (kept)")
    parser.add_argument("--worker", nargs=2, metavar=("SHAPE", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    base = args.work or Path(tempfile.gettempdir()) / "olivine_step_profile"
    if args.worker:
        shape, mode = args.worker
        steps = args.steps or DEFAULT_STEPS[shape]
        print(json.dumps(profile(shape, mode, steps, args.threads, base)))
        return
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for shape in args.shapes.split(","):
        # the two head paths alternate, and each keeps its fastest repeat: a load that comes and
        # goes on a shared machine then hits both alike
        for _ in range(args.repeats):
            for mode in MODES:
                cmd = ["--worker", shape, mode, "--threads", str(args.threads), "--work", str(base)]
                cmd += ["--steps", str(args.steps)] if args.steps else []
                proc = run_module(__spec__.name, *cmd, capture=True, check=False)
                if proc.returncode != 0:
                    print(proc.stderr, file=sys.stderr)
                    raise SystemExit(f"{shape}/{mode} failed with exit code {proc.returncode}")
                res = json.loads(proc.stdout.strip().splitlines()[-1])
                res["load_average"] = os.getloadavg()
                step = res["median_s"]["step"]
                print(f"{shape:6s} {mode:8s} step {step:.3f} s", flush=True)
                key = (shape, mode)
                if key not in best or step < best[key]["median_s"]["step"]:
                    best[key] = res
    results = list(best.values())
    spconv = _spconv_import_s()
    text = table(results)
    print(text)
    print(f"\nimport spconv.pytorch in a fresh process: {spconv:.1f} s")
    if args.json:
        payload = {
            "machine": machine(),
            "code": environment(),
            "results": results,
            "spconv_import_s": spconv,
            "table": text,
        }
        atomic_json(args.json, payload)


if __name__ == "__main__":
    main()
