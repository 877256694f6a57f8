"""make-labels on bad images and bad stored PNGs (issue 31, defects 4 and 5), through the real CLI
with a tiny SAM in box mode on a copy of the tiny synthetic world.

Before: a truncated JPEG stopped the whole shard with exit code 4 ("the file system refused")
without naming the image, and resume went by file existence only, so a zero-byte or cut-off PNG
counted as done and training failed on it later.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from olivine_data.labels import LabelStore
from olivine_train.cli import main
from olivine_train.recipes.make_labels import list_camera_images

VERSION = "v1.0-mini"


def _argv(world: Path, out: Path, boxes: Path) -> list[str]:
    return [
        "make-labels", "--root", str(world), "--version", VERSION, "--split", "train",
        "--out", str(out), "--mode", "box", "--boxes-json", str(boxes), "--sam-variant", "tiny",
        "--device", "cpu", "--no-progress",
    ]  # fmt: skip


@pytest.fixture()
def setup(tiny_world: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """(a writable copy of the world, the label store folder, the boxes file)."""
    world = Path(
        shutil.copytree(tiny_world, tmp_path / "world", ignore=shutil.ignore_patterns("camseg"))
    )
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"box": [4, 4, 60, 40], "class_id": 3, "score": 0.9}]))
    return world, tmp_path / "labels", boxes


def test_a_truncated_image_is_named_and_the_shard_goes_on_exit_1(
    setup: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    world, out, boxes = setup
    items = list_camera_images(world, VERSION, split="train")
    bad = world / items[1].filename
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])  # a JPEG cut off in the middle
    assert main(_argv(world, out, boxes)) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    errors = [ln for ln in captured.err.splitlines() if ln.startswith("olivine-train: error:")]
    assert errors == [
        "olivine-train: error: MakeLabelsFailed: make-labels shard 0/1: 1 image(s) could not be "
        "labelled, the 7 others were written (fix them and rerun: done images are kept):"
    ]
    assert f"  - {bad}: cannot decode image" in captured.err
    assert "7 written, 0 already done, 1 FAILED, 8 in shard" in captured.out
    store = LabelStore(out)
    done = [it for it in items if store.exists(it.camera, it.name)]
    assert done == [it for i, it in enumerate(items) if i != 1]

    bad.write_bytes(data)  # fixed: the rerun makes the missing one only
    assert main(_argv(world, out, boxes)) == 0
    assert "1 written, 7 already done, 8 in shard" in capsys.readouterr().out


def test_resume_remakes_stored_pngs_that_are_not_sound(
    setup: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    world, out, boxes = setup
    assert main(_argv(world, out, boxes)) == 0
    capsys.readouterr()
    items = list_camera_images(world, VERSION, split="train")
    store = LabelStore(out)
    paths = [store.path(it.camera, it.name) for it in items]
    untouched = {p: p.stat().st_mtime_ns for p in paths[5:]}
    w, h = items[0].size  # type: ignore[misc]
    paths[0].write_bytes(b"")  # zero bytes
    paths[1].write_bytes(paths[1].read_bytes()[:40])  # cut off
    Image.fromarray(np.zeros((h // 2, w // 2), np.uint8), mode="L").save(paths[2])  # half size
    Image.fromarray(np.full((h, w), 200, np.uint8), mode="L").save(paths[3])  # ids not in SEEM17
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(paths[4])  # RGB, not one channel
    assert main(_argv(world, out, boxes)) == 0
    out_text = capsys.readouterr().out
    assert "5 written (5 remade: their PNG was not sound), 3 already done" in out_text
    for it in items:  # every PNG sound now (the tiny SAM is random: no reference values)
        store.read(it.camera, it.name, expected_shape=(h, w))
    assert {p: p.stat().st_mtime_ns for p in paths[5:]} == untouched  # sound ones kept
