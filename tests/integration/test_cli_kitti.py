"""KITTI paths through the CLI: camera-LiDAR pretraining (olivine_kitti) and SemanticKITTI
fine-tuning (finetune_semantickitti_1pct) on a tiny synthetic KITTI export.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from olivine_train.cli import main
from olivine_train.logging import read_jsonl


@pytest.fixture(scope="module")
def tiny_kitti(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from olivine_data.synthetic import SyntheticWorldConfig
    from olivine_data.synthetic.export_semantickitti import export_semantickitti

    root = tmp_path_factory.mktemp("kitti") / "world"
    cfg = SyntheticWorldConfig(
        scenes=2, samples_per_scene=2, seed=1, image_size=(96, 54), lidar_azimuth_steps=180
    )
    return export_semantickitti(cfg, root, progress=False)


def test_kitti_pretrain_then_semantickitti_finetune(
    tiny_kitti: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = [
        f"data.root={tiny_kitti}",
        f"run.out_dir={tmp_path}",
        "run.progress=false",
        "run.num_threads=1",
        "model.point_encoder=minkunet_tiny",
        "data.batch_size=2",
    ]
    code = main(
        [
            "pretrain",
            "olivine_kitti",
            *common,
            "run.name=pre",
            "model.image_weights=null",
            "model.image_encoder=resnet18_dilated",
            "data.image_size=[32, 64]",
            "loss.num_pairs=128",
            "optim.max_steps=2",
            "run.log_every=1",
        ]
    )
    assert code == 0
    train = read_jsonl(tmp_path / "pre" / "metrics.jsonl", kind="train")
    assert len(train) == 2 and all(math.isfinite(r["loss/total"]) for r in train)
    code = main(
        [
            "finetune",
            "finetune_semantickitti_1pct",
            *common,
            "run.name=ft",
            "data.skip=1",
            "optim.max_steps=2",
            f"downstream.pretrained={tmp_path / 'pre' / 'backbone.pt'}",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    # the whole exported backbone was loaded
    assert re.search(r"skipped 0 \(0 unexpected, 0 shape mismatches\), missing 0", out), out
    assert "traffic-sign" in out and "mIoU" in out  # the 19 SemanticKITTI classes
    val = read_jsonl(tmp_path / "ft" / "metrics.jsonl", kind="val")
    assert [r["step"] for r in val] == [1, 2]  # one step per epoch, evaluated every epoch
    assert all(0.0 <= r["miou"] <= 1.0 for r in val)
