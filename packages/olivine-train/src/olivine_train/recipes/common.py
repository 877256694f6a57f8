"""Pieces shared by the recipes: runtime set-up, seeding, seeded datasets, optimiser, schedule."""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import torch

from olivine_data.collate import Collator
from olivine_data.datasets import load_semantickitti_config, read_named_split
from olivine_data.datasets.semantickitti import semantickitti_split
from olivine_data.voxel_grid import VoxelGrid
from olivine_train.config import Config, ConfigChange, OptimConfig
from olivine_train.distributed import DistInfo, ResumableSampler, resolve_dtype, setup

__all__ = [
    "describe_student",
    "NonFiniteLossError",
    "ParamGroup",
    "SampleSource",
    "Transform",
    "Runtime",
    "SeededDataset",
    "StepCallback",
    "SamplingPlan",
    "build_collator",
    "batch_larger_than_split",
    "build_optimizer",
    "build_sampler",
    "build_scheduler",
    "keep_configured_hyperparameters",
    "kitti_sequences",
    "lr_scale",
    "check_finite",
    "make_runtime",
    "nuscenes_scenes",
    "seed_everything",
    "voxel_size_of",
]

StepCallback = Callable[[int, dict[str, float]], None]
"""Called after every optimiser step with (global step, logged scalars)."""

ParamGroup = dict[str, Any]
"""A ``torch.optim`` parameter group (torch's own type: ``params`` plus per-group options)."""

S = TypeVar("S")
S_co = TypeVar("S_co", covariant=True)


class SampleSource(Protocol[S_co]):
    """A map-style dataset: its length and sample ``i``."""

    def __len__(self) -> int: ...
    def __getitem__(self, index: int, /) -> S_co: ...


#: A seeded augmentation: ``transform(sample, generator)``.
Transform = Callable[[S, np.random.Generator], S]


class NonFiniteLossError(RuntimeError):
    """A loss became NaN/inf; the run stops and ``last.pt`` keeps the last good state."""


@dataclass
class Runtime:
    """Resolved once at recipe start: ranks, device, autocast dtype, run folder."""

    dist: DistInfo
    device: torch.device
    amp_dtype: torch.dtype | None
    run_dir: Path
    #: the checkpoint this run resumes from (``run.resume`` resolved by ``loop.open_run``)
    resume_from: Path | None = None
    #: the result-changing config changes the resume was allowed (``run.allow_changes``)
    resume_changes: tuple[ConfigChange, ...] = ()

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        """Mixed-precision context (a no-op in fp32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Enabled only for fp16 (bf16 and fp32 need no loss scaling)."""
        enabled = self.amp_dtype == torch.float16
        return torch.amp.GradScaler(self.device.type, enabled=enabled)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch global RNGs."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def make_runtime(cfg: Config, *, create_run_dir: bool = True) -> Runtime:
    """Process group (under torchrun), device, dtype, seeds; rank 0 creates the run folder
    (``loop.open_run`` locks it and writes ``config.yaml``) unless ``create_run_dir`` is false
    (evaluation, which writes nothing). The one place a :class:`Runtime` is built.
    """
    if cfg.run.num_threads is not None:
        torch.set_num_threads(cfg.run.num_threads)
    info = setup(cfg.run.device)
    amp = resolve_dtype(cfg.run.precision, info.device)
    seed_everything(cfg.run.seed + info.rank)
    if cfg.run.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    run_dir = cfg.run_dir
    if info.is_main and create_run_dir:
        run_dir.mkdir(parents=True, exist_ok=True)
    return Runtime(dist=info, device=info.device, amp_dtype=amp, run_dir=run_dir)


class SeededDataset(torch.utils.data.Dataset[S]):
    """Wraps a dataset and a transform ``transform(sample, generator)``: sample ``i`` of epoch
    ``e`` is augmented with ``np.random.default_rng([seed, e, i])``, independent of worker count,
    rank and iteration order, so a resumed run sees exactly the same augmented samples.

    The epoch lives in a shared-memory tensor, so that :meth:`set_epoch` in the training process
    reaches the copies held by persistent DataLoader workers.
    """

    def __init__(
        self,
        base: SampleSource[S],
        transform: Transform[S] | None,
        seed: int,
        limit: int | None = None,
    ) -> None:
        self.base = base
        self.transform = transform
        self.seed = int(seed)
        self._epoch = torch.zeros(1, dtype=torch.long).share_memory_()
        self.limit = limit

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        self._epoch[0] = int(epoch)

    def __len__(self) -> int:
        n = len(self.base)
        return min(n, self.limit) if self.limit is not None else n

    def __getitem__(self, index: int) -> S:
        sample = self.base[index]
        if self.transform is None:
            return sample
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        return self.transform(sample, rng)

    def __iter__(self) -> Iterator[S]:
        for i in range(len(self)):
            yield self[i]


def describe_student(cfg: Config, backbone: torch.nn.Module) -> str:
    """The start-of-run line naming the point encoder and the sparse backend it runs on."""
    backend = getattr(backbone, "sparse_backend", "?")
    how = " (auto)" if cfg.model.sparse_backend == "auto" else ""
    return f"student: {cfg.model.point_encoder} on the {backend} sparse backend{how}"


def voxel_size_of(cfg: Config) -> tuple[float, float, float]:
    """``data.voxel_size`` as the 3-tuple the collator takes (validated to have 3 entries)."""
    a, b, c = cfg.data.voxel_size
    return (float(a), float(b), float(c))


def kitti_sequences(cfg: Config, split: str) -> list[str]:
    """Sequences of a (Semantic)KITTI split: ``data.train_scenes``/``val_scenes`` if given, else
    ``<root>/olivine_splits.json`` if it names the split (synthetic exports write one), else the
    official semantic-kitti YAML split (train 00-07, 09, 10; val 08).
    """
    d = cfg.data
    explicit = d.train_scenes if split == "train" else d.val_scenes
    if explicit is not None:
        return list(explicit)
    name = d.train_split if split == "train" else d.val_split

    named = read_named_split(d.root, name)
    if named is not None:
        return list(named)
    return semantickitti_split(name, load_semantickitti_config())


def lr_scale(optim: OptimConfig, batch_size: int) -> float:
    """Linear lr scaling factor (Goyal et al. 2017, "Accurate, Large Minibatch SGD"):
    ``batch_size / optim.base_batch_size`` when ``optim.auto_scale_lr`` is on, else 1.
    """
    return batch_size / optim.base_batch_size if optim.auto_scale_lr else 1.0


def batch_larger_than_split(cfg: Config, num_samples: int) -> str:
    """The warning for a ``data.batch_size`` above the training split's size: every batch holds
    the whole split, so a batch is not the size the config says, and ``optim.auto_scale_lr``
    scales the lr for scans that are not there.
    """
    b = cfg.data.batch_size
    text = (
        f"data.batch_size={b} exceeds the {num_samples} sample(s) of the training split: each "
        f"batch holds {num_samples}"
    )
    if cfg.optim.auto_scale_lr:
        scale = lr_scale(cfg.optim, b)
        text += (
            f", yet optim.auto_scale_lr scales the lr for {b} scans (x{scale:g}, "
            f"optim.base_batch_size={cfg.optim.base_batch_size}), not for the {num_samples} a "
            f"batch holds; set data.batch_size={num_samples} or optim.auto_scale_lr=false"
        )
    else:
        text += f"; set data.batch_size={num_samples}"
    return text


def build_optimizer(
    groups: list[ParamGroup], optim: OptimConfig, batch_size: int
) -> torch.optim.Optimizer:
    """SGD with the config's momentum, dampening and weight decay (each group may set ``lr``);
    every lr is multiplied by :func:`lr_scale` for the total ``batch_size``.
    """
    scale = lr_scale(optim, batch_size)
    groups = [{**g, "lr": g["lr"] * scale} if "lr" in g else g for g in groups]
    return torch.optim.SGD(
        groups,
        lr=optim.lr * scale,
        momentum=optim.momentum,
        dampening=optim.dampening,
        weight_decay=optim.weight_decay,
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, kind: str
) -> torch.optim.lr_scheduler.LambdaLR:
    """Cosine annealing to 0 over ``total_steps`` optimiser steps (or constant).

    Stepped per optimiser step; at epoch boundaries it equals the reference's per-epoch
    ``CosineAnnealingLR(T_max=epochs)``.
    """
    total = max(int(total_steps), 1)

    def factor(step: int) -> float:
        if kind == "constant":
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def check_finite(step: int, parts: dict[str, torch.Tensor], run_dir: Path) -> None:
    """Raise :class:`NonFiniteLossError` naming the offending loss terms (or feature tensors)."""

    def describe(v: torch.Tensor) -> str:
        if v.numel() == 1:
            return str(float(v.detach()))
        return f"{int((~torch.isfinite(v.detach())).sum())} of {v.numel()} values non-finite"

    bad = {k: describe(v) for k, v in parts.items() if not bool(torch.isfinite(v).all())}
    if bad:
        desc = ", ".join(f"{k}={v}" for k, v in bad.items())
        last = run_dir / "last.pt"
        if last.is_file():
            saved = f"the last good checkpoint is {last} (resume with run.resume=auto)"
        else:  # never name a file that is not there
            saved = f"no checkpoint was written before it ({last} does not exist)"
        raise NonFiniteLossError(
            f"non-finite loss at step {step}: {desc}. Training stopped; {saved}; lower optim.lr "
            "or check the inputs."
        )


def keep_configured_hyperparameters(
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    configured: list[ParamGroup],
) -> None:
    """Put the config's optimiser hyperparameters back after a checkpoint's state was loaded.

    ``Optimizer.load_state_dict`` restores the *stored* lr, momentum, dampening and weight decay,
    and the scheduler its stored base lrs, so a resume that was allowed to change ``optim.*``
    (``run.allow_changes``) would silently keep the old values. When the config's values equal
    the stored ones (every plain resume) nothing changes, bit for bit.
    """
    lambdas = getattr(scheduler, "lr_lambdas", None)
    for i, (group, conf) in enumerate(zip(optimizer.param_groups, configured)):
        for key in ("momentum", "dampening", "weight_decay", "initial_lr"):
            if key in conf and group.get(key) != conf[key]:
                group[key] = conf[key]
        if "initial_lr" in group and lambdas is not None:
            scheduler.base_lrs[i] = group["initial_lr"]
            lr = group["initial_lr"] * lambdas[i](scheduler.last_epoch)
            if group["lr"] != lr:  # a new base lr or a new run length (cosine over max_steps)
                group["lr"] = lr
    scheduler._last_lr = [float(g["lr"]) for g in optimizer.param_groups]  # type: ignore[attr-defined]


def nuscenes_scenes(cfg: Config, split: str) -> tuple[list[str] | None, str | None]:
    """``(scenes, named split)`` of ``split`` ("train" or "val"): an explicit
    ``data.train_scenes``/``val_scenes`` list wins over ``data.train_split``/``val_split``.
    """
    d = cfg.data
    scenes = d.train_scenes if split == "train" else d.val_scenes
    named = d.train_split if split == "train" else d.val_split
    return scenes, (None if scenes is not None else named)


def voxel_grid_of(cfg: Config) -> VoxelGrid:
    """The fixed grid of ``data.voxel_mode: cartesian_mean`` (range, voxel size, caps, filter)."""
    d = cfg.data
    r = [float(v) for v in d.point_range]
    return VoxelGrid(
        point_range=(r[0], r[1], r[2], r[3], r[4], r[5]),
        voxel_size=voxel_size_of(cfg),
        max_points_per_voxel=d.max_points_per_voxel,
        max_voxels=d.max_voxels,
        radius=d.filter_radius,
    )


def build_collator(cfg: Config) -> Collator:
    """The :class:`olivine_data.collate.Collator` of ``cfg.data`` (voxel mode, size, feature;
    the fixed grid in ``cartesian_mean`` mode) and the DCAS range bins of ``loss.dcas_range_bin``.
    """
    grid = voxel_grid_of(cfg) if cfg.data.voxel_mode == "cartesian_mean" else None
    return Collator(
        mode=cfg.data.voxel_mode,
        voxel_size=voxel_size_of(cfg),
        feature=cfg.data.feature,
        range_bin_size=cfg.loss.dcas_range_bin,
        grid=grid,
    )


@dataclass
class SamplingPlan:
    """How a recipe walks its training set: the resumable sampler, the per-rank batch, steps."""

    sampler: ResumableSampler
    per_rank_batch: int
    steps_per_epoch: int
    total_steps: int


def build_sampler(cfg: Config, rt: Runtime, num_samples: int) -> SamplingPlan:
    """Shard ``num_samples`` over the ranks (``data.batch_size`` is the global batch) and count
    the run's steps: ``optim.epochs`` epochs, capped by ``optim.max_steps``.
    """
    per_rank = max(cfg.data.batch_size // rt.dist.world_size, 1)
    if rt.is_main and cfg.data.batch_size > num_samples:
        print(f"[olivine-train] WARNING: {batch_larger_than_split(cfg, num_samples)}")
    sampler = ResumableSampler(
        num_samples, per_rank, rank=rt.dist.rank, world_size=rt.dist.world_size, seed=cfg.run.seed
    )
    total = cfg.optim.epochs * sampler.batches_per_epoch
    if cfg.optim.max_steps is not None:
        total = min(total, cfg.optim.max_steps)
    return SamplingPlan(sampler, per_rank, sampler.batches_per_epoch, total)
