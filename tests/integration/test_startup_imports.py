"""Commands that never build the 3D student do not pay spconv's import (~7 s: its kernel
metadata is generated at import). Each command runs in a fresh interpreter, as a user runs it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import json, sys
from olivine_train.cli import main
code = main(sys.argv[1:])
heavy = sorted(m for m in ("spconv", "cumm") if m in sys.modules)
print("IMPORTED " + json.dumps({"code": code, "heavy": heavy}))
"""


def _run(args: list[str]) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=600
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("IMPORTED ")]
    assert lines, proc.stdout + proc.stderr
    result: dict[str, object] = json.loads(lines[-1][len("IMPORTED ") :])
    return result


@pytest.mark.parametrize(
    "args",
    [
        ["validate-config", "--no-check-paths", "demo"],
        ["ls"],
        ["validate-config", "--no-check-paths", "olivine_nuscenes"],
    ],
)
def test_cheap_commands_do_not_import_spconv(args: list[str]) -> None:
    result = _run(args)
    assert result == {"code": 0, "heavy": []}


def test_make_labels_does_not_import_spconv(tiny_world: Path, tmp_path: Path) -> None:
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"box": [4, 4, 60, 40], "class_id": 3, "score": 0.9}]))
    args = [
        "make-labels",
        *("--root", str(tiny_world), "--version", "v1.0-mini", "--split", "train"),
        *("--out", str(tmp_path / "labels"), "--mode", "box", "--boxes-json", str(boxes)),
        *("--sam-variant", "tiny", "--shard", "0/4", "--device", "cpu", "--no-progress"),
    ]
    assert _run(args) == {"code": 0, "heavy": []}


def test_the_probe_sees_spconv_when_the_student_is_built() -> None:
    """The check above can fail: building the student does import spconv."""
    pytest.importorskip("spconv")
    code = (
        "import sys; from olivine_models import create_point_encoder; "
        "create_point_encoder('minkunet_tiny'); print('spconv' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.stdout.strip().endswith("True"), out.stderr
