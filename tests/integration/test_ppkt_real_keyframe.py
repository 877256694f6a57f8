"""PPKT on the real nuScenes keyframe needs no VFM label files (issue 14, case 9)."""

from __future__ import annotations

from pathlib import Path

import torch

from olivine_train.cli import main
from olivine_train.logging import read_jsonl


def _keyframe_args(root: Path, out: Path, name: str, steps: int) -> list[str]:
    """The real keyframe at test size, with a random resnet18 teacher."""
    return [
        f"data.root={root}",
        "data.version=v1.0-mini",
        "data.train_split=mini_train",
        "data.image_size=[64, 128]",
        "data.batch_size=1",
        "data.augment=false",
        "model.image_encoder=resnet18_dilated",
        "model.image_weights=null",
        f"optim.max_steps={steps}",
        f"run.out_dir={out}",
        f"run.name={name}",
        "run.progress=false",
        "run.image_log_every=0",
    ]


def test_ppkt_pretrains_on_the_real_keyframe_without_label_files(
    shared_data: Path, tmp_path: Path
) -> None:
    root = shared_data / "nuscenes" / "mmdet3d-demo"
    assert not (root / "camseg").exists()  # no VFM labels next to the real keyframe
    args = [*_keyframe_args(root, tmp_path, "ppkt", 1), "model.point_encoder=minkunet_tiny"]
    code = main(["pretrain", "ppkt_nuscenes", *args])
    assert code == 0
    (rec,) = read_jsonl(tmp_path / "ppkt" / "metrics.jsonl", kind="train")
    assert set(k for k in rec if k.startswith("loss/")) == {"loss/ppnce", "loss/total"}
    # an OLIVINE run on the same data still asks for the labels it uses, naming the file
    code = main(["pretrain", "olivine_nuscenes", *args, "run.name=olivine"])
    assert code == 1


def test_voxelnet_ppkt_pretrains_on_the_real_keyframe(shared_data: Path, tmp_path: Path) -> None:
    """The VoxelNet student (reference grid and caps) end to end on the real keyframe: every
    filtered point gets a feature, and the voxelisation's drops are logged, not silent.
    """
    root = shared_data / "nuscenes" / "mmdet3d-demo"
    args = [
        *_keyframe_args(root, tmp_path, "vx", 2),
        "loss.num_pairs=512",
        "run.log_every=1",
        "data.num_workers=0",
    ]
    assert main(["pretrain", "ppkt_voxelnet_nuscenes", *args]) == 0
    recs = read_jsonl(tmp_path / "vx" / "metrics.jsonl", kind="train")
    assert [r["step"] for r in recs] == [1, 2]
    assert all(r["loss/ppnce"] == r["loss/ppnce"] and r["loss/ppnce"] > 0 for r in recs)
    drops = {k: v for k, v in recs[0].items() if k.startswith("voxels/")}
    assert drops, "the voxelisation's drop counts are logged"
    state = torch.load(tmp_path / "vx" / "backbone.pt", weights_only=True)
    assert len(state["state_dict"]) == 72  # exactly OpenPCDet's VoxelBackBone8x tensors
