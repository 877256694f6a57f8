"""SemanticKITTI export through the olivine-data readers, and the ``olivine-data`` CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from olivine_data.cli import main
from olivine_data.datasets import (
    KittiPretrainDataset,
    SemanticKITTISegDataset,
    read_odometry_calib,
)
from olivine_data.synthetic.sensors import KITTI_TR


def test_semantickitti_export_reads(kitti_export: Path, kitti_config) -> None:  # type: ignore[no-untyped-def]
    seqs = sorted(p.name for p in (kitti_export / "sequences").iterdir())
    assert seqs == ["00", "01"]
    for seq in seqs:
        d = kitti_export / "sequences" / seq
        scan = np.fromfile(d / "velodyne" / "000000.bin", dtype=np.float32).reshape(-1, 4)
        label = np.fromfile(d / "labels" / "000000.label", dtype=np.uint32)
        assert len(scan) == len(label) > 10_000
        assert 0 <= scan[:, 3].min() and scan[:, 3].max() <= 1.0
        sem = label & 0xFFFF
        assert {40, 50}.issubset(set(np.unique(sem).tolist()))  # road, building
        calib = read_odometry_calib(d / "calib.txt")
        np.testing.assert_allclose(calib.Tr[:3], KITTI_TR)
        pose0 = np.array((d / "poses.txt").read_text().split("\n")[0].split(), dtype=float)
        np.testing.assert_allclose(pose0.reshape(3, 4), np.eye(4)[:3], atol=1e-9)
    ds = SemanticKITTISegDataset(kitti_export, sequences=seqs)
    assert len(ds) == kitti_config.scenes * kitti_config.samples_per_scene
    x = ds[0]
    assert x.point_labels is not None and x.point_labels.max() <= 19
    counts = np.bincount(x.point_labels, minlength=20)
    assert counts[9] > 0 and counts[13] > 0 and counts[1] > 0  # road, building, car
    pre = KittiPretrainDataset(kitti_export, sequences=["00"], label_store=kitti_export / "gt")
    s = pre[0]
    assert s.images.shape[0] == 1 and s.num_pairs > 1000
    assert s.pair_labels is not None
    # ground truth at the paired pixels: mostly road/buildings/vegetation/cars, little sky
    assert (s.pair_labels == 16).mean() < 0.05


def test_cli_synth_writes_loadable_nuscenes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli"
    rc = main(
        [
            "synth",
            "--out",
            str(out),
            "--scenes",
            "1",
            "--samples-per-scene",
            "1",
            "--seed",
            "2",
            "--image-size",
            "64x36",
            "--vfm-noise",
            "0.1",
            "--quiet",
            "--azimuth-steps",
            "200",
        ]
    )
    assert rc == 0
    assert "keyframes/s" in capsys.readouterr().out
    from nuscenes.nuscenes import NuScenes

    nusc = NuScenes(version="v1.0-mini", dataroot=str(out), verbose=False)
    assert len(nusc.sample) == 1
    cam = nusc.get("sample_data", nusc.sample[0]["data"]["CAM_FRONT"])
    assert (cam["width"], cam["height"]) == (64, 36)


def test_cli_errors_and_help(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["synth", "--out", str(tmp_path / "x"), "--vfm-noise", "2"]) == 2
    assert "vfm_noise" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["synth", "--out", "x", "--image-size", "big"])
    assert exc.value.code == 2
    assert "WIDTHxHEIGHT" in capsys.readouterr().err
    assert main([]) == 1
    assert "synth" in capsys.readouterr().out


def test_export_refuses_non_empty_folder_unless_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nuscenes.nuscenes import NuScenes

    from olivine_data.synthetic import SyntheticWorldConfig, export_nuscenes

    big = SyntheticWorldConfig(
        scenes=2,
        samples_per_scene=1,
        seed=1,
        image_size=(32, 18),
        lidar_azimuth_steps=100,
        cameras=("CAM_FRONT",),
    )
    small = SyntheticWorldConfig(**{**big.__dict__, "scenes": 1})
    export_nuscenes(big, tmp_path, progress=False)
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="out_dir.*not empty"):
        export_nuscenes(small, tmp_path, progress=False)
    assert main(["synth", "--out", str(tmp_path), "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    export_nuscenes(small, tmp_path, progress=False, overwrite=True)
    nusc = NuScenes(version=small.version, dataroot=str(tmp_path), verbose=False)
    assert len(nusc.sample) == 1
    assert len(list((tmp_path / "samples" / "LIDAR_TOP").iterdir())) == 1
    assert (tmp_path / "notes.txt").read_text() == "keep me"
