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


@dataclass(frozen=True)
class ProbeSettings:
    """How the probe is fitted.

    ``l2``: the penalty ``0.5 * l2 * ||W||^2`` added to the mean cross-entropy (standardised
    features, bias not penalised). ``tolerance``: convergence when ``max |gradient| <= tolerance``
    (L-BFGS's ``tolerance_grad``). ``max_iter``: L-BFGS iterations at most. ``dtype``: the fit's
    float type. ``calibrate_bn``: recompute BatchNorm statistics on the training split before
    caching; ``None`` does it for a random trunk only (a random trunk's BN statistics are
    meaningless; a pretrained trunk's are part of what is probed). ``range_bins``: increasing
    edges in metres of the horizontal range ``sqrt(x^2 + y^2)``; when given, the validation
    points are also scored per bin (``scores_by_range``; the last bin is open-ended).
    """

    l2: float = 1e-3
    tolerance: float = 1e-4
    max_iter: int = 3000
    dtype: str = "float32"
    calibrate_bn: bool | None = None
    history_size: int = 20
    range_bins: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        problems = []
        if not (self.l2 >= 0 and math.isfinite(self.l2)):
            problems.append(f"l2 must be a finite number >= 0, got {self.l2!r}")
        if not (self.tolerance > 0 and math.isfinite(self.tolerance)):
            problems.append(f"tolerance must be a finite number > 0, got {self.tolerance!r}")
        if self.max_iter < 1:
            problems.append(f"max_iter must be >= 1, got {self.max_iter!r}")
        if self.dtype not in ("float32", "float64"):
            problems.append(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if self.history_size < 1:
            problems.append(f"history_size must be >= 1, got {self.history_size!r}")
        edges = list(self.range_bins)
        if edges and (edges[0] < 0 or any(b <= a for a, b in zip(edges, edges[1:]))):
            problems.append(f"range_bins must be increasing edges >= 0, got {self.range_bins!r}")
        if problems:
            raise ValueError("probe settings: " + "; ".join(problems))


@dataclass(frozen=True)
class LogisticFit:
    """A fitted probe: ``logits = ((x - mean) / sd) @ weight + bias`` and how the fit ended."""

    weight: torch.Tensor  # (D, K)
    bias: torch.Tensor  # (K,)
    mean: torch.Tensor  # (D,)
    sd: torch.Tensor  # (D,)
    loss: float
    max_abs_grad: float
    iterations: int
    converged: bool

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        z = (x.to(self.weight.dtype) - self.mean) / self.sd
        return z @ self.weight + self.bias


def fit_logistic(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    settings: ProbeSettings = ProbeSettings(),
    ignore_index: int | None = 0,
) -> LogisticFit:
    """Standardise ``x`` (N, D) and fit an L2 multinomial logistic regression to ``y`` (N,).

    Rows labelled ``ignore_index`` are dropped and that class is never predicted (its logit is
    -inf). The standard deviation is clamped at 1e-6 so constant features stay finite.
    """
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"probe fit: expected x (N, D) and y (N,), got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")  # fmt: skip
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(
            f"probe fit: labels must lie in [0, {num_classes}), got [{int(y.min())}, "
            f"{int(y.max())}]"
        )
    dtype = getattr(torch, settings.dtype)
    x = x.to(dtype)
    if not bool(torch.isfinite(x).all()):
        raise ValueError("probe fit: the trunk's features contain NaN or inf")
    if ignore_index is not None:
        keep = y != ignore_index
        x, y = x[keep], y[keep]
    if x.shape[0] == 0:
        raise ValueError("probe fit: no labelled training voxels (every label is ignored)")
    mean, sd = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / sd
    w = torch.zeros(z.shape[1], num_classes, dtype=dtype, requires_grad=True)
    b = torch.zeros(num_classes, dtype=dtype, requires_grad=True)
    mask = torch.zeros(num_classes, dtype=dtype)
    if ignore_index is not None:
        mask[ignore_index] = -math.inf
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=settings.max_iter,
        tolerance_grad=settings.tolerance,
        tolerance_change=1e-12,
        history_size=settings.history_size,
        line_search_fn="strong_wolfe",
    )

    def objective() -> torch.Tensor:
        opt.zero_grad()
        logits = z @ w + b + mask
        loss = nn.functional.cross_entropy(logits, y) + 0.5 * settings.l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(objective)
    loss = float(objective().detach())
    assert w.grad is not None and b.grad is not None  # set by objective()
    grad = max(float(w.grad.abs().max()), float(b.grad.abs().max()))
    iterations = int(opt.state[opt._params[0]]["n_iter"])  # type: ignore[attr-defined]
    return LogisticFit(
        weight=w.detach(),
        bias=b.detach(),
        mean=mean,
        sd=sd,
        loss=loss,
        max_abs_grad=grad,
        iterations=iterations,
        converged=grad <= settings.tolerance,
    )


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
    settings: ProbeSettings = ProbeSettings(),
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
