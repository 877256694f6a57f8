"""Tiny synthetic exports shared by the synthetic-world tests (rendered once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from olivine_data.synthetic import (
    SyntheticWorldConfig,
    export_nuscenes,
    export_semantickitti,
)

#: Small but not degenerate: 2 scenes x 2 keyframes, 6 cameras at 200x112, full LiDAR.
NUSC_CONFIG = SyntheticWorldConfig(
    scenes=2,
    samples_per_scene=2,
    seed=3,
    image_size=(200, 112),
    vfm_noise=0.25,
    val_fraction=0.5,
)
KITTI_CONFIG = SyntheticWorldConfig(
    scenes=2,
    samples_per_scene=1,
    seed=4,
    image_size=(200, 112),
    lidar_azimuth_steps=700,
    val_fraction=0.5,
)


@pytest.fixture(scope="session")
def nusc_config() -> SyntheticWorldConfig:
    return NUSC_CONFIG


@pytest.fixture(scope="session")
def kitti_config() -> SyntheticWorldConfig:
    return KITTI_CONFIG


@pytest.fixture(scope="session")
def nusc_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_nuscenes(NUSC_CONFIG, tmp_path_factory.mktemp("synth_nusc"), progress=False)


@pytest.fixture(scope="session")
def kitti_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_semantickitti(
        KITTI_CONFIG, tmp_path_factory.mktemp("synth_kitti"), progress=False
    )
