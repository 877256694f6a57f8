"""LiDAR semantic segmentation downstream: linear probing and fine-tuning, and evaluation.

* ``linear_probe``: the trunk is frozen *and kept in eval mode* (BatchNorm statistics frozen);
  only the classifier is trained, at ``optim.lr``.
* ``finetune``: everything is trained; the classifier uses ``optim.lr_head`` (``None`` -> ``lr``)
  and the trunk ``optim.lr`` (the reference's ``lr`` / ``lr_head`` split).

Loss: cross-entropy + ``downstream.lovasz_weight`` x Lovász-softmax over non-ignored voxels
(class 0 = ignore). Evaluation predicts per voxel with the class-0 logit masked, maps every raw
point to its voxel's prediction through ``point_to_voxel`` (the inverse indices) and accumulates a
confusion matrix without ground-truth-0 points; mIoU is over classes ``1..K-1``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from olivine_train.checkpoint import (
    atomic_save,
    capture_rng,
    load_backbone_state,
    load_checkpoint,
    load_strict,
    restore_rng,
)
from olivine_train.config import Config, validate
from olivine_train.distributed import ResumableSampler, cleanup, resolve_dtype, setup
from olivine_train.logging import RunLogger
from olivine_train.metrics import ConfusionMatrix, SegmentationScores, cross_entropy_lovasz
from olivine_train.recipes.common import (
    Runtime,
    SeededDataset,
    StepCallback,
    build_optimizer,
    build_scheduler,
    check_finite,
    kitti_sequences,
    make_runtime,
    restore_training_state,
    training_state,
    voxel_size_of,
)

__all__ = [
    "DownstreamResult",
    "SegNet",
    "class_names_for",
    "evaluate_model",
    "format_scores",
    "run_downstream",
    "run_evaluate",
]


class SegNet(nn.Module):
    """Point encoder + per-voxel classifier."""

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        from olivine_models import SegmentationHead

        super().__init__()
        self.backbone = backbone
        self.classifier = SegmentationHead(int(backbone.out_channels), num_classes)  # type: ignore[arg-type]

    def forward(self, batch: Any) -> torch.Tensor:
        feats = self.backbone(
            batch.voxel_coords,
            batch.voxel_features,
            tuple(batch.spatial_shape),
            int(batch.batch_size),
        )
        return self.classifier(feats)  # type: ignore[no-any-return]


@dataclass
class DownstreamResult:
    """Final scores of :func:`run_downstream` / :func:`run_evaluate`."""

    run_dir: str
    scores: SegmentationScores | None
    step: int
    load_summary: str
    wall_time_s: float


def class_names_for(cfg: Config) -> tuple[str, ...]:
    """Evaluation class names (index 0 = ignore) of the downstream dataset."""
    if cfg.data.dataset == "semantickitti":
        from olivine_data.datasets import SEMANTICKITTI_CLASSES

        names = tuple(SEMANTICKITTI_CLASSES)
    else:
        from olivine_data.labels import NUSCENES16

        names = tuple(NUSCENES16.class_names)
    if len(names) != cfg.downstream.num_classes:
        raise ValueError(
            f"downstream.num_classes: {cfg.data.dataset} has {len(names)} classes "
            f"(0 = ignore), got {cfg.downstream.num_classes}"
        )
    return names


def build_seg_dataset(cfg: Config, split: str) -> Any:
    """The downstream dataset for ``split`` ("train" honours ``data.skip``; "val" uses all)."""
    from olivine_data import datasets

    d = cfg.data
    skip = d.skip if split == "train" else 1
    scenes = d.train_scenes if split == "train" else d.val_scenes
    name = d.train_split if split == "train" else d.val_split
    if d.dataset == "nuscenes":
        return datasets.NuScenesSegDataset(
            d.root,
            d.version,
            scenes=scenes,
            split=None if scenes is not None else name,
            skip=skip,
        )
    if d.dataset == "semantickitti":
        return datasets.SemanticKITTISegDataset(
            d.root, sequences=kitti_sequences(cfg, split), skip=skip
        )
    raise ValueError(f"data.dataset: {d.dataset!r} has no per-point labels for segmentation")


def format_scores(scores: SegmentationScores, title: str = "") -> str:
    """A plain-text IoU table (per class, then mIoU)."""
    rows = [f"{title}" if title else ""]
    width = max(*(len(n) for n in scores.class_names[1:]), 26) + 2
    present = scores.present if scores.present is not None else [True] * len(scores.iou)
    for name, iou, here in zip(scores.class_names[1:], scores.iou[1:], present[1:]):
        note = "" if here else "  (absent from the ground truth)"
        rows.append(f"  {name:<{width}} {100 * iou:6.2f}{note}")
    n = int(np.asarray(present[1:], bool).sum())
    rows.append(f"  {f'mIoU ({n} classes present)':<{width}} {100 * scores.miou_present:6.2f}")
    rows.append(
        f"  {'mIoU, ref. convention':<{width}} {100 * scores.miou:6.2f}"
        "  (absent and never predicted = 100)"
    )
    return "\n".join(r for r in rows if r)


@torch.no_grad()
def evaluate_model(
    model: SegNet,
    loader: Any,
    num_classes: int,
    class_names: tuple[str, ...],
    rt: Runtime,
    progress: bool = False,
) -> SegmentationScores:
    """Point-level confusion matrix (inverse indices, class 0 masked and ignored), all ranks."""
    model.eval()
    cm = ConfusionMatrix(num_classes, ignore_index=0)
    it = loader
    if progress and rt.is_main:
        from tqdm.auto import tqdm  # type: ignore[import-untyped]

        it = tqdm(loader, desc="evaluate", unit="batch", leave=False)
    for batch in it:
        batch = batch.to(rt.device)
        if batch.point_labels is None:
            raise ValueError(f"evaluation batch {batch.tokens} has no point labels")
        with rt.autocast():
            logits = model(batch)
        logits = logits.float()
        logits[:, 0] = -1e6
        pred_voxel = logits.argmax(1)
        cm.update(pred_voxel[batch.point_to_voxel], batch.point_labels)
    cm.all_reduce()
    return cm.scores(class_names)


@dataclass
class CachedSample:
    """Frozen-trunk output of one sweep (linear probing with ``cache_features``)."""

    features: torch.Tensor  # (V, C)
    voxel_labels: torch.Tensor | None  # (V,)
    point_to_voxel: torch.Tensor  # (N,)
    point_labels: torch.Tensor | None  # (N,)


@torch.no_grad()
def cache_trunk_features(
    backbone: nn.Module, dataset: Any, collate: Any, rt: Runtime, desc: str, progress: bool
) -> list[CachedSample]:
    """Run the (eval-mode) trunk once per sample; features stay on the run device."""
    backbone.eval()
    out: list[CachedSample] = []
    it: Any = range(len(dataset))
    if progress and rt.is_main:
        from tqdm.auto import tqdm  # type: ignore[import-untyped]

        it = tqdm(it, desc=desc, unit="sample", leave=False)
    for i in it:
        batch = collate([dataset[i]]).to(rt.device)
        with rt.autocast():
            feats = backbone(
                batch.voxel_coords, batch.voxel_features, tuple(batch.spatial_shape), 1
            )
        out.append(
            CachedSample(
                feats.float(), batch.voxel_labels, batch.point_to_voxel, batch.point_labels
            )
        )
    return out


class Downstream:
    """Models, optimiser and data of one downstream run."""

    def __init__(self, cfg: Config, rt: Runtime) -> None:
        from olivine_data.collate import Collator
        from olivine_data.transforms import SegAugmentation
        from olivine_models import create_point_encoder, load_matching_state

        self.cfg, self.rt = cfg, rt
        ds = cfg.downstream
        backbone = create_point_encoder(
            cfg.model.point_encoder, in_channels=cfg.model.in_channels, bn_momentum=ds.bn_momentum
        )
        self.load_summary = "random initialisation (downstream.pretrained is null)"
        if ds.pretrained is not None:
            state, name = load_backbone_state(ds.pretrained)
            if name is not None and name != cfg.model.point_encoder:
                raise ValueError(
                    f"downstream.pretrained: {ds.pretrained} holds a {name!r} backbone but "
                    f"model.point_encoder is {cfg.model.point_encoder!r}"
                )
            # refuses (ValueError naming the file) when only BatchNorm counters would match
            report = load_matching_state(
                backbone,
                state,
                source=f"downstream.pretrained={ds.pretrained} (for {cfg.model.point_encoder!r})",
            )
            self.load_summary = f"{ds.pretrained}: {report.summary()}"
        self.net = SegNet(backbone, ds.num_classes).to(rt.device)
        self.linear_probe = ds.mode == "linear_probe"
        if self.linear_probe:
            for p in self.net.backbone.parameters():
                p.requires_grad_(False)
        elif cfg.model.sync_bn and rt.dist.distributed and rt.device.type == "cuda":
            self.net = nn.SyncBatchNorm.convert_sync_batchnorm(self.net)
        self.model: nn.Module = self.net
        if rt.dist.distributed:
            self.model = nn.parallel.DistributedDataParallel(
                self.net, device_ids=[rt.device.index] if rt.device.type == "cuda" else None
            )
        head = list(self.net.classifier.parameters())
        groups: list[dict[str, Any]] = [{"params": head, "lr": cfg.optim.lr_head or cfg.optim.lr}]
        if self.linear_probe:
            groups[0]["lr"] = cfg.optim.lr
        else:
            groups.append({"params": list(self.net.backbone.parameters()), "lr": cfg.optim.lr})
        self.optimizer = build_optimizer(groups, cfg.optim, cfg.data.batch_size)

        self.collator = Collator(
            mode=cfg.data.voxel_mode,
            voxel_size=voxel_size_of(cfg),
            feature=cfg.data.feature,
        )
        self.class_names = class_names_for(cfg)
        self.train_set = SeededDataset(
            build_seg_dataset(cfg, "train"),
            SegAugmentation() if cfg.data.augment else None,
            seed=cfg.run.seed,
            limit=cfg.data.max_samples,
        )
        self.val_set = SeededDataset(
            build_seg_dataset(cfg, "val"), None, seed=cfg.run.seed, limit=cfg.data.max_val_samples
        )
        per_rank = max(cfg.data.batch_size // rt.dist.world_size, 1)
        self.per_rank_batch = per_rank
        self.sampler = ResumableSampler(
            len(self.train_set),
            per_rank,
            rank=rt.dist.rank,
            world_size=rt.dist.world_size,
            seed=cfg.run.seed,
        )
        self.steps_per_epoch = self.sampler.batches_per_epoch
        self.total_steps = cfg.optim.epochs * self.steps_per_epoch
        if cfg.optim.max_steps is not None:
            self.total_steps = min(self.total_steps, cfg.optim.max_steps)
        self.scheduler = build_scheduler(self.optimizer, self.total_steps, cfg.optim.scheduler)
        self.scaler = rt.grad_scaler()
        self.step = self.epoch = self.step_in_epoch = 0
        self.best: float | None = None
        self.use_cache = (
            self.linear_probe
            and ds.cache_features
            and not cfg.data.augment
            and not rt.dist.distributed
        )
        self.train_cache: list[CachedSample] | None = None
        self.val_cache: list[CachedSample] | None = None

    def prepare_cache(self) -> None:
        """Fill the feature caches (linear probing without augmentation only)."""
        if not self.use_cache or self.train_cache is not None:
            return
        show = self.cfg.run.progress
        self.train_cache = cache_trunk_features(
            self.net.backbone, self.train_set, self.collator.seg, self.rt, "cache train", show
        )
        self.val_cache = cache_trunk_features(
            self.net.backbone, self.val_set, self.collator.seg, self.rt, "cache val", show
        )

    def cached_batches(self) -> Any:
        """Yield (features, voxel labels, batch size) in the sampler's order."""
        cache = self.train_cache or []
        order = list(iter(self.sampler))
        for start in range(0, len(order), self.per_rank_batch):
            chunk = [cache[i] for i in order[start : start + self.per_rank_batch]]
            labels = [c.voxel_labels for c in chunk if c.voxel_labels is not None]
            if len(labels) != len(chunk):
                raise ValueError("training samples without labels cannot be used for probing")
            yield torch.cat([c.features for c in chunk]), torch.cat(labels), len(chunk)

    def evaluate_cached(self) -> SegmentationScores:
        self.net.eval()
        cm = ConfusionMatrix(self.cfg.downstream.num_classes, ignore_index=0)
        with torch.no_grad():
            for c in self.val_cache or []:
                if c.point_labels is None:
                    raise ValueError("validation samples have no point labels")
                logits = self.net.classifier(c.features).float()
                logits[:, 0] = -1e6
                cm.update(logits.argmax(1)[c.point_to_voxel], c.point_labels)
        return cm.scores(self.class_names)

    def evaluate(self) -> SegmentationScores:
        """Validation scores of the current model."""
        if self.use_cache:
            return self.evaluate_cached()
        return evaluate_model(
            self.net, self.val_loader(), self.cfg.downstream.num_classes, self.class_names, self.rt
        )

    def batches(self) -> Any:
        """This epoch's training batches (cached features or collated sweeps)."""
        if self.use_cache:
            return self.cached_batches()
        return torch.utils.data.DataLoader(
            self.train_set,
            batch_size=self.per_rank_batch,
            sampler=self.sampler,
            collate_fn=self.collator.seg,
            num_workers=self.cfg.data.num_workers,
        )

    def val_loader(self) -> Any:
        sampler: Any = None
        if self.rt.dist.distributed:
            sampler = torch.utils.data.distributed.DistributedSampler(
                self.val_set, shuffle=False, drop_last=False
            )
        return torch.utils.data.DataLoader(
            self.val_set,
            batch_size=self.per_rank_batch,
            sampler=sampler,
            shuffle=False,
            collate_fn=self.collator.seg,
            num_workers=self.cfg.data.num_workers,
        )

    def state(self) -> dict[str, Any]:
        return training_state(
            "downstream", self.cfg, self.net, self.optimizer, self.scheduler, self.scaler,
            step=self.step, epoch=self.epoch, step_in_epoch=self.step_in_epoch,
            best_metric=self.best, vmf=None, rng=capture_rng(),
        )

    def save(self, name: str) -> None:
        if self.rt.is_main:
            atomic_save(self.state(), self.rt.run_dir / name)

    def resume(self, path: str) -> None:
        ckpt = load_checkpoint(
            path, expect_kind="downstream", expect_model=self.cfg.model.point_encoder
        )
        self.step, self.epoch, self.step_in_epoch = restore_training_state(
            ckpt, path, self.net, self.optimizer, self.scheduler, self.scaler
        )
        self.best = ckpt.get("best_metric")
        if self.rt.dist.rank == 0:
            restore_rng(ckpt["rng"])

    def set_train_mode(self) -> None:
        self.model.train()
        if self.linear_probe:
            self.net.backbone.eval()  # BN statistics frozen

    def train(self, logger: RunLogger, callbacks: list[StepCallback]) -> SegmentationScores | None:
        cfg, rt = self.cfg, self.rt
        scores: SegmentationScores | None = None
        self.prepare_cache()
        progress = None
        if rt.is_main and cfg.run.progress:
            from tqdm.auto import tqdm  # type: ignore[import-untyped]

            progress = tqdm(
                total=self.total_steps, initial=self.step, desc=cfg.downstream.mode, unit="step"
            )
        try:
            while self.step < self.total_steps:
                self.train_set.set_epoch(self.epoch)
                self.sampler.set_epoch(self.epoch, self.step_in_epoch)
                t_last = time.perf_counter()
                for batch in self.batches():
                    self.set_train_mode()
                    self.optimizer.zero_grad(set_to_none=True)
                    if self.use_cache:
                        feats, voxel_labels, batch_size = batch
                        with rt.autocast():
                            logits = self.net.classifier(feats)
                    else:
                        batch = batch.to(rt.device)
                        voxel_labels, batch_size = batch.voxel_labels, batch.batch_size
                        with rt.autocast():
                            logits = self.model(batch)
                    total, ce, lov = cross_entropy_lovasz(
                        logits.float(), voxel_labels, 0, cfg.downstream.lovasz_weight
                    )
                    check_finite(
                        self.step + 1, {"total": total, "ce": ce, "lovasz": lov}, rt.run_dir
                    )
                    self.scaler.scale(total).backward()
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                    lr = float(self.optimizer.param_groups[-1]["lr"])
                    self.scheduler.step()
                    self.step += 1
                    self.step_in_epoch += 1
                    now = time.perf_counter()
                    scalars = {
                        "loss/total": float(total.detach()),
                        "loss/ce": float(ce.detach()),
                        "loss/lovasz": float(lov.detach()),
                        "lr": lr,
                        "throughput": batch_size / max(now - t_last, 1e-9),
                    }
                    t_last = now
                    if self.step % cfg.run.log_every == 0 or self.step == 1:
                        logger.scalars(self.step, scalars)
                    if progress is not None:
                        progress.update(1)
                        progress.set_postfix(loss=f"{scalars['loss/total']:.4f}")
                    if cfg.run.checkpoint_every and self.step % cfg.run.checkpoint_every == 0:
                        self.save("last.pt")
                    for cb in callbacks:
                        cb(self.step, scalars)
                    if self.step >= self.total_steps:
                        break
                epoch_done = self.step_in_epoch >= self.steps_per_epoch
                if epoch_done:
                    self.epoch += 1
                    self.step_in_epoch = 0
                finished = self.step >= self.total_steps
                if (epoch_done and self.epoch % cfg.downstream.eval_every == 0) or finished:
                    scores = self.evaluate()
                    logger.scalars(self.step, scores.as_dict(), kind="val")
                    if self.best is None or scores.miou > self.best:
                        self.best = scores.miou
                        self.save("best.pt")
                self.save("last.pt")
        finally:
            if progress is not None:
                progress.close()
        return scores


def run_downstream(cfg: Config, callbacks: list[StepCallback] | None = None) -> DownstreamResult:
    """Linear probing or fine-tuning, then validation mIoU (``best.pt`` keeps the best)."""
    if cfg.recipe != "downstream":
        raise ValueError(f"recipe: expected 'downstream', got {cfg.recipe!r}")
    t0 = time.perf_counter()
    rt = make_runtime(cfg)
    logger = RunLogger(rt.run_dir, enabled=rt.is_main)
    try:
        job = Downstream(cfg, rt)
        if rt.is_main:
            print(f"[olivine-train] backbone: {job.load_summary}")
            logger.text(0, "backbone", job.load_summary)
        resume = cfg.run.resume
        if resume == "auto":
            resume = str(rt.run_dir / "last.pt") if (rt.run_dir / "last.pt").is_file() else None
        if resume is not None:
            job.resume(resume)
            logger.resume_at(job.step)  # drop the log records of steps after the checkpoint
        scores = job.train(logger, callbacks or [])
        if scores is not None:
            logger.event(job.step, "final", scores.as_dict())
        return DownstreamResult(
            run_dir=str(rt.run_dir),
            scores=scores,
            step=job.step,
            load_summary=job.load_summary,
            wall_time_s=time.perf_counter() - t0,
        )
    finally:
        logger.close()
        cleanup()


def run_evaluate(checkpoint: str, overrides: list[str] | None = None) -> DownstreamResult:
    """Evaluate a downstream ``last.pt``/``best.pt`` on the validation split of its config."""
    from olivine_train.config import _merge, parse_overrides

    t0 = time.perf_counter()
    ckpt = load_checkpoint(checkpoint, expect_kind="downstream")
    raw = ckpt["config"]
    raw["downstream"]["pretrained"] = None
    raw["run"]["resume"] = None
    if overrides:
        raw = _merge(raw, parse_overrides(overrides))
    cfg = validate(raw, source=f"{checkpoint} (embedded config)")
    info = setup(cfg.run.device)  # no run folder: evaluation writes nothing
    rt = Runtime(
        dist=info,
        device=info.device,
        amp_dtype=resolve_dtype(cfg.run.precision, info.device),
        run_dir=cfg.run_dir,
    )
    try:
        from olivine_data.collate import Collator
        from olivine_models import create_point_encoder

        backbone = create_point_encoder(cfg.model.point_encoder, in_channels=cfg.model.in_channels)
        net = SegNet(backbone, cfg.downstream.num_classes).to(rt.device)
        load_strict(net, ckpt["model"], f"{checkpoint}: model")
        collator = Collator(
            mode=cfg.data.voxel_mode,
            voxel_size=voxel_size_of(cfg),
            feature=cfg.data.feature,
        )
        val = SeededDataset(
            build_seg_dataset(cfg, "val"), None, seed=0, limit=cfg.data.max_val_samples
        )
        loader = torch.utils.data.DataLoader(
            val,
            batch_size=max(cfg.data.batch_size // info.world_size, 1),
            collate_fn=collator.seg,
            num_workers=cfg.data.num_workers,
            sampler=torch.utils.data.distributed.DistributedSampler(val, shuffle=False)
            if info.distributed
            else None,
        )
        scores = evaluate_model(
            net,
            loader,
            cfg.downstream.num_classes,
            class_names_for(cfg),
            rt,
            progress=cfg.run.progress,
        )
        return DownstreamResult(
            run_dir=str(rt.run_dir),
            scores=scores,
            step=int(ckpt["step"]),
            load_summary=checkpoint,
            wall_time_s=time.perf_counter() - t0,
        )
    finally:
        cleanup()
