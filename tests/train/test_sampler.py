"""ResumableSampler: sharding covers every sample once per epoch and resumes exactly."""

from __future__ import annotations

import pytest

from olivine_train.distributed import ResumableSampler, resolve_device, resolve_dtype


def test_ranks_partition_each_global_batch() -> None:
    samplers = [ResumableSampler(10, 2, rank=r, world_size=2, seed=5) for r in range(2)]
    for s in samplers:
        s.set_epoch(3)
    a, b = (list(s) for s in samplers)
    assert len(a) == len(b) == 6  # 10 padded to 12
    assert set(a) | set(b) == set(range(10))
    assert not set(a[:4]) & set(b[:4])


def test_resume_skips_consumed_batches_and_epochs_differ() -> None:
    s = ResumableSampler(9, 2, seed=1)
    s.set_epoch(0)
    full = list(s)
    s.set_epoch(0, skip_batches=2)
    assert list(s) == full[4:] and len(s) == len(full) - 4
    s.set_epoch(1)
    assert list(s) != full


def test_empty_dataset_rejected_and_cpu_precision() -> None:
    with pytest.raises(ValueError, match="dataset is empty"):
        ResumableSampler(0, 2)
    cpu = resolve_device("cpu")
    assert resolve_dtype("auto", cpu) is None
    with pytest.raises(ValueError, match="needs a CUDA device"):
        resolve_dtype("bf16", cpu)
