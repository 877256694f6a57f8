"""What a run says about itself (issue 31, defects 9, 10 and 11), through the real CLI on the tiny
synthetic world: a batch larger than the split is announced with what it does to the lr scaling;
a term with no labelled anchor says so instead of "AT CHANCE ... nan"; ``run.progress=false``
hides progress bars, not the teacher line nor the health summary.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from olivine_data.labels import get_vocabulary
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


def test_no_labelled_anchors_is_said_instead_of_at_chance(
    tiny_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], overrides_for: Any
) -> None:
    world = Path(shutil.copytree(tiny_world, tmp_path / "world"))
    unlabelled = get_vocabulary("seem17").unlabelled_id
    for png in (world / "camseg").rglob("*.png"):  # every VFM label "unlabelled"
        with Image.open(png) as im:
            shape = im.size[::-1]
        Image.fromarray(np.full(shape, unlabelled, np.uint8), mode="L").save(png)
    args = [
        *overrides_for(world, tmp_path, "u"),
        "optim.max_steps=2",
        "loss.ignore_unlabelled=true",
    ]
    assert main(["pretrain", "demo", *args]) == 0
    health = json.loads((tmp_path / "u" / "health.json").read_text())
    assert health["terms"]["sup"]["no_anchors"] == 1.0
    (warning,) = [w for w in health["warnings"] if w.startswith("no_labelled_anchors: sup")]
    assert "had no labelled anchor in any of the last" in warning
    assert not [w for w in health["warnings"] if w.startswith("at_chance: sup")]
    assert not any("nan" in w for w in health["warnings"])
    # run.progress=false (overrides_for sets it) hides progress bars only: the teacher line and
    # the health summary with its warnings are printed
    out = capsys.readouterr().out
    assert "[olivine-train] teacher: " in out and "RANDOM init, no pretrained weights" in out
    assert "NO LABELLED ANCHORS (chance 0)" in out and "WARNING no_labelled_anchors: sup" in out
    (sup_line,) = [ln for ln in out.splitlines() if ln.startswith("  sup ")]
    assert "AT CHANCE" not in sup_line
