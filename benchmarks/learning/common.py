"""What the learning benchmarks (v3, v4) share: the pinned set-up on top of the ``demo`` config,
the synthetic worlds and their label stores (ground truth, VFM, shuffled), the gate read from a
run's health summary and the loss curves read from its ``metrics.jsonl``.

These moved here from v2's runner (v1 and v2 are history: their protocols, results and write-ups
are kept beside this file, their runners in git history). A "settings" object is any frozen
dataclass with the fields named below (each benchmark's ``Settings``); an "arm" any object with
``pretrain``, ``labels``, ``gate_terms`` and ``gate_vmf``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import zlib
from pathlib import Path
from typing import Any

from benchmarks.harness import log

__all__ = [
    "CAMERAS",
    "PINNED",
    "curves",
    "ensure_world",
    "gate",
    "label_root",
    "shuffled_store",
    "world_dir",
]

# Pinned on top of the shipped ``demo`` config, so that a later change of that config cannot mix
# two set-ups in one table. Arm overrides come after these.
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


# worlds and label stores


def world_dir(work: Path, world_seed: int) -> Path:
    return work / "worlds" / f"world{world_seed}"


def ensure_world(s: Any, work: Path, world_seed: int) -> Path:
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


def label_root(arm: Any, work: Path, world: Path, world_seed: int) -> str | None:
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


# gate and curves


def gate(arm: Any, health: dict[str, Any] | None, s: Any) -> dict[str, Any]:
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
        if "vmf/mu_cos_max" in rec:  # with the classes of that max where logged (v4 on)
            pair = [rec.get("vmf/mu_cos_max_a"), rec.get("vmf/mu_cos_max_b")]
            out.setdefault("mu_cos_max", []).append([step, rec["vmf/mu_cos_max"], *pair])
        out["lr"].append([step, rec.get("lr")])
    return out
