"""``demo.image_size`` is ``[height, width]``, the convention of ``data.image_size``."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from olivine_train.config import load_config
from olivine_train.recipes.demo import ensure_world


def test_demo_world_is_rendered_at_height_then_width(tmp_path: Path) -> None:
    cfg = load_config(
        "demo",
        [
            "demo.image_size=[48, 80]",
            "demo.scenes=1",
            "demo.samples_per_scene=1",
            "demo.lidar_azimuth_steps=90",
            "data.cameras=[CAM_FRONT]",
        ],
        check_paths=False,
    )
    assert cfg.demo.image_size == [48, 80]
    world = ensure_world(cfg, tmp_path / "world", progress=False)
    images = sorted((world / "samples" / "CAM_FRONT").glob("*.jpg"))
    assert images
    with Image.open(images[0]) as im:
        assert im.size == (80, 48)  # PIL: (width, height)
    labels = sorted((world / "camseg" / "CAM_FRONT").glob("*.png"))
    with Image.open(labels[0]) as im:
        assert im.size == (80, 48)
