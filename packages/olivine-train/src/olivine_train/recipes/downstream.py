"""LiDAR semantic segmentation downstream: linear probing and fine-tuning, and evaluation.

* ``linear_probe``: the trunk is frozen *and kept in eval mode* (BatchNorm statistics frozen);
  only the classifier is trained, at ``optim.lr``.
* ``finetune``: everything is trained; the classifier uses ``optim.lr_head`` (``None`` -> ``lr``)
  and the trunk ``optim.lr`` (the reference's ``lr`` / ``lr_head`` split).

Loss: cross-entropy + ``downstream.lovasz_weight`` x Lovász-softmax over non-ignored voxels
(class 0 = ignore). The loop is :func:`.loop.run_loop`; evaluation and the network are in
:mod:`.segmentation`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from olivine_data.collate import SegBatch
from olivine_data.transforms import SegAugmentation
from olivine_data.types import SegSample
from olivine_models import create_point_encoder
from olivine_train.checkpoint import (
    Checkpoint,
    capture_rng,
    load_checkpoint,
    load_strict,
    restore_rng,
)
from olivine_train.config import Config, merge, parse_overrides, validate
from olivine_train.distributed import cleanup, wrap_model
from olivine_train.logging import RunLogger
from olivine_train.metrics import ConfusionMatrix, SegmentationScores, cross_entropy_lovasz
from olivine_train.preemption import worker_ignores_stop_signals
from olivine_train.recipes.common import (
    ParamGroup,
    Runtime,
    SeededDataset,
    StepCallback,
    build_collator,
    build_sampler,
    describe_student,
    make_runtime,
)
from olivine_train.recipes.loop import (
    Counters,
    JobBase,
    StepOutput,
    open_run,
    resume_if_asked,
    run_loop,
)
from olivine_train.recipes.segmentation import (
    CachedSample,
    SegNet,
    build_seg_dataset,
    cache_trunk_features,
    class_names_for,
    evaluate_model,
    format_scores,
    load_pretrained_backbone,
    score_points,
    validation_loader,
    write_scan_list,
)

__all__ = [
    "CachedBatch",
    "DownstreamBatch",
    "DownstreamResult",
    "SegNet",
    "class_names_for",
    "evaluate_model",
    "format_scores",
    "run_downstream",
    "run_evaluate",
]

_SCANS = "train_scans.txt"
#: A probing batch of cached trunk features: (features, voxel labels, samples in the batch).
CachedBatch = tuple[torch.Tensor, torch.Tensor, int]
#: What a downstream step computes on: collated sweeps, or cached features when probing.
DownstreamBatch = SegBatch | CachedBatch


@dataclass
class DownstreamResult:
    """Final scores of :func:`run_downstream` / :func:`run_evaluate`."""

    run_dir: str
    scores: SegmentationScores | None
    step: int
    load_summary: str
    wall_time_s: float


class Downstream(JobBase[DownstreamBatch]):
    """Models, optimiser and data of one downstream run (a :class:`.loop.JobBase`)."""

    net: SegNet

    def __init__(self, cfg: Config, rt: Runtime, logger: RunLogger | None = None) -> None:
        self.cfg, self.rt, self.logger = cfg, rt, logger
        self.counters = Counters()
        self.linear_probe = cfg.downstream.mode == "linear_probe"
        self._build_network()
        self._build_data()
        self.build_optimisation(self._param_groups())
        self.best: float | None = None
        self.scores: SegmentationScores | None = None
        self.use_cache = (
            self.linear_probe
            and cfg.downstream.cache_features
            and not cfg.data.augment
            and not rt.dist.distributed
        )
        self.train_cache: list[CachedSample] | None = None
        self.val_cache: list[CachedSample] | None = None

    # ------------------------------------------------------------------ building
    def _build_network(self) -> None:
        cfg, rt, ds = self.cfg, self.rt, self.cfg.downstream
        backbone = create_point_encoder(
            cfg.model.point_encoder,
            in_channels=cfg.model.in_channels,
            bn_momentum=ds.bn_momentum,
            backend=cfg.model.sparse_backend,
        )
        self.load_summary = self._load_pretrained(backbone)
        self.net = SegNet(backbone, ds.num_classes).to(rt.device)
        if self.linear_probe:
            for p in self.net.backbone.parameters():
                p.requires_grad_(False)
        self.model: nn.Module
        # a frozen trunk's BatchNorm has nothing to synchronise: no SyncBN in linear probing
        self.net, self.model = wrap_model(
            self.net, rt.dist, sync_bn=cfg.model.sync_bn and not self.linear_probe
        )

    def _load_pretrained(self, backbone: nn.Module) -> str:
        """Load ``downstream.pretrained`` into ``backbone``; returns the load report."""
        cfg = self.cfg
        return load_pretrained_backbone(
            backbone, cfg.downstream.pretrained, cfg.model.point_encoder
        )

    def _param_groups(self) -> list[ParamGroup]:
        """Classifier at ``lr_head`` (``lr`` when probing or unset), trunk at ``lr``."""
        o = self.cfg.optim
        head = list(self.net.classifier.parameters())
        if self.linear_probe:
            return [{"params": head, "lr": o.lr}]
        trunk = list(self.net.backbone.parameters())
        return [{"params": head, "lr": o.lr_head or o.lr}, {"params": trunk, "lr": o.lr}]

    def _build_data(self) -> None:
        cfg = self.cfg
        self.collator = build_collator(cfg)
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
        if self.rt.is_main:  # the label fraction, written down: <run>/train_scans.txt
            write_scan_list(self.train_set.base, len(self.train_set), self.rt.run_dir / _SCANS)
        plan = build_sampler(cfg, self.rt, len(self.train_set))
        self.sampler, self.per_rank_batch = plan.sampler, plan.per_rank_batch
        self.steps_per_epoch, self.total_steps = plan.steps_per_epoch, plan.total_steps

    # ------------------------------------------------------------------ data
    def prepare_cache(self) -> None:
        """Fill the feature caches (linear probing without augmentation only)."""
        if not self.use_cache or self.train_cache is not None:
            return
        show = self.cfg.run.progress
        backbone, seg = self.net.backbone, self.collator.seg
        self.train_cache = cache_trunk_features(
            backbone, self.train_set, seg, self.rt, "cache train", show
        )
        self.val_cache = cache_trunk_features(
            backbone, self.val_set, seg, self.rt, "cache val", show
        )

    def cached_batches(self) -> Iterator[CachedBatch]:
        """Yield (features, voxel labels, batch size) in the sampler's order."""
        cache = self.train_cache or []
        order = list(iter(self.sampler))
        for start in range(0, len(order), self.per_rank_batch):
            chunk = [cache[i] for i in order[start : start + self.per_rank_batch]]
            labels = [c.voxel_labels for c in chunk if c.voxel_labels is not None]
            if len(labels) != len(chunk):
                raise ValueError("training samples without labels cannot be used for probing")
            yield torch.cat([c.features for c in chunk]), torch.cat(labels), len(chunk)

    def start_epoch(self) -> None:
        self.prepare_cache()  # no-op once filled
        self.train_set.set_epoch(self.counters.epoch)
        self.sampler.set_epoch(self.counters.epoch, self.counters.step_in_epoch)

    def batches(self) -> Iterable[DownstreamBatch]:
        """This epoch's training batches (cached features or collated sweeps)."""
        if self.use_cache:
            return self.cached_batches()
        return torch.utils.data.DataLoader(
            self.train_set,
            batch_size=self.per_rank_batch,
            sampler=self.sampler,
            collate_fn=self.collator.seg,
            num_workers=self.cfg.data.num_workers,
            worker_init_fn=worker_ignores_stop_signals,
        )

    def val_loader(self) -> torch.utils.data.DataLoader[SegSample]:
        return validation_loader(self.val_set, self.cfg, self.rt.dist, self.collator.seg)

    # ------------------------------------------------------------------ step and evaluation
    def compute(self, batch: DownstreamBatch) -> StepOutput:
        rt = self.rt
        self.model.train()
        if self.linear_probe:
            self.net.backbone.eval()  # BN statistics frozen
        if isinstance(batch, tuple):  # cached trunk features (probing)
            feats, voxel_labels, batch_size = batch
            with rt.autocast():
                logits = self.net.classifier(feats)
        else:
            batch = batch.to(rt.device)
            if batch.voxel_labels is None:
                raise ValueError(
                    f"batch {batch.tokens}: samples without labels cannot be trained on"
                )
            voxel_labels, batch_size = batch.voxel_labels, batch.batch_size
            with rt.autocast():
                logits = self.model(batch)
        total, ce, lov = cross_entropy_lovasz(
            logits.float(), voxel_labels, 0, self.cfg.downstream.lovasz_weight
        )
        return StepOutput(total, {"ce": ce, "lovasz": lov}, int(batch_size))

    def evaluate(self) -> SegmentationScores:
        """Validation scores of the current model."""
        if not self.use_cache:
            return evaluate_model(
                self.net,
                self.val_loader(),
                self.cfg.downstream.num_classes,
                self.class_names,
                self.rt,
            )
        self.net.eval()
        cm = ConfusionMatrix(self.cfg.downstream.num_classes, ignore_index=0)
        with torch.no_grad():
            for c in self.val_cache or []:
                score_points(cm, self.net.classifier(c.features), c.point_to_voxel, c.point_labels)
        return cm.scores(self.class_names)

    def end_epoch(self, epoch_done: bool, finished: bool) -> None:
        """Evaluate every ``downstream.eval_every`` epochs and at the end; keep ``best.pt``."""
        if not (
            (epoch_done and self.counters.epoch % self.cfg.downstream.eval_every == 0) or finished
        ):
            return
        self.scores = self.evaluate()
        if self.logger is not None:
            self.logger.scalars(self.counters.step, self.scores.as_dict(), kind="val")
        if self.best is None or self.scores.miou > self.best:
            self.best = self.scores.miou
            self.save("best.pt")

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> Checkpoint:
        return self.checkpoint(
            "downstream",
            best_metric=self.best,
            terms_state=None,
            rng=capture_rng(),
        )

    def resume(self, path: str) -> None:
        ckpt = load_checkpoint(
            path, expect_kind="downstream", expect_model=self.cfg.model.point_encoder
        )
        self.restore(ckpt, path)
        self.best = ckpt.get("best_metric")
        if self.rt.dist.rank == 0:
            restore_rng(ckpt["rng"])


def run_downstream(cfg: Config, callbacks: list[StepCallback] | None = None) -> DownstreamResult:
    """Linear probing or fine-tuning, then validation mIoU (``best.pt`` keeps the best)."""
    t0 = time.perf_counter()
    with open_run(cfg, "downstream") as (rt, logger):
        job = Downstream(cfg, rt, logger)
        if rt.is_main:
            print(f"[olivine-train] {describe_student(cfg, job.net.backbone)}")
            print(f"[olivine-train] backbone: {job.load_summary}")
            logger.text(0, "backbone", job.load_summary)
        resume_if_asked(job, logger)
        job.prepare_cache()  # before the loop's progress bar, so their bars do not nest
        run_loop(job, logger, callbacks or [], cfg.downstream.mode)
        if job.scores is not None:
            logger.event(job.counters.step, "final", job.scores.as_dict())
        return DownstreamResult(
            run_dir=str(rt.run_dir),
            scores=job.scores,
            step=job.counters.step,
            load_summary=job.load_summary,
            wall_time_s=time.perf_counter() - t0,
        )


def run_evaluate(checkpoint: str, overrides: list[str] | None = None) -> DownstreamResult:
    """Evaluate a downstream ``last.pt``/``best.pt`` on the validation split of its config."""
    t0 = time.perf_counter()
    ckpt = load_checkpoint(checkpoint, expect_kind="downstream")
    raw = ckpt["config"]
    raw["downstream"]["pretrained"] = None
    raw["run"]["resume"] = None
    if overrides:
        raw = merge(raw, parse_overrides(overrides))
    cfg = validate(raw, source=f"{checkpoint} (embedded config)")
    rt = make_runtime(cfg, create_run_dir=False)  # evaluation writes nothing
    info = rt.dist
    try:
        backbone = create_point_encoder(
            cfg.model.point_encoder,
            in_channels=cfg.model.in_channels,
            backend=cfg.model.sparse_backend,
        )
        net = SegNet(backbone, cfg.downstream.num_classes).to(rt.device)
        load_strict(net, ckpt["model"], f"{checkpoint}: model")
        collator = build_collator(cfg)
        val = SeededDataset(
            build_seg_dataset(cfg, "val"), None, seed=0, limit=cfg.data.max_val_samples
        )
        loader = validation_loader(val, cfg, info, collator.seg)
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
