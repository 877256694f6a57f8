"""Image-to-LiDAR pretraining (OLIVINE, PPKT, SLidR-style) with a frozen 2D teacher.

Per optimiser step and per rank, the active loss terms of :mod:`.pretrain_terms` (L_PPNCE on
uniform pairs, L_sup on DCAS pairs, the vMF prior on all pairs, the superpixel loss) are computed
by the ``olivine_losses`` modules and summed by :class:`olivine_losses.WeightedSum` with the
config's weights (``loss.<name>_weight``; 0 switches a term and its heads off). The loop itself
(optimiser step, logging, checkpoints, resume) is :func:`.loop.run_loop`. Pair indices are drawn
from a ``torch.Generator`` re-seeded from (seed, rank, step), so a resumed run draws the same
pairs. Every run ends with a training-health summary (:mod:`olivine_train.health`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import cast

import torch
from torch import nn

from olivine_data.collate import PretrainBatch
from olivine_data.types import PretrainSample
from olivine_train.checkpoint import (
    Checkpoint,
    capture_rng,
    load_checkpoint,
    load_strict,
    restore_rng,
    save_backbone,
)
from olivine_train.config import Config
from olivine_train.distributed import broadcast_buffers
from olivine_train.health import HealthMonitor, HealthSummary, format_summary, write_summary
from olivine_train.logging import RunLogger
from olivine_train.preemption import worker_ignores_stop_signals
from olivine_train.recipes.common import (
    Runtime,
    SampleSource,
    SeededDataset,
    StepCallback,
    build_collator,
    build_sampler,
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
    build_pretrain_transform,
    build_teacher,
    describe_run,
    describe_teacher,
    needed_heads,
    teacher_features,
    vmf_schedule,
)
from olivine_train.recipes.pretrain_outputs import Head
from olivine_train.recipes.pretrain_terms import (
    PairBatch,
    PixelPlan,
    build_terms,
    pixel_features,
    plan_pixels,
    term_weights,
)

__all__ = [
    "PretrainNet",
    "PretrainResult",
    "PretrainStepOutput",
    "Pretrainer",
    "describe_teacher",
    "run_pretrain",
    "vmf_schedule",
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
    vmf_was_frozen: bool = True  # the vMF prior's state before this step's update


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
    """The models, prior, loss terms, data and optimiser of one pretraining run (a
    :class:`.loop.JobBase`).
    """

    net: PretrainNet

    def __init__(self, cfg: Config, rt: Runtime, logger: RunLogger | None = None) -> None:
        from olivine_data.labels import get_vocabulary

        self.cfg, self.rt, self.logger = cfg, rt, logger
        self.vocab = get_vocabulary(cfg.data.vocabulary)
        self.ignore_index = self.vocab.unlabelled_id if cfg.loss.ignore_unlabelled else None
        self.counters = Counters()
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
        from olivine_models import create_point_encoder

        cfg, rt = self.cfg, self.rt
        heads = needed_heads(cfg)
        backbone = create_point_encoder(cfg.model.point_encoder, in_channels=cfg.model.in_channels)
        self.net = PretrainNet(
            backbone,
            int(self.teacher.out_channels),  # type: ignore[arg-type]
            int(self.teacher.stride),  # type: ignore[arg-type]
            cfg.model.head_dim,
            pp=Head.PP in heads,
            sem_3d=Head.SEM_3D in heads,
            sem_2d=Head.SEM_2D in heads,
        ).to(rt.device)
        if cfg.model.sync_bn and rt.dist.distributed:
            if rt.device.type == "cuda":
                self.net = nn.SyncBatchNorm.convert_sync_batchnorm(self.net)
            elif rt.is_main:
                print("[olivine-train] model.sync_bn ignored: torch SyncBatchNorm needs CUDA")
        self.model: nn.Module = self.net
        if rt.dist.distributed:
            active = term_weights(cfg)
            self.model = nn.parallel.DistributedDataParallel(
                self.net,
                device_ids=[rt.device.index] if rt.device.type == "cuda" else None,
                # the sem 3D head gets no gradient while the vMF prior warms up without L_sup
                find_unused_parameters="vmf" in active and "sup" not in active,
            )

    def _build_data(self) -> None:
        cfg, lo = self.cfg, self.cfg.loss
        self.collator = build_collator(cfg)
        base: SampleSource[PretrainSample] = build_pretrain_dataset(cfg, "train")
        if lo.superpixel_weight > 0 and lo.superpixel_source == "vfm_components":
            from olivine_train.superpixels import ComponentSuperpixels

            base = ComponentSuperpixels(base)
        elif lo.superpixel_weight > 0 and lo.superpixel_source == "sam":
            from olivine_train.superpixels import SamSuperpixels

            base = SamSuperpixels(base)
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
        from olivine_losses import VMFClassPrior, WeightedSum

        cfg, rt = self.cfg, self.rt
        self.vmf_warmup, self.vmf_decay = vmf_schedule(cfg, self.total_steps)
        group = None
        if rt.dist.distributed:
            import torch.distributed as dist

            group = dist.group.WORLD
        self.prior = VMFClassPrior(
            len(self.vocab.class_names),
            cfg.model.head_dim,
            decay=self.vmf_decay,
            warmup_steps=self.vmf_warmup,
            bias_correction=cfg.loss.vmf_bias_correction,
            freeze_max_cosine=cfg.loss.vmf_freeze_max_cosine,
            process_group=group,
            ignore_index=self.ignore_index,
        ).to(rt.device)
        self.terms = build_terms(cfg, self.prior, self.ignore_index)
        self.combine = WeightedSum(term_weights(cfg))
        self.pair_gen = torch.Generator().manual_seed(cfg.run.seed * 1000 + rt.dist.rank)

    # ------------------------------------------------------------------ one step
    def compute(self, batch: PretrainBatch) -> PretrainStepOutput:
        """Forward pass and loss decomposition for one collated :class:`PretrainBatch`."""
        cfg, rt = self.cfg, self.rt
        self.model.train()
        batch = batch.to(rt.device)
        # pair draws depend only on (seed, rank, step): identical after a resume, on every rank
        step = self.counters.step
        self.pair_gen.manual_seed((cfg.run.seed * 1_000_003 + rt.dist.rank * 7_919 + step) % 2**63)
        images = batch.images
        num_pairs = int(batch.pair_voxels.shape[0])
        if num_pairs == 0:
            raise ValueError(f"batch {batch.tokens}: no point-pixel pairs")
        pairs = PairBatch(
            pair_voxels=batch.pair_voxels,
            pair_pixels=batch.pair_pixels,
            labels=batch.pair_labels,
            range_bins=batch.pair_range_bins,
            m=min(cfg.loss.num_pairs, num_pairs),
            generator=self.pair_gen,
            step=step + 1,
            run_dir=rt.run_dir,
        )
        # every term draws its pairs first, so the 2D heads are evaluated at those pixels only
        draws = {name: term.draw(pairs) for name, term in self.terms.items()}
        plan = plan_pixels(self.terms, draws, batch.pair_pixels)
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
            )
        pairs.out = out = out.float()
        was_frozen = self.prior.frozen
        results = {
            name: term(pairs, draws[name], self._term_image(name, pairs, draws[name], plan))
            for name, term in self.terms.items()
        }
        total, parts = self.combine({name: r.loss for name, r in results.items()})
        feats: dict[str, torch.Tensor] = {}
        for r in results.values():  # the first term's features win (L_sup's sem over the vMF's)
            for k, v in r.features.items():
                feats.setdefault(k, v)
        indices = {n: r.indices for n, r in results.items() if r.indices is not None}
        # backbone features at the first sampled pair set (all pairs if nothing is sampled)
        sampled = next(iter(indices.values()), None)
        pv = batch.pair_voxels
        feats["backbone"] = out.backbone[pv if sampled is None else pv[sampled]]
        return PretrainStepOutput(
            total=total,
            terms={name: r.loss for name, r in results.items()},
            batch_size=int(batch.batch_size),
            scalars={"pairs": float(num_pairs), **self._vmf_scalars(parts)},
            indices=indices,
            features=feats,
            chance={n: r.chance for n, r in results.items() if r.chance is not None},
            batch=batch,
            vmf_was_frozen=was_frozen,
        )

    def _term_image(
        self, name: str, pairs: PairBatch, idx: torch.Tensor | None, plan: PixelPlan
    ) -> torch.Tensor | None:
        """The features of a term's 2D head at its pairs: its rows of the sampled head output,
        or (``model.image_head: full_map``) gathered from the full-resolution map.
        """
        head = self.terms[name].image_head
        if head is None:
            return None
        q = pairs.outputs.image(head)
        if self.cfg.model.image_head == "full_map":
            px = pairs.pair_pixels if idx is None else pairs.pair_pixels[idx]
            return pixel_features(q, px)
        return q[plan.rows[name]]

    def _vmf_scalars(self, parts: dict[str, torch.Tensor]) -> dict[str, float]:
        if "vmf" not in parts:
            return {}
        out = {"vmf/active": float(self.prior.frozen)}
        for c, kappa in enumerate(self.prior.kappa.tolist()):
            out[f"vmf/kappa/{self.vocab.class_names[c]}"] = kappa
        return out

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
        and the last) and the vMF direction statistics (while the prior updates).
        """
        step = self.counters.step
        terms = {k: (float(result.terms[k].detach()), c) for k, c in result.chance.items()}
        out = self.health.observe_terms(step, terms)
        if step % self.health_every == 0 or step in (1, self.total_steps):
            from olivine_losses.health import effective_rank

            ranks = {k: effective_rank(v) for k, v in result.features.items()}
            out.update(self.health.observe_ranks(step, ranks))
        if "vmf" in self.terms and not result.vmf_was_frozen:
            out.update(
                self.health.observe_vmf(
                    step,
                    self.prior.direction_stats(),
                    frozen_now=self.prior.frozen,
                    warmup_end=self.vmf_warmup,
                )
            )
        return out

    def summarize_health(self) -> HealthSummary:
        """The run's health summary (see :mod:`olivine_train.health`)."""
        return self.health.summary(self.counters.step, vmf_active="vmf" in self.terms)

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
            vmf={k: v.detach().cpu() for k, v in self.prior.state_dict().items()},
            rng=capture_rng({"pairs": self.pair_gen}),
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
        load_strict(self.prior, ckpt["vmf"], f"{path}: vMF prior")
        if "health" in ckpt:  # absent in checkpoints written before 0.2
            self.health.load_state_dict(ckpt["health"])
        if self.rt.dist.rank == 0:  # global RNGs (the checkpoint holds rank 0's)
            restore_rng(ckpt["rng"], {"pairs": self.pair_gen})


def run_pretrain(cfg: Config, callbacks: list[StepCallback] | None = None) -> PretrainResult:
    """Run (or resume) a pretraining described by ``cfg``; returns the final state."""
    t0 = time.perf_counter()
    with open_run(cfg, "pretrain") as (rt, logger):
        trainer = Pretrainer(cfg, rt, logger)
        resumed = resume_if_asked(trainer, logger)
        if rt.is_main:
            if resumed is not None:
                print(f"[olivine-train] resumed from {resumed} at step {trainer.counters.step}")
            logger.text(trainer.counters.step, "teacher", describe_teacher(cfg))
            if cfg.run.progress:
                vmf = (trainer.vmf_warmup, trainer.vmf_decay) if "vmf" in trainer.terms else None
                print(f"[olivine-train] {describe_run(cfg, trainer.lr, vmf)}")
        last = run_loop(trainer, logger, callbacks or [], "pretrain")
        trainer.export_backbone()
        health = trainer.summarize_health()
        if rt.is_main:
            write_summary(health, rt.run_dir / "health.json")
            logger.event(trainer.counters.step, "health", health.to_dict())
            if cfg.run.progress:
                print(f"[olivine-train] {format_summary(health)}")
        state = {k: v.detach().cpu().clone() for k, v in trainer.net.state_dict().items()}
        state.update(
            {f"vmf.{k}": v.detach().cpu().clone() for k, v in trainer.prior.state_dict().items()}
        )
        return PretrainResult(
            run_dir=str(rt.run_dir),
            step=trainer.counters.step,
            epoch=trainer.counters.epoch,
            last_losses=last,
            state_dict=state,
            wall_time_s=time.perf_counter() - t0,
            health=health,
        )
