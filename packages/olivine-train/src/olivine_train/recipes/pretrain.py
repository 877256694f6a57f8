"""Image-to-LiDAR pretraining (OLIVINE, PPKT, SLidR-style) with a frozen 2D teacher.

Per optimiser step and per rank (digest §2-§3):

* ``L_PPNCE``: InfoNCE (3D anchors vs 2D candidates, tau 0.07) on ``loss.num_pairs`` uniformly
  drawn point-pixel pairs, through the pp heads;
* ``L_sup``: the semantic contrastive loss (positives = pairs with the same VFM label, matched
  pixel included, sum inside the log) on ``loss.num_pairs`` DCAS (or uniform) pairs, through the
  sem heads;
* ``L_kl``: the vMF class prior on the 3D sem features of *all* pairs: EMA-updated during the
  first ``loss.vmf_warmup_steps`` steps (loss 0), frozen and applied afterwards;
* ``L_sp`` (SLidR-style, ``loss.superpixel_weight``): superpixel-pooled InfoNCE where a superpixel
  is the set of pairs of one image sharing a VFM label (see the README for the limitation);

``total = w_pp L_PPNCE + w_sup L_sup + w_kl L_kl + w_sp L_sp``; a weight of 0 skips the term (and
its heads are not built). Pair indices are drawn from a dedicated ``torch.Generator`` whose state is
checkpointed, so a resumed run draws the same pairs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from olivine_train.checkpoint import (
    atomic_save,
    capture_rng,
    load_checkpoint,
    load_strict,
    restore_rng,
    save_backbone,
)
from olivine_train.config import Config
from olivine_train.distributed import ResumableSampler, cleanup
from olivine_train.health import HealthMonitor, HealthSummary, format_summary, write_summary
from olivine_train.logging import RunLogger, draw_pairs_image
from olivine_train.recipes.common import (
    Runtime,
    SeededDataset,
    StepCallback,
    build_optimizer,
    build_scheduler,
    check_finite,
    kitti_sequences,
    lr_scale,
    make_runtime,
    restore_training_state,
    training_state,
    voxel_size_of,
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


class PretrainNet(nn.Module):
    """Trainable part of pretraining: 3D backbone + 3D/2D pp and sem heads (the teacher is not
    part of it: it is frozen and not checkpointed).
    """

    def __init__(
        self,
        backbone: nn.Module,
        image_channels: int,
        image_stride: int,
        head_dim: int,
        *,
        pp: bool,
        sem_3d: bool,
        sem_2d: bool,
    ) -> None:
        from olivine_models import ImageHead, PointHead

        super().__init__()
        self.backbone = backbone
        c3 = int(backbone.out_channels)  # type: ignore[arg-type]
        self.point_pp = PointHead(c3, head_dim) if pp else None
        self.image_pp = ImageHead(image_channels, head_dim, upsample=image_stride) if pp else None
        self.point_sem = PointHead(c3, head_dim) if sem_3d else None
        self.image_sem = (
            ImageHead(image_channels, head_dim, upsample=image_stride) if sem_2d else None
        )

    def forward(
        self,
        coords: torch.Tensor,
        feats: torch.Tensor,
        spatial_shape: tuple[int, int, int],
        batch_size: int,
        teacher_feats: torch.Tensor,
        image_size: tuple[int, int],
    ) -> dict[str, torch.Tensor]:
        """Backbone and 3D head voxel features, full-resolution maps of both 2D heads."""
        v = self.backbone(coords, feats, spatial_shape, batch_size)
        out: dict[str, torch.Tensor] = {"backbone": v}
        if self.point_pp is not None and self.image_pp is not None:
            out["k_pp"] = self.point_pp(v)
            out["q_pp"] = self.image_pp(teacher_feats, output_size=image_size)
        if self.point_sem is not None:
            out["k_sem"] = self.point_sem(v)
        if self.image_sem is not None:
            out["q_sem"] = self.image_sem(teacher_feats, output_size=image_size)
        return out


@dataclass
class PretrainStepOutput:
    """What one step computed: the total, each weighted term's raw value, the pair indices, the
    chance level of each contrastive term on the step's candidates, and the sampled features."""

    total: torch.Tensor
    parts: dict[str, torch.Tensor]
    indices: dict[str, torch.Tensor]
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    chance: dict[str, float] = field(default_factory=dict)


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


def pixel_features(maps: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """Gather (P, D) features from (B, D, H, W) maps at ``pixels`` (P, 3) = [image, row, col]."""
    return maps[pixels[:, 0], :, pixels[:, 1], pixels[:, 2]]


def build_pretrain_dataset(cfg: Config, split: str = "train") -> Any:
    """The raw (un-augmented) pretraining dataset named by ``cfg.data`` (with VFM labels only
    when an active loss term uses them)."""
    from olivine_data import datasets

    d, lo = cfg.data, cfg.loss
    # VFM labels are read only when a term uses them (PPKT's L_PPNCE alone needs none)
    needs_labels = lo.sup_weight > 0 or lo.vmf_weight > 0 or lo.superpixel_weight > 0
    label_root = (d.label_root if d.label_root is not None else d.root) if needs_labels else None
    if d.dataset == "nuscenes":
        scenes = d.train_scenes if split == "train" else d.val_scenes
        return datasets.NuScenesPretrainDataset(
            d.root,
            d.version,
            scenes=scenes,
            split=None
            if scenes is not None
            else (d.train_split if split == "train" else d.val_split),
            label_store=label_root,
            vocabulary=d.vocabulary,
            cameras=tuple(d.cameras),
        )
    if d.dataset == "kitti":
        return datasets.KittiPretrainDataset(
            d.root,
            sequences=kitti_sequences(cfg, split),
            label_store=label_root,
            vocabulary=d.vocabulary,
            skip=d.skip,
        )
    raise ValueError(
        f"data.dataset: {d.dataset!r} has no cameras; pretraining needs nuscenes/kitti"
    )


def describe_teacher(cfg: Config) -> str:
    """One line naming the teacher and where its weights come from (random ones say so)."""
    m = cfg.model
    if m.image_weights is not None:
        source = f"weights {m.image_weights}"
    elif m.image_pretrained:
        source = "pretrained weights"
    else:
        source = "RANDOM init, no pretrained weights"
    return f"{m.image_encoder} ({source}), frozen"


def vmf_schedule(cfg: Config, total_steps: int) -> tuple[int, float]:
    """The vMF prior's (warm-up updates, EMA factor) for a run of ``total_steps`` steps.

    ``loss.vmf_warmup_fraction`` (short runs; then ``loss.vmf_warmup_steps`` is null) is that
    fraction of the run; ``loss.vmf_decay: null`` ties the EMA factor to the warm-up as the reference does
    (``1 - 1/warmup``: 0.9999 for 10,000 steps), at least 0.5.
    """
    lo = cfg.loss
    if lo.vmf_warmup_fraction is not None:
        warmup = max(1, round(lo.vmf_warmup_fraction * total_steps))
    elif lo.vmf_warmup_steps is not None:
        warmup = lo.vmf_warmup_steps
    else:
        raise ValueError("loss.vmf_warmup_steps / loss.vmf_warmup_fraction: set exactly one")
    decay = lo.vmf_decay if lo.vmf_decay is not None else 1.0 - 1.0 / max(warmup, 2)
    return warmup, decay


def build_pretrain_transform(cfg: Config) -> Any:
    """Seeded augmentation (``transform(sample, generator)``) or the plain resize."""
    from olivine_data import transforms

    h, w = cfg.data.image_size
    if cfg.data.augment:
        return transforms.PretrainAugmentation(size=(h, w))
    resize = transforms.ResizeImages(h, w)
    return lambda sample, rng: resize(sample)


class Pretrainer:
    """Holds the models, optimiser, prior and data of one pretraining run."""

    def __init__(self, cfg: Config, rt: Runtime) -> None:
        from olivine_data.collate import Collator
        from olivine_data.labels import get_vocabulary
        from olivine_losses import VMFClassPrior
        from olivine_models import create_image_encoder, create_point_encoder

        self.cfg = cfg
        self.rt = rt
        lo = cfg.loss
        self.vocab = get_vocabulary(cfg.data.vocabulary)
        self.num_classes = len(self.vocab.class_names)
        self.ignore_index = self.vocab.unlabelled_id if cfg.loss.ignore_unlabelled else None
        device = rt.device

        self.teacher = create_image_encoder(
            cfg.model.image_encoder,
            weights=cfg.model.image_weights,
            pretrained=cfg.model.image_pretrained,
        )
        self.teacher.to(device).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)

        backbone = create_point_encoder(cfg.model.point_encoder, in_channels=cfg.model.in_channels)
        uses_pp = lo.ppnce_weight > 0 or lo.superpixel_weight > 0
        self.net = PretrainNet(
            backbone,
            int(self.teacher.out_channels),
            int(self.teacher.stride),
            cfg.model.head_dim,
            pp=uses_pp,
            sem_3d=lo.sup_weight > 0 or lo.vmf_weight > 0,
            sem_2d=lo.sup_weight > 0,
        ).to(device)
        if cfg.model.sync_bn and rt.dist.distributed:
            if device.type == "cuda":
                self.net = nn.SyncBatchNorm.convert_sync_batchnorm(self.net)
            elif rt.is_main:
                print("[olivine-train] model.sync_bn ignored: torch SyncBatchNorm needs CUDA")
        self.model: nn.Module = self.net
        if rt.dist.distributed:
            self.model = nn.parallel.DistributedDataParallel(
                self.net,
                device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=lo.vmf_weight > 0 and lo.sup_weight == 0,
            )
        self.pair_gen = torch.Generator().manual_seed(cfg.run.seed * 1000 + rt.dist.rank)

        self.collator = Collator(
            mode=cfg.data.voxel_mode,
            voxel_size=voxel_size_of(cfg),
            feature=cfg.data.feature,
        )
        base = build_pretrain_dataset(cfg, "train")
        if lo.superpixel_weight > 0 and lo.superpixel_source == "vfm_components":
            from olivine_train.superpixels import ComponentSuperpixels

            base = ComponentSuperpixels(base)
        self.dataset = SeededDataset(
            base,
            build_pretrain_transform(cfg),
            seed=cfg.run.seed,
            limit=cfg.data.max_samples,
        )
        per_rank = max(cfg.data.batch_size // rt.dist.world_size, 1)
        self.sampler = ResumableSampler(
            len(self.dataset),
            per_rank,
            rank=rt.dist.rank,
            world_size=rt.dist.world_size,
            seed=cfg.run.seed,
        )
        self.per_rank_batch = per_rank
        self.steps_per_epoch = self.sampler.batches_per_epoch
        self.total_steps = cfg.optim.epochs * self.steps_per_epoch
        if cfg.optim.max_steps is not None:
            self.total_steps = min(self.total_steps, cfg.optim.max_steps)
        self.optimizer = build_optimizer(
            [{"params": [p for p in self.net.parameters() if p.requires_grad]}],
            cfg.optim,
            cfg.data.batch_size,
        )
        self.lr = cfg.optim.lr * lr_scale(cfg.optim, cfg.data.batch_size)
        self.vmf_warmup, self.vmf_decay = vmf_schedule(cfg, self.total_steps)
        group = None
        if rt.dist.distributed:
            import torch.distributed as dist

            group = dist.group.WORLD
        self.prior = VMFClassPrior(
            self.num_classes,
            cfg.model.head_dim,
            decay=self.vmf_decay,
            warmup_steps=self.vmf_warmup,
            bias_correction=lo.vmf_bias_correction,
            freeze_max_cosine=lo.vmf_freeze_max_cosine,
            process_group=group,
            ignore_index=self.ignore_index,
        ).to(device)
        self.health = HealthMonitor(cfg.health)
        self.health_every = cfg.health.every or cfg.run.log_every
        self.scheduler = build_scheduler(self.optimizer, self.total_steps, cfg.optim.scheduler)
        self.scaler = rt.grad_scaler()
        self.step = 0
        self.epoch = 0
        self.step_in_epoch = 0

    # ------------------------------------------------------------------ losses
    def compute(self, batch: Any) -> PretrainStepOutput:
        """Forward pass and loss decomposition for one collated :class:`PretrainBatch`."""
        from olivine_data.sampling import dcas_sample, uniform_pairs
        from olivine_losses import info_nce, semantic_contrastive, superpixel_info_nce
        from olivine_losses.health import (
            info_nce_chance,
            semantic_contrastive_chance,
            superpixel_chance,
        )

        lo = self.cfg.loss
        rt = self.rt
        images = batch.images
        with rt.autocast():
            with torch.no_grad():
                teacher_feats = self.teacher(self.teacher_input(images))
            out = self.model(
                batch.voxel_coords,
                batch.voxel_features,
                tuple(batch.spatial_shape),
                int(batch.batch_size),
                teacher_feats,
                (int(images.shape[-2]), int(images.shape[-1])),
            )
        out = {k: v.float() for k, v in out.items()}
        pv = batch.pair_voxels
        px = batch.pair_pixels
        labels = batch.pair_labels
        num_pairs = int(pv.shape[0])
        if num_pairs == 0:
            raise ValueError(f"batch {batch.tokens}: no point-pixel pairs")
        m = min(lo.num_pairs, num_pairs)
        parts: dict[str, torch.Tensor] = {}
        indices: dict[str, torch.Tensor] = {}
        feats: dict[str, torch.Tensor] = {}
        weights: dict[str, float] = {}
        chance: dict[str, float] = {}
        dev = pv.device
        if lo.ppnce_weight > 0:
            idx = uniform_pairs(num_pairs, m, self.pair_gen).to(dev)
            k = out["k_pp"][pv[idx]]
            q = pixel_features(out["q_pp"], px[idx])
            parts["ppnce"] = info_nce(k, q, temperature=lo.temperature)
            chance["ppnce"] = info_nce_chance(m)
            indices["ppnce"] = idx
            feats.update(ppnce_k=k, ppnce_q=q)
            weights["ppnce"] = lo.ppnce_weight
        if lo.sup_weight > 0 or lo.vmf_weight > 0:
            if labels is None:
                raise ValueError(
                    "loss.sup_weight / loss.vmf_weight need VFM labels (pair_labels is None): "
                    "run `olivine-train make-labels` or set data.label_root"
                )
        if lo.sup_weight > 0:
            if lo.sup_sampling == "dcas":
                idx = dcas_sample(batch.pair_range_bins, labels, m, self.pair_gen).to(dev)
            else:
                idx = uniform_pairs(num_pairs, m, self.pair_gen).to(dev)
            k = out["k_sem"][pv[idx]]
            q = pixel_features(out["q_sem"], px[idx])
            parts["sup"] = semantic_contrastive(
                k, q, labels[idx], temperature=lo.temperature, ignore_index=self.ignore_index
            )
            chance["sup"] = semantic_contrastive_chance(labels[idx], ignore_index=self.ignore_index)
            indices["sup"] = idx
            feats.update(sup_k=k, sup_q=q)
            weights["sup"] = lo.sup_weight
        if lo.vmf_weight > 0:
            z = out["k_sem"][pv]
            # non-finite features stop the run like a non-finite loss, before the prior sees them
            check_finite(self.step + 1, {"vmf features": z}, self.rt.run_dir)
            parts["vmf"] = self.prior(z, labels).to(z.dtype)
            weights["vmf"] = lo.vmf_weight
            feats["vmf_z"] = z
        if lo.superpixel_weight > 0:
            if labels is None:
                raise ValueError("loss.superpixel_weight needs VFM labels for the superpixels")
            # superpixel = (image, VFM class) or (image, connected component): see superpixels.py
            seg = px[:, 0] * (int(labels.max()) + 1) + labels
            chance["superpixel"] = superpixel_chance(seg, seg)
            parts["superpixel"] = superpixel_info_nce(
                out["k_pp"][pv],
                pixel_features(out["q_pp"], px),
                seg,
                seg,
                temperature=lo.temperature,
            )
            weights["superpixel"] = lo.superpixel_weight
        # backbone features at the first sampled pair set (all pairs if nothing is sampled)
        sampled = next(iter(indices.values()), None)
        feats["backbone"] = out["backbone"][pv if sampled is None else pv[sampled]]
        total = sum((weights[k] * v for k, v in parts.items()), torch.zeros((), device=dev))
        return PretrainStepOutput(
            total=total, parts=parts, indices=indices, features=feats, chance=chance
        )

    def teacher_input(self, images: torch.Tensor) -> torch.Tensor:
        """The images at ``model.image_input_size`` (bilinear), or as they are when it is null.

        The teacher may see a larger input than the pairing resolution ``data.image_size``: its
        stride-8 maps are then finer, and the 2D heads still upsample to ``data.image_size``.
        """
        size = self.cfg.model.image_input_size
        if size is None or tuple(images.shape[-2:]) == tuple(size):
            return images
        return nn.functional.interpolate(
            images, size=(int(size[0]), int(size[1])), mode="bilinear", align_corners=False
        )

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict[str, Any]:
        return training_state(
            "pretrain",
            self.cfg,
            self.net,
            self.optimizer,
            self.scheduler,
            self.scaler,
            step=self.step,
            epoch=self.epoch,
            step_in_epoch=self.step_in_epoch,
            best_metric=None,
            vmf={k: v.detach().cpu() for k, v in self.prior.state_dict().items()},
            rng=capture_rng({"pairs": self.pair_gen}),
        ) | {"health": self.health.state_dict()}

    def sync_buffers(self) -> None:
        """Give every rank rank 0's BatchNorm running statistics (DDP only syncs them at the
        start of each forward), so checkpoints and per-rank states agree.
        """
        if not self.rt.dist.distributed:
            return
        import torch.distributed as dist

        for buf in self.net.buffers():
            dist.broadcast(buf, src=0)

    def save(self, name: str = "last.pt") -> None:
        if self.rt.is_main:
            atomic_save(self.state(), self.rt.run_dir / name)

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
        self.step, self.epoch, self.step_in_epoch = restore_training_state(
            ckpt, path, self.net, self.optimizer, self.scheduler, self.scaler
        )
        load_strict(self.prior, ckpt["vmf"], f"{path}: vMF prior")
        if "health" in ckpt:  # absent in checkpoints written before 0.2
            self.health.load_state_dict(ckpt["health"])
        if self.rt.dist.rank == 0:  # global RNGs (the checkpoint holds rank 0's)
            restore_rng(ckpt["rng"], {"pairs": self.pair_gen})

    # ------------------------------------------------------------------ loop
    def loader(self) -> torch.utils.data.DataLoader[Any]:
        return torch.utils.data.DataLoader(
            self.dataset,
            batch_size=self.per_rank_batch,
            sampler=self.sampler,
            collate_fn=self.collator.pretrain,
            num_workers=self.cfg.data.num_workers,
            drop_last=False,
        )

    def train(self, logger: RunLogger, callbacks: list[StepCallback]) -> dict[str, float]:
        cfg, rt = self.cfg, self.rt
        last: dict[str, float] = {}
        progress = None
        if rt.is_main and cfg.run.progress:
            from tqdm.auto import tqdm  # type: ignore[import-untyped]

            progress = tqdm(total=self.total_steps, initial=self.step, desc="pretrain", unit="step")
        try:
            while self.step < self.total_steps:
                self.dataset.set_epoch(self.epoch)
                self.sampler.set_epoch(self.epoch, self.step_in_epoch)
                t_last = time.perf_counter()
                for batch in self.loader():
                    scalars = self._train_step(batch.to(rt.device), logger, t_last)
                    t_last = time.perf_counter()
                    last = scalars
                    if progress is not None:
                        progress.update(1)
                        progress.set_postfix(loss=f"{scalars['loss/total']:.4f}")
                    if cfg.run.checkpoint_every and self.step % cfg.run.checkpoint_every == 0:
                        self.save()
                    for cb in callbacks:
                        cb(self.step, scalars)
                    if self.step >= self.total_steps:
                        break
                if self.step_in_epoch >= self.steps_per_epoch:
                    self.epoch += 1
                    self.step_in_epoch = 0
                self.sync_buffers()
                self.save()
        finally:
            if progress is not None:
                progress.close()
        return last

    def _train_step(self, batch: Any, logger: RunLogger, t_last: float) -> dict[str, float]:
        cfg, rt = self.cfg, self.rt
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        # pair draws depend only on (seed, rank, step): identical after a resume, on every rank
        self.pair_gen.manual_seed(
            (cfg.run.seed * 1_000_003 + rt.dist.rank * 7_919 + self.step) % (2**63)
        )
        was_frozen = self.prior.frozen
        result = self.compute(batch)
        check_finite(self.step + 1, {"total": result.total, **result.parts}, rt.run_dir)
        self.scaler.scale(result.total).backward()
        if cfg.optim.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.net.parameters(), cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        lr = float(self.optimizer.param_groups[0]["lr"])
        self.scheduler.step()
        self.step += 1
        self.step_in_epoch += 1
        now = time.perf_counter()
        scalars = {f"loss/{k}": float(v.detach()) for k, v in result.parts.items()}
        scalars["loss/total"] = float(result.total.detach())
        scalars["lr"] = lr
        scalars["pairs"] = float(batch.pair_voxels.shape[0])
        scalars["throughput"] = batch.batch_size / max(now - t_last, 1e-9)
        scalars["epoch"] = float(self.epoch)
        scalars.update(self._observe_health(result, was_frozen))
        if self.step % cfg.run.log_every == 0 or self.step == 1:
            if cfg.loss.vmf_weight > 0:
                scalars["vmf/active"] = float(self.prior.frozen)
                for c, kappa in enumerate(self.prior.kappa.tolist()):
                    scalars[f"vmf/kappa/{self.vocab.class_names[c]}"] = kappa
            logger.scalars(self.step, scalars)
        if cfg.run.image_log_every and (self.step % cfg.run.image_log_every == 0 or self.step == 1):
            self._log_image(logger, batch)
        return scalars

    def _observe_health(self, result: PretrainStepOutput, was_frozen: bool) -> dict[str, float]:
        """Chance margins (every step), effective ranks (every ``health.every`` steps, the first
        and the last) and the vMF direction statistics (while the prior updates)."""
        terms = {k: (float(result.parts[k].detach()), c) for k, c in result.chance.items()}
        out = self.health.observe_terms(self.step, terms)
        if (
            self.step % self.health_every == 0
            or self.step in (1, self.total_steps)
        ):
            from olivine_losses.health import effective_rank

            f = result.features
            named = {
                "backbone": f.get("backbone"),
                "point_pp": f.get("ppnce_k"),
                "image_pp": f.get("ppnce_q"),
                "point_sem": f.get("sup_k", f.get("vmf_z")),
                "image_sem": f.get("sup_q"),
            }
            ranks = {k: effective_rank(v) for k, v in named.items() if v is not None}
            out.update(self.health.observe_ranks(self.step, ranks))
        if self.cfg.loss.vmf_weight > 0 and not was_frozen:
            out.update(
                self.health.observe_vmf(
                    self.step,
                    self.prior.direction_stats(),
                    frozen_now=self.prior.frozen,
                    warmup_end=self.vmf_warmup,
                )
            )
        return out

    def summarize_health(self) -> HealthSummary:
        """The run's health summary (see :mod:`olivine_train.health`)."""
        return self.health.summary(self.step, vmf_active=self.cfg.loss.vmf_weight > 0)

    def _log_image(self, logger: RunLogger, batch: Any) -> None:
        if not logger.enabled:
            return
        px = batch.pair_pixels
        on0 = px[:, 0] == 0
        labels = batch.pair_labels[on0] if batch.pair_labels is not None else None
        img = draw_pairs_image(batch.images[0], px[on0, 1], px[on0, 2], labels)
        logger.image(self.step, "pairs/camera0_vfm_labels", img)


def run_pretrain(cfg: Config, callbacks: list[StepCallback] | None = None) -> PretrainResult:
    """Run (or resume) a pretraining described by ``cfg``; returns the final state."""
    if cfg.recipe != "pretrain":
        raise ValueError(f"recipe: expected 'pretrain', got {cfg.recipe!r}")
    t0 = time.perf_counter()
    rt = make_runtime(cfg)
    logger = RunLogger(rt.run_dir, enabled=rt.is_main)
    try:
        trainer = Pretrainer(cfg, rt)
        resume = cfg.run.resume
        if resume == "auto":
            resume = str(rt.run_dir / "last.pt") if (rt.run_dir / "last.pt").is_file() else None
        if resume is not None:
            trainer.resume(resume)
            logger.resume_at(trainer.step)  # drop the log records of steps after the checkpoint
            if rt.is_main:
                print(f"[olivine-train] resumed from {resume} at step {trainer.step}")
        if rt.is_main:
            logger.text(trainer.step, "teacher", describe_teacher(cfg))
            if cfg.run.progress:
                print(
                    f"[olivine-train] teacher: {describe_teacher(cfg)}; lr {trainer.lr:g}"
                    + (" (auto-scaled)" if cfg.optim.auto_scale_lr else "")
                    + (
                        f"; vMF warm-up {trainer.vmf_warmup} steps, EMA {trainer.vmf_decay:g}"
                        if cfg.loss.vmf_weight > 0
                        else ""
                    )
                )
        last = trainer.train(logger, callbacks or [])
        trainer.export_backbone()
        health = trainer.summarize_health()
        if rt.is_main:
            write_summary(health, rt.run_dir / "health.json")
            logger.event(trainer.step, "health", health.to_dict())
            if cfg.run.progress:
                print(f"[olivine-train] {format_summary(health)}")
        state = {k: v.detach().cpu().clone() for k, v in trainer.net.state_dict().items()}
        state.update(
            {f"vmf.{k}": v.detach().cpu().clone() for k, v in trainer.prior.state_dict().items()}
        )
        return PretrainResult(
            run_dir=str(rt.run_dir),
            step=trainer.step,
            epoch=trainer.epoch,
            last_losses=last,
            state_dict=state,
            wall_time_s=time.perf_counter() - t0,
            health=health,
        )
    finally:
        logger.close()
        cleanup()
