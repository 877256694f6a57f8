"""The pinned stack and the test matrix: which Pythons, which torch, how the packages go in.

Standard library only: the noxfile and ``scripts/gpu_run.py`` (which starts on a bare Python)
import it. Versions themselves live in ``testing/constraints.txt``; this module holds what a
constraints file cannot say:

* spconv-cu120 2.3.6 ships wheels for CPython 3.7-3.11 only (PyPI file list of
  https://pypi.org/project/spconv-cu120/2.3.6/). On 3.12 and newer the stack takes
  spconv-cu126 2.3.8 (same ``spconv`` module, same API; the constraints pin it with a
  ``python_version`` marker). olivine-models declares ``spconv-cu120`` for every Python, so there
  it is installed with ``--no-deps`` and its other requirements are installed explicitly
  (:func:`install_plan`).
* numpy 1.26.4 (forced by nuscenes-devkit's ``numpy<2``) has no CPython 3.13 wheel, so only the
  losses-only venv runs on 3.13 (olivine-losses needs torch alone).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "testing" / "constraints.txt"
PACKAGES = ("losses", "data", "models", "train")

# Every CPython that both pinned torch releases ship wheels for and that this machine has.
ISOLATED_PYTHONS = ("3.10", "3.11", "3.12", "3.13")
# Where the whole pinned stack (numpy<2, nuscenes-devkit, spconv, torch + torchvision) installs.
FULL_STACK_PYTHONS = ("3.11", "3.12")
TORCH_MATRIX = ("2.13.0", "2.14.1")
# semantic-kitti-api declares ~300 MB of GUI dependencies that the code never imports: it goes in
# with --no-deps.
SKAPI = "semantic-kitti-api==0.1"
# spconv on CPython >= 3.12 (see the module docstring); pinned in testing/constraints.txt.
SPCONV_PY312 = "spconv-cu126"

_EXTRA = re.compile(r"^(?P<name>[a-z]+)(?P<extras>\[[a-z0-9_,-]+\])?$")


def parse_version(text: str) -> tuple[int, int]:
    """``"3.12"`` or ``"3.12.1"`` -> ``(3, 12)``."""
    major, minor = text.split(".")[:2]
    return int(major), int(minor)


def package_dir(name: str) -> Path:
    """``"models"`` -> ``packages/olivine-models``."""
    return ROOT / "packages" / f"olivine-{name}"


def models_requirements() -> list[str]:
    """olivine-models' declared requirements except spconv, plus the CPython >= 3.12 spconv."""
    text = (package_dir("models") / "pyproject.toml").read_text()
    if sys.version_info >= (3, 11):
        import tomllib

        deps = tomllib.loads(text)["project"]["dependencies"]
    else:  # pragma: no cover - the noxfile and gpu_run.py run on >= 3.11 here
        block = text.split("dependencies = [", 1)[1].split("]\n", 1)[0]
        deps = re.findall(r'^\s*"([^"]+)",', block, flags=re.M)
    kept = [d for d in deps if not d.lower().startswith("spconv")]
    return [*kept, SPCONV_PY312]


def install_plan(
    names: tuple[str, ...] | list[str],
    python: str,
    editable: bool = True,
    constraints: Path = CONSTRAINTS,
) -> list[list[str]]:
    """The ``pip install`` argument lists that install local packages on a given Python.

    ``names`` are package short names, optionally with extras: ``("losses", "models[pretrained]")``.
    Each inner list is one pip command's arguments (run them in order). Every command carries
    ``-c constraints`` so torch and torchvision stay pinned together.
    """
    py = parse_version(python)
    specs: list[tuple[str, str]] = []  # (short name, path + extras)
    for raw in names:
        m = _EXTRA.match(raw)
        if m is None:
            raise ValueError(f"not a package name: {raw!r}")
        specs.append((m["name"], str(package_dir(m["name"])) + (m["extras"] or "")))
    con = ["-c", str(constraints)]
    edit = ["-e"] if editable else []
    plan: list[list[str]] = []
    rest = specs
    if py >= (3, 12) and any(n == "models" for n, _ in specs):
        # olivine-models first, without its spconv-cu120 requirement (no wheel on >= 3.12);
        # the siblings then find it installed.
        models = [s for s in specs if s[0] == "models"]
        rest = [s for s in specs if s[0] != "models"]
        extras_reqs = _extras_requirements(models[0][1])
        plan.append([*con, *models_requirements(), *extras_reqs])
        plan.append([*con, "--no-deps", *edit, models[0][1]])
    if rest:
        args = [*con]
        for _, spec in rest:
            args += [*edit, spec]
        plan.append(args)
    if any(n in ("data", "train") for n, _ in specs):
        plan.append(["--no-deps", SKAPI])
    return plan


def _extras_requirements(spec: str) -> list[str]:
    """Requirements of the extras named in ``path[extra,...]`` (read from olivine-models)."""
    if "[" not in spec or sys.version_info < (3, 11):
        return []
    import tomllib

    wanted = spec.split("[", 1)[1].rstrip("]").split(",")
    project = tomllib.loads((package_dir("models") / "pyproject.toml").read_text())["project"]
    optional = project.get("optional-dependencies", {})
    return [r for e in wanted for r in optional.get(e.strip(), [])]
