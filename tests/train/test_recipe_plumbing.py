"""The plumbing both recipes share: the pair generator (no state to checkpoint), the one
DDP/SyncBN wrapping and the one validation loader.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from olivine_data.sampling import uniform_pairs
from olivine_train.checkpoint import capture_rng, restore_rng
from olivine_train.config import load_config
from olivine_train.distributed import DistInfo, wrap_model
from olivine_train.preemption import worker_ignores_stop_signals
from olivine_train.recipes.pretrain import pair_generator
from olivine_train.recipes.segmentation import validation_loader

CPU = torch.device("cpu")


def test_pair_draws_are_a_function_of_seed_rank_and_step_only() -> None:
    def draw(seed: int, rank: int, step: int) -> torch.Tensor:
        return uniform_pairs(1000, 64, pair_generator(seed, rank, step))

    assert torch.equal(draw(3, 0, 5), draw(3, 0, 5))  # no hidden state between calls
    others = [draw(4, 0, 5), draw(3, 1, 5), draw(3, 0, 6)]
    assert all(not torch.equal(draw(3, 0, 5), o) for o in others)
    # the documented derivation, which the recorded losses rest on
    ref = torch.Generator().manual_seed((3 * 1_000_003 + 1 * 7_919 + 5) % 2**63)
    assert torch.equal(uniform_pairs(1000, 64, ref), draw(3, 1, 5))


def test_an_older_checkpoints_pair_generator_state_is_accepted() -> None:
    state = capture_rng({"pairs": torch.Generator().manual_seed(1)})  # as written before
    restore_rng(state)  # the recipe restores the global RNGs only: no error


@pytest.fixture
def group(tmp_path: Path) -> Iterator[None]:
    """A real one-process gloo group (DDP and DistributedSampler run on it)."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def test_single_process_is_not_wrapped() -> None:
    net = _net()
    assert wrap_model(net, DistInfo(0, 1, 0, CPU), sync_bn=True) == (net, net)


def test_distributed_cpu_wraps_in_ddp_and_says_sync_bn_is_ignored(
    group: None, capsys: pytest.CaptureFixture[str]
) -> None:
    net = _net()
    info = DistInfo(0, 2, 0, CPU)  # a distributed run as the recipes see it (rank 0)
    out, model = wrap_model(net, info, sync_bn=True, find_unused_parameters=True)
    assert out is net and isinstance(model, nn.parallel.DistributedDataParallel)
    assert model.module is net and model.find_unused_parameters
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in out.modules())
    assert "model.sync_bn ignored" in capsys.readouterr().out
    # rank 1 stays silent; without sync_bn nobody prints
    wrap_model(_net(), DistInfo(1, 2, 0, CPU), sync_bn=True)
    wrap_model(_net(), info, sync_bn=False)
    assert capsys.readouterr().out == ""


def test_the_validation_loader(group: None) -> None:
    cfg = load_config("demo", ["data.batch_size=4", "data.num_workers=0"], check_paths=False)
    data = list(range(10))
    single = validation_loader(data, cfg, DistInfo(0, 1, 0, CPU), list)  # type: ignore[arg-type]
    assert single.worker_init_fn is worker_ignores_stop_signals
    assert single.batch_size == 4 and single.sampler is not None
    assert [b for batch in single for b in batch] == data  # in order
    sharded = validation_loader(data, cfg, DistInfo(0, 2, 0, CPU), list)  # type: ignore[arg-type]
    assert sharded.batch_size == 2 and sharded.worker_init_fn is worker_ignores_stop_signals
    assert isinstance(sharded.sampler, torch.utils.data.distributed.DistributedSampler)
    assert not sharded.sampler.shuffle


def test_the_dcas_range_bin_is_a_config_field_that_reaches_the_collator() -> None:
    from olivine_train.config import ConfigError
    from olivine_train.recipes.common import build_collator

    assert load_config("demo", check_paths=False).loss.dcas_range_bin == 0.1  # the reference's
    assert build_collator(load_config("demo", check_paths=False)).range_bin_size == 0.1
    cfg = load_config("demo", ["loss.dcas_range_bin=0.5"], check_paths=False)
    assert build_collator(cfg).range_bin_size == 0.5
    with pytest.raises(ConfigError, match=r"loss\.dcas_range_bin: must be > 0"):
        load_config("demo", ["loss.dcas_range_bin=0"], check_paths=False)
