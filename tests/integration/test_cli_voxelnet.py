"""The VoxelNet student through the real CLI on the tiny synthetic world: a few pretraining steps on
each sparse backend, the voxel drop counts in the log, and checkpoints holding OpenPCDet's names.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from olivine_train.checkpoint import load_backbone_state
from olivine_train.cli import main
from olivine_train.logging import read_jsonl

DROPS = ("filtered", "outside_grid", "over_point_cap", "over_voxel_cap", "voxels_over_cap")
BACKENDS = ["torch"] + (["spconv"] if importlib.util.find_spec("spconv") else [])


@pytest.mark.parametrize("backend", BACKENDS)
def test_voxelnet_pretrains_from_the_cli(
    tiny_world: Path, tmp_path: Path, overrides_for: Any, backend: str
) -> None:
    args = [
        *overrides_for(tiny_world, tmp_path, "vn"),
        f"model.sparse_backend={backend}",
        "optim.max_steps=2",
        "run.image_log_every=0",
        "data.max_voxels=500",  # small enough to bite on the tiny world: counted, not silent
    ]
    assert main(["pretrain", "demo_voxelnet", *args]) == 0
    run = tmp_path / "vn"
    records = read_jsonl(run / "metrics.jsonl", kind="train")
    assert [r["step"] for r in records] == [1, 2]
    for r in records:
        for key in ("loss/total", "loss/ppnce", "loss/sup", "loss/vmf"):
            assert math.isfinite(r[key]), (key, r)
        assert all(f"voxels/{k}" in r for k in DROPS)
        assert r["voxels/over_voxel_cap"] > 0 and r["voxels/voxels_over_cap"] > 0
    state, name = load_backbone_state(run / "backbone.pt")
    assert name == "voxelnet" and len(state) == 72
    assert state["conv_out.0.weight"].shape == (128, 3, 1, 1, 64)
    ckpt = torch.load(run / "last.pt", map_location="cpu", weights_only=False)
    model = ckpt["model"]
    assert sum(k.startswith("backbone.") for k in model) == 72
    assert model["point_pp.weight"].shape == (64, 1, 1, 1, 128)  # the sparse 1x1 head, outside


def test_voxelnet_config_mismatches_are_refused(
    tiny_world: Path, tmp_path: Path, overrides_for: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*overrides_for(tiny_world, tmp_path, "bad"), "data.voxel_mode=cylindrical"]
    assert main(["pretrain", "demo_voxelnet", *args, "model.in_channels=1"]) != 0
    err = capsys.readouterr().err
    assert "needs 'cartesian_mean'" in err
    assert "'xyzi' is the feature of 'cartesian_mean'" in err


def test_voxelnet_is_not_a_segmentation_student() -> None:
    from olivine_train.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="fine-tuned for detection in OpenPCDet"):
        load_config(
            "linear_probe_nuscenes",
            [
                "model.point_encoder=voxelnet",
                "model.in_channels=4",
                "data.voxel_mode=cartesian_mean",
                "data.feature=xyzi",
                "data.voxel_size=[0.1, 0.1, 0.2]",
            ],
            check_paths=False,
        )
