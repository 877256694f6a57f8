"""What a run says about itself (issue 31, defects 9, 10 and 11), through the real CLI on the tiny
synthetic world: a batch larger than the split is announced with what it does to the lr scaling.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from olivine_train.cli import main


def test_a_batch_larger_than_the_split_is_announced_with_the_lr_it_scales(
    tiny_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], overrides_for: Any
) -> None:
    args = [*overrides_for(tiny_world, tmp_path, "b"), "optim.max_steps=1"]
    args += ["data.batch_size=16", "optim.auto_scale_lr=true", "optim.base_batch_size=8"]
    assert main(["pretrain", "demo", *args]) == 0
    out = capsys.readouterr().out
    (line,) = [ln for ln in out.splitlines() if "WARNING: data.batch_size" in ln]
    assert "data.batch_size=16 exceeds the 4 sample(s) of the training split" in line
    assert "each batch holds 4" in line
    assert "optim.auto_scale_lr scales the lr for 16 scans (x2, optim.base_batch_size=8)" in line
