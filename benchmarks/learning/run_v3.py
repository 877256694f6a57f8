"""Learning benchmark v3: a benchmark that first shows it can see an effect (a supervised ceiling,
perfect labels), then asks what VFM labels, the vMF prior and DCAS add over PPKT.

The protocol is ``PROTOCOL_v3.md`` next to this file (committed before any v3 result); this
script implements it and pins every setting in ``Settings``, ``PINNED`` and ``ARMS``, stored in
every result file. It reuses v2's world export, label stores, gate and statistics
(``run_v2.py``); what is new:

* a **converged linear probe**: the frozen trunk's voxel features (eval mode) of the training
  split, standardised with the training mean/sd, and a multinomial logistic regression (L2) fitted
  to convergence with full-batch L-BFGS (strong Wolfe line search) until the gradient's max-norm
  is below a tolerance; the iterations and final gradient norm are stored with every result;
* a **random trunk with calibrated BatchNorm**: the statistics are the exact mean/var of one pass
  over the training split (``momentum=None``);
* a **supervised ceiling**: the trunk fine-tuned on the training split's ground-truth point labels
  for the same number of steps as pretraining, then probed like every other trunk;
* arms that change one thing each, an lr grid per arm on the pilot, 8 paired seeds.

    python benchmarks/learning/run_v3.py --pilot range     # pilot stage A: steps vs dynamic range
    python benchmarks/learning/run_v3.py --pilot lr        # pilot stage B: lr grid per arm
    python benchmarks/learning/run_v3.py                   # main runs (resumable), then --table
    python benchmarks/learning/run_v3.py --table           # results_v3.md from the JSONs
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run_v2 as v2  # noqa: E402  (world export, label stores, gate, statistics)

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

PINNED: tuple[str, ...] = (*v2.PINNED, "model.image_head=pairs")


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
    def pretrain(self) -> bool:  # what v2.gate reads
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


def _runtime(run_dir: Path) -> Any:
    import torch

    from olivine_train.distributed import DistInfo
    from olivine_train.recipes.common import Runtime

    run_dir.mkdir(parents=True, exist_ok=True)
    return Runtime(
        dist=DistInfo(0, 1, 0, torch.device("cpu")),
        device=torch.device("cpu"),
        amp_dtype=None,
        run_dir=run_dir,
    )


def probe_cfg(pre: Any, backbone: str | None) -> Any:
    from olivine_train.recipes.demo import probe_config

    return probe_config(pre, "probe", backbone)


def calibrate_bn(job: Any) -> int:
    """Exact BN statistics of the (random) trunk over one pass of the training split."""
    import torch

    bns = [
        m
        for m in job.net.backbone.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
    ]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    job.net.backbone.train()
    n = 0
    with torch.no_grad():
        for i in range(len(job.train_set)):
            batch = job.collator.seg([job.train_set[i]])
            job.net.backbone(
                batch.voxel_coords, batch.voxel_features, tuple(batch.spatial_shape), 1
            )
            n += 1
    job.net.backbone.eval()
    return n


def converged_probe(cfg: Any, s: Settings, seed: int, calibrate: bool = False) -> dict[str, Any]:
    """Standardised features + L2 multinomial logistic regression fitted by L-BFGS."""
    import torch

    from olivine_train.metrics import ConfusionMatrix
    from olivine_train.recipes.downstream import Downstream
    from olivine_train.recipes.segmentation import score_points

    torch.manual_seed(seed)
    job = Downstream(cfg, _runtime(cfg.run_dir))
    calibrated = calibrate_bn(job) if calibrate else 0
    t0 = time.perf_counter()
    job.prepare_cache()
    cache_s = time.perf_counter() - t0
    train, val = job.train_cache or [], job.val_cache or []
    dtype = getattr(torch, s.probe_dtype)
    x = torch.cat([c.features for c in train]).to(dtype)
    y = torch.cat([c.voxel_labels for c in train])
    keep = y > 0
    x, y = x[keep], y[keep]
    mean, sd = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / sd
    k = int(cfg.downstream.num_classes)
    w = torch.zeros(z.shape[1], k, dtype=dtype, requires_grad=True)
    b = torch.zeros(k, dtype=dtype, requires_grad=True)
    mask = torch.zeros(k, dtype=dtype)
    mask[0] = -math.inf  # class 0 is "ignore": never predicted
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=s.probe_max_iter,
        tolerance_grad=s.probe_tol,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def objective() -> torch.Tensor:
        opt.zero_grad()
        logits = z @ w + b + mask
        loss = torch.nn.functional.cross_entropy(logits, y) + 0.5 * s.probe_l2 * (w * w).sum()
        loss.backward()
        return loss

    t1 = time.perf_counter()
    opt.step(objective)
    fit_s = time.perf_counter() - t1
    loss = float(objective().detach())
    grad = max(float(w.grad.abs().max()), float(b.grad.abs().max()))
    iters = int(opt.state[opt._params[0]]["n_iter"])
    cm = ConfusionMatrix(k, ignore_index=0)
    with torch.no_grad():
        for c in val:
            logits = ((c.features.to(dtype) - mean) / sd) @ w + b
            score_points(cm, logits.float(), c.point_to_voxel, c.point_labels)
    scores = cm.scores(job.class_names)
    return {
        "scores": v2.scores_record(scores),
        "train_voxels": int(z.shape[0]),
        "feature_dim": int(z.shape[1]),
        "loss": loss,
        "max_abs_grad": grad,
        "iterations": iters,
        "converged": grad <= s.probe_tol,
        "bn_calibration_samples": calibrated,
        "cache_s": round(cache_s, 2),
        "fit_s": round(fit_s, 2),
    }


# ----------------------------------------------------------------------------------------------
# one run


def overrides_for(
    s: Settings, arm: Arm, world: Path, labels: str | None, run_root: Path, seed: int, lr: float
) -> list[str]:
    return [
        *PINNED,
        f"model.point_encoder={s.point_encoder}",
        f"data.root={world}",
        f"run.out_dir={run_root}",
        "run.name=pretrain",
        f"run.seed={seed}",
        "run.resume=auto",
        f"optim.max_steps={s.steps}",
        f"optim.lr={lr}",
        f"loss.vmf_warmup_fraction={s.vmf_warmup_fraction}",
        f"loss.vmf_freeze_max_cosine={s.vmf_freeze_max_cosine}",
        f"health.chance_margin={s.gate_chance_margin}",
        f"health.min_effective_rank={s.gate_min_effective_rank}",
        f"health.max_mu_cosine={s.vmf_freeze_max_cosine}",
        *arm.overrides,
        *([f"data.label_root={labels}"] if labels is not None else []),
    ]


def label_root(arm: Arm, work: Path, world: Path, world_seed: int) -> str | None:
    if arm.kind != "pretrain":
        return None
    return v2.label_root(arm, work, world, world_seed)  # type: ignore[arg-type]


def ceiling_backbone(pre: Any, run_root: Path, s: Settings) -> tuple[str, dict[str, Any]]:
    """Fine-tune a random trunk + classifier on GT point labels for ``s.steps`` steps; export the
    trunk as ``backbone.pt``.
    """
    import copy

    from olivine_models import create_point_encoder
    from olivine_train.checkpoint import load_backbone_state, save_backbone
    from olivine_train.config import config_to_dict, validate
    from olivine_train.recipes.downstream import run_downstream

    raw = copy.deepcopy(config_to_dict(pre))
    raw["recipe"] = "downstream"
    raw["description"] = "v3 supervised ceiling"
    raw["data"]["augment"] = True
    raw["downstream"].update(
        mode="finetune", pretrained=None, num_classes=17, lovasz_weight=1.0, eval_every=10_000
    )
    raw["optim"].update(lr_head=None, max_steps=s.steps)
    raw["run"].update(name="ceiling")
    cfg = validate(raw, check_paths=True, source="v3 ceiling")
    t0 = time.perf_counter()
    res = run_downstream(cfg)
    wall = time.perf_counter() - t0
    state, _ = load_backbone_state(Path(res.run_dir) / "last.pt")
    trunk = create_point_encoder(s.point_encoder, in_channels=pre.model.in_channels)
    trunk.load_state_dict(state)
    out = run_root / "ceiling" / "backbone.pt"
    save_backbone(out, trunk, s.point_encoder, pre.model.in_channels)
    info = {
        "finetune_s": round(wall, 2),
        "finetune_steps": res.step,
        "finetune_val_miou_present": (
            100 * res.scores.miou_present if res.scores is not None else None
        ),
    }
    return str(out), info


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
    world = v2.ensure_world(s, work, world_seed)  # type: ignore[arg-type]
    labels = label_root(arm, work, world, world_seed)
    run_root = work / "runs" / tag / arm.name / f"seed{seed}_lr{lr:g}_s{s.steps}"
    overrides = overrides_for(s, arm, world, labels, run_root, seed, lr)
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
        rec["curves"] = v2.curves(Path(pre.run_dir))
        backbone = str(Path(pre.run_dir) / "backbone.pt")
    elif arm.kind == "ceiling":
        backbone, info = ceiling_backbone(cfg, run_root, s)
        rec.update(info)
    rec["gate"] = v2.gate(arm, rec.get("health"), s)  # type: ignore[arg-type]
    probe = probe_cfg(cfg, backbone)
    t2 = time.perf_counter()
    rec["probe"] = converged_probe(probe, s, seed, calibrate=arm.kind == "random")
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
    snap = v2.snapshot_info()
    todo = [j for j in jobs if not result_path(work, tag, j[0], j[1], j[3], j[4].steps).is_file()]
    v2.log(f"{tag}: {len(jobs) - len(todo)} of {len(jobs)} runs done, {len(todo)} to go")
    for i, (arm, seed, world_seed, lr, s) in enumerate(todo, 1):
        t0 = time.perf_counter()
        rec = run_one(s, work, ARMS[arm], seed, world_seed, tag, lr, snap)
        v2.atomic_json(result_path(work, tag, arm, seed, lr, s.steps), rec)
        p = rec["probe"]
        v2.log(
            f"[{i}/{len(todo)}] {tag} {arm} seed {seed} lr {lr:g} S {s.steps}: probe "
            f"{100 * p['scores']['miou_present']:.2f} (iters {p['iterations']}, grad "
            f"{p['max_abs_grad']:.1e}), gate {'ok' if rec['gate']['passed'] else 'FAIL'}, "
            f"{time.perf_counter() - t0:.0f} s"
        )


# ----------------------------------------------------------------------------------------------
# pilot and decisions


def load(work: Path, tag: str) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((work / "results" / tag).rglob("*.json"))]


def miou(rec: dict[str, Any]) -> float:
    return 100 * rec["probe"]["scores"]["miou_present"]


def mde(sd_diff: float, n: int, alpha: float, power: float) -> float:
    """Minimum detectable mean paired difference (one-sided paired t, normal-t approximation)."""
    from scipy import stats

    t = stats.t.ppf(1 - alpha, n - 1) + stats.t.ppf(power, n - 1)
    return float(t) * sd_diff / math.sqrt(n)


def range_decision(work: Path, s: Settings) -> dict[str, Any]:
    """Pilot stage A's rule (PROTOCOL_v3.md): the smallest S with ceiling - PPKT >= 3 x MDE."""
    recs = load(work, "pilot_range")
    rows = []
    alpha = s.alpha / len(PRIMARY)  # Holm's first (strictest) step over the primary family
    for steps in STEP_CHOICES:
        by = {
            a: {r["seed"]: miou(r) for r in recs if r["arm"] == a and r["steps"] == steps}
            for a in ("ppkt", "ceiling")
        }
        seeds = sorted(set(by["ppkt"]) & set(by["ceiling"]))
        if len(seeds) < 2:
            continue
        d = [by["ceiling"][k] - by["ppkt"][k] for k in seeds]
        sd = max(statistics.stdev(d), 0.5)
        m = mde(sd, s.main_seeds, alpha, s.power)
        times = [r["wall_s"] for r in recs if r["steps"] == steps]
        rows.append(
            {
                "steps": steps,
                "seeds": seeds,
                "ppkt": statistics.mean(by["ppkt"][k] for k in seeds),
                "ceiling": statistics.mean(by["ceiling"][k] for k in seeds),
                "range": statistics.mean(d),
                "sd_diff": statistics.stdev(d),
                "mde": m,
                "ok": bool(statistics.mean(d) >= s.range_factor * m),
                "mean_run_s": statistics.mean(times),
            }
        )
    n_main = len(MAIN_ARMS) * s.main_seeds + len(DOSE_ARMS) * s.dose_seeds
    for r in rows:
        r["predicted_main_min"] = r["mean_run_s"] * n_main / 60
    fits = [r for r in rows if r["ok"] and r["predicted_main_min"] <= 120]
    chosen = fits[0]["steps"] if fits else None
    return {"rows": rows, "chosen": chosen, "alpha": alpha, "main_runs": n_main}


def lr_decision(work: Path) -> dict[str, Any]:
    """Pilot stage B's rule: per arm, the grid lr with the best probe among gate-passing runs
    (ties within 0.3 point: the smaller lr; no passing run: the best overall, flagged).
    """
    recs = load(work, "pilot_lr")
    out: dict[str, Any] = {}
    for arm in {r["arm"] for r in recs}:
        runs = sorted((r for r in recs if r["arm"] == arm), key=lambda r: r["lr"])
        ok = [r for r in runs if r["gate"]["passed"]] or runs
        best = max(miou(r) for r in ok)
        pick = next(r for r in ok if miou(r) >= best - 0.3)
        out[arm] = {
            "lr": pick["lr"],
            "flag": "no run passed its gate" if not any(r["gate"]["passed"] for r in runs) else "",
            "grid": {f"{r['lr']:g}": (round(miou(r), 2), r["gate"]["passed"]) for r in runs},
        }
    return out


def decisions_path(work: Path) -> Path:
    return work / "decisions.json"


def settings_from(work: Path) -> tuple[Settings, dict[str, float]]:
    """The settings and per-arm lrs the pilot fixed (``decisions.json``)."""
    path = decisions_path(work)
    if not path.is_file():
        raise SystemExit(f"{path} missing: run the pilot (--pilot range, then --pilot lr)")
    dec = json.loads(path.read_text())
    return replace(SETTINGS, steps=int(dec["steps"])), {k: float(v) for k, v in dec["lrs"].items()}


def pilot(work: Path, stage: str) -> None:
    if stage == "range":
        # S in increasing order, stopping at the first that reaches the range: the rule takes the
        # smallest such S, so a larger one cannot change the choice (Amendment 0)
        for st in STEP_CHOICES:
            jobs = [
                (
                    arm,
                    k,
                    SETTINGS.pilot_world_offset + k,
                    PROVISIONAL_LR,
                    replace(SETTINGS, steps=st),
                )
                for k in range(3)
                for arm in ("ppkt", "ceiling")
            ]
            run_jobs(jobs, work, "pilot_range")
            dec = range_decision(work, SETTINGS)
            if dec["chosen"] is not None:
                break
        print(json.dumps(dec, indent=2))
        if dec["chosen"] is None:
            raise SystemExit("no step count reaches the dynamic range: stop (PROTOCOL_v3.md)")
        v2.atomic_json(decisions_path(work), {"steps": dec["chosen"], "range": dec, "lrs": {}})
        return
    dec = json.loads(decisions_path(work).read_text())
    s = replace(SETTINGS, steps=int(dec["steps"]))
    arms = [a for a in MAIN_ARMS if a != "random"]
    jobs = [(a, 0, s.pilot_world_offset, lr, s) for a in arms for lr in LR_GRID]
    run_jobs(jobs, work, "pilot_lr")
    lrs = lr_decision(work)
    dec["lr_grid"] = lrs
    dec["lrs"] = {a: v["lr"] for a, v in lrs.items()}
    v2.atomic_json(decisions_path(work), dec)
    print(json.dumps(lrs, indent=2))


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


def compare(res: dict[str, dict[int, dict[str, Any]]], a: str, b: str, s: Settings) -> Any:
    seeds = sorted(set(res.get(a, {})) & set(res.get(b, {})))
    ra, rb = res.get(a, {}), res.get(b, {})
    test = v2.paired_test([miou(ra[k]) for k in seeds], [miou(rb[k]) for k in seeds], s.sesoi)
    fails = {x: [k for k in seeds if not r[k]["gate"]["passed"]] for x, r in ((a, ra), (b, rb))}
    gate_ok = all(len(v) < max(2, math.ceil(0.25 * len(seeds))) for v in fails.values())
    return {"a": a, "b": b, "seeds": seeds, "test": test, "gate_fails": fails, "gate_ok": gate_ok}


LABEL_HYPOTHESES = ("sup_vfm > ppkt", "olivine_paper > ppkt")  # H1, H4


def control_rules(key: str, verdict: str, controls: dict[str, str]) -> str:
    """PROTOCOL_v3.md's control rules applied to one primary verdict (controls come first)."""
    if not controls.get("ceiling > ppkt", "").startswith("confirmed"):
        return f"inconclusive (insensitive: no dynamic range; alone: {verdict})"
    if key in LABEL_HYPOTHESES:
        if verdict.startswith("refuted") and not controls.get("sup_gt > ppkt", "").startswith(
            "confirmed"
        ):
            return f"inconclusive (insensitive: positive control failed; alone: {verdict})"
        if controls.get("sup_shuffled > ppkt", "").startswith("confirmed"):
            return f"{verdict} (negative control also beat PPKT: not the labels' content)"
    return verdict


def table(work: Path, out_md: Path) -> str:
    s, lrs = settings_from(work)
    res: dict[str, dict[int, dict[str, Any]]] = {}
    for rec in load(work, "main"):
        rec["gate"] = v2.gate(ARMS[rec["arm"]], rec.get("health"), s)  # type: ignore[arg-type]
        res.setdefault(rec["arm"], {})[int(rec["seed"])] = rec
    dec = json.loads(decisions_path(work).read_text())
    lines = [
        "# Learning benchmark v3 (pre-registered; synthetic world, 2-core CPU)",
        "",
        "Protocol: [PROTOCOL_v3.md](PROTOCOL_v3.md), committed before any v3 result. Regenerate: "
        "`python benchmarks/learning/run_v3.py --table`.",
        "",
    ]
    snaps = sorted({r["snapshot"].get("commit", "?") for a in res.values() for r in a.values()})
    total = sum(r["wall_s"] for a in res.values() for r in a.values())
    n_runs = sum(len(a) for a in res.values())
    lines.append(
        f"Code snapshot(s): {', '.join(snaps)}. {n_runs} finished runs, {total / 60:.1f} min of "
        f"run time. Steps S = {s.steps} (pilot stage A), student `{s.point_encoder}`, batch 2."
    )
    lines += ["", "## Pilot", "", "Stage A (steps vs dynamic range; 3 pilot worlds, lr 1.0):", ""]
    lines.append("| S | ppkt | ceiling | range | sd diff | MDE (n=8) | 3×MDE reached | s/run |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for r in dec["range"]["rows"]:
        lines.append(
            f"| {r['steps']} | {r['ppkt']:.2f} | {r['ceiling']:.2f} | {r['range']:.2f} | "
            f"{r['sd_diff']:.2f} | {r['mde']:.2f} | {'yes' if r['ok'] else 'no'} | "
            f"{r['mean_run_s']:.0f} |"
        )
    lines += ["", "Stage B (base lr grid per arm, pilot world 1000; probe mIoU, gate):", ""]
    lines.append("| arm | " + " | ".join(f"lr {x:g}" for x in LR_GRID) + " | chosen |")
    lines.append("|---|" + "---|" * (len(LR_GRID) + 1))
    for arm, v in sorted(dec.get("lr_grid", {}).items()):
        cells = []
        for x in LR_GRID:
            m, ok = v["grid"].get(f"{x:g}", (None, None))
            cells.append("—" if m is None else f"{m:.2f}{'' if ok else '✗'}")
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {v['lr']:g} {v['flag']} |")
    lines += ["", "## Linear-probe mIoU per arm (converged probe)", ""]
    lines.append(
        "| arm | role | lr | seeds | mIoU mean ± sd | per seed | gate pass | probe iters |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    for arm in (*MAIN_ARMS, *DOSE_ARMS):
        r = res.get(arm, {})
        if not r:
            continue
        vals = [miou(r[k]) for k in sorted(r)]
        sd = statistics.stdev(vals) if len(vals) > 1 else math.nan
        per = ", ".join(
            f"{miou(r[k]):.1f}{'' if r[k]['gate']['passed'] else '✗'}" for k in sorted(r)
        )
        passed = sum(r[k]["gate"]["passed"] for k in r) if ARMS[arm].pretrain else "—"
        iters = [r[k]["probe"]["iterations"] for k in r]
        lines.append(
            f"| {arm} | {ARMS[arm].role} | {arm_lr(arm, lrs):g} | {len(vals)} | "
            f"{statistics.mean(vals):.2f} ± {v2.fmt(sd)} | {per} | {passed} | "
            f"{min(iters)}–{max(iters)} |"
        )
    # probe (and run) noise: the pilot ran some identical configurations in both stages
    twins = {(r["arm"], r["seed"], r["lr"], r["steps"]): miou(r) for r in load(work, "pilot_range")}
    repeat = [
        (key, twins[key], miou(r))
        for r in load(work, "pilot_lr")
        if (key := (r["arm"], r["seed"], r["lr"], r["steps"])) in twins
    ]
    if repeat:
        worst = max(abs(a - b) for _, a, b in repeat)
        lines += [
            "",
            f"Probe and run noise: {len(repeat)} configurations ran twice in the pilot "
            f"({', '.join(k[0] for k, _, _ in repeat)}); largest mIoU difference {worst:.4f} "
            "(pretraining and probe are deterministic; the probe's objective is strictly convex).",
        ]
    conv = [r["probe"] for a in res.values() for r in a.values()]
    largest = max((p["max_abs_grad"] for p in conv), default=0.0)
    lines += [
        "",
        f"Probe convergence: {sum(p['converged'] for p in conv)}/{len(conv)} fits reached max "
        f"|gradient| ≤ {s.probe_tol:g} (largest {largest:.1e}).",
    ]
    verdicts: dict[str, str] = {}
    for title, fam, adjust in (
        ("Controls (unadjusted)", CONTROLS, False),
        ("Primary hypotheses (Holm over the family)", PRIMARY, True),
        ("Secondary (unadjusted)", SECONDARY, False),
    ):
        comps = [compare(res, a, b, s) for a, b in fam]
        ps = [c["test"].get("p", math.nan) for c in comps]
        adj = v2.holm(ps) if adjust else ps
        lines += ["", f"## {title}", ""]
        lines.append(
            "| comparison | n | mean diff | sd | 95 % CI | seeds a > b | p | p adj | verdict |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for c, pa in zip(comps, adj, strict=True):
            t = c["test"]
            verdict = v2.outcome(t, pa, c["gate_ok"], s) if t.get("n", 0) else "not run"  # type: ignore[arg-type]
            key = f"{c['a']} > {c['b']}"
            if fam is PRIMARY:
                verdict = control_rules(key, verdict, verdicts)
            verdicts[key] = verdict
            ci = t.get("ci")
            lines.append(
                f"| {key} | {t.get('n', 0)} | {v2.fmt(t.get('mean'))} | {v2.fmt(t.get('sd'))} | "
                f"{'[' + v2.fmt(ci[0]) + ', ' + v2.fmt(ci[1]) + ']' if ci else '—'} | "
                f"{t.get('positive', '—')}/{t.get('n', 0)} | {v2.fmt_p(t.get('p'))} | "
                f"{v2.fmt_p(pa) if adjust else '—'} | {verdict} |"
            )
    ceiling_ok = verdicts.get("ceiling > ppkt", "").startswith("confirmed")
    positive_ok = verdicts.get("sup_gt > ppkt", "").startswith("confirmed")
    negative_ok = not verdicts.get("sup_shuffled > ppkt", "").startswith("confirmed")
    lines += [
        "",
        "Control verdicts:",
        f"- dynamic range (ceiling > PPKT): **{'passed' if ceiling_ok else 'FAILED'}**",
        f"- positive control (GT labels > PPKT): **{'passed' if positive_ok else 'FAILED'}**"
        + ("" if positive_ok else " — a 'refuted' H1/H4 reads 'inconclusive (insensitive)'"),
        f"- negative control (shuffled labels not > PPKT): "
        f"**{'passed' if negative_ok else 'FAILED'}**",
    ]
    # dose-response: fraction of (ceiling - ppkt) recovered
    lines += ["", "## Dose-response (secondary): fraction of (ceiling − PPKT) recovered", ""]
    lines.append("| arm | seeds | mean gain over PPKT | fraction of ceiling − PPKT |")
    lines.append("|---|---|---|---|")
    # the same seeds for every row (the dose arms ran on fewer seeds than sup_gt)
    dose = ("sup_gt", *DOSE_ARMS)
    common = set(res.get("ppkt", {})) & set(res.get("ceiling", {}))
    for arm in dose:
        common &= set(res.get(arm, {}))
    seeds = sorted(common)
    if seeds:
        span = statistics.mean(miou(res["ceiling"][k]) - miou(res["ppkt"][k]) for k in seeds)
        for arm in dose:
            gain = statistics.mean(miou(res[arm][k]) - miou(res["ppkt"][k]) for k in seeds)
            lines.append(f"| {arm} | {len(seeds)} | {gain:.2f} | {gain / span:.2f} |")
    text = "\n".join(lines) + "\n"
    out_md.write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--pilot", choices=("range", "lr"))
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--plan", action="store_true")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    if args.pilot:
        pilot(args.work, args.pilot)
        return
    if args.table:
        print(table(args.work, HERE / "results_v3.md"))
        return
    s, lrs = settings_from(args.work)
    jobs = main_jobs(s, lrs)
    if args.plan:
        for j in jobs:
            print(j[:4])
        return
    run_jobs(jobs, args.work, "main")
    print(table(args.work, HERE / "results_v3.md"))


if __name__ == "__main__":
    main()
