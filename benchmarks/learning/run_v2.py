"""Learning benchmark v2: a pre-registered, paired test of "random < PPKT < OLIVINE" (issue 13).

The protocol (hypotheses, arms, gates, statistics, amendments) is ``PROTOCOL.md`` next to this
file; this script implements it. Every setting is pinned here (``SETTINGS``, ``PINNED``,
``ARMS``) and stored in every result file.

For each seed k it exports a synthetic world (world seed k, scene-level train/val split), writes
the control label stores (ground-truth camera labels are exported with the world; a copy of the
VFM labels shuffled within each image is written under the work folder), then runs every arm:
pretraining (unless ``random``), the gate read from the run's health summary, and a linear probe
whose initialisation and sample order depend only on k. Each finished (arm, seed) is written as
``<work>/results/<arm>/seed<k>.json`` (atomic) and skipped on a rerun, so the benchmark resumes
after an interruption; a pretraining killed mid-run resumes from its last epoch checkpoint.

    python benchmarks/learning/run_v2.py                 # run what is missing, then --table
    python benchmarks/learning/run_v2.py --table         # results_v2.md + plots from the JSONs
    python benchmarks/learning/run_v2.py --pilot         # the pilot (lr sweep, vMF guard, timing)
    python benchmarks/learning/run_v2.py --plan          # print the runs to do and exit

Run it with the packages of a frozen snapshot on ``PYTHONPATH`` (see PROTOCOL.md, "Running");
the snapshot's commit is recorded in every result and in the table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_WORK = HERE / "work_v2"

# ----------------------------------------------------------------------------------------------
# Settings (PROTOCOL.md). Amendments change these values and say so in PROTOCOL.md.


@dataclass(frozen=True)
class Settings:
    """Everything the protocol fixes that is not a config override of one arm."""

    protocol_version: str = "v2.0+A1"
    # world: scenes x keyframes, scene-level split (val_fraction of the scenes are validation)
    scenes: int = 16
    samples_per_scene: int = 4
    val_fraction: float = 0.5  # 16 scenes -> 8 train / 8 val
    render_size: tuple[int, int] = (200, 112)  # (width, height) rendered
    lidar_azimuth_steps: int = 270
    vfm_noise: float = 0.2
    world_seed_offset: int = 0  # main seed k uses world seed k + offset
    pilot_world_seed: int = 1000  # disjoint from every main world
    # pretraining
    steps: int = 48  # optimiser steps per pretraining run (batch 2); Amendment 1
    base_lr: float = 1.0  # for a batch of 16, auto-scaled to the batch of 2 (x 1/8); A1
    vmf_warmup_fraction: float = 0.5
    vmf_freeze_max_cosine: float = 0.7  # the guard and the G3 threshold; Amendment 1
    # gate (read from the health summary; health.* thresholds are set to these)
    gate_chance_margin: float = 0.05
    gate_min_effective_rank: float = 2.0
    # linear probe
    probe_epochs: int = 20
    probe_lr: float = 0.1
    # statistics
    sesoi: float = 1.0  # smallest effect (mIoU points) worth calling real
    alpha: float = 0.05


SETTINGS = Settings()

CAMERAS = ("CAM_FRONT", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")

# Pinned on top of the shipped ``demo`` config, so that a later change of that config cannot mix
# two set-ups in one table. Arm overrides (ARMS) come after these.
PINNED: tuple[str, ...] = (
    "data.dataset=nuscenes",
    "data.version=v1.0-mini",
    "data.vocabulary=seem17",
    f"data.cameras=[{','.join(CAMERAS)}]",
    "data.image_size=[128,256]",
    "data.voxel_mode=cylindrical",
    "data.voxel_size=[0.1,1.0,0.1]",
    "data.feature=intensity",
    "data.batch_size=2",
    "data.num_workers=0",
    "data.augment=true",
    "data.label_root=null",
    "model.point_encoder=minkunet_tiny",
    "model.in_channels=1",
    "model.image_encoder=efficientnet_lite0",
    "model.image_pretrained=true",
    "model.image_weights=null",
    "model.image_input_size=null",
    "model.head_dim=64",
    "loss.num_pairs=1024",
    "loss.temperature=0.07",
    "loss.ppnce_weight=0.5",
    "loss.sup_weight=0.5",
    "loss.vmf_weight=1.0",
    "loss.superpixel_weight=0.0",
    "loss.sup_sampling=dcas",
    "loss.vmf_decay=null",
    "loss.vmf_warmup_steps=null",
    "loss.vmf_bias_correction=false",
    "loss.ignore_unlabelled=false",
    "optim.auto_scale_lr=true",
    "optim.base_batch_size=16",
    "optim.momentum=0.9",
    "optim.dampening=0.1",
    "optim.weight_decay=0.0001",
    "optim.scheduler=cosine",
    "optim.epochs=1000",  # the run length is optim.max_steps
    "optim.grad_clip=null",
    "run.device=cpu",
    "run.precision=fp32",
    "run.num_threads=1",
    "run.progress=false",
    "run.log_every=1",
    "run.image_log_every=0",
    "run.checkpoint_every=0",
    "run.deterministic=false",
    "health.every=1",
    "health.window=0.25",
)


@dataclass(frozen=True)
class Arm:
    """One arm: pretraining overrides, which label store it reads, its role in the protocol."""

    name: str
    role: str  # primary | control | secondary
    pretrain: bool = True
    overrides: tuple[str, ...] = ()
    labels: str = "vfm"  # vfm | gt | shuffled
    # contrastive terms the gate requires below chance (None: every term the run reports)
    gate_terms: tuple[str, ...] | None = None
    gate_vmf: bool = True  # require the vMF prior (if active) to have frozen under the guard
    what: str = ""


PPKT = ("method=ppkt", "loss.ppnce_weight=1.0", "loss.sup_weight=0", "loss.vmf_weight=0")
RANDOM_TEACHER = ("model.image_pretrained=false",)

ARMS: dict[str, Arm] = {
    a.name: a
    for a in (
        Arm("random", "primary", pretrain=False, what="no pretraining: random backbone"),
        Arm("ppkt", "primary", overrides=PPKT, what="L_PPNCE only (weight 1)"),
        Arm(
            "slidr",
            "secondary",
            overrides=(
                "method=slidr",
                "loss.ppnce_weight=0",
                "loss.sup_weight=0",
                "loss.vmf_weight=0",
                "loss.superpixel_weight=1.0",
                "loss.superpixel_source=vfm_components",
            ),
            what="superpixel-pooled InfoNCE; superpixels = connected components of the VFM map",
        ),
        Arm("olivine", "primary", what="0.5 L_PPNCE + 0.5 L_sup (DCAS) + 1.0 L_kl"),
        Arm("no_sup", "primary", overrides=("loss.sup_weight=0",), what="OLIVINE without L_sup"),
        Arm("no_vmf", "primary", overrides=("loss.vmf_weight=0",), what="OLIVINE without L_kl"),
        Arm(
            "no_dcas",
            "primary",
            overrides=("loss.sup_sampling=uniform",),
            what="OLIVINE, L_sup on uniformly sampled pairs",
        ),
        Arm(
            "olivine_gt",
            "control",
            labels="gt",
            what="positive control: OLIVINE on ground-truth camera labels",
        ),
        Arm(
            "olivine_shuffled",
            "control",
            labels="shuffled",
            gate_terms=("ppnce",),
            gate_vmf=False,
            what="negative control: OLIVINE on VFM labels shuffled within each image",
        ),
        Arm(
            "olivine_randteacher",
            "secondary",
            overrides=RANDOM_TEACHER,
            what="OLIVINE, random efficientnet_lite0 teacher",
        ),
        Arm(
            "ppkt_randteacher",
            "secondary",
            overrides=PPKT + RANDOM_TEACHER,
            what="PPKT, random efficientnet_lite0 teacher",
        ),
    )
}

# (a, b): one-sided paired test of a > b
PRIMARY = (
    ("ppkt", "random"),
    ("olivine", "ppkt"),
    ("olivine", "no_sup"),
    ("olivine", "no_vmf"),
    ("olivine", "no_dcas"),
)
SECONDARY = (
    ("slidr", "ppkt"),
    ("olivine", "slidr"),
    ("olivine", "olivine_randteacher"),
    ("ppkt", "ppkt_randteacher"),
)
CONTROLS = (
    ("olivine_gt", "ppkt"),  # positive control: must be significant
    ("olivine_gt", "olivine"),
    ("olivine_shuffled", "ppkt"),  # negative control: must NOT be significant
    ("olivine", "olivine_shuffled"),
)
FINE_CLASSES = (
    ("car", "truck"),
    ("driveable_surface", "sidewalk"),
    ("terrain", "vegetation"),
)
PILOT_LRS = (0.25, 0.5, 1.0, 2.0)
PILOT_GUARDS = (0.6, 0.7, 0.8)  # 0.5 (the setting's default) is part of the lr sweep

# ----------------------------------------------------------------------------------------------
# helpers


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def atomic_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=_jsonable) + "\n")
    os.replace(tmp, path)


def _jsonable(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def snapshot_info() -> dict[str, Any]:
    """Where olivine_train is imported from and the git commit of that checkout (clean or not)."""
    import olivine_train

    src = Path(olivine_train.__file__).resolve()
    root = src.parents[4]  # <root>/packages/olivine-train/src/olivine_train/__init__.py
    info: dict[str, Any] = {"olivine_train_file": str(src), "root": str(root)}
    try:
        info["commit"] = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "packages"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        info["packages_dirty"] = bool(dirty)
    except (OSError, subprocess.CalledProcessError) as exc:
        info["commit"] = None
        info["error"] = str(exc)
    import torch

    import olivine_data
    import olivine_losses
    import olivine_models

    info["versions"] = {
        "olivine_train": olivine_train.__version__,
        "olivine_data": olivine_data.__version__,
        "olivine_models": olivine_models.__version__,
        "olivine_losses": olivine_losses.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    return info


# ----------------------------------------------------------------------------------------------
# worlds and label stores


def world_dir(work: Path, world_seed: int) -> Path:
    return work / "worlds" / f"world{world_seed}"


def ensure_world(s: Settings, work: Path, world_seed: int) -> Path:
    """Export the synthetic world of ``world_seed`` (with its ground-truth label store)."""
    from olivine_data.synthetic import SyntheticWorldConfig, export_nuscenes

    root = world_dir(work, world_seed)
    if (root / "olivine_splits.json").is_file():
        return root
    if root.exists():
        shutil.rmtree(root)  # a killed export
    t0 = time.perf_counter()
    sw = SyntheticWorldConfig(
        scenes=s.scenes,
        samples_per_scene=s.samples_per_scene,
        seed=world_seed,
        image_size=s.render_size,
        vfm_noise=s.vfm_noise,
        val_fraction=s.val_fraction,
        lidar_azimuth_steps=s.lidar_azimuth_steps,
        cameras=CAMERAS,
        version="v1.0-mini",
    )
    tmp = root.with_name(root.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    export_nuscenes(sw, tmp, progress=False)
    os.replace(tmp, root)
    splits = json.loads((root / "olivine_splits.json").read_text())
    log(
        f"world seed {world_seed}: {len(splits['train'])} train / {len(splits['val'])} val "
        f"scenes, exported in {time.perf_counter() - t0:.1f} s"
    )
    return root


def shuffled_store(work: Path, world: Path, world_seed: int) -> Path:
    """A copy of the world's VFM label store with each image's pixels permuted (fixed seed)."""
    import numpy as np
    from PIL import Image

    out = work / "labels" / f"shuffled_world{world_seed}"
    done = out / "DONE"
    if done.is_file():
        return out
    src = world / "camseg"
    for png in sorted(src.rglob("*.png")):
        rel = png.relative_to(world)
        arr = np.array(Image.open(png), dtype=np.uint8)
        rng = np.random.default_rng([world_seed, 13, zlib.crc32(str(rel).encode())])
        flat = arr.reshape(-1)
        shuffled = flat[rng.permutation(flat.size)].reshape(arr.shape)
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.stem + ".tmp.png")
        Image.fromarray(shuffled, mode="L").save(tmp)
        os.replace(tmp, dst)
    done.write_text("ok\n")
    return out


def label_root(arm: Arm, work: Path, world: Path, world_seed: int) -> str | None:
    if arm.labels == "vfm":
        return None  # the world's own camseg/ (VFM labels, noise s.vfm_noise)
    if arm.labels == "gt":
        gt = world / "gt"
        if not (gt / "camseg").is_dir():
            raise FileNotFoundError(f"no ground-truth label store at {gt}/camseg")
        return str(gt)
    if arm.labels == "shuffled":
        return str(shuffled_store(work, world, world_seed))
    raise ValueError(arm.labels)


# ----------------------------------------------------------------------------------------------
# one run


def pretrain_overrides(
    s: Settings, arm: Arm, world: Path, labels: str | None, run_root: Path, seed: int
) -> list[str]:
    return [
        *PINNED,
        f"data.root={world}",
        f"run.out_dir={run_root}",
        "run.name=pretrain",
        f"run.seed={seed}",
        "run.resume=auto",
        f"optim.max_steps={s.steps}",
        f"optim.lr={s.base_lr}",
        f"loss.vmf_warmup_fraction={s.vmf_warmup_fraction}",
        f"loss.vmf_freeze_max_cosine={s.vmf_freeze_max_cosine}",
        f"health.chance_margin={s.gate_chance_margin}",
        f"health.min_effective_rank={s.gate_min_effective_rank}",
        f"health.max_mu_cosine={s.vmf_freeze_max_cosine}",
        f"demo.probe_epochs={s.probe_epochs}",
        f"demo.probe_lr={s.probe_lr}",
        *arm.overrides,
        *([f"data.label_root={labels}"] if labels is not None else []),
    ]


def gate(arm: Arm, health: dict[str, Any] | None, s: Settings) -> dict[str, Any]:
    """The protocol's gate on one pretraining run's health summary, with that run's thresholds
    (``s``: the run's own settings, so the vMF check uses the run's freeze guard).
    """
    if not arm.pretrain:
        return {"applies": False, "passed": True, "reasons": []}
    if health is None:
        return {"applies": True, "passed": False, "reasons": ["no health summary"]}
    reasons: list[str] = []
    notes: list[str] = []
    terms = health.get("terms", {})
    wanted = arm.gate_terms if arm.gate_terms is not None else tuple(terms)
    for name in wanted:
        t = terms.get(name)
        if t is None:
            reasons.append(f"{name}: not measured")
        elif not t["left_chance"]:
            reasons.append(
                f"{name} at chance (loss {100 * t['relative_margin']:.1f} % under its chance "
                f"level; the gate needs {100 * s.gate_chance_margin:.0f} %)"
            )
    for name, t in terms.items():
        if name not in wanted and not t["left_chance"]:
            notes.append(f"{name} at chance (expected for this arm)")
    for name, r in health.get("effective_ranks", {}).items():
        if r is None or r < s.gate_min_effective_rank:
            reasons.append(f"collapse: {name} effective rank {r}")
    vmf = health.get("vmf") or {}
    if vmf:
        frozen = vmf.get("at_freeze")
        if frozen is None:
            msg = "vMF prior never froze (L_kl never acted)"
            (reasons if arm.gate_vmf else notes).append(msg)
        elif frozen["mu_cos_mean"] > s.vmf_freeze_max_cosine + 1e-9:
            reasons.append(f"vMF froze at mean mu cosine {frozen['mu_cos_mean']:.3f}")
    return {"applies": True, "passed": not reasons, "reasons": reasons, "notes": notes}


def curves(run_dir: Path) -> dict[str, Any]:
    """Per-step loss and chance of each term, and the vMF direction cosine, from metrics.jsonl."""
    out: dict[str, Any] = {"terms": {}, "mu_cos_mean": [], "lr": []}
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") != "train":
            continue
        step = rec["step"]
        for key, val in rec.items():
            if key.startswith("health/") and key.endswith("/chance"):
                term = key.split("/")[1]
                loss = rec.get(f"loss/{term}")
                out["terms"].setdefault(term, []).append([step, loss, val])
        if "vmf/mu_cos_mean" in rec:
            out["mu_cos_mean"].append([step, rec["vmf/mu_cos_mean"]])
        out["lr"].append([step, rec.get("lr")])
    return out


def scores_record(scores: Any) -> dict[str, Any]:
    import numpy as np

    present = np.asarray(scores.present, bool)
    return {
        "miou_present": float(scores.miou_present),
        "miou_reference_convention": float(scores.miou),
        "accuracy": float(scores.accuracy),
        "num_points": int(scores.num_points),
        "iou": {
            n: (float(v) if present[i] and v == v else None)
            for i, (n, v) in enumerate(zip(scores.class_names, scores.iou))
            if i > 0
        },
        "present": [n for i, n in enumerate(scores.class_names) if i > 0 and present[i]],
    }


def run_one(
    s: Settings, work: Path, arm: Arm, seed: int, world_seed: int, tag: str, snap: dict[str, Any]
) -> dict[str, Any]:
    """Pretrain (unless random), gate, linear probe; returns the result record."""
    from olivine_train.config import config_to_dict, load_config, validate
    from olivine_train.recipes.demo import probe_config
    from olivine_train.recipes.downstream import run_downstream
    from olivine_train.recipes.pretrain import describe_teacher, run_pretrain

    t0 = time.perf_counter()
    world = ensure_world(s, work, world_seed)
    labels = label_root(arm, work, world, world_seed)
    run_root = work / "runs" / tag / arm.name / f"seed{seed}"
    overrides = pretrain_overrides(s, arm, world, labels, run_root, seed)
    cfg = load_config("demo", overrides)
    cfg = validate(config_to_dict(cfg), source=f"learning benchmark v2 {arm.name}")
    rec: dict[str, Any] = {
        "arm": arm.name,
        "role": arm.role,
        "what": arm.what,
        "seed": seed,
        "world_seed": world_seed,
        "tag": tag,
        "settings": asdict(s),
        "overrides": overrides,
        "snapshot": snap,
        "teacher": describe_teacher(cfg) if arm.pretrain else None,
        "label_root": labels,
        "load_average_start": os.getloadavg(),
    }
    backbone = None
    if arm.pretrain:
        t1 = time.perf_counter()
        pre = run_pretrain(cfg)
        rec["pretrain_s"] = round(time.perf_counter() - t1, 2)
        rec["pretrain_steps"] = pre.step
        rec["s_per_step"] = round(rec["pretrain_s"] / max(pre.step, 1), 4)
        rec["health"] = pre.health.to_dict() if pre.health is not None else None
        rec["curves"] = curves(Path(pre.run_dir))
        rec["pretrain_config"] = config_to_dict(cfg)
        backbone = str(Path(pre.run_dir) / "backbone.pt")
    rec["gate"] = gate(arm, rec.get("health"), s)
    probe = probe_config(cfg, "probe", backbone)
    probe_dir = run_root / "probe"
    if probe_dir.exists():
        shutil.rmtree(probe_dir)
    t2 = time.perf_counter()
    lp = run_downstream(probe)
    rec["probe_s"] = round(time.perf_counter() - t2, 2)
    if lp.scores is None:
        raise RuntimeError(f"{arm.name} seed {seed}: the linear probe produced no scores")
    rec["linear_probe"] = scores_record(lp.scores)
    rec["probe_config"] = config_to_dict(probe)
    rec["wall_s"] = round(time.perf_counter() - t0, 2)
    rec["load_average_end"] = os.getloadavg()
    # keep backbone.pt, health.json, metrics.jsonl, config.yaml; drop the training checkpoints
    for name in ("pretrain/last.pt", "probe/last.pt", "probe/best.pt"):
        p = run_root / name
        if p.is_file():
            p.unlink()
    return rec


def result_path(work: Path, tag: str, arm: str, seed: int) -> Path:
    return work / "results" / tag / arm / f"seed{seed}.json"


# ----------------------------------------------------------------------------------------------
# statistics


def paired_test(a: list[float], b: list[float], sesoi: float) -> dict[str, Any]:
    """One-sided paired t-test of mean(a - b) > 0, the 95 % two-sided CI, outcome inputs."""
    from scipy import stats

    d = [x - y for x, y in zip(a, b)]
    n = len(d)
    out: dict[str, Any] = {"n": n, "diffs": d}
    if n < 2:
        return out | {"mean": d[0] if d else math.nan, "sd": math.nan, "p": math.nan}
    mean, sd = statistics.mean(d), statistics.stdev(d)
    se = sd / math.sqrt(n)
    if se == 0:
        t, p = (math.inf if mean > 0 else -math.inf), (0.0 if mean > 0 else 1.0)
    else:
        t = mean / se
        p = float(stats.t.sf(t, n - 1))
    half = float(stats.t.ppf(0.975, n - 1)) * se
    return out | {
        "mean": mean,
        "sd": sd,
        "t": t,
        "p": p,
        "ci": (mean - half, mean + half),
        "positive": sum(x > 0 for x in d),
    }


def holm(ps: list[float]) -> list[float]:
    """Holm-adjusted p-values (step-down, monotone)."""
    m = len(ps)
    order = sorted(range(m), key=lambda i: ps[i])
    adj = [math.nan] * m
    running = 0.0
    for rank, i in enumerate(order):
        val = min(1.0, (m - rank) * ps[i]) if ps[i] == ps[i] else math.nan
        running = max(running, val) if val == val else running
        adj[i] = running if val == val else math.nan
    return adj


def outcome(test: dict[str, Any], p_adj: float, gate_ok: bool, s: Settings) -> str:
    """The protocol's verdict for one comparison."""
    if test.get("n", 0) < 3 or "ci" not in test:
        return "not enough seeds"
    if not gate_ok:
        return "inconclusive (gate)"
    lo, hi = test["ci"]
    if p_adj < s.alpha:
        return "confirmed" if test["mean"] >= s.sesoi else "confirmed, below SESOI"
    if hi < s.sesoi:
        return "refuted" if hi < 0 or test["mean"] <= 0 else "refuted (< SESOI)"
    return "inconclusive"


# ----------------------------------------------------------------------------------------------
# table and plots


def settings_of(rec: dict[str, Any]) -> Settings:
    raw = dict(rec["settings"])
    raw["render_size"] = tuple(raw["render_size"])
    return Settings(**raw)


def regate(rec: dict[str, Any]) -> dict[str, Any]:
    """The gate recomputed from the stored health summary and the run's own settings (the
    verdict stored at run time is kept as ``gate_at_run``).
    """
    rec["gate_at_run"] = rec.get("gate")
    rec["gate"] = gate(ARMS[rec["arm"]], rec.get("health"), settings_of(rec))
    return rec


def load_results(work: Path, tag: str) -> dict[str, dict[int, dict[str, Any]]]:
    out: dict[str, dict[int, dict[str, Any]]] = {}
    root = work / "results" / tag
    for path in sorted(root.glob("*/seed*.json")):
        rec = regate(json.loads(path.read_text()))
        out.setdefault(rec["arm"], {})[int(rec["seed"])] = rec
    return out


def miou(rec: dict[str, Any]) -> float:
    return 100 * rec["linear_probe"]["miou_present"]


def compare(
    res: dict[str, dict[int, dict[str, Any]]], a: str, b: str, s: Settings
) -> dict[str, Any]:
    seeds = sorted(set(res.get(a, {})) & set(res.get(b, {})))
    ra, rb = res.get(a, {}), res.get(b, {})
    test = paired_test([miou(ra[k]) for k in seeds], [miou(rb[k]) for k in seeds], s.sesoi)
    fails = {x: [k for k in seeds if not r[k]["gate"]["passed"]] for x, r in ((a, ra), (b, rb))}
    ok_seeds = [k for k in seeds if ra[k]["gate"]["passed"] and rb[k]["gate"]["passed"]]
    sens = paired_test([miou(ra[k]) for k in ok_seeds], [miou(rb[k]) for k in ok_seeds], s.sesoi)
    gate_ok = all(len(v) < 2 for v in fails.values())
    return {
        "a": a,
        "b": b,
        "seeds": seeds,
        "test": test,
        "gate_fails": fails,
        "gate_ok": gate_ok,
        "sensitivity": sens,
    }


def fmt(x: float, digits: int = 2) -> str:
    return "—" if x is None or x != x else f"{x:.{digits}f}"


def fmt_p(p: float) -> str:
    if p is None or p != p:
        return "—"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def table(work: Path, tag: str, s: Settings, out_md: Path) -> str:
    res = load_results(work, tag)
    arms = [a for a in ARMS if a in res]
    lines: list[str] = []
    snaps = sorted({str(r["snapshot"].get("commit")) for a in res.values() for r in a.values()})
    dirty = any(r["snapshot"].get("packages_dirty") for a in res.values() for r in a.values())
    n_runs = sum(len(v) for v in res.values())
    walls = [r["wall_s"] for a in res.values() for r in a.values()]
    steps = sorted({r.get("pretrain_steps") for a in res.values() for r in a.values()} - {None})
    rec0 = next(iter(next(iter(res.values())).values())) if res else None
    st = rec0["settings"] if rec0 else asdict(s)
    lines.append("# Learning benchmark v2 (pre-registered; synthetic world, 2-core CPU)\n")
    lines.append(
        "Protocol: [PROTOCOL.md](PROTOCOL.md) (hypotheses, gates, statistics and amendments, "
        "committed before these results). Regenerate this file and the plots: "
        f"`python benchmarks/learning/run_v2.py --table{'' if tag == 'main' else ' --pilot'}`; "
        'rerun everything: see PROTOCOL.md, "Running".\n'
    )
    lines.append(
        f"Code snapshot (packages imported by every run): commit {', '.join(snaps)}"
        f"{' (packages/ had uncommitted changes!)' if dirty else ''}. {n_runs} finished runs, "
        f"{sum(walls) / 60:.1f} min of run time in all (world export included in the first run "
        "of each seed).\n"
    )
    lines.append(
        f"Setting: synthetic world of {st['scenes']} scenes × {st['samples_per_scene']} keyframes "
        f"per seed (world seed = seed + {st['world_seed_offset']}; scene-level split, "
        f"{round(st['scenes'] * st['val_fraction'])} validation scenes), VFM label noise "
        f"{st['vfm_noise']}, 3 cameras at 128×256, `minkunet_tiny` student, ImageNet "
        f"`efficientnet_lite0` teacher (frozen), batch 2, {', '.join(map(str, steps))} pretraining "
        f"steps, base lr {st['base_lr']} for a batch of 16 auto-scaled to "
        f"{st['base_lr'] * 2 / 16:g}, vMF warm-up {st['vmf_warmup_fraction']} of the run with the "
        f"EMA tied to it and the freeze guard at mean μ cosine {st['vmf_freeze_max_cosine']}; "
        f"linear probe {st['probe_epochs']} epochs at lr {st['probe_lr']} on 100 % of the training "
        "labels. Metric: mIoU (%) over the classes present in the validation ground truth "
        "(`SegmentationScores.miou_present`).\n"
    )
    # per-arm table
    lines.append("## Linear-probe mIoU per arm\n")
    lines.append(
        "| arm | role | seeds | mIoU mean ± sd | per seed (0, 1, ...) | gate pass | s/step |"
    )
    lines.append("|---|---|---|---|---|---|---|")
    for a in arms:
        recs = res[a]
        vals = [miou(recs[k]) for k in sorted(recs)]
        sd = statistics.stdev(vals) if len(vals) > 1 else math.nan
        per = ", ".join(
            f"{v:.1f}" + ("" if recs[k]["gate"]["passed"] else "✗")
            for k, v in zip(sorted(recs), vals)
        )
        npass = sum(r["gate"]["passed"] for r in recs.values())
        sps = [r["s_per_step"] for r in recs.values() if "s_per_step" in r]
        lines.append(
            f"| {a} | {ARMS[a].role} | {len(vals)} | {statistics.mean(vals):.2f} ± {fmt(sd)} | "
            f"{per} | {npass if ARMS[a].pretrain else '—'}/{len(vals) if ARMS[a].pretrain else '—'}"
            f" | {fmt(statistics.mean(sps)) if sps else '—'} |"
        )
    lines.append("\n✗ = that run failed its gate (reasons in the gate table).\n")
    # comparisons. The positive control is judged first: if perfect labels do not beat PPKT, a
    # "refuted" H2/H3 is downgraded (PROTOCOL.md, "Controls")
    pos_cmp = compare(res, "olivine_gt", "ppkt", s) if {"olivine_gt", "ppkt"} <= set(res) else None
    pos_failed = pos_cmp is not None and not outcome(
        pos_cmp["test"], pos_cmp["test"].get("p", math.nan), pos_cmp["gate_ok"], s
    ).startswith(("confirmed", "not enough"))
    insensitive = {("olivine", "ppkt"), ("olivine", "no_sup")}
    verdicts: dict[tuple[str, str], str] = {}
    for title, family, adjust in (
        (
            "Primary hypotheses (one-sided paired t-tests, Holm-corrected over the family)",
            PRIMARY,
            True,
        ),
        ("Secondary comparisons (Holm-corrected within this family)", SECONDARY, True),
        ("Controls (unadjusted)", CONTROLS, False),
    ):
        comps = [compare(res, a, b, s) for a, b in family if a in res and b in res]
        if not comps:
            continue
        ps = [c["test"].get("p", math.nan) for c in comps]
        adj = holm(ps) if adjust else ps
        lines.append(f"## {title}\n")
        lines.append(
            "| comparison | n | mean diff | sd | 95 % CI | seeds a > b | p (one-sided) | "
            "p adjusted | verdict | excluding gate failures |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        for c, pa in zip(comps, adj):
            t = c["test"]
            v = outcome(t, pa, c["gate_ok"], s)
            if pos_failed and (c["a"], c["b"]) in insensitive and v.startswith("refuted"):
                v = f"inconclusive (insensitive: positive control failed; alone: {v})"
            verdicts[(c["a"], c["b"])] = v
            sens = c["sensitivity"]
            sens_txt = (
                "same seeds"
                if sens.get("n") == t.get("n")
                else f"n {sens.get('n')}: {fmt(sens.get('mean'))} (p {fmt_p(sens.get('p'))})"
            )
            ci = t.get("ci")
            lines.append(
                f"| {c['a']} > {c['b']} | {t['n']} | {fmt(t.get('mean'))} | {fmt(t.get('sd'))} | "
                f"{'[' + fmt(ci[0]) + ', ' + fmt(ci[1]) + ']' if ci else '—'} | "
                f"{t.get('positive', '—')}/{t['n']} | {fmt_p(t.get('p'))} | "
                f"{fmt_p(pa) if adjust else '—'} | {v} | {sens_txt} |"
            )
        lines.append("")
    pos = verdicts.get(("olivine_gt", "ppkt"))
    neg = compare(res, "olivine_shuffled", "ppkt", s) if "olivine_shuffled" in res else None
    if pos is not None or neg is not None:
        lines.append('Control verdicts (PROTOCOL.md, "Controls"):')
        if pos is not None:
            ok = pos.startswith("confirmed")
            state = "undetermined" if pos == "not enough seeds" else ("passed" if ok else "FAILED")
            lines.append(
                f"- positive control (perfect labels beat PPKT, one-sided p < {s.alpha}): "
                f"**{state}** ({pos})."
            )
        if neg is not None and neg["test"].get("p", math.nan) == neg["test"].get("p", math.nan):
            beats = neg["test"]["p"] < s.alpha
            lines.append(
                f"- negative control (shuffled labels must not beat PPKT): "
                f"**{'FAILED' if beats else 'passed'}** (one-sided p {fmt_p(neg['test']['p'])})."
            )
        lines.append("")
    # fine classes
    lines.append("## Fine classes (linear-probe IoU %, mean over seeds; descriptive)\n")
    names = [n for pair in FINE_CLASSES for n in pair]
    lines.append("| arm | " + " | ".join(names) + " |")
    lines.append("|---|" + "---|" * len(names))
    for a in arms:
        cells = []
        for n in names:
            vals = [r["linear_probe"]["iou"].get(n) for r in res[a].values()]
            vals = [100 * v for v in vals if v is not None]
            cells.append(f"{statistics.mean(vals):.1f}" if vals else "—")
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    lines.append("")
    # gate table
    lines.append("## Gates (from each run's health summary)\n")
    lines.append(
        "| arm | seed | gate | L_PPNCE under chance | L_sup under chance | superpixel under chance "
        "| min eff. rank | vMF freeze (step, mean μ cos) | reasons / notes |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for a in arms:
        if not ARMS[a].pretrain:
            continue
        for k in sorted(res[a]):
            r = res[a][k]
            h = r.get("health") or {}
            terms = h.get("terms", {})

            def rel(name: str, terms: dict[str, Any] = terms) -> str:
                t = terms.get(name)
                return "—" if t is None else f"{100 * t['relative_margin']:.1f} %"

            ranks = [v for v in h.get("effective_ranks", {}).values() if v is not None]
            vmf = h.get("vmf") or {}
            fr = vmf.get("at_freeze") if vmf else None
            vtxt = (
                "—"
                if not vmf
                else (
                    "never froze" if fr is None else f"{int(fr['step'])}, {fr['mu_cos_mean']:.3f}"
                )
            )
            why = "; ".join(r["gate"]["reasons"] + r["gate"].get("notes", []))
            lines.append(
                f"| {a} | {k} | {'pass' if r['gate']['passed'] else '**FAIL**'} | {rel('ppnce')} | "
                f"{rel('sup')} | {rel('superpixel')} | {fmt(min(ranks)) if ranks else '—'} | "
                f"{vtxt} | {why} |"
            )
    lines.append("")
    lines.append(
        "Plots: [per-arm probe mIoU with seeds](results_v2_miou.png), "
        "[paired differences vs PPKT](results_v2_diffs.png), "
        "[loss curves against their chance levels](results_v2_curves.png).\n"
    )
    text = "\n".join(lines)
    out_md.write_text(text)
    plots(res, out_md.parent, out_md.stem)
    return text


def plots(res: dict[str, dict[int, dict[str, Any]]], folder: Path, stem: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not available: no plots", file=sys.stderr)
        return
    arms = [a for a in ARMS if a in res]
    seeds = sorted({k for a in arms for k in res[a]})
    colors = {k: plt.cm.tab10(i % 10) for i, k in enumerate(seeds)}
    # 1. per-arm mIoU with seeds (seed k has one colour in every arm)
    fig, ax = plt.subplots(figsize=(11, 4.2))
    for i, a in enumerate(arms):
        for j, k in enumerate(sorted(res[a])):
            r = res[a][k]
            ax.scatter(
                i + (j - 2) * 0.06,
                miou(r),
                color=colors[k],
                s=22,
                marker="o" if r["gate"]["passed"] else "x",
                label=f"seed {k}" if i == 0 else None,
            )
        vals = [miou(r) for r in res[a].values()]
        ax.hlines(statistics.mean(vals), i - 0.3, i + 0.3, color="k", lw=1.5)
    ax.set_xticks(range(len(arms)), arms, rotation=35, ha="right")
    ax.set_ylabel("linear-probe mIoU, present classes (%)")
    ax.set_title("Learning benchmark v2: probe mIoU per arm (bar = mean; x = gate failed)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=len(seeds), loc="lower right")
    fig.tight_layout()
    fig.savefig(folder / f"{stem}_miou.png", dpi=110)
    plt.close(fig)
    # 2. paired differences vs PPKT (and random vs PPKT)
    if "ppkt" in res:
        others = [a for a in arms if a != "ppkt"]
        fig, ax = plt.subplots(figsize=(11, 4.2))
        for i, a in enumerate(others):
            c = compare(res, a, "ppkt", SETTINGS)
            for j, (k, d) in enumerate(zip(c["seeds"], c["test"]["diffs"])):
                ax.scatter(i + (j - 2) * 0.06, d, color=colors[k], s=22)
            t = c["test"]
            if "ci" in t:
                ax.errorbar(
                    i + 0.25,
                    t["mean"],
                    yerr=[[t["mean"] - t["ci"][0]], [t["ci"][1] - t["mean"]]],
                    fmt="s",
                    color="k",
                    ms=4,
                    capsize=3,
                )
        ax.axhline(0, color="k", lw=0.8)
        for y in (SETTINGS.sesoi, -SETTINGS.sesoi):
            ax.axhline(y, color="tab:red", lw=0.6, ls="--")
        ax.set_xticks(range(len(others)), others, rotation=35, ha="right")
        ax.set_ylabel("arm − PPKT, same seed (mIoU points)")
        ax.set_title(
            "Paired differences vs PPKT (dots = seeds; square = mean with 95 % CI; dashed = ±SESOI)"
        )
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(folder / f"{stem}_diffs.png", dpi=110)
        plt.close(fig)
    # 3. loss curves against chance: relative margin (loss - chance) / chance per term, mean
    # over seeds, one panel per term
    terms = ("ppnce", "sup", "superpixel")
    arm_color = {a: plt.cm.tab10(i % 10) for i, a in enumerate(ARMS)}
    arm_style = {a: ("--" if i >= 10 else "-") for i, a in enumerate(ARMS)}
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.0))
    for ax, term in zip(axes, terms):
        for a in arms:
            series = []
            for r in res[a].values():
                pts = (r.get("curves") or {}).get("terms", {}).get(term)
                if pts:
                    series.append([(v - c) / c for _, v, c in pts if v is not None and c])
            if not series:
                continue
            n = min(len(x) for x in series)
            mean = [statistics.mean(x[i] for x in series) for i in range(n)]
            w = 5  # moving average over 5 steps
            smooth = [statistics.mean(mean[max(0, i - w + 1) : i + 1]) for i in range(n)]
            ax.plot(range(1, n + 1), smooth, label=a, lw=1, color=arm_color[a], ls=arm_style[a])
        ax.axhline(0, color="k", lw=0.8)
        ax.axhline(-SETTINGS.gate_chance_margin, color="tab:red", lw=0.6, ls="--")
        ax.set_title(f"{term}: (loss − chance) / chance")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    ax = axes[3]
    for a in arms:
        series = [(r.get("curves") or {}).get("mu_cos_mean") for r in res[a].values()]
        series = [x for x in series if x]
        if not series:
            continue
        n = min(len(x) for x in series)
        ax.plot(
            [series[0][i][0] for i in range(n)],
            [statistics.mean(x[i][1] for x in series) for i in range(n)],
            label=a,
            lw=1,
            color=arm_color[a],
            ls=arm_style[a],
        )
    ax.axhline(SETTINGS.vmf_freeze_max_cosine, color="tab:red", lw=0.6, ls="--")
    ax.set_title("vMF: mean μ cosine until the freeze")
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    for extra in axes[1:]:
        h, lab = extra.get_legend_handles_labels()
        for hh, ll in zip(h, lab):
            if ll not in labels:
                handles.append(hh)
                labels.append(ll)
    fig.legend(handles, labels, loc="lower center", ncol=6, fontsize=7)
    fig.suptitle(
        "Contrastive terms against chance (mean over seeds, 5-step moving average; "
        "dashed = gate margin)",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(folder / f"{stem}_curves.png", dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# plans


@dataclass
class Job:
    arm: Arm
    seed: int
    world_seed: int
    tag: str
    settings: Settings
    label: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def main_jobs(s: Settings, arms: list[str], seeds: list[int]) -> list[Job]:
    # seed-major: a partial benchmark is balanced and paired
    return [
        Job(ARMS[a], k, k + s.world_seed_offset, "main", s, f"{a} seed {k}")
        for k in seeds
        for a in arms
    ]


def pilot_jobs(s: Settings, stage: str, base_lr: float | None = None) -> list[Job]:
    """The pilot (PROTOCOL.md, "Pilot"): stage 'lr' = the lr sweep; 'vmf' = the guard check."""
    jobs: list[Job] = []
    # the pilot ran before Amendment 1 changed these: pin its own values so it reruns as it ran
    s = Settings(**(asdict(s) | {"steps": 64, "vmf_freeze_max_cosine": 0.5}))
    w = s.pilot_world_seed
    if stage == "lr":
        jobs.append(Job(ARMS["random"], 0, w, "pilot", s, "random"))
        for lr in PILOT_LRS:
            s_lr = Settings(**(asdict(s) | {"base_lr": lr}))
            for a in ("ppkt", "olivine"):
                tag = f"pilot/lr{lr:g}"
                jobs.append(Job(ARMS[a], 0, w, tag, s_lr, f"{a} base lr {lr:g}"))
    elif stage == "vmf":
        if base_lr is None:
            raise SystemExit("--pilot-stage vmf needs --base-lr (the lr chosen by the sweep)")
        for c in PILOT_GUARDS:
            s_c = Settings(**(asdict(s) | {"vmf_freeze_max_cosine": c, "base_lr": base_lr}))
            jobs.append(
                Job(ARMS["olivine"], 0, w, f"pilot/guard{c:g}", s_c, f"olivine guard {c:g}")
            )
    return jobs


def run_jobs(jobs: list[Job], work: Path) -> None:
    snap = snapshot_info()
    log(
        f"olivine_train imported from {snap['olivine_train_file']} (commit {snap.get('commit')}"
        f"{', packages/ DIRTY' if snap.get('packages_dirty') else ''})"
    )
    todo = [j for j in jobs if not result_path(work, j.tag, j.arm.name, j.seed).is_file()]
    log(f"{len(todo)} run(s) to do, {len(jobs) - len(todo)} already finished")
    t_start = time.perf_counter()
    done_s: list[float] = []
    for i, j in enumerate(todo, 1):
        log(f"[{i}/{len(todo)}] {j.label} ({j.tag}, world {j.world_seed}) ...")
        rec = run_one(j.settings, work, j.arm, j.seed, j.world_seed, j.tag, snap)
        atomic_json(result_path(work, j.tag, j.arm.name, j.seed), rec)
        done_s.append(rec["wall_s"])
        g = rec["gate"]
        gate_txt = (
            "—"
            if not g["applies"]
            else ("pass" if g["passed"] else "FAIL: " + "; ".join(g["reasons"]))
        )
        elapsed = time.perf_counter() - t_start
        pre = [x.arm.pretrain for x in todo[i:]]
        mean_pre = statistics.mean([r for r in done_s]) if done_s else 0
        log(
            f"    mIoU {miou(rec):.2f}  gate {gate_txt}  "
            + (
                f"pretrain {rec['pretrain_s']:.0f} s ({rec['s_per_step']:.2f} s/step)  "
                if "pretrain_s" in rec
                else ""
            )
            + f"probe {rec['probe_s']:.0f} s  | elapsed {elapsed / 60:.1f} min, "
            f"~{len(pre) * mean_pre / 60:.0f} min left"
        )
    log("all runs finished")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=DEFAULT_WORK)
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--table", action="store_true", help="only rebuild the markdown + plots")
    p.add_argument("--pilot", action="store_true", help="the pilot instead of the main runs")
    p.add_argument("--pilot-stage", choices=("lr", "vmf"), default="lr")
    p.add_argument("--base-lr", type=float, default=None, help="pilot vmf stage: the chosen lr")
    p.add_argument("--plan", action="store_true", help="print the runs to do and exit")
    p.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # tiny, for testing
    p.add_argument("--out", type=Path, default=None, help="markdown to write (default per mode)")
    args = p.parse_args(argv)
    arms = [a for a in args.arms.split(",") if a]
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        p.error(f"unknown arms {unknown}; known: {list(ARMS)}")
    seeds = [int(x) for x in args.seeds.split(",") if x]
    tag = "pilot" if args.pilot else "main"
    out_md = args.out or (HERE / ("pilot_v2.md" if args.pilot else "results_v2.md"))
    if args.smoke:  # a tiny world and a few steps: checks the machinery, measures nothing
        global SETTINGS
        SETTINGS = Settings(
            **(
                asdict(SETTINGS)
                | {"scenes": 3, "samples_per_scene": 2, "steps": 3, "probe_epochs": 1}
            )
        )
    if args.pilot:
        jobs = pilot_jobs(SETTINGS, args.pilot_stage, args.base_lr)
    else:
        jobs = main_jobs(SETTINGS, arms, seeds)
    if args.plan:
        for j in jobs:
            done = result_path(args.work, j.tag, j.arm.name, j.seed).is_file()
            print(f"{'done' if done else 'todo'}  {j.tag:<16} {j.label}")
        return
    if not args.table:
        run_jobs(jobs, args.work)
    if args.pilot:
        print(pilot_report(args.work, out_md))
    else:
        print(table(args.work, tag, SETTINGS, out_md))


def pilot_report(work: Path, out_md: Path) -> str:
    """The pilot's table: per run mIoU, gate, health margins, s/step."""
    lines = [
        "# Learning benchmark v2 — pilot (one seed, pilot world)\n",
        "Regenerate: `python benchmarks/learning/run_v2.py --pilot --table`. Decision rules: "
        'PROTOCOL.md, "Pilot".\n',
        "| run | base lr (eff.) | vMF guard | mIoU | gate | L_PPNCE rel. margin | "
        "L_sup rel. margin | min eff. rank | vMF freeze | pretrain s | s/step | probe s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    root = work / "results"
    for path in sorted(root.glob("pilot*/**/seed*.json")):
        r = regate(json.loads(path.read_text()))
        st = r["settings"]
        h = r.get("health") or {}
        terms = h.get("terms", {})
        ranks = [v for v in h.get("effective_ranks", {}).values() if v is not None]
        vmf = h.get("vmf") or {}
        fr = vmf.get("at_freeze") if vmf else None
        vt = (
            "—"
            if not vmf
            else ("never" if fr is None else f"step {int(fr['step'])}, cos {fr['mu_cos_mean']:.3f}")
        )
        last_cos = (vmf.get("last") or {}).get("mu_cos_mean") if vmf else None
        if vmf and fr is None and last_cos is not None:
            vt += f" (last cos {last_cos:.3f})"

        def rel(n: str, terms: dict[str, Any] = terms) -> str:
            t = terms.get(n)
            return "—" if t is None else f"{100 * t['relative_margin']:.1f} %"

        g = r["gate"]
        verdict = "pass" if g["passed"] else "FAIL: " + "; ".join(g["reasons"])
        lines.append(
            f"| {r['arm']} ({r['tag']}) | {st['base_lr']:g} ({st['base_lr'] * 2 / 16:g}) | "
            f"{st['vmf_freeze_max_cosine']:g} | {miou(r):.2f} | "
            f"{'—' if not g['applies'] else verdict} | "
            f"{rel('ppnce')} | {rel('sup')} | {fmt(min(ranks)) if ranks else '—'} | {vt} | "
            f"{r.get('pretrain_s', '—')} | {r.get('s_per_step', '—')} | {r['probe_s']} |"
        )
    snaps = sorted(
        {
            json.loads(p.read_text())["snapshot"].get("commit")
            for p in root.glob("pilot*/**/seed*.json")
        }
        - {None}
    )
    lines.append(f"\nCode snapshot: {', '.join(snaps)}.\n")
    text = "\n".join(lines)
    out_md.write_text(text)
    return text


if __name__ == "__main__":
    main()
