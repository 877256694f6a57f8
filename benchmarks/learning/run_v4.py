"""Learning benchmark v4: is the vMF prior's cost real, or an artefact of how v3 tested it? -- and
what DCAS does for rare classes.

The protocol is ``PROTOCOL_v4.md`` next to this file (committed before any v4 result); this
script implements it and pins every setting in ``Settings`` and ``ARMS``, stored in every result
file with the code snapshot. It builds on v3 (world, pinned set-up, ceiling, gate) and the
product's converged probe (``olivine-train probe``); what is new: S = 576 steps, every arm of a
comparison at one matched lr, the toolkit's own freeze guard (0.5), the vMF prior on
ground-truth labels, 16-d heads under the 16-channel trunk, per-class / rare-class / per-range
probe scores, the class directions at the freeze, and two worker processes on the 2 cores.

    python -m benchmarks.learning.run_v4 --pilot          # stages A-B, rare classes: decisions
    python -m benchmarks.learning.run_v4 --jobs 2         # main runs (resumable)
    python -m benchmarks.learning.run_v4 --table          # results_v4.md from the JSONs
    python -m benchmarks.learning.run_v4 --plan           # the runs still to do
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.learning import common
from benchmarks.learning.run_v3 import Arm

HERE = Path(__file__).resolve().parent
DEFAULT_WORK = HERE / "work_v4"


@dataclass(frozen=True)
class Settings:
    """Everything PROTOCOL_v4.md fixes that is not one arm's override."""

    protocol_version: str = "v4.0"
    # world and set-up as v3
    scenes: int = 16
    samples_per_scene: int = 4
    val_fraction: float = 0.5
    render_size: tuple[int, int] = (200, 112)
    lidar_azimuth_steps: int = 270
    vfm_noise: float = 0.2
    world_seed_offset: int = 0
    pilot_world_offset: int = 1000
    point_encoder: str = "minkunet_tiny"
    steps: int = 576
    vmf_warmup_fraction: float = 0.5
    vmf_freeze_max_cosine: float = 0.5  # = health.max_mu_cosine's default (fallback 0.7)
    gate_chance_margin: float = 0.05
    gate_min_effective_rank: float = 2.0
    # probe
    probe_l2: float = 1e-3
    probe_tol: float = 1e-4
    probe_max_iter: int = 3000
    probe_dtype: str = "float32"
    range_bins: tuple[float, ...] = (0.0, 10.0, 20.0, 30.0)
    rare_classes: int = 5
    rare_min_share: float = 0.001  # of the labelled training points (PROTOCOL_v4.md)
    # statistics
    sesoi: float = 1.0
    alpha: float = 0.05
    power: float = 0.8
    main_seeds: int = 8
    secondary_seeds: int = 4
    range_factor: float = 3.0
    ceiling_lr: float = 1.0  # v3's pilot choice for the ceiling


SETTINGS = Settings()
LR_GRID = (0.5, 1.0, 2.0)
PROVISIONAL_LR = 1.0
TUNED = ("ppkt", "sup_vfm", "sup_vfm_vmf", "olivine_paper")  # stage B; ppkt's lr is the matched
FALLBACK_GUARD = 0.7

PPKT = ("method=ppkt", "loss.ppnce_weight=1.0", "loss.sup_weight=0", "loss.vmf_weight=0")
SUP = ("loss.ppnce_weight=1.0", "loss.sup_weight=0.5", "loss.vmf_weight=0")
VMF = ("loss.ppnce_weight=1.0", "loss.sup_weight=0.5", "loss.vmf_weight=1.0")
H16 = ("model.head_dim=16",)
ARMS: dict[str, Arm] = {
    a.name: a
    for a in (
        Arm("random", "control", "random", what="random trunk, BN calibrated on the train split"),
        Arm("ceiling", "control", "ceiling", what="supervised: fine-tuned on GT point labels"),
        Arm("ppkt", "primary", overrides=PPKT, what="L_PPNCE (weight 1)"),
        Arm("sup_vfm", "primary", overrides=SUP, what="1.0 L_PPNCE + 0.5 L_sup (DCAS), VFM labels"),
        Arm("sup_vfm_vmf", "primary", overrides=VMF, what="sup_vfm + 1.0 vMF prior"),
        Arm(
            "sup_vfm_uniform",
            "primary",
            overrides=(*SUP, "loss.sup_sampling=uniform"),
            what="sup_vfm with L_sup on uniform pairs (no DCAS)",
        ),
        Arm("sup_gt", "primary", overrides=SUP, labels="gt", what="sup_vfm on GT camera labels"),
        Arm("sup_gt_vmf", "primary", overrides=VMF, labels="gt", what="sup_gt + 1.0 vMF prior"),
        Arm(
            "olivine_paper",
            "primary",
            overrides=("loss.ppnce_weight=0.5", "loss.sup_weight=0.5", "loss.vmf_weight=1.0"),
            what="the paper's weighting: 0.5 L_PPNCE + 0.5 L_sup + 1.0 vMF, VFM labels",
        ),
        Arm("sup_vfm_h16", "secondary", overrides=(*SUP, *H16), what="sup_vfm, 16-d heads"),
        Arm("sup_vfm_vmf_h16", "secondary", overrides=(*VMF, *H16), what="sup_vfm_vmf, 16-d heads"),
    )
}
MAIN_ARMS = (
    "random", "ceiling", "ppkt", "sup_vfm", "sup_vfm_vmf", "sup_gt", "sup_gt_vmf",
    "olivine_paper", "sup_vfm_uniform",
)  # fmt: skip
SECONDARY_ARMS = ("sup_vfm_h16", "sup_vfm_vmf_h16")
OWN = "@own"


def base_arm(name: str) -> Arm:
    return ARMS[name.removesuffix(OWN)]


# ----------------------------------------------------------------------------------------------
# one run


def probe_settings(s: Settings, calibrate: bool) -> Any:
    from olivine_train.recipes.probe import ProbeSettings

    return ProbeSettings(
        l2=s.probe_l2,
        tolerance=s.probe_tol,
        max_iter=s.probe_max_iter,
        dtype=s.probe_dtype,
        calibrate_bn=calibrate,
        range_bins=s.range_bins,
    )


def freeze_record(pre: Any, cfg: Any) -> dict[str, Any] | None:
    """The class directions at the end of the run (frozen at the freeze): the 5 most collinear
    observed pairs with their cosines, the freeze step and the direction statistics.
    """
    import torch

    from olivine_data.labels import get_vocabulary

    mu = pre.state_dict.get("vmf.mu")
    if mu is None:
        return None
    seen = pre.state_dict["vmf.num_updates"] > 0
    names = get_vocabulary(cfg.data.vocabulary).class_names
    rows = torch.nonzero(seen & (mu.norm(dim=1) > 0)).flatten().tolist()
    u = torch.nn.functional.normalize(mu[rows].double(), dim=1)
    cos = u @ u.T
    n = len(rows)
    pairs = sorted(
        ((float(cos[i, j]), rows[i], rows[j]) for i in range(n) for j in range(i + 1, n)),
        reverse=True,
    )
    frozen_at = pre.state_dict.get("vmf.frozen_at")
    return {
        "frozen_at_update": None if frozen_at is None else int(frozen_at),
        "observed": len(rows),
        "top_pairs": [[names[a], names[b], round(c, 4)] for c, a, b in pairs[:5]],
        "pairs_above_0.9": sum(c > 0.9 for c, _, _ in pairs),
    }


def run_one(
    s: Settings, work: Path, arm_name: str, seed: int, world_seed: int, tag: str, lr: float,
    snap: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """Pretrain (unless random / ceiling), gate, probe; returns the result record."""
    from olivine_train.config import config_to_dict, load_config
    from olivine_train.recipes.pretrain import run_pretrain
    from olivine_train.recipes.probe import run_probe

    arm = base_arm(arm_name)
    t0 = time.perf_counter()
    world = common.ensure_world(s, work, world_seed)
    labels = common.label_root(arm, work, world, world_seed) if arm.pretrain else None
    run_root = work / "runs" / tag / arm_name / f"seed{seed}_lr{lr:g}"
    overrides = common.overrides_for(s, arm, world, labels, run_root, seed, lr)  # type: ignore[arg-type]
    cfg = load_config("demo", overrides)
    rec: dict[str, Any] = {
        "arm": arm_name, "role": arm.role, "what": arm.what, "seed": seed,
        "world_seed": world_seed, "tag": tag, "lr": lr, "steps": s.steps,
        "settings": asdict(s), "overrides": overrides,
        "snapshot": snap, "label_root": labels, "load_average_start": os.getloadavg(),
    }  # fmt: skip
    backbone: str | None = None
    if arm.kind == "pretrain":
        t1 = time.perf_counter()
        pre = run_pretrain(cfg)
        rec["pretrain_s"] = round(time.perf_counter() - t1, 2)
        rec["s_per_step"] = round(rec["pretrain_s"] / max(pre.step, 1), 4)
        rec["health"] = pre.health.to_dict() if pre.health is not None else None
        rec["curves"] = common.curves(Path(pre.run_dir))
        rec["directions"] = freeze_record(pre, cfg)
        backbone = str(Path(pre.run_dir) / "backbone.pt")
    elif arm.kind == "ceiling":
        backbone, info = common.ceiling_backbone(cfg, run_root, s)  # type: ignore[arg-type]
        rec.update(info)
    rec["gate"] = common.gate(arm, rec.get("health"), s)
    probe = common.probe_cfg(cfg, backbone)
    t2 = time.perf_counter()
    record = run_probe(probe, probe_settings(s, arm.kind == "random"), strict=False).record
    rec["probe"] = {k: v for k, v in record.items() if k != "config"}
    rec["probe_s"] = round(time.perf_counter() - t2, 2)
    rec["probe_config"] = config_to_dict(probe)
    rec["wall_s"] = round(time.perf_counter() - t0, 2)
    rec["load_average_end"] = os.getloadavg()
    for p in run_root.rglob("*.pt"):
        if p.name != "backbone.pt":
            p.unlink()
    return rec


def result_path(work: Path, tag: str, arm: str, seed: int, lr: float, steps: int) -> Path:
    return work / "results" / tag / arm / f"seed{seed}_lr{lr:g}_s{steps}.json"


Job = tuple[str, int, int, float, Settings]  # arm, seed, world seed, lr, settings


def _task(job: Job, work: Path, tag: str, snap: dict[str, Any]) -> str:
    """One run in a worker process (one torch thread); writes its JSON atomically."""
    import torch

    torch.set_num_threads(1)
    arm, seed, world_seed, lr, s = job
    t0 = time.perf_counter()
    rec = run_one(s, work, arm, seed, world_seed, tag, lr, snap)
    harness.atomic_json(result_path(work, tag, arm, seed, lr, s.steps), rec)
    p = rec["probe"]
    return (
        f"{tag} {arm} seed {seed} lr {lr:g}: probe {100 * p['scores']['miou_present']:.2f} "
        f"(iters {p['iterations']}, grad {p['max_abs_grad']:.1e}), gate "
        f"{'ok' if rec['gate']['passed'] else 'FAIL ' + '; '.join(rec['gate']['reasons'])}, "
        f"{time.perf_counter() - t0:.0f} s"
    )


def run_jobs(jobs: list[Job], work: Path, tag: str, workers: int) -> None:
    """Run what is missing, ``workers`` processes at once; worlds are exported first (serially)."""
    snap = harness.environment()
    todo = [j for j in jobs if not result_path(work, tag, j[0], j[1], j[3], j[4].steps).is_file()]
    harness.log(f"{tag}: {len(jobs) - len(todo)} of {len(jobs)} runs done, {len(todo)} to go")
    for ws in sorted({j[2] for j in todo}):
        common.ensure_world(todo[0][4], work, ws)
    if workers <= 1:
        for i, j in enumerate(todo, 1):
            harness.log(f"[{i}/{len(todo)}] " + _task(j, work, tag, snap))
        return
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(workers, mp_context=ctx, max_tasks_per_child=1) as pool:
        futures = {pool.submit(_task, j, work, tag, snap): j for j in todo}
        for i, fut in enumerate(cf.as_completed(futures), 1):
            harness.log(f"[{i}/{len(todo)}] " + fut.result())


# ----------------------------------------------------------------------------------------------
# main runs


def main_jobs(s: Settings, dec: dict[str, Any]) -> list[Job]:
    """Primary and control arms x 8 seeds (seed-major), then the secondary arms x 4 seeds."""
    m = float(dec["matched_lr"])
    jobs: list[Job] = []
    for k in range(s.main_seeds):
        for a in MAIN_ARMS:
            lr = s.ceiling_lr if a == "ceiling" else m
            jobs.append((a, k, s.world_seed_offset + k, lr, s))
    for k in range(s.secondary_seeds):
        for a in SECONDARY_ARMS:
            jobs.append((a, k, s.world_seed_offset + k, m, s))
        for a, own in sorted(dec["own_lrs"].items()):
            if float(own) != m:
                jobs.append((a + OWN, k, s.world_seed_offset + k, float(own), s))
    return jobs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--pilot", action="store_true")
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--plan", action="store_true")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from benchmarks.learning.pilot_v4 import pilot, settings_from

    if args.pilot:
        pilot(args.work, args.jobs)
        return
    if args.table:
        from benchmarks.learning.table_v4 import table

        print(table(args.work, HERE / "results_v4.md"))
        return
    s, dec = settings_from(args.work)
    jobs = main_jobs(s, dec)
    if args.plan:
        for j in jobs:
            done = result_path(args.work, "main", j[0], j[1], j[3], s.steps).is_file()
            print(("done " if done else "todo ") + f"{j[0]} seed {j[1]} lr {j[3]:g}")
        return
    run_jobs(jobs, args.work, "main", args.jobs)
    harness.log("main runs finished: python -m benchmarks.learning.run_v4 --table")


if __name__ == "__main__":
    main()
