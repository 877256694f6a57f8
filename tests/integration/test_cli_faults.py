"""Faults through the real CLI (issue 14): each is one ``olivine-train: error:`` line naming the
file or field, a non-zero exit code and no traceback.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from olivine_train.cli import main


def _down_overrides(world: Path, out: Path, name: str) -> list[str]:
    return [
        f"data.root={world}",
        "data.version=v1.0-mini",
        "data.skip=1",
        "data.batch_size=2",
        "optim.epochs=1",
        "optim.max_steps=1",
        f"run.out_dir={out}",
        f"run.name={name}",
        "run.progress=false",
    ]


# ----------------------------------------------------------------------------- case 2


def test_plain_state_dict_of_another_model_is_refused(
    tiny_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from olivine_models import create_point_encoder

    plain = tmp_path / "tiny_state.pt"
    torch.save(create_point_encoder("minkunet_tiny").state_dict(), plain)  # no format, no name
    args = _down_overrides(tiny_world, tmp_path, "foreign") + [
        f"downstream.pretrained={plain}",
        "model.point_encoder=minkunet14",
    ]
    assert main(["finetune", "finetune_nuscenes_1pct", *args]) == 1
    err = capsys.readouterr().err
    first = err.splitlines()[0]
    assert first.startswith(f"olivine-train: error: ValueError: downstream.pretrained={plain} ")
    assert "no weight matches" in first and "num_batches_tracked" in first
    assert "Traceback" not in err
    assert not (tmp_path / "foreign" / "last.pt").exists()
