"""Pretraining batches do not depend on the number of DataLoader workers, across epochs.

Workers persist across epochs (the shipped GPU configs load in 8 of them), so the epoch that
seeds the augmentation must reach the workers' copies of the dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from olivine_train.config import load_config
from olivine_train.logging import read_jsonl
from olivine_train.recipes.pretrain import run_pretrain


def _losses(world: Path, out: Path, overrides_for: Any, workers: int) -> list[float]:
    name = f"w{workers}"
    cfg = load_config(
        "demo",
        overrides_for(world, out, name)
        + [f"data.num_workers={workers}", "optim.max_steps=5", "run.image_log_every=0"],
    )
    torch.manual_seed(0)
    run_pretrain(cfg)
    return [r["loss/total"] for r in read_jsonl(out / name / "metrics.jsonl", kind="train")]


def test_two_persistent_workers_give_the_in_process_losses_across_epochs(
    tiny_world: Path, tmp_path: Path, overrides_for: Any
) -> None:
    cfg = load_config("demo", overrides_for(tiny_world, tmp_path, "x"))
    assert (
        load_config("olivine_nuscenes", check_paths=False).data.num_workers > 0
    )  # the shipped GPU config
    in_process = _losses(tiny_world, tmp_path, overrides_for, 0)
    workers = _losses(tiny_world, tmp_path, overrides_for, 2)
    assert len(in_process) == 5 and cfg.data.batch_size == 2  # 5 steps span more than one epoch
    assert workers == pytest.approx(in_process, rel=1e-6)
