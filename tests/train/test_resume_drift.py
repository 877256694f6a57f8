"""What a resume may change (``olivine_train.config.drift``, issue 23): the comparison itself.
The end-to-end refusal through the CLI is in tests/integration/test_run_reliability.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from olivine_train.config import (
    NEUTRAL_FIELDS,
    Config,
    ConfigChange,
    ResumeConfigError,
    check_resume_config,
    config_changes,
    config_to_dict,
    load_config,
)


def _load(*overrides: str) -> Config:
    return load_config("demo", list(overrides), check_paths=False)


def _stored(*overrides: str) -> dict[str, Any]:
    return config_to_dict(_load(*overrides))


def test_neutral_fields_pass_and_result_fields_are_listed() -> None:
    stored = _stored()
    new = load_config(
        "demo",
        ["run.log_every=7", "data.num_workers=3", "run.num_threads=1", "run.name=elsewhere"],
        check_paths=False,
    )
    assert {c.field for c in config_changes(stored, new)} <= NEUTRAL_FIELDS
    assert check_resume_config(stored, new, "last.pt") == []

    new = load_config("demo", ["optim.lr=0.3", "run.seed=5", "run.log_every=7"], check_paths=False)
    with pytest.raises(ResumeConfigError) as info:
        check_resume_config(stored, new, "runs/x/last.pt")
    assert [c.field for c in info.value.changes] == ["optim.lr", "run.seed"]
    assert str(info.value).startswith("runs/x/last.pt: refusing to resume: ")
    assert "run.allow_changes=[optim.lr,run.seed]" in str(info.value)


def test_allow_changes_takes_fields_and_sections() -> None:
    stored = _stored()
    args = ["optim.lr=0.3", "optim.momentum=0.5", "loss.temperature=0.2"]
    new = _load(*args, "run.allow_changes=[optim, loss.temperature]")
    accepted = check_resume_config(stored, new, "last.pt")
    assert [c.field for c in accepted] == ["loss.temperature", "optim.lr", "optim.momentum"]
    partial = load_config("demo", [*args, "run.allow_changes=[optim.lr]"], check_paths=False)
    with pytest.raises(ResumeConfigError) as info:
        check_resume_config(stored, partial, "last.pt")
    assert [c.field for c in info.value.changes] == ["loss.temperature", "optim.momentum"]


def test_a_field_missing_from_an_older_checkpoint_counts_with_its_default() -> None:
    stored = _stored()
    del stored["run"]["allow_changes"]  # written before the field existed
    del stored["loss"]["ignore_unlabelled"]  # default False
    assert config_changes(stored, load_config("demo", check_paths=False)) == []
    changed = load_config("demo", ["loss.ignore_unlabelled=true"], check_paths=False)
    assert config_changes(stored, changed) == [ConfigChange("loss.ignore_unlabelled", False, True)]
    assert config_changes(_stored("optim.lr=1"), _load("optim.lr=1.0")) == []
