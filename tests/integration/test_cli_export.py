"""``olivine-train export`` through the real CLI, on a real (one-step) pretraining run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from olivine_train.checkpoint import load_backbone_state
from olivine_train.cli import main
from olivine_train.export.layouts import minkunet_layout, mmdet3d_minkunet_shapes


@pytest.fixture(scope="module")
def run_dir(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory, overrides_for: Any) -> Path:
    out = tmp_path_factory.mktemp("runs")
    code = main(["pretrain", "demo", *overrides_for(tiny_world, out, "x"), "optim.max_steps=1"])
    assert code == 0
    return out / "x"


def test_export_run_folder_to_mmdet3d(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mm" / "minkunet.pth"
    assert main(["export", str(run_dir), "--to", "mmdet3d", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    state, name = load_backbone_state(run_dir / "backbone.pt")
    assert name == "minkunet_tiny"
    sd = torch.load(out, weights_only=True)["state_dict"]
    layout = minkunet_layout({k: tuple(v.shape) for k, v in state.items()})
    expected = mmdet3d_minkunet_shapes(layout)
    assert [(k[9:], tuple(v.shape)) for k, v in sd.items()] == list(expected.items())
    assert torch.equal(sd["backbone.conv_input.0.0.weight"], state["conv0p1s1.weight"])
    assert f"mapped {len(state)} tensors" in text and "added    conv_input.1.*" in text
    assert f"load_from={out}" in text and "left out: nothing" in text


def test_export_last_pt_reports_the_heads(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m.pth"
    assert main(["export", str(run_dir / "last.pt"), "--to", "mmdet3d", "-o", str(out), "-v"]) == 0
    text = capsys.readouterr().out
    left = [line for line in text.splitlines() if line.startswith("left out")]
    assert len(left) == 1 and "point_pp.*" in left[0] and "outside the point encoder" in left[0]
    assert "conv0p1s1.weight -> backbone.conv_input.0.0.weight" in text  # -v lists every pair


def test_wrong_kind_is_one_line_and_exit_1(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.pth"
    assert main(["export", str(run_dir), "--to", "openpcdet", "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--to openpcdet exports a VoxelNet" in err[0]
    assert "minkunet_tiny" in err[0] and not out.exists()
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["export", str(tmp_path / "notes.txt"), "--to", "mmdet3d", "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a pretrained backbone" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
