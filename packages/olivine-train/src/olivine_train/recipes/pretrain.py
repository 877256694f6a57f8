"""Image-to-LiDAR pretraining (OLIVINE, PPKT, SLidR-style) with a frozen 2D teacher.

Per optimiser step and per rank, the active loss terms (:mod:`.pretrain_terms`, the ones whose
``loss.<name>_weight`` is > 0; :mod:`.pretrain_termset` says what follows from them) draw their
pairs, read the network's outputs and are summed by :class:`olivine_losses.WeightedSum`. The loop
itself (optimiser step, logging, checkpoints, resume) is :func:`.loop.run_loop`. Pair indices are
drawn from a ``torch.Generator`` seeded from (seed, rank, step) (:func:`pair_generator`): the
draws of a step are a pure function of those three, so a resumed run draws the same pairs on
every rank with no generator state to checkpoint (the step counter is the state). Every run
ends with a training-health summary (:mod:`olivine_train.health`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import cast

import torch
import torch.distributed as dist
from torch import nn

from olivine_data.collate import PretrainBatch
from olivine_data.labels import get_vocabulary
from olivine_data.types import PretrainSample
from olivine_losses.health import effective_rank
from olivine_train.checkpoint import (
    TERMS_STATE_KEY,
    Checkpoint,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_backbone,
)
from olivine_train.config import Config
from olivine_train.distributed import broadcast_buffers, wrap_model
from olivine_train.health import HealthMonitor, HealthSummary, format_summary, write_summary
from olivine_train.logging import RunLogger
from olivine_train.preemption import worker_ignores_stop_signals
from olivine_train.recipes.common import (
    Runtime,
    SeededDataset,
    StepCallback,
    build_collator,
    build_sampler,
    describe_student,
    lr_scale,
)
from olivine_train.recipes.loop import (
    Counters,
    JobBase,
    StepOutput,
    open_run,
    resume_if_asked,
    run_loop,
)
from olivine_train.recipes.pretrain_model import (
    PretrainNet,
    build_pretrain_dataset,
    build_pretrain_net,
    build_pretrain_transform,
    build_teacher,
    describe_run,
    describe_teacher,
    teacher_features,
)
from olivine_train.recipes.pretrain_terms import PairBatch, PixelPlan, pixel_features, plan_pixels
from olivine_train.recipes.pretrain_termset import ActiveTerms, TermSet

__all__ = [
    "PretrainNet",
    "PretrainResult",
    "PretrainStepOutput",
    "Pretrainer",
    "describe_teacher",
    "pair_generator",
    "run_pretrain",
]


@dataclass(kw_only=True)
class PretrainStepOutput(StepOutput):
    """One step: the loop's :class:`StepOutput` plus the pairs each term drew, the chance level
    of each contrastive term on them, the sampled features (for the health measures) and the
    batch.
    """

    indices: dict[str, torch.Tensor] = field(default_factory=dict)
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    chance: dict[str, float] = field(default_factory=dict)
    batch: PretrainBatch


@dataclass
class PretrainResult:
    """Returned by :func:`run_pretrain`."""

    run_dir: str
    step: int
    epoch: int
    last_losses: dict[str, float]
    state_dict: dict[str, torch.Tensor]
    wall_time_s: float
    health: HealthSummary | None = None


class Pretrainer(JobBase[PretrainBatch]):
    """The models, loss terms, data and optimiser of one pretraining run (a
    :class:`.loop.JobBase`).
    """

    net: PretrainNet

    def __init__(self, cfg: Config, rt: Runtime, logger: RunLogger | None = None) -> None:
        self.cfg, self.rt, self.logger = cfg, rt, logger
        self.vocab = get_vocabulary(cfg.data.vocabulary)
        self.ignore_index = self.vocab.unlabelled_id if cfg.loss.ignore_unlabelled else None
        self.counters = Counters()
        self.active = ActiveTerms.of(cfg)  # the terms' weights, read once
        self.teacher = build_teacher(cfg, rt.device)
        self._build_network()
        self._build_data()
        self._build_optimisation()
        self._build_losses()
        self._loader: torch.utils.data.DataLoader[PretrainSample] | None = None
        self.health = HealthMonitor(cfg.health, self.total_steps)
        self.health_every = cfg.health.every or cfg.run.log_every

    # ------------------------------------------------------------------ building
    def _build_network(self) -> None:
        cfg, rt = self.cfg, self.rt
        self.net = build_pretrain_net(cfg, self.teacher, self.active.heads).to(rt.device)
        self.model: nn.Module
        self.net, self.model = wrap_model(
            self.net,
            rt.dist,
            sync_bn=cfg.model.sync_bn,
            # a head only intermittently trained terms train gets no gradient at some steps
            find_unused_parameters=self.active.find_unused_parameters,
        )

    def _build_data(self) -> None:
        cfg = self.cfg
        self.collator = build_collator(cfg)
        raw = build_pretrain_dataset(cfg, "train", labels=self.active.needs_labels)
        base = self.active.wrap_dataset(cfg, raw)
        self.dataset = SeededDataset(
            base, build_pretrain_transform(cfg), seed=cfg.run.seed, limit=cfg.data.max_samples
        )
        plan = build_sampler(cfg, self.rt, len(self.dataset))
        self.sampler, self.per_rank_batch = plan.sampler, plan.per_rank_batch
        self.steps_per_epoch, self.total_steps = plan.steps_per_epoch, plan.total_steps

    def _build_optimisation(self) -> None:
        cfg = self.cfg
        params = [p for p in self.net.parameters() if p.requires_grad]
        self.build_optimisation([{"params": params}])
        self.lr = cfg.optim.lr * lr_scale(cfg.optim, cfg.data.batch_size)

    def _build_losses(self) -> None:
        cfg, rt = self.cfg, self.rt
        self.terms = TermSet(
            cfg,
            self.active,
            class_names=tuple(self.vocab.class_names),
            ignore_index=self.ignore_index,
            total_steps=self.total_steps,
            device=rt.device,
            process_group=dist.group.WORLD if rt.dist.distributed else None,
        )

    # ------------------------------------------------------------------ one step
    def compute(self, batch: PretrainBatch) -> PretrainStepOutput:
        """Forward pass and loss decomposition for one collated :class:`PretrainBatch`."""
        cfg, rt = self.cfg, self.rt
        self.model.train()
        batch = batch.to(rt.device)
        # pair draws depend only on (seed, rank, step): identical after a resume, on every rank
        step = self.counters.step
        images = batch.images
        num_pairs = int(batch.pair_voxels.shape[0])
        if num_pairs == 0:
            raise ValueError(f"batch {batch.tokens}: no point-pixel pairs")
        # the rows of the 3D outputs a pair reads: its point (VoxelNet) or its voxel (MinkUNet)
        rows = batch.pair_points if self.net.point_level else batch.pair_voxels
        pairs = PairBatch(
            pair_voxels=rows,
            pair_pixels=batch.pair_pixels,
            labels=batch.pair_labels,
            range_bins=batch.pair_range_bins,
            m=min(cfg.loss.num_pairs, num_pairs),
            generator=pair_generator(cfg.run.seed, rt.dist.rank, step),
            step=step + 1,
            run_dir=rt.run_dir,
        )
        # every term draws its pairs first, so the 2D heads are evaluated at those pixels only
        draws = self.terms.draw(pairs)
        plan = plan_pixels(self.terms.terms, draws, batch.pair_pixels)
        full_map = cfg.model.image_head == "full_map"
        with rt.autocast():
            with torch.no_grad():
                teacher_feats = teacher_features(
                    self.teacher, images, self.cfg.model.image_input_size
                )
            out = self.model(
                batch.voxel_coords,
                batch.voxel_features,
                tuple(batch.spatial_shape),
                int(batch.batch_size),
                teacher_feats,
                (int(images.shape[-2]), int(images.shape[-1])),
                None if full_map else plan.pixels,
                **(
                    {"points": batch.points, "point_offsets": batch.point_offsets}
                    if self.net.point_level
                    else {}
                ),
            )
        pairs.out = out = out.float()
        results = {
            name: term(pairs, draws[name], self._term_image(name, pairs, draws[name], plan))
            for name, term in self.terms.terms.items()
        }
        total, _ = self.terms.combine({name: r.loss for name, r in results.items()})
        feats: dict[str, torch.Tensor] = {}
        for r in results.values():  # per health name, the first term (in TERMS order) wins
            for k, v in r.features.items():
                feats.setdefault(k, v)
        indices = {n: r.indices for n, r in results.items() if r.indices is not None}
        # backbone features at the first sampled pair set (all pairs if nothing is sampled)
        sampled = next(iter(indices.values()), None)
        feats["backbone"] = out.backbone[rows if sampled is None else rows[sampled]]
        drops = {f"voxels/{k}": float(v) for k, v in batch.voxel_drops.items()}
        return PretrainStepOutput(
            total=total,
            terms={name: r.loss for name, r in results.items()},
            batch_size=int(batch.batch_size),
            scalars={"pairs": float(num_pairs), **drops, **self.terms.scalars()},
            indices=indices,
            features=feats,
            chance={n: r.chance for n, r in results.items() if r.chance is not None},
            batch=batch,
        )

    def _term_image(
        self, name: str, pairs: PairBatch, idx: torch.Tensor | None, plan: PixelPlan
    ) -> torch.Tensor | None:
        """The features of a term's 2D head at its pairs: its rows of the sampled head output,
        or (``model.image_head: full_map``) gathered from the full-resolution map.
        """
        head = self.terms.terms[name].image_head
        if head is None:
            return None
        q = pairs.outputs.image(head)
        if self.cfg.model.image_head == "full_map":
            px = pairs.pair_pixels if idx is None else pairs.pair_pixels[idx]
            return pixel_features(q, px)
        return q[plan.rows[name]]

    def after_step(self, out: StepOutput) -> dict[str, float]:
        """Health measures of the step just made, and the pairs image at its cadence."""
        result = cast(PretrainStepOutput, out)
        scalars = self._observe_health(result)
        every = self.cfg.run.image_log_every
        step = self.counters.step
        if every and (step % every == 0 or step == 1) and self.logger is not None:
            self.logger.pairs_image(step, result.batch)
        return scalars

    def _observe_health(self, result: PretrainStepOutput) -> dict[str, float]:
        """Chance margins (every step), effective ranks (every ``health.every`` steps, the first
        and the last) and the terms' own measures (:meth:`.pretrain_terms.LossTerm.observe_health`).
        """
        step = self.counters.step
        terms = {k: (float(result.terms[k].detach()), c) for k, c in result.chance.items()}
        out = self.health.observe_terms(step, terms)
        if step % self.health_every == 0 or step in (1, self.total_steps):
            ranks = {k: effective_rank(v) for k, v in result.features.items()}
            out.update(self.health.observe_ranks(step, ranks))
        out.update(self.terms.observe_health(self.health, step))
        return out

    def summarize_health(self) -> HealthSummary:
        """The run's health summary (see :mod:`olivine_train.health`)."""
        return self.terms.summarize(self.health, self.counters.step)

    # ------------------------------------------------------------------ loop hooks
    def start_epoch(self) -> None:
        self.dataset.set_epoch(self.counters.epoch)
        self.sampler.set_epoch(self.counters.epoch, self.counters.step_in_epoch)

    def batches(self) -> torch.utils.data.DataLoader[PretrainSample]:
        """The run's loader, built once: with ``data.num_workers > 0`` its workers persist
        across epochs (the sampler and :class:`SeededDataset` take each epoch through
        ``start_epoch``), pinned memory on CUDA. Augmentation and pair draws are seeded per
        sample and step, so the batches do not depend on the number of workers.
        """
        if self._loader is None:
            workers = self.cfg.data.num_workers
            self._loader = torch.utils.data.DataLoader(
                self.dataset,
                batch_size=self.per_rank_batch,
                sampler=self.sampler,
                collate_fn=self.collator.pretrain,
                num_workers=workers,
                persistent_workers=workers > 0,
                pin_memory=self.rt.device.type == "cuda",
                generator=torch.Generator().manual_seed(self.cfg.run.seed),
                drop_last=False,
                worker_init_fn=worker_ignores_stop_signals,
            )
        return self._loader

    def end_epoch(self, epoch_done: bool, finished: bool) -> None:
        if self.rt.dist.distributed:
            broadcast_buffers(self.net)

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> Checkpoint:
        return self.checkpoint(
            "pretrain",
            best_metric=None,
            terms_state=self.terms.state_dict(),
            rng=capture_rng(),  # the pair draws have no state: pair_generator(seed, rank, step)
        ) | {"health": self.health.state_dict()}

    def export_backbone(self) -> None:
        if self.rt.is_main:
            save_backbone(
                self.rt.run_dir / "backbone.pt",
                self.net.backbone,
                self.cfg.model.point_encoder,
                self.cfg.model.in_channels,
            )

    def resume(self, path: str) -> None:
        ckpt = load_checkpoint(
            path, expect_kind="pretrain", expect_model=self.cfg.model.point_encoder
        )
        self.restore(ckpt, path)
        self.terms.load_state_dict(ckpt[TERMS_STATE_KEY], path)
        if "health" in ckpt:  # absent in checkpoints written before 0.2
            self.health.load_state_dict(ckpt["health"])
        if self.rt.dist.rank == 0:  # global RNGs (the checkpoint holds rank 0's)
            restore_rng(ckpt["rng"])  # an older checkpoint's "pairs" generator state is unused


def pair_generator(seed: int, rank: int, step: int) -> torch.Generator:
    """The generator the loss terms draw the pairs of optimiser step ``step`` (0-based, the steps
    done before it) from on ``rank``: seeded from (``run.seed``, rank, step) alone, so that the
    draws need no checkpointed state and a resumed run draws exactly the pairs of an
    uninterrupted one.
    """
    return torch.Generator().manual_seed((seed * 1_000_003 + rank * 7_919 + step) % 2**63)


def run_pretrain(cfg: Config, callbacks: list[StepCallback] | None = None) -> PretrainResult:
    """Run (or resume) a pretraining described by ``cfg``; returns the final state."""
    t0 = time.perf_counter()
    with open_run(cfg, "pretrain") as (rt, logger):
        trainer = Pretrainer(cfg, rt, logger)
        resumed = resume_if_asked(trainer, logger)
        if rt.is_main:
            print(f"[olivine-train] {describe_student(cfg, trainer.net.backbone)}")
            if resumed is not None:
                print(f"[olivine-train] resumed from {resumed} at step {trainer.counters.step}")
            logger.text(trainer.counters.step, "teacher", describe_teacher(cfg))
            # the teacher line and the health summary are results, not progress: always shown
            # (run.progress=false hides progress bars only)
            print(f"[olivine-train] {describe_run(cfg, trainer.lr, trainer.terms.describe())}")
        last = run_loop(trainer, logger, callbacks or [], "pretrain")
        trainer.export_backbone()
        health = trainer.summarize_health()
        if rt.is_main:
            write_summary(health, rt.run_dir / "health.json")
            logger.event(trainer.counters.step, "health", health.to_dict())
            print(f"[olivine-train] {format_summary(health)}")
        state = {k: v.detach().cpu().clone() for k, v in trainer.net.state_dict().items()}
        state.update(trainer.terms.export_state())
        return PretrainResult(
            run_dir=str(rt.run_dir),
            step=trainer.counters.step,
            epoch=trainer.counters.epoch,
            last_losses=last,
            state_dict=state,
            wall_time_s=time.perf_counter() - t0,
            health=health,
        )
