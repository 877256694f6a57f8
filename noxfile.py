"""Task runner for the OLIVINE monorepo: where tests, lint, format, typing, builds and demo run.

`nox -l` lists every session with its one-line description and tags; `nox` (no arguments) runs
the default set that CI runs (`.ci/run`, well under 25 minutes on 2 cores). `nox -s matrix` (or
`nox -t matrix`) runs the opt-in Python x torch matrix: `losses_isolated` on CPython 3.10-3.13 x
torch 2.13.0 / 2.14.1 and the whole suite on 3.12 (`tests-3.12`). Every session installs from
`testing/constraints.txt`, which pins torch and torchvision together so pip never swaps torch
behind our back; `testing/stack.py` says which Pythons get which builds. With uv on PATH,
`nox -fb uv -s matrix` installs through uv instead of pip (faster, hard-linked venvs).

Venvs: each session has its own venv under `.nox/`. Re-running a session reuses it when it exists
(`--reuse-venv=yes` is the default here); `nox --no-reuse-existing-virtualenvs` rebuilds them.
The matrix's losses-only venvs are fresh each time and deleted when their session ends.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "testing"))
import stack  # noqa: E402  (testing/stack.py: matrix and install plan, standard library only)

PACKAGES = stack.PACKAGES
SUITE = stack.SUITE  # the four packages, olivine-models with its [pretrained] extra
CONSTRAINTS = str(stack.CONSTRAINTS)
REPORTS = ROOT / ".nox" / "_reports"
TEST_DEPS = ("pytest", "scipy")  # versions: testing/constraints.txt
# Which local siblings each package's tests need installed next to it.
SIBLINGS = {
    "losses": ("losses",),
    "data": ("data",),
    "models": ("models",),
    "train": ("losses", "data", "models", "train"),
}
# Which test folders belong to which package.
TEST_DIRS = {
    "losses": ("tests/losses",),
    "data": ("tests/data", "tests/synthetic"),
    "models": ("tests/models",),
    "train": ("tests/train", "tests/integration"),
}
TORCH_MATRIX = stack.TORCH_MATRIX
ISOLATED_PYTHONS = stack.ISOLATED_PYTHONS
# The Python running nox (CI: python3 = 3.11): its losses_isolated sessions are in the default
# set; they take torch from this machine's disk (2.13.0 CPU, 2.14.1 CUDA build, no download).
HOST_PYTHON = f"{sys.version_info[0]}.{sys.version_info[1]}"
MATRIX_SESSIONS = [
    *(f"losses_isolated-{py}(torch='{t}')" for py in ISOLATED_PYTHONS for t in TORCH_MATRIX),
    "tests-3.12",
]

nox.options.sessions = [
    "lint",
    "format",
    "typecheck",
    "tests",
    f"losses_isolated-{HOST_PYTHON if HOST_PYTHON in ISOLATED_PYTHONS else '3.11'}",
    "build",
    # 2.5-5 min with its venv built (+3 min to build it) on 2 shared cores: default run < 25 min
    "no_spconv",
]
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True


def _expose_pyenv_interpreters() -> None:
    """Put `python3.X` for every matrix Python on PATH when pyenv has it but does not expose it.

    pyenv's shims answer `python3.12: command not found` unless that version is activated; nox
    would take the shim. Symlinks in `.nox/_python` to `$PYENV_ROOT/versions/3.12.*/bin/python3.12`
    (highest patch release) come first on PATH instead. Nothing changes where no pyenv exists.
    """
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    if not pyenv.is_dir():
        return
    links = ROOT / ".nox" / "_python"
    for version in sorted(set(ISOLATED_PYTHONS) | set(stack.FULL_STACK_PYTHONS)):
        found = sorted(
            glob.glob(str(pyenv / f"{version}.*" / "bin" / f"python{version}")),
            key=lambda p: [int(x) for x in Path(p).parents[1].name.split(".") if x.isdigit()],
        )
        if version == HOST_PYTHON:
            found = [sys.executable]
        if not found:
            continue
        links.mkdir(parents=True, exist_ok=True)
        link = links / f"python{version}"
        if link.is_symlink() and os.readlink(link) == found[-1]:
            continue
        link.unlink(missing_ok=True)
        link.symlink_to(found[-1])
    if links.is_dir() and str(links) not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = str(links) + os.pathsep + os.environ.get("PATH", "")


_expose_pyenv_interpreters()


def _session_python(session: nox.Session) -> str:
    """`"3.12"` for a session's venv (the running interpreter's version when it has none)."""
    return session.python if isinstance(session.python, str) else HOST_PYTHON


def _pip(session: nox.Session, *args: str) -> None:
    session.install("-c", CONSTRAINTS, *args)


def _install_local(session: nox.Session, names: tuple[str, ...], editable: bool = True) -> None:
    """Install local packages (`"models[pretrained]"` takes extras) pinned by the constraints.

    The pip commands come from `testing/stack.py` (on CPython >= 3.12 olivine-models goes in
    without its spconv-cu120 requirement, which has no wheel there, and with spconv-cu126).
    """
    for args in stack.install_plan(names, _session_python(session), editable=editable):
        session.install(*args)


def _pytest(session: nox.Session, name: str, *paths: str) -> None:
    """Run pytest; exit code 5 (nothing collected) counts as a failure on purpose."""
    REPORTS.mkdir(parents=True, exist_ok=True)
    report = REPORTS / f"{name}.xml"
    extra = session.posargs or ["-q"]
    session.run(
        "python",
        "-m",
        "pytest",
        *paths,
        f"--junitxml={report}",
        "-p",
        "no:cacheprovider",
        *extra,
        env={"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")},
    )


@nox.session
def tests(session: nox.Session) -> None:
    """Whole CPU suite, one venv, Python running nox (CI: 3.11): four packages (editable)."""
    _install_local(session, SUITE)
    _pip(session, *TEST_DEPS)
    _pytest(session, "tests", "tests", "-m", "not gpu")


@nox.session(name="tests-3.12", python="3.12", tags=["matrix"])
def tests_312(session: nox.Session) -> None:
    """Opt-in matrix: the whole CPU suite on CPython 3.12 (spconv-cu126; downloads torch)."""
    _install_local(session, SUITE)
    _pip(session, *TEST_DEPS)
    _pytest(session, "tests-3.12", "tests", "-m", "not gpu")


@nox.session(name="no_spconv")
def no_spconv(session: nox.Session) -> None:
    """Models, training, CLI and root tests with spconv NOT installed (PyTorch-only backend).

    The four packages go in editable without olivine-models' spconv requirement
    (``stack.install_plan(..., spconv=False)``); torch 2.14.1 + torchvision from the constraints.
    Tests that need spconv skip with a reason; every MinkUNet built with ``backend="auto"`` runs
    on ``olivine_models.point.sparse_torch``.
    """
    for args in stack.install_plan(SUITE, _session_python(session), spconv=False):
        session.install(*args)
    _pip(session, *TEST_DEPS)
    session.run(
        "python",
        "-c",
        "import importlib.util, sys; sys.exit('spconv is importable in the no_spconv venv' "
        "if importlib.util.find_spec('spconv') or importlib.util.find_spec('cumm') else 0)",
    )
    # Collected from `tests` (minus the folders that do not touch olivine-models): naming
    # tests/models on the command line would load its conftest.py before tests/integration imports
    # names from the root conftest. The root-level tests (layering, versions, GPU plan) come along.
    _pytest(
        session,
        "no_spconv",
        "tests",
        *(f"--ignore=tests/{d}" for d in ("losses", "data", "synthetic")),
        "-m",
        "not gpu",
    )


@nox.session(name="tests-losses")
def tests_losses(session: nox.Session) -> None:
    """olivine-losses tests with only olivine-losses installed (editable)."""
    _package_tests(session, "losses")


@nox.session(name="tests-data")
def tests_data(session: nox.Session) -> None:
    """olivine-data tests (readers, pairing, voxels, DCAS, synthetic world), olivine-data only."""
    _package_tests(session, "data")


@nox.session(name="tests-models")
def tests_models(session: nox.Session) -> None:
    """olivine-models tests (MinkUNet, teachers, heads, SAM labeler) with olivine-models only."""
    _package_tests(session, "models")


@nox.session(name="tests-train")
def tests_train(session: nox.Session) -> None:
    """olivine-train tests and CLI integration tests, with all siblings installed (editable)."""
    _package_tests(session, "train")


def _package_tests(session: nox.Session, name: str) -> None:
    _install_local(session, SIBLINGS[name])
    _pip(session, *TEST_DEPS)
    _pytest(session, f"tests-{name}", *TEST_DIRS[name], "-m", "not gpu")


@nox.session(python=ISOLATED_PYTHONS, reuse_venv=False, tags=["matrix"])
@nox.parametrize("torch", TORCH_MATRIX)
def losses_isolated(session: nox.Session, torch: str) -> None:
    """olivine-losses wheel alone in a fresh venv, per Python x torch; runs the losses tests.

    Asserts that the sibling packages are not importable and that the wheel's metadata requires
    torch and nothing else. The Python running nox (3.11 here) is in the default set; the other
    Pythons download a CUDA torch build from PyPI (several GB) and run in `nox -s matrix`.
    """
    # reuse_venv=False: a fresh venv every time, isolation is the point of this session.
    session.install(f"torch=={torch}")
    _pip(session, "build", *TEST_DEPS)
    with tempfile.TemporaryDirectory() as tmp:
        session.run(
            "python",
            "-m",
            "build",
            "--wheel",
            "--outdir",
            tmp,
            str(ROOT / "packages" / "olivine-losses"),
            silent=True,
        )
        wheels = list(Path(tmp).glob("olivine_losses-*.whl"))
        if len(wheels) != 1:
            session.error(f"expected one olivine-losses wheel in {tmp}, found {wheels}")
        session.install(str(wheels[0]))
    session.run("python", str(ROOT / "testing" / "check_isolated.py"), torch)
    # Run from a temporary directory so that nothing is imported from the source tree.
    _pytest(
        session,
        f"losses_isolated-{_session_python(session)}-{torch}",
        str(ROOT / "tests" / "losses"),
        "--rootdir",
        str(ROOT / "tests" / "losses"),
    )
    venv = Path(session.virtualenv.location)
    size = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file() and not f.is_symlink())
    session.log(f"venv {venv.name}: {size / 2**20:.0f} MiB")
    if _session_python(session) != HOST_PYTHON:
        # A CUDA torch venv is ~5 GB and is rebuilt on the next run anyway: free the disk now.
        shutil.rmtree(venv, ignore_errors=True)


@nox.session(python=False)
def matrix(session: nox.Session) -> None:
    """Opt-in: the Python x torch matrix (losses_isolated 3.10-3.13 x 2 torch, tests-3.12)."""
    for name in MATRIX_SESSIONS:
        session.notify(name)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff check, pinned version; rules in pyproject.toml (pyflakes, isort, docstrings, ...)."""
    _pip(session, "ruff")
    session.run("ruff", "check", ".", *session.posargs)


@nox.session(name="format")
def format_check(session: nox.Session) -> None:
    """Ruff format --check over the repository (Python files and code blocks in Markdown)."""
    _pip(session, "ruff")
    session.run("ruff", "format", "--check", ".", *session.posargs)


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy: --strict for olivine-losses, the project settings (pyproject.toml) for the others."""
    # The 0.9 GB CPU torch build is enough for type information.
    session.install("torch==2.13.0")
    _pip(session, "mypy>=1.8", "numpy<2", "types-PyYAML", "types-tqdm", "pillow")
    for name in PACKAGES:
        session.install("--no-deps", "-e", str(ROOT / "packages" / f"olivine-{name}"))
    session.run("mypy", "--strict", "packages/olivine-losses/src/olivine_losses")
    session.run(
        "mypy",
        "packages/olivine-data/src/olivine_data",
        "packages/olivine-models/src/olivine_models",
        "packages/olivine-train/src/olivine_train",
    )


@nox.session
def build(session: nox.Session) -> None:
    """Build sdist + wheel of all four packages and check their metadata (twine check)."""
    session.install("build", "twine")
    out = ROOT / "dist"
    shutil.rmtree(out, ignore_errors=True)
    for name in PACKAGES:
        session.run(
            "python",
            "-m",
            "build",
            "--outdir",
            str(out),
            str(ROOT / "packages" / f"olivine-{name}"),
            silent=True,
        )
    dists = sorted(p.name for p in out.iterdir())
    session.log("built: " + ", ".join(dists))
    if len(dists) != 2 * len(PACKAGES):
        session.error(f"expected {2 * len(PACKAGES)} distributions, got {dists}")
    session.run("twine", "check", "--strict", *[str(p) for p in sorted(out.iterdir())])
    session.run("python", str(ROOT / "testing" / "check_metadata.py"), str(out))


@nox.session
def demo(session: nox.Session) -> None:
    """The main job: `olivine-train demo` (synthetic world, OLIVINE pretrain, linear probes)."""
    _install_local(session, SUITE, editable=False)
    session.run("olivine-train", "demo", *session.posargs)


@nox.session
def benchmarks(session: nox.Session) -> None:
    """Performance benchmarks (`python -m benchmarks.perf.run_all`, from the repository root):
    prints the tables and writes benchmarks/results/perf.json; posargs go to run_all
    (e.g. `-- --skip-slow`, `-- --quick`).
    """
    _install_local(session, PACKAGES)
    _pip(session, "scipy")
    session.run("python", "-m", "benchmarks.perf.run_all", *session.posargs)


@nox.session(name="gpu")
def gpu(session: nox.Session) -> None:
    """Opt-in: GPU tests (pytest -m gpu) and GPU benchmarks; needs a CUDA machine."""
    _install_local(session, SUITE)
    _pip(session, *TEST_DEPS)
    session.run(
        "python",
        "-c",
        "import torch, sys; sys.exit(0 if torch.cuda.is_available() else "
        "'no CUDA device: the gpu session needs one')",
    )
    _pytest(session, "gpu", "tests", "-m", "gpu")
    session.run("python", "-m", "benchmarks.gpu.run_gpu", *session.posargs)


#: mmdetection3d 1.4.0 and what it needs to import (its other runtime requirements -- open3d,
#: lyft_dataset_sdk, trimesh, ... -- are not imported by the classes the export manifests use)
MMDET3D_STACK = ("mmengine==0.10.7", "mmdet==3.3.0", "mmcv-lite==2.1.0", "numba==0.68.1")


@nox.session(name="export_manifests")
def export_manifests(session: nox.Session) -> None:
    """Opt-in: regenerate tests/train/export_data from the real OpenPCDet / mmdetection3d classes.

    `nox -s export_manifests -- --openpcdet-git DIR` also refreshes the pinned OpenPCDet copies
    from a git dir of github.com/open-mmlab/OpenPCDet (see scripts/export_manifests.py).
    """
    _install_local(session, SUITE)
    _pip(session, *MMDET3D_STACK)
    session.install("--no-deps", "mmdet3d==1.4.0")
    session.run("python", "scripts/export_manifests.py", *session.posargs)
    session.run("git", "diff", "--stat", "--", "tests/train/export_data", external=True)


def summarize_reports() -> dict[str, int]:
    """Sum the JUnit reports written by the pytest sessions (used by .ci/run)."""
    import xml.etree.ElementTree as ET

    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for report in sorted(REPORTS.glob("*.xml")):
        root = ET.parse(report).getroot()
        suites = [root] if root.tag == "testsuite" else list(root)
        for suite in suites:
            for key in totals:
                totals[key] += int(suite.get(key, 0))
    return totals


if __name__ == "__main__":  # `python noxfile.py summary` prints the closing line for CI.
    t = summarize_reports()
    passed = t["tests"] - t["failures"] - t["errors"] - t["skipped"]
    print(json.dumps(t))
    print(f"tests: {passed} passed, {t['failures'] + t['errors']} failed, {t['skipped']} skipped")
