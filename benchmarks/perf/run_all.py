"""One command for every CPU performance figure of the project.

Runs each performance benchmark below as a module in its own subprocess (so that peak-memory
figures do not contaminate each other), collects their JSON, optionally times the demo, prints
every table and writes the merged JSON (with the machine and the code snapshot) to
``benchmarks/results/perf.json``::

    python -m benchmarks.perf.run_all [--only losses,data] [--skip-slow] [--quick] [--demo]
        [--out PATH]

Benchmarks, in this order (``--only`` names them):

* ``losses``: ``benchmarks.losses_bench`` (L_PPNCE + L_sup speed and peak memory);
* ``data``: ``benchmarks.data_bench`` (pairing, voxelisation, DCAS);
* ``models``: ``benchmarks.models_bench`` (MinkUNets, image teachers, SAM labelers);
* ``synthetic``: ``benchmarks.synthetic_bench`` (synthetic-world render and export);
* ``teacher``: ``benchmarks.teacher.forward_time`` (pretrained vs random teacher forward);
* ``sparse_backend`` (slow): ``benchmarks.sparse_backend_bench`` (torch vs spconv MinkUNet);
* ``step_profile`` (slow): ``benchmarks.step_profile`` (per-phase profile of a pretraining step,
  demo and paper shapes).

``--skip-slow`` leaves out the two marked slow (several minutes each on a 2-core machine).
``--quick`` runs every benchmark at its smallest settings (a smoke run: the code paths, not
reportable numbers). ``--demo`` also times ``olivine-train demo``.

Every figure is a ratio measured in the same run against a naive or reference implementation
(see each benchmark's docstring); absolute times depend on the machine, which is printed first.
Not here: the GPU benchmark (``benchmarks.gpu.run_gpu``, needs CUDA), and the studies of quality
rather than speed (``benchmarks.teacher.probe``, ``benchmarks.vfm.label_quality``,
``benchmarks.learning``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.harness import REPO_ROOT, atomic_json, environment, log, machine, run_module


@dataclass(frozen=True)
class Entry:
    """One benchmark: its module, its smallest settings (``--quick``) and whether it is slow."""

    module: str
    quick_args: tuple[str, ...]
    slow: bool = False


BENCHMARKS = {
    "losses": Entry("benchmarks.losses_bench", ("--quick",)),
    "data": Entry("benchmarks.data_bench", ("--repeat", "1", "--pairs", "10000")),
    "models": Entry(
        "benchmarks.models_bench",
        ("--repeats", "1", "--threads", "1", "--cases", "minkunet_tiny,resnet18_dilated"),
    ),
    "synthetic": Entry("benchmarks.synthetic_bench", ("--keyframes", "2", "--repeat", "1")),
    "teacher": Entry("benchmarks.teacher.forward_time", ("--repeats", "1")),
    "sparse_backend": Entry(
        "benchmarks.sparse_backend_bench",
        ("--repeats", "1", "--models", "minkunet_tiny", "--no-memory"),
        slow=True,
    ),
    "step_profile": Entry(
        "benchmarks.step_profile", ("--shapes", "demo", "--steps", "1", "--repeats", "1"), slow=True
    ),
}
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "perf.json"


def run_benchmark(name: str, entry: Entry, quick: bool) -> dict[str, object]:
    """Run one benchmark module with ``--json`` into a temporary file; its table is printed."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"{name}.json"
        args = (*(entry.quick_args if quick else ()), "--json", str(out))
        start = time.perf_counter()
        proc = run_module(entry.module, *args, capture=True, check=False)
        wall = time.perf_counter() - start
        print(proc.stdout)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            raise SystemExit(f"benchmark {entry.module} failed with exit code {proc.returncode}")
        result = json.loads(out.read_text())
    return {
        "module": entry.module,
        "args": list(args[:-2]),
        "wall_s": round(wall, 1),
        "results": result,
    }


def time_demo() -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        proc = subprocess.run(
            # the interpreter running this script, so the demo needs no console script on PATH
            [sys.executable, "-m", "olivine_train.cli", "demo", "--out", tmp],
            text=True,
            capture_output=True,
            cwd=REPO_ROOT,
        )
        wall = time.perf_counter() - start
    if proc.returncode != 0:
        print(proc.stdout[-4000:], proc.stderr[-4000:], file=sys.stderr)
        raise SystemExit("olivine-train demo failed")
    print(f"| demo (`olivine-train demo`) wall time | {wall:.1f} s | target < 300 s |")
    return {"wall_s": round(wall, 1), "target_s": 300}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated subset")
    parser.add_argument(
        "--skip-slow",
        action="store_true",
        help="leave out " + ", ".join(n for n, e in BENCHMARKS.items() if e.slow),
    )
    parser.add_argument("--quick", action="store_true", help="smallest settings: a smoke run")
    parser.add_argument("--demo", action="store_true", help="also time `olivine-train demo`")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}")
    args = parser.parse_args(argv)
    wanted = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(wanted) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {sorted(BENCHMARKS)}")
    if args.skip_slow:
        wanted = [n for n in wanted if not BENCHMARKS[n].slow]
    report: dict[str, object] = {
        "machine": machine(),
        "code": environment(),
        "quick": args.quick,
        "benchmarks": wanted,
    }
    print(f"machine: {report['machine']}\n")
    for name in wanted:
        log(f"{name}: python -m {BENCHMARKS[name].module}")
        print(f"## {name}\n")
        report[name] = run_benchmark(name, BENCHMARKS[name], args.quick)
    if args.demo:
        report["demo"] = time_demo()
    atomic_json(args.out, report)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
