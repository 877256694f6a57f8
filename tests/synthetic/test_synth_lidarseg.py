"""The synthetic world in each SemanticKITTI-family layout: every reader sees the same points as
the SemanticKITTI reader on the SemanticKITTI export of the same world, and labels that map back
to the world's classes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from olivine_data.datasets import (
    SEMANTICKITTI_CLASSES,
    LidarSegDataset,
    SemanticKITTISegDataset,
    get_lidarseg_spec,
    read_scene_splits,
)
from olivine_data.synthetic import LIDARSEG_EXPORTS, SyntheticWorldConfig, export_lidarseg
from olivine_data.synthetic.export_lidarseg import SCRIBBLE_FRACTION, WORLD_TO_DATASET


@pytest.fixture(scope="module")
def family(
    tmp_path_factory: pytest.TempPathFactory, kitti_config: SyntheticWorldConfig
) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("family")
    return {d: export_lidarseg(kitti_config, base / d, d, progress=False) for d in LIDARSEG_EXPORTS}


def _reader(root: Path, dataset: str, split: str) -> LidarSegDataset:
    spec = get_lidarseg_spec(dataset)
    if (root / "olivine_splits.json").is_file():
        seqs = read_scene_splits(root)[split]
        return LidarSegDataset(root, spec, sequences=seqs, label_dir=spec.label_dir_for(split))
    return LidarSegDataset(root, spec, split=split)


def _kitti_by_scene(kitti_export: Path) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    splits = read_scene_splits(kitti_export)
    out = {}
    for split, seqs in splits.items():
        ds = SemanticKITTISegDataset(kitti_export, sequences=seqs)
        out[split] = [(s.points, s.point_labels) for s in (ds[i] for i in range(len(ds)))]
    return out


@pytest.mark.parametrize("dataset", LIDARSEG_EXPORTS)
def test_same_points_and_labels_map_back(
    dataset: str, family: dict[str, Path], kitti_export: Path
) -> None:
    spec = get_lidarseg_spec(dataset)
    to_name = WORLD_TO_DATASET[dataset]
    # world class (SemanticKITTI learning id) -> this dataset's learning id, by class name
    expect = np.array(
        [spec.classes.index(to_name[c]) if c in to_name else 0 for c in SEMANTICKITTI_CLASSES]
    )
    kitti = _kitti_by_scene(kitti_export)
    for split in ("train", "val"):
        ds = _reader(family[dataset], dataset, split)
        assert len(ds) == len(kitti[split]) > 0
        for i, (k_points, k_labels) in enumerate(kitti[split]):
            s = ds[i]
            np.testing.assert_array_equal(s.points, k_points)
            assert s.point_labels is not None
            if split == "train" and spec.train_label_dir is not None:  # ScribbleKITTI
                labelled = s.point_labels > 0
                np.testing.assert_array_equal(s.point_labels[labelled], expect[k_labels][labelled])
                frac = labelled.mean() / (expect[k_labels] > 0).mean()
                assert abs(frac - SCRIBBLE_FRACTION) < 0.03
            else:
                np.testing.assert_array_equal(s.point_labels, expect[k_labels])
        present = set(np.unique(expect[np.concatenate([lab for _, lab in kitti[split]])]))
        assert len(present - {0}) >= 3  # several of the dataset's classes occur


def test_layouts_on_disk(family: dict[str, Path]) -> None:
    rellis = family["rellis3d"]
    lines = (rellis / "pt_train.lst").read_text().splitlines()
    scan, label = lines[0].split()
    assert scan.split("/")[1:] == ["os1_cloud_node_kitti_bin", "000000.bin"]
    assert label.split("/")[1] == "os1_cloud_node_semantickitti_label_id"
    assert (rellis / scan).is_file() and (rellis / label).is_file()
    assert not (rellis / "olivine_splits.json").exists()
    stf = family["semanticstf"]
    bins = sorted((stf / "train" / "velodyne").glob("*.bin"))
    raw = np.fromfile(bins[0], np.float32)
    n = np.fromfile(stf / "train" / "labels" / f"{bins[0].stem}.label", np.uint32).size
    assert raw.size == 5 * n and raw.reshape(-1, 5)[:, 3].max() > 1.0  # intensity 0..255
    daps = family["daps3d"]
    assert (daps / "data" / "38-18_7_72_90" / "clouds" / "000000.bin").is_file()
    assert read_scene_splits(daps)["train"] == ["38-18_7_72_90"]
    syn = family["synlidar"]
    assert (syn / "12" / "velodyne").is_dir() and not (syn / "sequences").exists()
    sk = family["scribblekitti"]
    assert {p.name for p in (sk / "sequences" / "08").iterdir()} == {
        "velodyne", "labels", "scribbles"
    }  # fmt: skip


def test_export_refuses_what_it_cannot_write(tmp_path: Path) -> None:
    cfg = SyntheticWorldConfig(scenes=3, samples_per_scene=1, seed=0, val_fraction=0.34)
    with pytest.raises(ValueError, match=r"daps3d: 2 train scenes, but the layout names only 1"):
        export_lidarseg(cfg, tmp_path / "d", "daps3d", progress=False)
    with pytest.raises(ValueError, match="dataset: expected one of"):
        export_lidarseg(cfg, tmp_path / "x", "kitti360", progress=False)


def test_cli_writes_each_family_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from olivine_data.cli import LIDARSEG_FORMATS, main

    assert LIDARSEG_FORMATS == LIDARSEG_EXPORTS
    out = tmp_path / "rellis"
    args = ["synth", "--out", str(out), "--format", "rellis3d", "--scenes", "2"]
    rc = main([*args, "--samples-per-scene", "1", "--azimuth-steps", "90", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert "finetune_rellis3d_<fraction>" in capsys.readouterr().out
    ds = LidarSegDataset(out, get_lidarseg_spec("rellis3d"), split="train")
    assert len(ds) == 1 and ds[0].point_labels is not None
