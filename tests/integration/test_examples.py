"""The examples in ``examples/`` run as documented, so the README's composition story stays true."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_custom_pipeline_on_the_real_keyframe(shared_data: Path) -> None:
    example = load_example("custom_pipeline")
    parts = example.main(str(shared_data / "nuscenes" / "mmdet3d-demo"), "v1.0-mini")
    # The real keyframe has no camera labels: only the self-supervised term runs.
    assert set(parts) == {"ppnce", "total"}
    assert math.isfinite(parts["ppnce"]) and parts["ppnce"] > 0
    assert math.isclose(parts["total"], 0.5 * parts["ppnce"], rel_tol=1e-6)


def test_custom_pipeline_on_a_synthetic_world(tmp_path: Path) -> None:
    from olivine_data.synthetic import SyntheticWorldConfig, export_nuscenes

    world = tmp_path / "world"
    cfg = SyntheticWorldConfig(
        scenes=1,
        samples_per_scene=1,
        seed=3,
        image_size=(200, 112),
        lidar_azimuth_steps=360,
        val_fraction=0.0,
    )
    export_nuscenes(cfg, world, progress=False)
    parts = load_example("custom_pipeline").main(str(world), cfg.version)
    assert set(parts) == {"ppnce", "sup", "vmf", "total"}
    assert all(math.isfinite(v) for v in parts.values())
    expected = 0.5 * parts["ppnce"] + 0.5 * parts["sup"] + parts["vmf"]
    assert math.isclose(parts["total"], expected, rel_tol=1e-5)
