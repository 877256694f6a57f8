"""Each package has one version source, and every sibling range admits the sibling's version."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("losses", "data", "models", "train")


def version_of(name: str) -> Version:
    text = ROOT / "packages" / f"olivine-{name}" / "src" / f"olivine_{name}" / "_version.py"
    match = re.fullmatch(r'__version__ = "([^"]+)"\n', text.read_text())
    assert match, f"{text} must contain exactly one __version__ line"
    return Version(match.group(1))


def project(name: str) -> dict:  # type: ignore[type-arg]
    with open(ROOT / "packages" / f"olivine-{name}" / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["project"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", NAMES)
def test_single_version_source(name: str) -> None:
    meta = project(name)
    assert "version" not in meta and "version" in meta["dynamic"]
    version_of(name)


@pytest.mark.parametrize("name", NAMES)
def test_sibling_ranges_admit_current_versions(name: str) -> None:
    for raw in project(name).get("dependencies", []):
        req = Requirement(raw)
        if req.name.startswith("olivine-"):
            sibling = req.name.removeprefix("olivine-")
            assert str(req.specifier), f"olivine-{name}: {raw} must be a version range"
            assert req.specifier.contains(version_of(sibling)), (
                f"olivine-{name} requires {raw}, but olivine-{sibling} is {version_of(sibling)}"
            )


@pytest.mark.parametrize("name", NAMES)
def test_changelog_mentions_current_version(name: str) -> None:
    changelog = (ROOT / "packages" / f"olivine-{name}" / "CHANGELOG.md").read_text()
    assert f"## {version_of(name)}" in changelog
