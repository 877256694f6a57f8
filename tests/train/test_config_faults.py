"""Config values that used to pass validation and fail (or silently mislead) later (issue 14,
case 3): NaN/inf in any float field, unknown camera names, and a non-finite-loss message that
named a ``last.pt`` that did not exist.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
import torch

from olivine_train.config import Config, ConfigError, load_config
from olivine_train.recipes.common import NonFiniteLossError, check_finite


def _float_fields() -> list[tuple[str, bool]]:
    """Every (dotted field, is a list) whose type is float, float | None or list[float]."""
    out: list[tuple[str, bool]] = []
    for section in dataclasses.fields(Config):
        cls = typing.get_type_hints(Config)[section.name]
        if not dataclasses.is_dataclass(cls):
            continue
        for name, tp in typing.get_type_hints(cls).items():
            args = get_args(tp)
            if tp is float or (float in args and get_origin(tp) not in (list, dict)):
                out.append((f"{section.name}.{name}", False))
            elif get_origin(tp) is list and args == (float,):
                out.append((f"{section.name}.{name}", True))
    return out


FLOAT_FIELDS = _float_fields()


def test_the_schema_has_float_fields_to_check() -> None:
    names = {name for name, _ in FLOAT_FIELDS}
    assert {"optim.lr", "loss.temperature", "loss.ppnce_weight", "data.voxel_size"} <= names


@pytest.mark.parametrize(("field", "is_list"), FLOAT_FIELDS, ids=[f for f, _ in FLOAT_FIELDS])
@pytest.mark.parametrize("bad", ["nan", ".nan", "inf", "-.inf"])
def test_every_float_field_rejects_nan_and_inf(field: str, is_list: bool, bad: str) -> None:
    value = f"[{bad}, 1.0, 0.1]" if is_list else bad
    where = f"{field}[0]" if is_list else field
    with pytest.raises(ConfigError) as info:
        load_config("olivine_nuscenes", [f"{field}={value}"], check_paths=False)
    lines = [p for p in info.value.problems if p.startswith(f"{where}:")]
    assert lines and "expected a finite number" in lines[0], info.value.problems


def test_the_issue_examples_fail_at_validation() -> None:
    overrides = [
        "loss.ppnce_weight=nan",
        "optim.lr=inf",
        "loss.temperature=nan",
        "data.voxel_size=[.nan, 1.0, 0.1]",
        "data.cameras=[CAM_FOO, CAM_FRONT]",
    ]
    with pytest.raises(ConfigError) as info:
        load_config("olivine_nuscenes", overrides, check_paths=False)
    text = str(info.value)
    for where in ("loss.ppnce_weight", "optim.lr", "loss.temperature", "data.voxel_size[0]"):
        assert f"{where}: expected a finite number" in text
    assert "data.cameras[0]: unknown nuscenes camera 'CAM_FOO'" in text
    assert "5 problem(s)" in text  # one validate shows every problem


def test_cameras_are_checked_against_the_dataset() -> None:
    with pytest.raises(
        ConfigError,
        match=r"data.cameras\[1\]: unknown nuscenes camera 'CAM_FRNT'; did you mean 'CAM_FRONT'",
    ):
        load_config("demo", ["data.cameras=[CAM_BACK, CAM_FRNT]"], check_paths=False)
    with pytest.raises(ConfigError, match=r"data.cameras: each camera may appear once.*CAM_BACK"):
        load_config("demo", ["data.cameras=[CAM_BACK, CAM_BACK]"], check_paths=False)
    with pytest.raises(ConfigError, match=r"unknown kitti camera 'CAM_FRONT'.*known: image_2"):
        load_config("olivine_kitti", ["data.cameras=[CAM_FRONT]"], check_paths=False)
    cfg = load_config("demo", ["data.cameras=[CAM_FRONT_LEFT, CAM_BACK]"], check_paths=False)
    assert cfg.data.cameras == ["CAM_FRONT_LEFT", "CAM_BACK"]


def test_non_finite_loss_names_last_pt_only_if_it_exists(tmp_path: Path) -> None:
    parts: dict[str, Any] = {"ppnce": torch.tensor(float("nan")), "sup": torch.tensor(1.0)}
    with pytest.raises(NonFiniteLossError) as info:
        check_finite(2, parts, tmp_path)
    msg = str(info.value)
    assert "non-finite loss at step 2: ppnce=nan" in msg
    assert f"no checkpoint was written before it ({tmp_path / 'last.pt'} does not exist)" in msg
    assert "last good checkpoint" not in msg
    (tmp_path / "last.pt").write_bytes(b"x")
    with pytest.raises(NonFiniteLossError, match=r"the last good checkpoint is .*last\.pt"):
        check_finite(7, parts, tmp_path)


# ----------------------------------------------------------------------------- issue 23, item 4


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("data.image_size=[0,256]", "data.image_size[0]: must be > 0, got 0"),
        ("data.image_size=[224,-8]", "data.image_size[1]: must be > 0, got -8"),
        ("demo.image_size=[112,0]", "demo.image_size[1]: must be > 0, got 0"),
        ("model.image_input_size=[0,0]", "model.image_input_size[0]: must be > 0, got 0"),
    ],
)
def test_validate_config_rejects_non_positive_image_sizes(
    override: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from olivine_train.cli import main

    assert main(["validate-config", "demo", override, "--no-check-paths"]) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert "OK" not in err


def test_allow_changes_names_known_fields_only() -> None:
    load_config("demo", ["run.allow_changes=[optim.lr, loss]"], check_paths=False)
    with pytest.raises(ConfigError) as info:
        load_config("demo", ["run.allow_changes=[optim.lrr]"], check_paths=False)
    assert (
        "run.allow_changes[0]: unknown config field 'optim.lrr'; did you mean 'optim.lr'?"
        in str(info.value)
    )
