"""Learning benchmark: does OLIVINE beat PPKT / SLidR / random init here, and by how much?

On a synthetic world (several scenes for training, held-out scenes for evaluation) this pretrains
every method with 3 seeds, then evaluates each backbone twice — a linear probe on 100 % of the
training labels and a few-label fine-tune — and writes the mIoU of every run as soon as it
finishes (``<out>/runs/<method>/seed<k>.json``, atomic). A rerun skips the finished runs, so the
benchmark can be completed across interruptions; ``--report`` only rebuilds the table and the plot
from what is there.

Methods (all on top of the shipped ``demo`` config; the teacher is the demo's randomly initialised,
frozen ``resnet18_dilated`` — no pretrained weights can be downloaded here):

    random      no pretraining (the probe / fine-tune start from a random backbone)
    ppkt        L_PPNCE only
    slidr       SLidR superpixel-pooled InfoNCE; superpixels = connected components of the VFM
                label map (the recipe's ``vfm_components`` source)
    olivine     0.5 L_PPNCE + 0.5 L_sup (DCAS) + 1.0 L_kl
    no_sup      OLIVINE without L_sup
    no_vmf      OLIVINE without L_kl
    no_dcas     OLIVINE with uniform sampling for L_sup
    noise0      OLIVINE with VFM label noise 0 (a world whose camseg labels are the ground truth)
    noise_high  OLIVINE with VFM label noise 0.6

    python benchmarks/learning/run.py                  # run what is missing, then report
    python benchmarks/learning/run.py --report         # table + plot from finished runs only
    python benchmarks/learning/run.py --methods olivine,ppkt --seeds 0

The table (mean ± std and min–max over seeds, mIoU over the classes present in the validation
ground truth) goes to ``benchmarks/learning/results.md``, the plot to ``results.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

METHODS: dict[str, tuple[str, ...]] = {
    "random": (),
    "ppkt": ("method=ppkt", "loss.ppnce_weight=1.0", "loss.sup_weight=0", "loss.vmf_weight=0"),
    "slidr": (
        "method=slidr",
        "loss.ppnce_weight=0",
        "loss.sup_weight=0",
        "loss.vmf_weight=0",
        "loss.superpixel_weight=1.0",
    ),
    "olivine": (),
    "no_sup": ("loss.sup_weight=0",),
    "no_vmf": ("loss.vmf_weight=0",),
    "no_dcas": ("loss.sup_sampling=uniform",),
    "noise0": (),
    "noise_high": (),
}
WORLD_NOISE = {"noise0": 0.0, "noise_high": 0.6}  # every other method uses --vfm-noise
# Every setting that matters is pinned here, so that a later change of the shipped demo config
# cannot mix two set-ups in one table (the demo config is only the starting point).
PINNED = (
    "model.point_encoder=minkunet_tiny",
    "model.image_encoder=resnet18_dilated",
    "model.image_weights=null",
    "data.cameras=[CAM_FRONT,CAM_BACK_LEFT,CAM_BACK_RIGHT]",
    "data.image_size=[64,128]",
    "data.batch_size=2",
    "data.augment=true",
    "loss.num_pairs=1024",
    "loss.temperature=0.07",
    "loss.ppnce_weight=0.5",
    "loss.sup_weight=0.5",
    "loss.vmf_weight=1.0",
    "loss.sup_sampling=dcas",
    "loss.vmf_decay=0.8",
    "loss.vmf_warmup_steps=10",
    "optim.lr=0.5",
    "optim.scheduler=cosine",
    "run.num_threads=1",
    "demo.image_size=[200,112]",
    "demo.lidar_azimuth_steps=270",
    "demo.probe_lr=0.1",
)


@dataclass(frozen=True)
class Settings:
    out: Path
    scenes: int
    samples_per_scene: int
    vfm_noise: float
    pretrain_epochs: int
    probe_epochs: int
    finetune_epochs: int
    finetune_skip: int
    world_seed: int


def world_overrides(s: Settings, noise: float) -> list[str]:
    return [
        f"demo.scenes={s.scenes}",
        f"demo.samples_per_scene={s.samples_per_scene}",
        f"demo.world_seed={s.world_seed}",
        f"demo.vfm_noise={noise}",
    ]


def world_dir(s: Settings, noise: float) -> Path:
    return s.out / "worlds" / f"noise{noise:g}"


def _atomic_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)


def present_miou(scores: Any) -> float:
    """mIoU over the classes present in the validation ground truth (class 0 excluded)."""
    import numpy as np

    mask = scores.present if scores.present is not None else np.ones_like(scores.iou, bool)
    vals = scores.iou[1:][mask[1:]]
    return float(np.nanmean(vals))


def run_one(s: Settings, method: str, seed: int) -> dict[str, Any]:
    """Pretrain (unless random), linear-probe and fine-tune one method/seed; returns the record."""
    from olivine_train.config import config_to_dict, load_config, validate
    from olivine_train.recipes.demo import ensure_world, probe_config
    from olivine_train.recipes.downstream import run_downstream
    from olivine_train.recipes.pretrain import run_pretrain

    noise = WORLD_NOISE.get(method, s.vfm_noise)
    world = world_dir(s, noise)
    run_root = s.out / "runs" / method / f"seed{seed}"
    overrides = [
        f"data.root={world}",
        f"run.out_dir={run_root}",
        f"run.seed={seed}",
        f"optim.epochs={s.pretrain_epochs}",
        "run.progress=false",
        *world_overrides(s, noise),
        *PINNED,
        *METHODS[method],
    ]
    base = load_config("demo", overrides, check_paths=False)
    ensure_world(base, world, progress=True)
    cfg = validate(config_to_dict(base), source=f"learning benchmark {method}")
    t0 = time.perf_counter()
    backbone: str | None = None
    if method != "random":
        pre = run_pretrain(cfg)
        backbone = str(Path(pre.run_dir) / "backbone.pt")
    pre_s = time.perf_counter() - t0

    record: dict[str, Any] = {
        "method": method,
        "seed": seed,
        "vfm_noise": noise,
        "pretrain_s": round(pre_s, 1),
    }
    probe = probe_config(cfg, "linear_probe", backbone)
    raw = config_to_dict(probe)
    raw["optim"]["epochs"] = s.probe_epochs
    lp = run_downstream(validate(raw, source="linear probe"))
    ft_raw = config_to_dict(probe)
    ft_raw["downstream"]["mode"] = "finetune"
    ft_raw["data"]["skip"] = s.finetune_skip
    ft_raw["optim"].update(epochs=s.finetune_epochs, lr=0.05, lr_head=0.5)
    ft_raw["run"]["name"] = "finetune_few"
    ft = run_downstream(validate(ft_raw, source="few-label fine-tune"))
    for key, res in (("linear_probe", lp), ("finetune", ft)):
        if res.scores is None:
            raise RuntimeError(f"{method} seed {seed}: {key} produced no scores")
        record[key] = {
            "miou_present": present_miou(res.scores),
            "miou_reference": float(res.scores.miou),
            "accuracy": float(res.scores.accuracy),
            "iou": {n: float(v) for n, v in zip(res.scores.class_names, res.scores.iou) if v == v},
        }
    record["wall_s"] = round(time.perf_counter() - t0, 1)
    record["pretrain_config"] = config_to_dict(cfg)
    return record


def result_path(s: Settings, method: str, seed: int) -> Path:
    return s.out / "results" / method / f"seed{seed}.json"


def report(s: Settings, methods: list[str], seeds: list[int], plot: Path) -> str:
    rows = []
    data: dict[str, dict[str, list[float]]] = {}
    for method in methods:
        recs = [
            json.loads(p.read_text())
            for seed in seeds
            if (p := result_path(s, method, seed)).is_file()
        ]
        data[method] = {
            k: [100 * r[k]["miou_present"] for r in recs] for k in ("linear_probe", "finetune")
        }
        cells = []
        for key in ("linear_probe", "finetune"):
            v = data[method][key]
            if not v:
                cells.append("not run")
                continue
            sd = statistics.stdev(v) if len(v) > 1 else 0.0
            cells.append(f"{statistics.mean(v):.1f} ± {sd:.1f} ({min(v):.1f}–{max(v):.1f})")
        rows.append(f"| {method} | {len(data[method]['linear_probe'])} | {cells[0]} | {cells[1]} |")
    header = (
        f"World: {s.scenes} scenes × {s.samples_per_scene} keyframes (synthetic, seed "
        f"{s.world_seed}; train/val split by scene), VFM noise {s.vfm_noise:g} unless the "
        f"method says otherwise. Pretraining {s.pretrain_epochs} epochs; linear probe "
        f"{s.probe_epochs} epochs on 100 % of the training labels; few-label fine-tune "
        f"{s.finetune_epochs} epochs on every {s.finetune_skip}-th training scene. mIoU (%) over "
        "the classes present in the validation ground truth; mean ± std (min–max) over seeds.\n\n"
        "| method | seeds | linear probe mIoU | few-label fine-tune mIoU |\n|---|---|---|---|"
    )
    table = header + "\n" + "\n".join(rows) + "\n"
    _plot(data, plot)
    return table


def _plot(data: dict[str, dict[str, list[float]]], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # matplotlib comes with nuscenes-devkit; say so if it is missing
        print("matplotlib not available: no plot written", file=sys.stderr)
        return
    methods = [m for m in data if data[m]["linear_probe"]]
    if not methods:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=False)
    for ax, key, title in zip(
        axes, ("linear_probe", "finetune"), ("linear probe", "few-label fine-tune")
    ):
        for i, m in enumerate(methods):
            vals = data[m][key]
            ax.scatter([i] * len(vals), vals, color="tab:blue", s=18)
            if vals:
                ax.hlines(statistics.mean(vals), i - 0.3, i + 0.3, color="tab:red")
        ax.set_xticks(range(len(methods)), methods, rotation=40, ha="right")
        ax.set_title(f"{title} (synthetic world)")
        ax.set_ylabel("mIoU over present classes (%)")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=HERE / "work")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--scenes", type=int, default=6)
    p.add_argument("--samples-per-scene", type=int, default=4)
    p.add_argument("--vfm-noise", type=float, default=0.2)
    p.add_argument("--pretrain-epochs", type=int, default=4)
    p.add_argument("--probe-epochs", type=int, default=20)
    p.add_argument("--finetune-epochs", type=int, default=6)
    p.add_argument("--finetune-skip", type=int, default=2)
    p.add_argument("--world-seed", type=int, default=0)
    p.add_argument("--report", action="store_true", help="only rebuild table + plot")
    p.add_argument(
        "--table",
        type=Path,
        default=HERE / "results.md",
        help="markdown table to write (the plot goes next to it as .png)",
    )
    args = p.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        p.error(f"unknown methods {unknown}; known: {list(METHODS)}")
    seeds = [int(x) for x in args.seeds.split(",") if x]
    s = Settings(
        args.out,
        args.scenes,
        args.samples_per_scene,
        args.vfm_noise,
        args.pretrain_epochs,
        args.probe_epochs,
        args.finetune_epochs,
        args.finetune_skip,
        args.world_seed,
    )
    if not args.report:
        todo = [(m, k) for k in seeds for m in methods if not result_path(s, m, k).is_file()]
        print(f"{len(todo)} run(s) to do, {len(methods) * len(seeds) - len(todo)} finished")
        for i, (method, seed) in enumerate(todo, 1):
            print(f"[{i}/{len(todo)}] {method} seed {seed}", flush=True)
            rec = run_one(s, method, seed)
            _atomic_json(result_path(s, method, seed), rec)
            print(
                f"    LP {100 * rec['linear_probe']['miou_present']:.1f}  "
                f"FT {100 * rec['finetune']['miou_present']:.1f}  ({rec['wall_s']} s)",
                flush=True,
            )
    table = report(s, methods, seeds, args.table.with_suffix(".png"))

    def shown(path: Path) -> Path:
        path, root = path.resolve(), HERE.parents[1]
        return path.relative_to(root) if path.is_relative_to(root) else path

    command = (
        f"python benchmarks/learning/run.py --out {shown(args.out)} --methods {','.join(methods)} "
        f"--seeds {args.seeds} --scenes {s.scenes} --samples-per-scene {s.samples_per_scene} "
        f"--pretrain-epochs {s.pretrain_epochs} --probe-epochs {s.probe_epochs} "
        f"--finetune-epochs {s.finetune_epochs} --finetune-skip {s.finetune_skip} "
        f"--table {shown(args.table)}"
    )
    args.table.write_text(
        f"# Learning benchmark (synthetic world)\n\nRegenerate: `{command}`\n\n{table}"
    )
    print(table)


if __name__ == "__main__":
    main()
