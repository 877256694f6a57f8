"""The converged linear probe (``olivine-train probe``): how separable a frozen trunk's voxel
features are, measured without an optimiser schedule in the way.

A trunk (a ``backbone.pt``, a pretraining ``last.pt`` or run folder, or a random trunk with
calibrated BatchNorm) encodes every sweep of a downstream config's training and validation splits
once (eval mode). The training features are standardised with their own mean and standard
deviation, and a multinomial logistic regression with an L2 penalty on the weights (not the bias)
is fitted by full-batch L-BFGS with a strong-Wolfe line search until the largest absolute
gradient entry is at most ``tolerance``. Validation points are scored through their voxel
(``point_to_voxel``), class 0 ignored, as every other evaluation in the toolkit.

A fit that stops at ``max_iter`` without meeting the tolerance is reported as not converged: the
record is written with ``converged: false`` and :class:`ProbeNotConverged` is raised (the CLI
exits 8). The paper's protocol -- a classifier trained by SGD with a schedule
(``linear_probe_nuscenes``, ``olivine-train finetune``) -- stays as it is; use it to reproduce the
paper's numbers and this probe to compare trunks with each other (README, "Linear probes").
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from olivine_data.types import SegSample
from olivine_models import create_point_encoder
from olivine_train.checkpoint import atomic_write_text
from olivine_train.config import Config, ConfigError, config_to_dict
from olivine_train.distributed import cleanup
from olivine_train.metrics import ConfusionMatrix, SegmentationScores, mask_ignore_logits
from olivine_train.recipes.common import (
    Runtime,
    SampleSource,
    SeededDataset,
    build_collator,
    make_runtime,
)
from olivine_train.recipes.probe_fit import (
    DEFAULT_SETTINGS,
    LogisticFit,
    ProbeSettings,
    fit_logistic,
)
from olivine_train.recipes.segmentation import (
    build_seg_dataset,
    cache_trunk_features,
    class_names_for,
    load_pretrained_backbone,
    score_points,
)

__all__ = [
    "LogisticFit",
    "ProbeNotConverged",
    "ProbeResult",
    "ProbeSettings",
    "calibrate_batchnorm",
    "default_record_path",
    "fit_logistic",
    "run_probe",
    "scores_record",
]

RECORD_FORMAT = "olivine-probe/1"


class ProbeNotConverged(RuntimeError):
    """The L-BFGS fit stopped before its gradient met the tolerance (the record says so)."""


@torch.no_grad()
def calibrate_batchnorm(
    backbone: nn.Module, dataset: SampleSource[SegSample], collate: Any, rt: Runtime
) -> int:
    """Recompute every BatchNorm's statistics over one pass of ``dataset``, one sweep a batch.

    The running statistics are reset and accumulated with ``momentum=None`` (BatchNorm's
    cumulative average): each ends as the average over the sweeps of that sweep's batch mean and
    (unbiased) variance. Returns the number of sweeps; the backbone is left in eval mode.
    """
    bns = [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    backbone.train()
    for i in range(len(dataset)):
        batch = collate([dataset[i]]).to(rt.device)
        backbone(batch.voxel_coords, batch.voxel_features, tuple(batch.spatial_shape), 1)
    backbone.eval()
    return len(dataset)


def scores_record(scores: SegmentationScores) -> dict[str, Any]:
    """Per-class IoU (None for a class absent from the ground truth) and the mIoUs, as JSON."""
    present = np.asarray(
        scores.present if scores.present is not None else np.ones(len(scores.iou)), bool
    )
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


def _scores_by_range(
    fit: LogisticFit,
    val: SampleSource[SegSample],
    cache: list[Any],
    edges: tuple[float, ...],
    num_classes: int,
    names: tuple[str, ...],
) -> dict[str, Any] | None:
    """Validation scores per horizontal-range bin (``None`` without bins)."""
    if not edges:
        return None
    bounds = [*edges, math.inf]
    keys = [f"{a:g}-{b:g}" for a, b in zip(bounds, bounds[1:])]
    cms = [ConfusionMatrix(num_classes, ignore_index=0) for _ in keys]
    with torch.no_grad():
        for i, c in enumerate(cache):
            pts = val[i].points
            if c.point_labels is None or len(pts) != len(c.point_labels):
                raise ValueError(
                    f"probe: validation sweep {i} has {len(pts)} points but "
                    f"{0 if c.point_labels is None else len(c.point_labels)} evaluated labels; "
                    "range bins need every point evaluated"
                )
            logits = fit.logits(c.features.cpu()).float()
            pred = mask_ignore_logits(logits, 0).argmax(1)[c.point_to_voxel.cpu()]
            rng = torch.from_numpy(np.hypot(pts[:, 0], pts[:, 1]).astype(np.float64))
            bin_of = torch.bucketize(rng, torch.tensor(bounds, dtype=torch.float64), right=True)
            labels = c.point_labels.cpu()
            for b, cm in enumerate(cms, start=1):
                sel = bin_of == b
                if bool(sel.any()):
                    cm.update(pred[sel], labels[sel])
    return {k: scores_record(cm.scores(names)) for k, cm in zip(keys, cms)}


@dataclass(frozen=True)
class ProbeResult:
    """What :func:`run_probe` measured; ``record`` is the JSON written to ``path``."""

    scores: SegmentationScores
    fit: LogisticFit
    record: dict[str, Any]
    path: Path | None


def _check_config(cfg: Config) -> None:
    """Every reason ``cfg`` cannot be probed, at once (:class:`ConfigError`). ``data.augment``
    does not matter: the probe encodes every sweep once as it is (its record says so).
    """
    if cfg.recipe != "downstream":
        raise ConfigError(
            [
                "recipe: the probe needs a downstream config (e.g. linear_probe_nuscenes or a "
                f"finetune_* config), got recipe {cfg.recipe!r}"
            ],
            "the probe's config",
        )


def default_record_path(cfg: Config) -> Path:
    """``<run folder>/probe-<trunk>.json``: one record per trunk (``random-seed<k>`` for a random
    trunk; else the trunk file's folder and stem, e.g. ``olivine_nuscenes-backbone``).
    """
    pretrained = cfg.downstream.pretrained
    if pretrained is None:
        name = f"random-seed{cfg.run.seed}"
    else:
        p = Path(pretrained)
        name = f"{p.parent.name}-{p.stem}" if p.parent.name else p.stem
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return cfg.run_dir / f"probe-{safe}.json"


def run_probe(
    cfg: Config,
    settings: ProbeSettings = DEFAULT_SETTINGS,
    out: str | Path | None = None,
    *,
    strict: bool = True,
) -> ProbeResult:
    """Probe the trunk ``cfg.downstream.pretrained`` (``None``: a random trunk) on ``cfg``'s data.

    The trunk is built right after the run's seeding (``run.seed``), so a random trunk is the
    same for the same seed. Writes the record to ``out`` (default :func:`default_record_path`,
    atomically) and raises :class:`ProbeNotConverged` after writing it when the fit did not
    converge (``strict=False``: returns the result, whose record says ``converged: false``).
    """
    _check_config(cfg)
    rt = make_runtime(cfg, create_run_dir=False)  # the record's folder is made when it is written
    try:
        return _probe(cfg, settings, rt, Path(out) if out is not None else None, strict)
    finally:
        cleanup()


def _probe(
    cfg: Config, settings: ProbeSettings, rt: Runtime, out: Path | None, strict: bool
) -> ProbeResult:
    ds, pretrained = cfg.downstream, cfg.downstream.pretrained
    backbone = create_point_encoder(
        cfg.model.point_encoder,
        in_channels=cfg.model.in_channels,
        bn_momentum=ds.bn_momentum,
        backend=cfg.model.sparse_backend,
    )
    load_summary = load_pretrained_backbone(backbone, pretrained, cfg.model.point_encoder)
    backbone = backbone.to(rt.device)
    collate = build_collator(cfg).seg
    train = SeededDataset(
        build_seg_dataset(cfg, "train"), None, seed=cfg.run.seed, limit=cfg.data.max_samples
    )
    val = SeededDataset(
        build_seg_dataset(cfg, "val"), None, seed=cfg.run.seed, limit=cfg.data.max_val_samples
    )
    calibrate = settings.calibrate_bn if settings.calibrate_bn is not None else pretrained is None
    calibrated = calibrate_batchnorm(backbone, train, collate, rt) if calibrate else 0
    show = cfg.run.progress and rt.is_main
    t0 = time.perf_counter()
    train_cache = cache_trunk_features(backbone, train, collate, rt, "cache train", show)
    val_cache = cache_trunk_features(backbone, val, collate, rt, "cache val", show)
    cache_s = time.perf_counter() - t0
    if any(c.voxel_labels is None for c in train_cache):
        raise ValueError("probe: the training split has sweeps without labels")
    x = torch.cat([c.features for c in train_cache]).cpu()
    y = torch.cat([c.voxel_labels for c in train_cache if c.voxel_labels is not None]).cpu()
    t1 = time.perf_counter()
    fit = fit_logistic(x, y, ds.num_classes, settings)
    fit_s = time.perf_counter() - t1
    names = class_names_for(cfg)
    cm = ConfusionMatrix(ds.num_classes, ignore_index=0)
    with torch.no_grad():
        for c in val_cache:
            score_points(cm, fit.logits(c.features.cpu()).float(), c.point_to_voxel.cpu(),
                         None if c.point_labels is None else c.point_labels.cpu())  # fmt: skip
    scores = cm.scores(names)
    by_range = _scores_by_range(fit, val, val_cache, settings.range_bins, ds.num_classes, names)
    record: dict[str, Any] = {
        "format": RECORD_FORMAT,
        "trunk": {
            "pretrained": pretrained,
            "point_encoder": cfg.model.point_encoder,
            "load_summary": load_summary,
        },
        "settings": asdict(settings),
        "augmentation": "none (every sweep encoded once as it is; data.augment is not used)",
        "bn_calibration_samples": calibrated,
        "train_samples": len(train),
        "val_samples": len(val),
        "train_voxels": int((y != 0).sum()),
        "feature_dim": int(x.shape[1]),
        "loss": fit.loss,
        "max_abs_grad": fit.max_abs_grad,
        "iterations": fit.iterations,
        "converged": fit.converged,
        "scores": scores_record(scores),
        "scores_by_range": by_range,
        "cache_s": round(cache_s, 2),
        "fit_s": round(fit_s, 2),
        "config": config_to_dict(cfg),
    }
    path = out if out is not None else default_record_path(cfg)
    if rt.is_main:
        atomic_write_text(json.dumps(record, indent=1) + "\n", path)
    if strict and not fit.converged:
        raise ProbeNotConverged(
            f"the probe did not converge: max |gradient| {fit.max_abs_grad:.3g} > tolerance "
            f"{settings.tolerance:g} after {fit.iterations} L-BFGS iterations (max_iter "
            f"{settings.max_iter}); the record {path} says converged: false -- raise --max-iter "
            "or --l2"
        )
    return ProbeResult(scores=scores, fit=fit, record=record, path=path)
