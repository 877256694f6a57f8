"""``olivine-train demo``: synthetic world -> OLIVINE pretraining -> linear probes -> IoU table.

1. make (or reuse) a small synthetic nuScenes-format world with SEEM17 camera labels;
2. pretrain a tiny MinkUNet with the OLIVINE losses against the frozen ImageNet EfficientNet-Lite0
   teacher (packaged weights; a random one, said loudly, without the ``olivine-models[pretrained]``
   extra), with the short-run adaptations of ``configs/demo.yaml``, and print its health summary;
3. linearly probe the pretrained backbone and a randomly initialised one with identical settings;
4. print per-class IoU and mIoU of both, and where logs and checkpoints are.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from olivine_data.synthetic import SyntheticWorldConfig, export_nuscenes
from olivine_models.image.efficientnet import packaged_weights_path
from olivine_train.config import Config, Tree, config_to_dict, load_config, validate
from olivine_train.metrics import SegmentationScores
from olivine_train.recipes.downstream import DownstreamResult, run_downstream
from olivine_train.recipes.pretrain import PretrainResult, describe_teacher, run_pretrain

__all__ = ["DemoResult", "ensure_world", "probe_config", "run_demo", "scores_table"]


@dataclass
class DemoResult:
    """Everything the demo produced."""

    world: str
    pretrain: PretrainResult
    probe_pretrained: DownstreamResult
    probe_random: DownstreamResult
    table: str
    teacher: str
    wall_time_s: float


def ensure_world(cfg: Config, world: Path, progress: bool = True) -> Path:
    """Export the synthetic world described by ``cfg.demo`` into ``world`` unless it exists."""
    if (world / "olivine_splits.json").is_file():
        return world

    d = cfg.demo
    sw = SyntheticWorldConfig(
        scenes=d.scenes,
        samples_per_scene=d.samples_per_scene,
        seed=d.world_seed,
        image_size=(int(d.image_size[1]), int(d.image_size[0])),  # the world takes (W, H)
        vfm_noise=d.vfm_noise,
        lidar_azimuth_steps=d.lidar_azimuth_steps,
        cameras=tuple(cfg.data.cameras),
        version=cfg.data.version,
    )
    export_nuscenes(sw, world, progress=progress)
    return world


def _missing_teacher_weights(cfg: Config) -> str | None:
    """Why the demo's packaged pretrained teacher weights cannot be loaded, or None if they can."""
    m = cfg.model
    packaged = m.image_encoder == "efficientnet_lite0" and m.image_weights is None
    if not (m.image_pretrained and packaged):
        return None

    try:
        packaged_weights_path()
    except (ImportError, FileNotFoundError) as exc:
        return str(exc)
    return None


def probe_config(pre: Config, name: str, pretrained: str | None) -> Config:
    """Linear-probe config derived from the demo pretraining config."""
    raw: Tree = copy.deepcopy(config_to_dict(pre))
    raw["recipe"] = "downstream"
    raw["method"] = "olivine"
    raw["description"] = f"demo linear probe ({'pretrained' if pretrained else 'random'} backbone)"
    raw["data"]["skip"] = 1
    raw["data"]["augment"] = False  # lets the probe cache the frozen trunk's features
    raw["data"]["feature"] = pre.data.feature
    raw["downstream"].update(
        mode="linear_probe",
        pretrained=pretrained,
        num_classes=17,
        lovasz_weight=1.0,
        eval_every=pre.demo.probe_epochs,  # evaluate once, at the end
    )
    raw["optim"].update(
        lr=pre.demo.probe_lr,
        lr_head=None,
        epochs=pre.demo.probe_epochs,
        max_steps=None,
        auto_scale_lr=False,  # demo.probe_lr is the probe's lr as it stands
    )
    raw["run"].update(name=name, resume=None)
    return validate(raw, source=f"demo probe {name}")


def scores_table(pretrained: SegmentationScores | None, random: SegmentationScores | None) -> str:
    """Side-by-side IoU table (percent). Classes absent from the validation ground truth show
    '-' and are left out of the mIoU. The reference convention (absent and never predicted =
    IoU 100) is not printed here: beside two columns it reads as a second result, and it rewards
    the backbone that predicts fewer classes (the random one); ``metrics.jsonl`` (``miou``) and
    ``olivine-train evaluate`` keep it.
    """
    if pretrained is None or random is None:
        return "(no evaluation ran)"
    names = pretrained.class_names[1:]
    present = pretrained.present if pretrained.present is not None else np.ones(len(names) + 1)
    width = max(len(n) for n in names) + 2
    lines = [f"  {'class':<{width}} {'OLIVINE':>8} {'random':>8}"]
    lines.append("  " + "-" * (width + 18))
    for i, name in enumerate(names, start=1):
        if not present[i]:
            lines.append(f"  {name:<{width}} {'-':>8} {'-':>8}")
            continue
        a, b = pretrained.iou[i], random.iou[i]
        lines.append(f"  {name:<{width}} {100 * a:8.2f} {100 * b:8.2f}")
    lines.append("  " + "-" * (width + 18))
    ours, theirs = pretrained.miou_present, random.miou_present
    n = int(np.asarray(present[1:], bool).sum())
    lines.append(f"  {f'mIoU ({n} classes)':<{width}} {100 * ours:8.2f} {100 * theirs:8.2f}")
    return "\n".join(lines)


def run_demo(
    out: str | Path = "olivine-demo",
    world: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    progress: bool = True,
) -> DemoResult:
    """Run the whole demo; returns the results (the CLI prints them).

    A demo is made to be run again: its runs default to ``run.overwrite=true``, so a second demo
    into the same ``out`` moves the previous runs aside (``<name>.old-<UTC time>``, nothing is
    deleted) and reuses the world; ``run.overwrite=false`` refuses instead.
    """
    t0 = time.perf_counter()
    out = Path(out)
    world_dir = Path(world) if world is not None else out / "world"
    base = load_config(
        "demo",
        [f"data.root={world_dir}", f"run.out_dir={out / 'runs'}", "run.overwrite=true", *overrides],
        check_paths=False,
    )
    if progress:
        print(f"[demo] synthetic world: {world_dir}")
    ensure_world(base, world_dir, progress=progress)
    raw = config_to_dict(base)
    missing = _missing_teacher_weights(base)
    if missing is not None:
        raw["model"]["image_pretrained"] = False
        print(f"[demo] WARNING: {missing}\n[demo] falling back to a RANDOM teacher")
    pre_cfg = validate(raw, source="demo")
    teacher = describe_teacher(pre_cfg)
    if progress:
        print(f"[demo] teacher: {teacher}; student: {pre_cfg.model.point_encoder}")
    pre = run_pretrain(pre_cfg)
    backbone = str(Path(pre.run_dir) / "backbone.pt")
    probe_a = run_downstream(probe_config(pre_cfg, "probe_pretrained", backbone))
    probe_b = run_downstream(probe_config(pre_cfg, "probe_random", None))
    table = scores_table(probe_a.scores, probe_b.scores)
    return DemoResult(
        world=str(world_dir),
        pretrain=pre,
        probe_pretrained=probe_a,
        probe_random=probe_b,
        table=table,
        teacher=teacher,
        wall_time_s=time.perf_counter() - t0,
    )
