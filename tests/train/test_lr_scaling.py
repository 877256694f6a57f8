"""Linear learning-rate scaling (optim.auto_scale_lr) and the vMF schedule of short runs."""

from __future__ import annotations

import pytest
import torch

from olivine_train.config import ConfigError, load_config, validate
from olivine_train.recipes.common import build_optimizer, lr_scale
from olivine_train.recipes.pretrain_terms import vmf_schedule


def test_lr_follows_the_total_batch_only_when_asked() -> None:
    cfg = load_config("olivine_nuscenes", check_paths=False)
    assert cfg.optim.auto_scale_lr is False and lr_scale(cfg.optim, 2) == 1.0  # paper: exact
    on = load_config(
        "olivine_nuscenes", ["optim.auto_scale_lr=true", "optim.lr_head=1.0"], check_paths=False
    )
    assert lr_scale(on.optim, 16) == 1.0 and lr_scale(on.optim, 4) == 0.25
    w = torch.nn.Parameter(torch.zeros(1))
    b = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer([{"params": [w]}, {"params": [b], "lr": 1.0}], on.optim, 4)
    assert [g["lr"] for g in opt.param_groups] == [0.5 * 0.25, 1.0 * 0.25]
    with pytest.raises(ConfigError, match="optim.base_batch_size"):
        load_config("olivine_nuscenes", ["optim.base_batch_size=0"], check_paths=False)


def test_vmf_schedule_fraction_and_tied_decay() -> None:
    paper = load_config("olivine_nuscenes", check_paths=False)
    assert vmf_schedule(paper, 87_900) == (paper.loss.vmf_warmup_steps, 0.9999)
    short = load_config(
        "olivine_nuscenes",
        ["loss.vmf_warmup_steps=null", "loss.vmf_warmup_fraction=0.25", "loss.vmf_decay=null"],
        check_paths=False,
    )
    assert vmf_schedule(short, 40) == (10, pytest.approx(0.9))
    assert vmf_schedule(short, 2) == (1, 0.5)  # at least one update, decay at least 0.5
    raw = {"loss": {"vmf_warmup_fraction": 1.5, "vmf_freeze_max_cosine": 2.0}}
    with pytest.raises(ConfigError) as err:
        validate(raw, check_paths=False)
    assert "loss.vmf_warmup_fraction" in str(err.value)
    assert "loss.vmf_freeze_max_cosine" in str(err.value)
    assert "set exactly one of them" in str(err.value)  # steps (default) and fraction both set
