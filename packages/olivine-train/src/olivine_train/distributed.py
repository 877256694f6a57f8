"""``torchrun`` helpers: process group set-up, rank queries, resumable sharded sampling, device,
the DDP/SyncBN wrapping of the recipes' networks (:func:`wrap_model`).

Under ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in the environment) :func:`setup`
initialises the default process group with NCCL when the run device is CUDA and gloo otherwise.
Without those variables everything runs in a single process and the helpers degrade to no-ops.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar, cast

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "ResumableSampler",
    "barrier",
    "broadcast_buffers",
    "cleanup",
    "is_main",
    "resolve_device",
    "resolve_dtype",
    "setup",
    "wrap_model",
]


@dataclass(frozen=True)
class DistInfo:
    """Rank/world of this process and the device it computes on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when CUDA is available, else ``cpu``."""
    if name == "auto":
        return (
            torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
        )
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("run.device: 'cuda' requested but CUDA is not available")
        return torch.device(f"cuda:{local_rank}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"run.device: {name!r} requested but CUDA is not available")
    return torch.device(name)


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``run.precision`` (None = full fp32). ``auto`` is bf16 on CUDA if
    supported (fp16 otherwise) and fp32 on CPU.
    """
    if precision == "fp32":
        return None
    if device.type != "cuda":
        if precision == "auto":
            return None
        raise ValueError(
            f"run.precision: {precision!r} mixed precision needs a CUDA device, got {device}"
        )
    if precision == "bf16" or (precision == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def setup(device_name: str = "auto") -> DistInfo:
    """Initialise the process group if launched by torchrun; return this process's info."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=device)


def cleanup() -> None:
    """Destroy the process group if one is initialised."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_main() -> bool:
    """True on rank 0 (and in a single process)."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def barrier() -> None:
    """Wait for every rank (a no-op without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class ResumableSampler(torch.utils.data.Sampler[int]):
    """Shuffled, rank-sharded, resumable index sampler.

    The order of epoch ``e`` is a permutation seeded by ``(seed, e)`` (identical on all ranks),
    padded to a multiple of ``world_size * batch_size`` by wrapping around, then rank ``r`` takes
    the ``r``-th slice of every global batch (like ``DistributedSampler``). ``set_epoch(e, skip)``
    makes the next iteration start after ``skip`` local batches, so a run resumed mid-epoch sees
    exactly the samples the uninterrupted run would have seen.
    """

    def __init__(
        self,
        length: int,
        batch_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if length <= 0:
            raise ValueError(f"dataset is empty (length {length})")
        if batch_size <= 0:
            raise ValueError(f"batch_size: expected > 0, got {batch_size}")
        self.length = length
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        self.skip_batches = 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch = epoch
        self.skip_batches = skip_batches

    @property
    def batches_per_epoch(self) -> int:
        global_batch = self.batch_size * self.world_size
        if self.drop_last:
            return max(self.length // global_batch, 0)
        return math.ceil(self.length / global_batch)

    def _order(self) -> np.ndarray:
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            order = rng.permutation(self.length)
        else:
            order = np.arange(self.length)
        total = self.batches_per_epoch * self.batch_size * self.world_size
        if total > self.length:
            order = np.resize(order, total)  # wrap around
        return order[:total]

    def __iter__(self) -> Iterator[int]:
        order = self._order().reshape(self.batches_per_epoch, self.world_size, self.batch_size)
        mine = order[self.skip_batches :, self.rank, :].reshape(-1)
        return iter(int(i) for i in mine)

    def __len__(self) -> int:
        return max(self.batches_per_epoch - self.skip_batches, 0) * self.batch_size


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics: DDP syncs them only at
    the start of each forward), so that checkpoints and per-rank states agree.
    """
    for buf in module.buffers():
        dist.broadcast(buf, src=0)


M = TypeVar("M", bound=torch.nn.Module)


def wrap_model(
    net: M,
    info: DistInfo,
    *,
    sync_bn: bool,
    find_unused_parameters: bool = False,
) -> tuple[M, torch.nn.Module]:
    """The one DDP/SyncBN wrapping of both recipes: ``(net, model)``, where ``net`` is the network
    (its BatchNorm layers converted to ``SyncBatchNorm`` when ``sync_bn`` and the run is
    distributed on CUDA) and ``model`` what the step calls (``DistributedDataParallel`` around
    ``net`` when distributed, else ``net`` itself).

    ``sync_bn`` on a distributed CPU run is ignored with one line on rank 0 (torch's
    ``SyncBatchNorm`` needs CUDA); ``find_unused_parameters`` is DDP's flag (pretraining: a head
    only intermittently trained terms train).
    """
    if not info.distributed:
        return net, net
    if sync_bn:
        if info.device.type == "cuda":
            net = cast(M, torch.nn.SyncBatchNorm.convert_sync_batchnorm(net))
        elif info.is_main:
            print("[olivine-train] model.sync_bn ignored: torch SyncBatchNorm needs CUDA")
    model = torch.nn.parallel.DistributedDataParallel(
        net,
        device_ids=[info.device.index] if info.device.type == "cuda" else None,
        find_unused_parameters=find_unused_parameters,
    )
    return net, model
