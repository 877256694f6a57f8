"""`olivine-train demo` end to end (shrunk to test size) and the SLidR-style method for a step."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest

from olivine_train.cli import main
from olivine_train.logging import read_jsonl


def test_demo_prints_table_and_paths(
    tiny_world: Path, tmp_path: Path, overrides_for: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    shrink = [o for o in overrides_for(tiny_world, tmp_path, "x") if "run." not in o]
    shrink = [o for o in shrink if not o.startswith("data.root")]
    code = main(
        [
            "demo",
            "--out",
            str(tmp_path / "demo"),
            "--world",
            str(tiny_world),
            *shrink,
            "optim.max_steps=3",
            "loss.vmf_warmup_steps=2",
            "demo.probe_epochs=2",
            "run.progress=false",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "randomly initialised" in out and "resnet18_dilated" in out
    rows = re.findall(r"mIoU \((\d+) classes\)\s+([0-9.]+)\s+([0-9.]+)", out)
    assert len(rows) == 1 and int(rows[0][0]) >= 2
    runs = tmp_path / "demo" / "runs"
    assert (runs / "pretrain" / "backbone.pt").is_file()
    assert f"tensorboard --logdir {runs / 'pretrain' / 'tb'}" in out
    train = read_jsonl(runs / "pretrain" / "metrics.jsonl", kind="train")
    assert train[-1]["loss/vmf"] != 0.0  # the scaled-down warm-up made the prior active
    for probe in ("probe_pretrained", "probe_random"):
        val = read_jsonl(runs / probe / "metrics.jsonl", kind="val")
        assert len(val) == 1 and math.isfinite(val[0]["miou"])


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
