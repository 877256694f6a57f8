"""The synthetic nuScenes export loads in the devkit and in the olivine-data readers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from nuscenes.nuscenes import NuScenes
from nuscenes.utils.data_classes import LidarPointCloud

from olivine_data import SEEM17, LabelStore
from olivine_data.datasets import NuScenesPretrainDataset, NuScenesSegDataset, read_scene_splits
from olivine_data.synthetic import SyntheticWorldConfig
from olivine_data.synthetic.materials import NUSCENES_LIDARSEG_CATEGORIES
from olivine_data.synthetic.sensors import NUSCENES_CAMERAS

# Same values as the ``nusc_config`` fixture of conftest.py (module-level for readability).
CFG = SyntheticWorldConfig(
    scenes=2,
    samples_per_scene=2,
    seed=3,
    image_size=(200, 112),
    vfm_noise=0.25,
    val_fraction=0.5,
)


def test_module_config_matches_fixture(nusc_config: SyntheticWorldConfig) -> None:
    assert nusc_config == CFG


@pytest.fixture(scope="module")
def nusc(nusc_export: Path) -> NuScenes:
    return NuScenes(version=CFG.version, dataroot=str(nusc_export), verbose=False)


def test_devkit_loads_all_tables(nusc: NuScenes, nusc_export: Path) -> None:
    n_samples = CFG.scenes * CFG.samples_per_scene
    assert len(nusc.scene) == CFG.scenes
    assert len(nusc.sample) == n_samples
    assert len(nusc.sample_data) == n_samples * 7
    assert len(nusc.ego_pose) == n_samples * 7
    assert len(nusc.lidarseg) == n_samples
    assert [c["name"] for c in sorted(nusc.category, key=lambda c: c["index"])] == list(
        NUSCENES_LIDARSEG_CATEGORIES
    )
    assert len(nusc.sample_annotation) > 0 and len(nusc.instance) > 0
    for scene in nusc.scene:  # walk the keyframes like the readers do
        tokens, tok = [], scene["first_sample_token"]
        while tok:
            tokens.append(tok)
            tok = nusc.get("sample", tok)["next"]
        assert len(tokens) == scene["nbr_samples"] == CFG.samples_per_scene
        assert tokens[-1] == scene["last_sample_token"]
    sample = nusc.sample[0]
    assert set(sample["data"]) == {"LIDAR_TOP", *NUSCENES_CAMERAS}
    cam = nusc.get("sample_data", sample["data"]["CAM_FRONT"])
    assert (cam["width"], cam["height"]) == CFG.image_size
    assert (nusc_export / cam["filename"]).read_bytes()[:2] == b"\xff\xd8"  # a real JPEG
    ann = nusc.get("sample_annotation", sample["anns"][0])
    assert ann["num_lidar_pts"] > 0 and ann["category_name"] in NUSCENES_LIDARSEG_CATEGORIES


def test_lidarseg_counts_equal_point_counts(nusc: NuScenes, nusc_export: Path) -> None:
    for rec in nusc.lidarseg:
        sd = nusc.get("sample_data", rec["sample_data_token"])
        pc = LidarPointCloud.from_file(str(nusc_export / sd["filename"]))
        labels = np.fromfile(nusc_export / rec["filename"], dtype=np.uint8)
        assert pc.points.shape[1] == labels.shape[0]
        assert 10_000 < labels.shape[0] < 40_000
        assert labels.max() < 32


def test_camera_ego_poses_differ_from_lidar_pose(nusc: NuScenes) -> None:
    sample = nusc.sample[1]
    lidar = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    p_lidar = np.array(nusc.get("ego_pose", lidar["ego_pose_token"])["translation"])
    for cam in NUSCENES_CAMERAS:
        sd = nusc.get("sample_data", sample["data"][cam])
        assert sd["timestamp"] < lidar["timestamp"]
        shift = np.linalg.norm(
            np.array(nusc.get("ego_pose", sd["ego_pose_token"])["translation"]) - p_lidar
        )
        assert 1e-3 < shift < 1.0, (cam, shift)


def test_splits_file_and_readers(nusc_export: Path) -> None:
    splits = read_scene_splits(nusc_export)
    assert sorted(splits["train"] + splits["val"]) == sorted(
        json.loads((nusc_export / "olivine_splits.json").read_text())["train"]
        + json.loads((nusc_export / "olivine_splits.json").read_text())["val"]
    )
    assert len(splits["val"]) == 1 and len(splits["train"]) == 1
    pre = NuScenesPretrainDataset(nusc_export, CFG.version, split="train", label_store=nusc_export)
    assert len(pre) == CFG.samples_per_scene
    s = pre[0]
    w, h = CFG.image_size
    assert s.images.shape == (6, h, w, 3)
    assert s.num_pairs > 5000
    assert s.pair_labels is not None and s.pair_labels.max() <= 16
    seg = NuScenesSegDataset(nusc_export, CFG.version, split="val")
    x = seg[0]
    assert x.point_labels is not None and x.point_labels.shape[0] == x.points.shape[0]
    assert 0 < (x.point_labels > 0).mean()  # labelled points, eval ids 1..16
    assert x.point_labels.max() <= 16


def test_lidar_and_cameras_agree_on_geometry(nusc_export: Path) -> None:
    """>= 95 % of paired points land on a ground-truth pixel of their own class (interior)."""
    gt_store = LabelStore(nusc_export / "gt")
    pre = NuScenesPretrainDataset(nusc_export, CFG.version, label_store=gt_store)
    seg = NuScenesSegDataset(nusc_export, CFG.version)
    nusc = pre.nusc
    agree, total = 0, 0
    for i in range(len(pre)):
        p, s = pre[i], seg[i]
        np.testing.assert_array_equal(p.points, s.points)
        assert p.pair_labels is not None and s.point_labels is not None
        sample = nusc.get("sample", pre.sample_tokens[i])
        maps = []
        for cam in p.camera_names:
            tok = sample["data"][cam]
            maps.append(gt_store.read(cam, nusc.get("sample_data", tok)["filename"]))
        gt = np.stack(maps)
        cam_i, row, col = p.pair_pixels.T
        interior = np.ones(len(row), dtype=bool)
        hh, ww = gt.shape[1:]
        for dr in (-2, 0, 2):
            for dc in (-2, 0, 2):
                rr, cc = np.clip(row + dr, 0, hh - 1), np.clip(col + dc, 0, ww - 1)
                interior &= gt[cam_i, rr, cc] == gt[cam_i, row, col]
        np.testing.assert_array_equal(gt[cam_i, row, col], p.pair_labels)
        cam_eval = SEEM17.to_eval[p.pair_labels[interior]]
        pt_eval = s.point_labels[p.pair_points[interior]]
        agree += int((cam_eval == pt_eval).sum())
        total += int(interior.sum())
    assert total > 10_000
    assert agree / total >= 0.95, agree / total
