"""Public surface of olivine_models: __all__ snapshot, light import, layering."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import olivine_models
import olivine_models.vfm

PACKAGE_DIR = Path(olivine_models.__file__).resolve().parent


def test_all_snapshot() -> None:
    assert sorted(olivine_models.__all__) == sorted(
        [
            "BEVGrid",
            "DEFAULT_HEAD_DIM",
            "Classifier",
            "FrozenImageEncoder",
            "ImageHead",
            "LoadReport",
            "MinkUNet",
            "MinkUNetConfig",
            "PointHead",
            "SegmentationHead",
            "SparseBEVHead",
            "StateMismatchError",
            "UnsafeWeightsError",
            "VoxelNet",
            "__version__",
            "create_image_encoder",
            "create_point_encoder",
            "height_compression",
            "list_image_encoders",
            "list_point_encoders",
            "load_matching_state",
            "load_state",
            "load_weights_only",
            "weights_file_problem",
            "sample_bev",
        ]
    )
    for name in olivine_models.__all__:
        assert hasattr(olivine_models, name), name
    for name in olivine_models.vfm.__all__:
        assert hasattr(olivine_models.vfm, name), name


def test_package_import_is_light() -> None:
    code = (
        "import sys, olivine_models, olivine_models.vfm; "
        "print(sorted(m for m in ('spconv', 'timm', 'torchvision', 'segment_anything') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_never_imports_sibling_packages() -> None:
    forbidden = {"olivine_data", "olivine_train"}
    for path in PACKAGE_DIR.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path}: imports {name}"
