"""Fixtures for olivine-train tests: one tiny synthetic world per session (shared with
tests/integration through the same path under pytest's base temp dir)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

TINY_CAMERAS = ("CAM_FRONT", "CAM_BACK")


def make_tiny_world(base: Path) -> Path:
    """Export (once per session) a 3-scene, 2-keyframe synthetic nuScenes world."""
    from olivine_data.synthetic import SyntheticWorldConfig, export_nuscenes

    root = base / "olivine_tiny_world"
    if not (root / "olivine_splits.json").is_file():
        cfg = SyntheticWorldConfig(
            scenes=3,
            samples_per_scene=2,
            seed=0,
            image_size=(96, 54),
            lidar_azimuth_steps=180,
            cameras=TINY_CAMERAS,
            val_fraction=0.34,
        )
        export_nuscenes(cfg, root, progress=False)
    return root


def tiny_overrides(world: Path, out: Path, name: str) -> list[str]:
    """Overrides that shrink the demo config to test size."""
    return [
        f"data.root={world}",
        f"data.cameras=[{', '.join(TINY_CAMERAS)}]",
        "data.image_size=[32, 64]",
        "data.batch_size=2",
        "loss.num_pairs=256",
        f"run.out_dir={out}",
        f"run.name={name}",
        "run.progress=false",
        "run.log_every=1",
        "run.image_log_every=2",
        "run.seed=3",
    ]


@pytest.fixture(scope="session")
def overrides_for() -> Callable[[Path, Path, str], list[str]]:
    """``overrides_for(world, out_dir, run_name)``: demo config shrunk to test size."""
    return tiny_overrides


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return make_tiny_world(tmp_path_factory.getbasetemp())
