"""benchmarks/ is a thin layer over the public APIs: no sys.path edits, no voxeliser or Runtime of
its own, files <= 400 lines, perf.run_all lists every CPU performance benchmark, and the harness's
``sparse_input`` is the package's voxeliser (checked against a naive first-point-per-voxel
reference).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks"


def _sources() -> list[Path]:
    return sorted(BENCH.rglob("*.py"))


def _python(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_benchmarks_reuse_package_code_and_stay_small() -> None:
    found = []
    for path in _sources():
        text = path.read_text()
        rel = path.relative_to(REPO)
        for needle, why in (
            ("sys.path", "edits sys.path (run it as a module: python -m benchmarks....)"),
            ("Runtime(", "builds a Runtime (use olivine_train.recipes.common.make_runtime)"),
            ("arctan2", "voxelises by hand (use harness.sparse_input / olivine_data.voxelize)"),
            ('"OLIVINE_SHARED_DATA"', "resolves the data path (use harness.shared_data)"),
            ("import run_v2", "imports v2's runner (history; use benchmarks.learning.common)"),
            ("fit_logistic(", "fits its own probe (use olivine_train.recipes.probe.run_probe)"),
        ):
            if needle in text and path.name != "harness.py":
                found.append(f"{rel}: {why}")
        lines = text.count("\n")
        if lines > 400:
            found.append(f"{rel}: {lines} lines > 400")
    assert not found, "\n".join(found)


def test_run_all_runs_every_cpu_performance_benchmark() -> None:
    out = _python(
        "import json; from benchmarks.perf.run_all import BENCHMARKS; "
        "print(json.dumps({k: [e.module, e.slow] for k, e in BENCHMARKS.items()}))"
    )
    listed = {module for module, _ in json.loads(out).values()}
    expected = {f"benchmarks.{p.stem}" for p in BENCH.glob("*_bench.py")}
    expected |= {"benchmarks.step_profile", "benchmarks.teacher.forward_time"}
    assert expected <= listed, expected - listed
    for module in listed:  # every entry is a module that exists
        assert (REPO / (module.replace(".", "/") + ".py")).is_file(), module
    doc = (BENCH / "perf" / "run_all.py").read_text().split('"""')[1]
    for module in listed:  # the docstring says what it runs
        assert f"``{module}``" in doc, module


def test_sparse_input_is_the_package_voxeliser_against_a_naive_reference() -> None:
    code = r"""
import json
import numpy as np
from benchmarks.harness import sparse_input

rng = np.random.default_rng(0)
n = 400
rho, phi = rng.uniform(1, 6, n), rng.uniform(-np.pi, np.pi, n)
x, y = rho * np.cos(phi), rho * np.sin(phi)
pts = np.stack([x, y, rng.uniform(-1, 1, n), rng.uniform(0, 1, n)], 1)
pts = np.concatenate([pts, pts[:50] + 1e-4]).astype(np.float32)  # repeats share voxels
coords, feats, shape = sparse_input(pts, batch=3)

# naive reference: the first point of each cylindrical 0.1 m x 1 deg x 0.1 m cell
first = {}
for i, (x, y, z, _) in enumerate(pts.astype(np.float64)):
    key = (int(np.floor(np.hypot(x, y) / 0.1)), int(np.floor(np.degrees(np.arctan2(y, x)))),
           int(np.floor(z / 0.1)))
    first.setdefault(key, i)
keys = np.array(sorted(first))
ref = keys - keys.min(0)
v = len(ref)
ok = [
    coords.shape == (3 * v, 4) and feats.shape == (3 * v, 1),
    coords.dtype == np.int32 and feats.dtype == np.float32,
    (coords[:, 0] == np.repeat(np.arange(3), v)).all(),
    all(sorted(map(tuple, coords[b * v:(b + 1) * v, 1:])) == sorted(map(tuple, ref))
        for b in range(3)),
    shape == tuple(int(s) for s in ref.max(0) + 1),
]
lookup = {tuple(k - keys.min(0)): first[tuple(k)] for k in keys}
ok.append(all(feats[r, 0] == pts[lookup[tuple(c[1:])], 3] for r, c in enumerate(coords)))
print(json.dumps([bool(x) for x in ok]))
"""
    assert json.loads(_python(code)) == [True] * 6
