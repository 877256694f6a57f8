"""The packages form a one-way house: losses <- (data, models) <- train. Checked on the source.

Every ``import`` / ``from ... import`` in every module of every package is parsed with ``ast``
(including imports inside functions), so a lazy import cannot sneak a forbidden edge in.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SIBLINGS = ("olivine_losses", "olivine_data", "olivine_models", "olivine_train")
FORBIDDEN = {
    "olivine_losses": {"olivine_data", "olivine_models", "olivine_train"},
    "olivine_data": {"olivine_models", "olivine_train"},
    "olivine_models": {"olivine_data", "olivine_train"},
    "olivine_train": set(),
}
# olivine-losses is installed alone: besides the standard library it may import torch only.
LOSSES_ALLOWED_THIRD_PARTY = {"torch"}


def imported_roots(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def package_modules(package: str) -> list[Path]:
    src = ROOT / "packages" / package.replace("_", "-") / "src" / package
    return sorted(src.rglob("*.py"))


def violations(package: str) -> list[str]:
    out = []
    for module in package_modules(package):
        for lineno, root in imported_roots(module):
            where = f"{module.relative_to(ROOT)}:{lineno}"
            if root in FORBIDDEN[package]:
                out.append(f"{where} imports {root}")
            if package == "olivine_losses" and root not in SIBLINGS:
                if root not in sys.stdlib_module_names and root not in LOSSES_ALLOWED_THIRD_PARTY:
                    out.append(f"{where} imports third-party {root} (olivine-losses: torch only)")
    return out


@pytest.mark.parametrize("package", SIBLINGS)
def test_package_has_modules(package: str) -> None:
    assert package_modules(package), f"no modules found for {package}"


@pytest.mark.parametrize("package", SIBLINGS)
def test_no_forbidden_import_edge(package: str) -> None:
    assert violations(package) == []


def test_checker_catches_a_planted_import(tmp_path: Path) -> None:
    planted = tmp_path / "plant.py"
    planted.write_text("def f():\n    from olivine_train.cli import main\n    import numpy\n")
    roots = [r for _, r in imported_roots(planted)]
    assert roots == ["olivine_train", "numpy"]
