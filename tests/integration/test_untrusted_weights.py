"""Untrusted weights files (issue 31, defects 5, 7 and 8): a real pickle payload whose
``__reduce__`` would write a marker file, given to every load path, never runs and is refused with
one line naming the file and saying it holds Python objects that will not be loaded, never with
torch's advice to set ``weights_only=False``; ``validate-config`` finds it (exit 2), as it finds
an empty or a text file and a teacher given both ``model.image_weights`` and
``model.image_pretrained``, before any work (no run folder is left behind).
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from olivine_models import load_weights_only
from olivine_models.image.base import load_weights_file
from olivine_models.vfm import build_sam
from olivine_train.checkpoint import CheckpointError, load_backbone_state, load_checkpoint
from olivine_train.cli import main


class _Payload:
    """Unpickling this runs ``os.system("touch <marker>")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(params=["zip", "pickle"])
def payload(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, Path]:
    """(weights file holding the payload, marker file it would create)."""
    marker = tmp_path / "MARKER"
    path = tmp_path / f"evil_{request.param}.pt"
    if request.param == "zip":  # torch.save's format, a state dict with one poisoned entry
        torch.save({"conv.weight": torch.zeros(2), "x": _Payload(marker)}, path)
    else:  # a bare pickle (the legacy torch.save format is a pickle too)
        path.write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    return path, marker


def _error(err: str) -> str:
    assert "Traceback" not in err and "weights_only=False" not in err, err
    assert "weights_only` set to `False`" not in err, err
    errors = [ln for ln in err.splitlines() if "error:" in ln or ln.startswith("  - ")]
    return "\n".join(errors)


def test_the_library_load_paths_refuse_a_payload(payload: tuple[Path, Path]) -> None:
    path, marker = payload
    loaders = [
        lambda: load_weights_only(path, "weights"),
        lambda: load_weights_file(path, "image encoder resnet18"),
        lambda: build_sam("tiny", checkpoint=path),
        lambda: load_checkpoint(path),
        lambda: load_backbone_state(path),
    ]
    for load in loaders:
        with pytest.raises(ValueError) as info:  # UnsafeWeightsError, or CheckpointError
            load()
        msg = str(info.value)
        assert f"{path} holds Python objects" in msg and "will not be loaded" in msg
        assert "weights_only" not in msg and "\n" not in msg
    assert not marker.exists()


def test_validate_config_and_pretrain_refuse_a_payload_teacher_exit_2(
    payload: tuple[Path, Path],
    tiny_world: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    overrides_for: Any,
) -> None:
    path, marker = payload
    args = [*overrides_for(tiny_world, tmp_path, "t"), f"model.image_weights={path}"]
    for command in ("validate-config", "pretrain"):
        assert main([command, "demo", *args, "model.image_pretrained=false"]) == 2
        lines = _error(capsys.readouterr().err)
        assert f"- model.image_weights: {path} holds Python objects" in lines
    assert not marker.exists()
    assert not (tmp_path / "t").exists()  # refused before the run folder


def test_make_labels_refuses_a_payload_sam_checkpoint_exit_2(
    payload: tuple[Path, Path], tiny_world: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    path, marker = payload
    out = tmp_path / "labels"
    argv = ["make-labels", "--root", str(tiny_world), "--version", "v1.0-mini", "--out", str(out)]
    assert main([*argv, "--sam-variant", "tiny", "--sam-checkpoint", str(path)]) == 2
    assert f"- --sam-checkpoint: {path} holds Python objects" in _error(capsys.readouterr().err)
    assert not marker.exists() and not out.exists()


@pytest.mark.parametrize("content", [b"", b"hello, not weights\n"])
def test_an_empty_or_text_pretrained_file_is_a_clear_reason_and_no_debris(
    content: bytes,
    tiny_world: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    down_overrides_for: Any,
) -> None:
    bad = tmp_path / "backbone.pt"
    bad.write_bytes(content)
    args = down_overrides_for(tiny_world, tmp_path, "ft") + [f"downstream.pretrained={bad}"]
    assert main(["finetune", "finetune_nuscenes_1pct", *args]) == 2
    lines = _error(capsys.readouterr().err)
    why = "is empty (0 bytes)" if not content else "is not a PyTorch checkpoint"
    assert f"- downstream.pretrained: file {str(bad)!r} {why}" in lines
    assert not (tmp_path / "ft").exists()  # no config.yaml, metrics.jsonl, tb/, lock


def test_demo_with_image_weights_and_image_pretrained_is_a_conflict_at_validation(
    tiny_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], overrides_for: Any
) -> None:
    weights = tmp_path / "teacher.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, weights)
    args = [*overrides_for(tiny_world, tmp_path, "c"), f"model.image_weights={weights}"]
    assert main(["validate-config", "demo", *args, "model.image_pretrained=true"]) == 2
    lines = _error(capsys.readouterr().err)
    assert (
        f"- model.image_weights: {str(weights)!r} is set and so is model.image_pretrained" in lines
    )
    assert not (tmp_path / "c").exists()


def test_resume_from_a_payload_is_refused_at_validation_exit_2(
    payload: tuple[Path, Path],
    tiny_world: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    overrides_for: Any,
) -> None:
    path, marker = payload
    args = [*overrides_for(tiny_world, tmp_path, "r"), f"run.resume={path}"]
    assert main(["pretrain", "demo", *args]) == 2
    lines = _error(capsys.readouterr().err)
    assert f"- run.resume: {path} holds Python objects" in lines and "will not be loaded" in lines
    assert not marker.exists()
    assert not (tmp_path / "r").exists()


def test_a_run_that_fails_before_its_first_step_leaves_no_folder(
    payload: tuple[Path, Path], tmp_path: Path, tiny_world: Path, overrides_for: Any
) -> None:
    """Past validation (the library call), the checkpoint load refuses it; no debris."""
    from olivine_train.config import load_config
    from olivine_train.recipes.pretrain import run_pretrain

    path, marker = payload
    args = [*overrides_for(tiny_world, tmp_path, "r"), f"run.resume={path}"]
    cfg = load_config("demo", args, check_paths=False)
    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint: {path} holds Python")):
        run_pretrain(cfg)
    assert not marker.exists()
    assert not (tmp_path / "r").exists()  # no config.yaml, metrics.jsonl, tb/, lock


@pytest.mark.parametrize("content", [b"", b"hello, not weights\n"])
def test_the_load_path_names_why_an_empty_or_text_file_is_not_weights(
    content: bytes, tmp_path: Path
) -> None:
    bad = tmp_path / "backbone.pt"
    bad.write_bytes(content)
    why = "is empty (0 bytes)" if not content else "is not a PyTorch weights file: it starts with"
    with pytest.raises(
        CheckpointError, match="^" + re.escape(f"pretrained weights file: {bad} {why}")
    ):
        load_backbone_state(bad)
