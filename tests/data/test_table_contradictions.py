"""Data that contradicts its tables is refused (issue 31, defects 2, 3 and 12).

Through the real readers and the real CLI on a copy of the tiny synthetic world:

* a camera image (or label PNG) of another size than ``sample_data.json`` records is refused,
  naming the file and both sizes (it used to be paired silently: pairs per batch fell five-fold
  and the VFM labels no longer agreed with the lidarseg ones);
* a table ``filename`` that resolves outside the dataroot (``../``, an absolute path, a symlink
  leading out) is refused naming the table, the record and the path, unless the documented opt-out
  ``allow_outside_root`` / ``data.allow_outside_root=true`` is given;
* an empty split in ``olivine_splits.json`` names the split and the file.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from olivine_data.datasets import LidarSegDataset, NuScenesPretrainDataset, NuScenesSegDataset
from olivine_data.datasets.lidarseg_specs import RELLIS3D
from olivine_train.cli import main

VERSION = "v1.0-mini"
CAMERAS = ("CAM_FRONT", "CAM_BACK")


@pytest.fixture()
def world(tiny_world: Path, tmp_path: Path) -> Path:
    """A writable copy of the tiny synthetic world (camseg labels included)."""
    return Path(shutil.copytree(tiny_world, tmp_path / "world"))


def _records(root: Path, table: str) -> list[dict[str, Any]]:
    return json.loads((root / VERSION / f"{table}.json").read_text())  # type: ignore[no-any-return]


def _write(root: Path, table: str, records: list[dict[str, Any]]) -> Path:
    path = root / VERSION / f"{table}.json"
    path.write_text(json.dumps(records))
    return path


def _first_camera_record(root: Path) -> dict[str, Any]:
    """The CAM_FRONT record of the first keyframe of the first training scene."""
    train = json.loads((root / "olivine_splits.json").read_text())["train"]
    scene = next(s for s in _records(root, "scene") if s["name"] == train[0])
    sample = next(s for s in _records(root, "sample") if s["token"] == scene["first_sample_token"])
    return next(
        r
        for r in _records(root, "sample_data")
        if r["sample_token"] == sample["token"] and "__CAM_FRONT__" in r["filename"]
    )


def _halve(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        w, h = im.size
        im.resize((w // 2, h // 2)).save(path)
    return w, h


def _dataset(root: Path, **kw: Any) -> NuScenesPretrainDataset:
    return NuScenesPretrainDataset(root, VERSION, split="train", cameras=CAMERAS, **kw)


# ----------------------------------------------------------------------------- defect 2: sizes


def test_an_image_of_another_size_than_recorded_is_refused_naming_both_sizes(world: Path) -> None:
    sd = _first_camera_record(world)
    image = world / sd["filename"]
    w, h = _halve(image)
    msg = (
        f"{image}: the image is {w // 2}x{h // 2} pixels (width x height) but "
        f"{world / VERSION / 'sample_data.json'} record {sd['token']!r} records {w}x{h}"
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        _dataset(world).load(sd["sample_token"])
    assert (sd["width"], sd["height"]) == (w, h)


def test_a_label_png_of_another_size_is_refused_naming_both_sizes(world: Path) -> None:
    sd = _first_camera_record(world)
    label = world / "camseg" / "CAM_FRONT" / f"{Path(sd['filename']).stem}.png"
    w, h = _halve(label)
    msg = f"{label}: label image has shape ({h // 2}, {w // 2}), expected ({h}, {w})"
    with pytest.raises(ValueError, match=re.escape(msg)):
        _dataset(world, label_store=world).load(sd["sample_token"])


def test_a_record_without_width_is_refused(world: Path) -> None:
    records = _records(world, "sample_data")
    sd = _first_camera_record(world)
    next(r for r in records if r["token"] == sd["token"])["width"] = 0
    table = _write(world, "sample_data", records)
    msg = f"{table}: record {sd['token']!r} field 'width' = 0: expected the camera image's width"
    with pytest.raises(ValueError, match=re.escape(msg)):
        _dataset(world).load(sd["sample_token"])


def test_pretraining_on_halved_images_exits_1_naming_the_image(
    world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], overrides_for: Any
) -> None:
    """The defect as reported: PPKT (no labels) on one sample's halved cameras exited 0."""
    sd = _first_camera_record(world)
    _halve(world / sd["filename"])
    args = [*overrides_for(world, tmp_path, "half"), "optim.max_steps=2", "loss.sup_weight=0"]
    args += ["loss.vmf_weight=0", "data.augment=false"]
    assert main(["pretrain", "demo", *args]) == 1
    err = capsys.readouterr().err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("olivine-train: error:")]
    assert f"{world / sd['filename']}: the image is" in line and "records" in line
    assert not (tmp_path / "half" / "last.pt").exists()


# ----------------------------------------------------------------------------- defect 3: paths


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_a_table_path_outside_the_root_is_refused_unless_allowed(
    world: Path, tmp_path: Path, kind: str
) -> None:
    sd = _first_camera_record(world)
    inside = world / sd["filename"]
    elsewhere = tmp_path / "elsewhere" / inside.name
    elsewhere.parent.mkdir()
    shutil.copy(inside, elsewhere)
    records = _records(world, "sample_data")
    rec = next(r for r in records if r["token"] == sd["token"])
    if kind == "dotdot":
        rec["filename"] = f"../elsewhere/{inside.name}"
    elif kind == "absolute":
        rec["filename"] = str(elsewhere)
    else:  # the table is unchanged; the file is a symlink out of the root
        inside.unlink()
        inside.symlink_to(elsewhere)
    table = _write(world, "sample_data", records)
    msg = (
        f"{table}: record {sd['token']!r} field 'filename' = {rec['filename']!r} resolves to "
        f"{elsewhere.resolve()}, outside the dataset root {world.resolve()}: refusing to read it"
    )
    with pytest.raises(ValueError, match=re.escape(msg)) as info:
        _dataset(world).load(sd["sample_token"])
    assert "allow_outside_root=True" in str(info.value)
    # the documented opt-out reads it (same pixels as the original)
    sample = _dataset(world, allow_outside_root=True).load(sd["sample_token"])
    with Image.open(elsewhere) as im:
        np.testing.assert_array_equal(sample.images[0], np.asarray(im.convert("RGB")))


def test_lidar_and_lidarseg_paths_are_confined_too(world: Path) -> None:
    original = _records(world, "sample_data")
    records = json.loads(json.dumps(original))
    lidar = next(r for r in records if "__LIDAR_TOP__" in r["filename"])
    lidar["filename"] = "../../../etc/hostname"
    table = _write(world, "sample_data", records)
    with pytest.raises(ValueError, match=re.escape(f"{table}: record {lidar['token']!r}")):
        _dataset(world).load(lidar["sample_token"])

    _write(world, "sample_data", original)
    seg = _records(world, "lidarseg")
    seg_table = _write(world, "lidarseg", [{**r, "filename": "/etc/hostname"} for r in seg])
    ds = NuScenesSegDataset(world, VERSION, split="train")
    with pytest.raises(ValueError, match=re.escape(f"{seg_table}: record ")) as info:
        ds[0]
    assert "'/etc/hostname' resolves to" in str(info.value)


def test_a_split_file_line_outside_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "rellis"
    root.mkdir()
    (root / RELLIS3D.split_files["train"]).write_text("../outside/00000/scan.bin\n")
    msg = f"{root / RELLIS3D.split_files['train']}:1 scan = '../outside/00000/scan.bin'"
    with pytest.raises(ValueError, match=re.escape(msg)):
        LidarSegDataset(root, RELLIS3D, split="train")
    assert LidarSegDataset(root, RELLIS3D, split="train", allow_outside_root=True).frames


# ----------------------------------------------------------------------------- defect 12


def test_an_empty_split_names_the_split_and_the_file(
    world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], overrides_for: Any
) -> None:
    splits_file = world / "olivine_splits.json"
    splits = json.loads(splits_file.read_text())
    splits["train"] = []
    splits_file.write_text(json.dumps(splits))
    msg = f"split 'train': {splits_file} lists no scene for it (an empty list)"
    with pytest.raises(ValueError, match=re.escape(msg)):
        _dataset(world)
    for command in ("validate-config", "pretrain"):  # found at validation, before any work
        assert main([command, "demo", *overrides_for(world, tmp_path, "e")]) == 2
        assert f"  - data.train_split: {msg}" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()
