"""Learning benchmark v3: a benchmark that first shows it can see an effect (a supervised ceiling,
perfect labels), then asks what VFM labels, the vMF prior and DCAS add over PPKT.

The protocol is ``PROTOCOL_v3.md`` next to this file (committed before any v3 result); this
script implements it and pins every setting in ``Settings``, ``ARMS`` and ``common.PINNED``
(+ ``model.image_head=pairs``), stored in every result file. It reuses v2's world export, label
stores, gate and statistics (now ``common.py``, ``stats.py``); what is new:

* a **converged linear probe**: the frozen trunk's voxel features (eval mode) of the training
  split, standardised with the training mean/sd, and a multinomial logistic regression (L2) fitted
  to convergence with full-batch L-BFGS (strong Wolfe line search) until the gradient's max-norm
  is below a tolerance; the iterations and final gradient norm are stored with every result;
* a **random trunk with calibrated BatchNorm**: one pass over the training split, one sweep a
  batch, with ``momentum=None`` (the average of the sweeps' batch statistics);
* a **supervised ceiling**: the trunk fine-tuned on the training split's ground-truth point labels
  for the same number of steps as pretraining, then probed like every other trunk;
* arms that change one thing each, an lr grid per arm on the pilot, 8 paired seeds.

    python -m benchmarks.learning.run_v3 --pilot range     # pilot stage A: steps vs dynamic range
    python -m benchmarks.learning.run_v3 --pilot lr        # pilot stage B: lr grid per arm
    python -m benchmarks.learning.run_v3                   # main runs (resumable), then --table
    python -m benchmarks.learning.run_v3 --table           # results_v3.md from the JSONs
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.learning import common

HERE = Path(__file__).resolve().parent

DEFAULT_WORK = HERE / "work_v3"


@dataclass(frozen=True)
class Settings:
    """Everything the protocol fixes that is not one arm's override (PROTOCOL_v3.md)."""

    protocol_version: str = "v3.0"
    # world (as v2): 16 scenes x 4 keyframes, 8 train / 8 val scenes, 3 cameras
    scenes: int = 16
    samples_per_scene: int = 4
    val_fraction: float = 0.5
    render_size: tuple[int, int] = (200, 112)
    lidar_azimuth_steps: int = 270
    vfm_noise: float = 0.2
    world_seed_offset: int = 0  # main seed k: world seed k
    pilot_world_offset: int = 1000  # pilot seed k: world seed 1000 + k (disjoint)
    point_encoder: str = "minkunet_tiny"
    steps: int = 96  # provisional; pilot stage A chooses it
    vmf_warmup_fraction: float = 0.5
    vmf_freeze_max_cosine: float = 0.7  # v2's guard (Amendment 1 of v2)
    gate_chance_margin: float = 0.05
    gate_min_effective_rank: float = 2.0
    # probe
    probe_l2: float = 1e-3  # lambda * 0.5 * ||W||^2 (bias not penalised), standardised features
    probe_tol: float = 1e-4  # max |gradient| at convergence (Amendment 0)
    probe_max_iter: int = 3000
    probe_dtype: str = "float32"  # Amendment 0 (was float64)
    # statistics
    sesoi: float = 1.0
    alpha: float = 0.05
    power: float = 0.8
    main_seeds: int = 8
    dose_seeds: int = 4
    range_factor: float = 3.0  # ceiling - PPKT must be >= this x the MDE


SETTINGS = Settings()
STEP_CHOICES = (48, 96, 192)
LR_GRID = (0.5, 1.0, 2.0)  # base lr for a batch of 16, auto-scaled to the batch of 2 (x 1/8)
PROVISIONAL_LR = 1.0  # v2's choice, used in pilot stage A only


@dataclass(frozen=True)
class Arm:
    """One arm; ``kind`` is ``pretrain``, ``random`` or ``ceiling``."""

    name: str
    role: str  # primary | control | secondary
    kind: str = "pretrain"
    overrides: tuple[str, ...] = ()
    labels: str = "vfm"  # vfm | gt | shuffled
    gate_terms: tuple[str, ...] | None = None
    gate_vmf: bool = True
    what: str = ""

    @property
    def pretrain(self) -> bool:  # what common.gate reads
        return self.kind == "pretrain"


PPKT = ("method=ppkt", "loss.ppnce_weight=1.0", "loss.sup_weight=0", "loss.vmf_weight=0")
SUP = ("loss.ppnce_weight=1.0", "loss.sup_weight=0.5", "loss.vmf_weight=0")
ARMS: dict[str, Arm] = {
    a.name: a
    for a in (
        Arm("random", "primary", "random", what="random trunk, BN calibrated on the train split"),
        Arm("ppkt", "primary", overrides=PPKT, what="L_PPNCE (weight 1)"),
        Arm("sup_vfm", "primary", overrides=SUP, what="1.0 L_PPNCE + 0.5 L_sup (DCAS), VFM labels"),
        Arm(
            "sup_vfm_vmf",
            "primary",
            overrides=(*SUP[:2], "loss.vmf_weight=1.0"),
            what="sup_vfm + 1.0 vMF prior",
        ),
        Arm(
            "sup_vfm_uniform",
            "primary",
            overrides=(*SUP, "loss.sup_sampling=uniform"),
            what="sup_vfm with L_sup on uniform pairs (no DCAS)",
        ),
        Arm(
            "olivine_paper",
            "primary",
            overrides=("loss.ppnce_weight=0.5", "loss.sup_weight=0.5", "loss.vmf_weight=1.0"),
            what="the paper's weighting: 0.5 L_PPNCE + 0.5 L_sup + 1.0 vMF, VFM labels",
        ),
        Arm(
            "sup_gt",
            "control",
            overrides=SUP,
            labels="gt",
            what="positive control: sup_vfm on ground-truth camera labels",
        ),
        Arm(
            "sup_shuffled",
            "control",
            overrides=SUP,
            labels="shuffled",
            gate_terms=("ppnce",),
            what="negative control: sup_vfm on VFM labels shuffled within each image",
        ),
        Arm("ceiling", "control", "ceiling", what="supervised: fine-tuned on GT point labels"),
        Arm(
            "sup_gt_w1",
            "secondary",
            overrides=("loss.ppnce_weight=1.0", "loss.sup_weight=1.0", "loss.vmf_weight=0"),
            labels="gt",
            what="dose: L_sup weight 1.0, GT labels",
        ),
        Arm(
            "sup_gt_w2",
            "secondary",
            overrides=("loss.ppnce_weight=1.0", "loss.sup_weight=2.0", "loss.vmf_weight=0"),
            labels="gt",
            what="dose: L_sup weight 2.0, GT labels",
        ),
        Arm(
            "sup_gt_only",
            "secondary",
            overrides=("loss.ppnce_weight=0", "loss.sup_weight=1.0", "loss.vmf_weight=0"),
            labels="gt",
            what="dose: L_sup alone (weight 1.0), GT labels",
        ),
    )
}
MAIN_ARMS = (
    "random",
    "ppkt",
    "sup_vfm",
    "sup_gt",
    "sup_shuffled",
    "ceiling",
    "sup_vfm_vmf",
    "sup_vfm_uniform",
    "olivine_paper",
)
DOSE_ARMS = ("sup_gt_w1", "sup_gt_w2", "sup_gt_only")
# (a, b): one-sided paired test of a > b
CONTROLS = (
    ("ceiling", "ppkt"),  # dynamic range: must pass
    ("sup_gt", "ppkt"),  # positive control: must pass before label results are read
    ("sup_shuffled", "ppkt"),  # negative control: must NOT pass
    ("ppkt", "random"),
)
PRIMARY = (
    ("sup_vfm", "ppkt"),  # H1: VFM labels (L_sup) add to PPKT
    ("sup_vfm_vmf", "sup_vfm"),  # H2: the vMF prior adds
    ("sup_vfm", "sup_vfm_uniform"),  # H3: DCAS beats uniform pairs for L_sup
    ("olivine_paper", "ppkt"),  # H4: the paper's weighting beats PPKT
)
SECONDARY = (("sup_gt", "sup_vfm"),)


def arm_lr(arm: str, lrs: dict[str, float]) -> float:
    """The pilot's lr of ``arm``; the dose-response arms take ``sup_gt``'s (PROTOCOL_v3.md)."""
    if arm in DOSE_ARMS:
        arm = "sup_gt"
    return lrs.get(arm, PROVISIONAL_LR)


# ----------------------------------------------------------------------------------------------
# probe


PROBE_FIELDS = (
    "scores", "train_voxels", "feature_dim", "loss", "max_abs_grad", "iterations", "converged",
    "bn_calibration_samples", "cache_s", "fit_s",
)  # fmt: skip


def converged_probe(cfg: Any, s: Settings, calibrate: bool = False) -> dict[str, Any]:
    """``olivine-train probe`` with the protocol's settings (``run.seed`` seeds a random trunk);
    the record is also written to ``<probe run folder>/probe.json``.
    """
    from olivine_train.recipes.probe import ProbeSettings, run_probe

    settings = ProbeSettings(
        l2=s.probe_l2,
        tolerance=s.probe_tol,
        max_iter=s.probe_max_iter,
        dtype=s.probe_dtype,
        calibrate_bn=calibrate,
    )
    record = run_probe(cfg, settings, strict=False).record
    return {k: record[k] for k in PROBE_FIELDS}


# ----------------------------------------------------------------------------------------------
# one run


def label_root(arm: Arm, work: Path, world: Path, world_seed: int) -> str | None:
    if arm.kind != "pretrain":
        return None
    return common.label_root(arm, work, world, world_seed)  # type: ignore[arg-type]


def run_one(
    s: Settings,
    work: Path,
    arm: Arm,
    seed: int,
    world_seed: int,
    tag: str,
    lr: float,
    snap: dict[str, Any],
) -> dict[str, Any]:
    from olivine_train.config import config_to_dict, load_config
    from olivine_train.recipes.pretrain import run_pretrain

    t0 = time.perf_counter()
    world = common.ensure_world(s, work, world_seed)  # type: ignore[arg-type]
    labels = label_root(arm, work, world, world_seed)
    run_root = work / "runs" / tag / arm.name / f"seed{seed}_lr{lr:g}_s{s.steps}"
    overrides = common.overrides_for(s, arm, world, labels, run_root, seed, lr)
    cfg = load_config("demo", overrides)
    rec: dict[str, Any] = {
        "arm": arm.name,
        "role": arm.role,
        "what": arm.what,
        "seed": seed,
        "world_seed": world_seed,
        "tag": tag,
        "lr": lr,
        "steps": s.steps,
        "settings": asdict(s),
        "overrides": overrides,
        "snapshot": snap,
        "label_root": labels,
        "load_average_start": os.getloadavg(),
    }
    backbone: str | None = None
    if arm.kind == "pretrain":
        t1 = time.perf_counter()
        pre = run_pretrain(cfg)
        rec["pretrain_s"] = round(time.perf_counter() - t1, 2)
        rec["s_per_step"] = round(rec["pretrain_s"] / max(pre.step, 1), 4)
        rec["health"] = pre.health.to_dict() if pre.health is not None else None
        rec["curves"] = common.curves(Path(pre.run_dir))
        backbone = str(Path(pre.run_dir) / "backbone.pt")
    elif arm.kind == "ceiling":
        backbone, info = common.ceiling_backbone(cfg, run_root, s)
        rec.update(info)
    rec["gate"] = common.gate(arm, rec.get("health"), s)  # type: ignore[arg-type]
    probe = common.probe_cfg(cfg, backbone)
    t2 = time.perf_counter()
    rec["probe"] = converged_probe(probe, s, calibrate=arm.kind == "random")
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


def run_jobs(jobs: list[tuple[str, int, int, float, Settings]], work: Path, tag: str) -> None:
    snap = harness.environment()
    todo = [j for j in jobs if not result_path(work, tag, j[0], j[1], j[3], j[4].steps).is_file()]
    harness.log(f"{tag}: {len(jobs) - len(todo)} of {len(jobs)} runs done, {len(todo)} to go")
    for i, (arm, seed, world_seed, lr, s) in enumerate(todo, 1):
        t0 = time.perf_counter()
        rec = run_one(s, work, ARMS[arm], seed, world_seed, tag, lr, snap)
        harness.atomic_json(result_path(work, tag, arm, seed, lr, s.steps), rec)
        p = rec["probe"]
        harness.log(
            f"[{i}/{len(todo)}] {tag} {arm} seed {seed} lr {lr:g} S {s.steps}: probe "
            f"{100 * p['scores']['miou_present']:.2f} (iters {p['iterations']}, grad "
            f"{p['max_abs_grad']:.1e}), gate {'ok' if rec['gate']['passed'] else 'FAIL'}, "
            f"{time.perf_counter() - t0:.0f} s"
        )


# ----------------------------------------------------------------------------------------------
# main runs and table


def main_jobs(s: Settings, lrs: dict[str, float]) -> list[tuple[str, int, int, float, Settings]]:
    jobs = [
        (a, k, s.world_seed_offset + k, arm_lr(a, lrs), s)
        for k in range(s.main_seeds)
        for a in MAIN_ARMS
    ]
    jobs += [
        (a, k, s.world_seed_offset + k, arm_lr(a, lrs), s)
        for k in range(s.dose_seeds)
        for a in DOSE_ARMS
    ]
    return jobs


def rerun(work: Path, scratch: Path, arm: str, seed: int) -> int:
    """Re-run main run (``arm``, ``seed``) with the current code into ``scratch``; 0 when its probe
    mIoU equals the stored result's to the last digit.
    """
    from benchmarks.learning.pilot_v3 import settings_from

    s, lrs = settings_from(work)
    lr = arm_lr(arm, lrs)
    stored = json.loads(result_path(work, "main", arm, seed, lr, s.steps).read_text())
    scratch.mkdir(parents=True, exist_ok=True)
    rec = run_one(s, scratch, ARMS[arm], seed, s.world_seed_offset + seed, "main", lr,
                  harness.environment())  # fmt: skip
    harness.atomic_json(result_path(scratch, "main", arm, seed, lr, s.steps), rec)
    old, new = stored["probe"]["scores"]["miou_present"], rec["probe"]["scores"]["miou_present"]
    same = old == new
    print(
        f"{arm} seed {seed}: stored mIoU {100 * old!r} ({stored['snapshot'].get('commit')}), "
        f"re-run {100 * new!r} ({rec['snapshot'].get('commit')}): "
        + ("identical" if same else f"DIFFERENT by {100 * (new - old):+.6f}")
    )
    return 0 if same else 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--pilot", choices=("range", "lr"))
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--plan", action="store_true")
    parser.add_argument(
        "--rerun",
        nargs=2,
        metavar=("ARM", "SEED"),
        help="re-run one main run into --rerun-work and compare its probe mIoU with the stored one",
    )
    parser.add_argument("--rerun-work", type=Path, default=Path("/tmp/olivine_v3_rerun"))
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from benchmarks.learning.pilot_v3 import pilot, settings_from
    from benchmarks.learning.table_v3 import table

    if args.pilot:
        pilot(args.work, args.pilot)
        return

    if args.table:
        print(table(args.work, HERE / "results_v3.md"))
        return
    s, lrs = settings_from(args.work)
    if args.rerun:
        raise SystemExit(rerun(args.work, args.rerun_work, args.rerun[0], int(args.rerun[1])))
    jobs = main_jobs(s, lrs)
    if args.plan:
        for j in jobs:
            print(j[:4])
        return
    run_jobs(jobs, args.work, "main")
    print(table(args.work, HERE / "results_v3.md"))


if __name__ == "__main__":
    main()
