"""benchmarks.gpu.run_gpu: the CPU smoke run covers every section; no CUDA -> exit code 2."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
MODULE = "benchmarks.gpu.run_gpu"  # run as a module from the repository root
SECTIONS = ("losses", "minkunet", "pretrain_demo", "pretrain_minkunet34c", "models_gpu")
# measured quantities that must be finite and > 0 in every row that ran
MEASURES = {
    "losses": ("median_ms", "min_ms", "peak_mib", "x_naive"),
    "minkunet": ("median_s", "min_s", "scans_per_s", "peak_mib"),
    "pretrain_demo": ("steps_per_s", "scans_per_s", "median_step_s", "peak_mib", "wall_s"),
    "pretrain_minkunet34c": ("steps_per_s", "scans_per_s", "median_step_s", "peak_mib", "wall_s"),
}


def _positive(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_cpu_quick_run_covers_every_section(tmp_path: Path, shared_data: Path) -> None:
    out = tmp_path / "gpu.json"
    env = {**os.environ, "OLIVINE_SHARED_DATA": str(shared_data), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            MODULE,
            "--device",
            "cpu",
            "--quick",
            "--json",
            str(out),
            "--work-dir",
            str(tmp_path / "work"),
            "--budget-s",
            "600",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["quick"] is True and result["env"]["device"] == "cpu"
    assert list(result["sections"]) == list(SECTIONS)
    for name, keys in MEASURES.items():
        sec = result["sections"][name]
        # "partial": a loaded CPU spent a section's budget and fewer repeats ran (>= 1 each)
        assert sec["status"] in ("ok", "partial"), (name, sec)
        ran = [r for r in sec["rows"] if "unsupported" not in r]
        assert ran, (name, sec)
        for row in ran:
            for key in keys:
                assert _positive(row.get(key)), (name, key, row)
    # every loss variant at both sizes and dtypes, the naive reference included
    losses = result["sections"]["losses"]["rows"]
    cells = {(r["M"], r["dtype"], r["variant"]) for r in losses}
    sizes = result["sections"]["losses"]["config"]["sizes"]
    for dtype in ("fp32", "bf16"):
        for variant in ("floor", "dense", "chunked", "naive"):
            assert (sizes[0], dtype, variant) in cells
        for variant in ("dense", "chunked", "naive"):
            assert (sizes[1], dtype, variant) in cells
    assert {r["variant"] for r in losses if r["x_naive"] == 1.0} == {"naive"}
    mink = result["sections"]["minkunet"]["rows"]
    assert mink[0]["precision"] == "fp32" and mink[0]["batch"] == 2
    # the PyTorch-only sparse backend is always measured (alone when spconv is absent), with bf16
    torch_rows = {
        r["precision"] for r in mink if r["backend"] == "torch" and "unsupported" not in r
    }
    assert torch_rows == {"fp32", "bf16 autocast"}, mink
    assert result["env"]["sparse_backend"] == (
        "spconv" if importlib.util.find_spec("spconv") else "torch"
    )
    for name in ("pretrain_demo", "pretrain_minkunet34c"):
        row = result["sections"][name]["rows"][0]
        assert row["steps"] >= 2 and row["precision"] == "fp32"
        assert math.isclose(row["scans_per_s"], row["steps_per_s"] * row["batch"])
    assert result["sections"]["pretrain_minkunet34c"]["rows"][0]["student"] == "minkunet34c"
    # models_gpu.py is CUDA-only: on CPU only its API check runs
    mg = result["sections"]["models_gpu"]
    assert mg["status"] == "skipped" and mg["api_check"] == "ok"
    # the markdown table is printed
    assert "### GPU benchmarks: CPU" in proc.stdout
    assert "| M | dtype | variant |" in proc.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA exit path")
def test_default_invocation_without_cuda_exits_2(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    proc = subprocess.run(
        [sys.executable, "-m", MODULE, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no CUDA device available" in proc.stderr
    assert "--device cpu --quick" in proc.stderr
    assert not out.exists()
