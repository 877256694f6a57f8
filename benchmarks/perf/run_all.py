"""One command for every performance figure of the project.

Runs each package benchmark (``benchmarks/*_bench.py``) in its own subprocess (so peak-memory
figures do not contaminate each other), collects their JSON, optionally times the demo, prints every
table and writes the merged JSON to ``benchmarks/results/perf.json``.

    python benchmarks/perf/run_all.py [--only losses,data] [--demo] [--out PATH]

Every figure is a ratio measured in the same run against a naive or reference implementation
(see each script's docstring); absolute times depend on the machine, which is printed first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = {
    "losses": ROOT / "benchmarks" / "losses_bench.py",
    "data": ROOT / "benchmarks" / "data_bench.py",
    "models": ROOT / "benchmarks" / "models_bench.py",
    "synthetic": ROOT / "benchmarks" / "synthetic_bench.py",
}


def machine() -> dict[str, object]:
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def run_script(name: str, path: Path) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"{name}.json"
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(path), "--json", str(out)],
            text=True,
            capture_output=True,
            cwd=ROOT,
        )
        wall = time.perf_counter() - start
        print(proc.stdout)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            raise SystemExit(f"benchmark {path.name} failed with exit code {proc.returncode}")
        result = json.loads(out.read_text())
    return {"wall_s": round(wall, 1), "results": result}


def time_demo() -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        proc = subprocess.run(
            # the interpreter running this script, so the demo needs no console script on PATH
            [sys.executable, "-m", "olivine_train.cli", "demo", "--out", tmp],
            text=True,
            capture_output=True,
            cwd=ROOT,
        )
        wall = time.perf_counter() - start
    if proc.returncode != 0:
        print(proc.stdout[-4000:], proc.stderr[-4000:], file=sys.stderr)
        raise SystemExit("olivine-train demo failed")
    print(f"| demo (`olivine-train demo`) wall time | {wall:.1f} s | target < 300 s |")
    return {"wall_s": round(wall, 1), "target_s": 300}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SCRIPTS), help="comma-separated subset")
    parser.add_argument("--demo", action="store_true", help="also time `olivine-train demo`")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "perf.json")
    args = parser.parse_args(argv)
    wanted = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(wanted) - set(SCRIPTS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {sorted(SCRIPTS)}")
    report: dict[str, object] = {"machine": machine()}
    print(f"machine: {report['machine']}\n")
    for name in wanted:
        print(f"## {name}\n")
        report[name] = run_script(name, SCRIPTS[name])
    if args.demo:
        report["demo"] = time_demo()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, args.out)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
