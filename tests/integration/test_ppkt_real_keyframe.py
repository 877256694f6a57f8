"""PPKT on the real nuScenes keyframe needs no VFM label files (issue 14, case 9)."""

from __future__ import annotations

from pathlib import Path

from olivine_train.cli import main
from olivine_train.logging import read_jsonl


def test_ppkt_pretrains_on_the_real_keyframe_without_label_files(
    shared_data: Path, tmp_path: Path
) -> None:
    root = shared_data / "nuscenes" / "mmdet3d-demo"
    assert not (root / "camseg").exists()  # no VFM labels next to the real keyframe
    args = [
        f"data.root={root}",
        "data.version=v1.0-mini",
        "data.train_split=mini_train",
        "data.image_size=[64, 128]",
        "data.batch_size=1",
        "data.augment=false",
        "model.point_encoder=minkunet_tiny",
        "model.image_encoder=resnet18_dilated",
        "model.image_weights=null",
        "optim.max_steps=1",
        f"run.out_dir={tmp_path}",
        "run.name=ppkt",
        "run.progress=false",
        "run.image_log_every=0",
    ]
    code = main(["pretrain", "ppkt_nuscenes", *args])
    assert code == 0
    (rec,) = read_jsonl(tmp_path / "ppkt" / "metrics.jsonl", kind="train")
    assert set(k for k in rec if k.startswith("loss/")) == {"loss/ppnce", "loss/total"}
    # an OLIVINE run on the same data still asks for the labels it uses, naming the file
    code = main(["pretrain", "olivine_nuscenes", *args, "run.name=olivine"])
    assert code == 1
