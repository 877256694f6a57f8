"""make-labels: resumable and shardable, no duplicate or missing image (tiny SAM, box mode)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from olivine_train.cli import main
from olivine_train.recipes.make_labels import list_camera_images, run_make_labels, shard_items


def test_shards_partition_the_work_list(tiny_world: Path) -> None:
    items = list_camera_images(tiny_world, "v1.0-mini", split="train")
    assert len(items) == len(set(items)) == 4 * 2  # 2 train scenes x 2 keyframes x 2 cameras
    shards = [shard_items(items, i, 3) for i in range(3)]
    flat = [it for s in shards for it in s]
    assert sorted(flat, key=str) == sorted(items, key=str) and len(flat) == len(items)
    with pytest.raises(ValueError, match="0 <= index < count"):
        shard_items(items, 3, 3)


def test_make_labels_resumes_and_shards(
    tiny_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"box": [4, 4, 60, 40], "class_id": 3, "score": 0.9}]))
    out = tmp_path / "labels"
    common = dict(
        root=str(tiny_world),
        version="v1.0-mini",
        split="train",
        scenes=None,
        cameras=None,
        out=str(out),
        mode="box",
        coarse_root=None,
        boxes_json=str(boxes),
        sam_variant="tiny",
        sam_checkpoint=None,
        vocabulary="seem17",
        device="cpu",
        progress=False,
    )
    # shard 0/2 "interrupted" after one image, then resumed
    first = run_make_labels(shard=(0, 2), limit=1, **common)  # type: ignore[arg-type]
    assert (first.in_shard, first.already_done, first.written) == (4, 0, 1)
    again = run_make_labels(shard=(0, 2), **common)  # type: ignore[arg-type]
    assert (again.already_done, again.written) == (1, 3)
    # the other shard through the real CLI
    code = main(
        [
            "make-labels",
            "--root",
            str(tiny_world),
            "--version",
            "v1.0-mini",
            "--split",
            "train",
            "--out",
            str(out),
            "--mode",
            "box",
            "--boxes-json",
            str(boxes),
            "--sam-variant",
            "tiny",
            "--shard",
            "1/2",
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    assert code == 0
    assert "4 written, 0 already done, 4 in shard, 8 total" in capsys.readouterr().out
    # a third pass finds everything done
    done = run_make_labels(shard=(0, 1), **common)  # type: ignore[arg-type]
    assert (done.total, done.already_done, done.written) == (8, 8, 0)
    items = list_camera_images(tiny_world, "v1.0-mini", split="train")
    pngs = sorted(out.glob("camseg/*/*.png"))
    expected = sorted(out / "camseg" / it.camera / (Path(it.name).stem + ".png") for it in items)
    assert pngs == expected
    assert not list(out.rglob("*.tmp*"))  # atomic writes leave no temporary files
    from olivine_data.labels import SEEM17, LabelStore

    store = LabelStore(out, SEEM17)
    lab = store.read(items[0].camera, items[0].name)
    assert lab.shape == (54, 96) and set(np.unique(lab)) <= {3, SEEM17.unlabelled_id}
