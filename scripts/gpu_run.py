"""One command from a bare CUDA machine with Python to the GPU benchmark's table.

Creates an isolated venv, installs the four packages with the pinned CUDA stack of
``testing/constraints.txt`` (torch 2.14.1 + torchvision 0.29.1; spconv-cu120 2.3.6 on CPython
<= 3.11, spconv-cu126 2.3.8 on 3.12+, see ``testing/stack.py``), checks the GPU, then runs
``python -m benchmarks.gpu.run_gpu`` (from the repository root) with a budget that keeps the
whole command inside ``--deadline-s`` (default 600 s, install included), and writes the
benchmark JSON and markdown plus a ``gpu_run.json`` with the install timings. Needs no nox,
and nothing but the standard library to start.

    python3 scripts/gpu_run.py                          # the real run -> benchmarks/results/
    python3 scripts/gpu_run.py --dry-run                # print the plan, change nothing
    python3 scripts/gpu_run.py --device cpu --quick     # the provisioning + a CPU smoke run

Offline machines: ``--wheelhouse DIR`` installs from a folder of wheels only (``pip install
--no-index --find-links DIR``); ``--system-torch`` makes the venv see the machine's own torch and
torchvision (``--system-site-packages``) instead of installing the pinned 2.14.1 (a multi-GB
CUDA build). Wheels too large for one transfer can be
carried split (``split -b 60m X.whl X.whl.part``); the pieces are joined before the install.
``--reuse`` keeps an existing venv (a second run then starts in seconds).

Without spconv: ``--no-spconv`` installs the four packages without spconv/cumm and runs every
MinkUNet on olivine-models' PyTorch-only sparse backend (``run_gpu --sparse-backend torch``).
It is chosen automatically for an offline install from a ``--wheelhouse`` that holds no spconv
wheel. So an air-gapped machine with torch preinstalled (e.g. torch 2.11 + CUDA 13 on Python
3.12, where spconv publishes no wheel) runs with ``--system-torch --wheelhouse DIR`` and only the
four packages' wheels (plus whatever of their requirements the machine lacks) in ``DIR``. With
spconv installed, the benchmark still falls back to the torch backend if spconv does not import.

Exit codes: 0 done; 1 a benchmark section failed; 2 no usable GPU (or bad arguments);
3 the install failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "testing"))
import stack  # noqa: E402  (testing/stack.py: the pinned stack, standard library only)

RUN_GPU = "benchmarks.gpu.run_gpu"  # run as a module from ROOT (benchmarks/ is a package)
DEFAULT_OUT = ROOT / "benchmarks" / "results"
DEFAULT_VENV = Path(tempfile.gettempdir()) / "olivine-gpu-venv"
# What run_gpu.py needs besides the four packages (their own requirements cover the rest).
EXTRA = ("scipy",)
# Seconds kept back from the deadline for interpreter start-up, the GPU check and writing files.
MARGIN_S = 45.0
# run_gpu.py's own default total budget on a GPU (its sections: 90/75/110/120/120 s).
MAX_BENCH_S = 540.0
MIN_BENCH_S = 60.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV, help=f"default {DEFAULT_VENV}")
    p.add_argument(
        "--python", default=sys.executable, help="interpreter the venv is made from (default: this)"
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results folder ({DEFAULT_OUT})")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu (smoke run)")
    p.add_argument("--quick", action="store_true", help="run_gpu.py --quick (tiny sizes)")
    p.add_argument("--sections", default=None, help="run_gpu.py --sections (default: all)")
    p.add_argument(
        "--deadline-s",
        type=float,
        default=600.0,
        help="whole command, install included (default 600); the benchmark gets what is left",
    )
    p.add_argument("--wheelhouse", type=Path, default=None, help="install offline from here")
    p.add_argument(
        "--system-torch",
        action="store_true",
        help="use the machine's torch/torchvision (venv with --system-site-packages)",
    )
    p.add_argument("--reuse", action="store_true", help="keep an existing venv at --venv")
    p.add_argument(
        "--no-spconv",
        action="store_true",
        help="install no spconv; MinkUNet on the PyTorch-only backend (automatic where spconv "
        "has no wheel: see the module docstring)",
    )
    p.add_argument("--install-only", action="store_true", help="stop after the install")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    args = p.parse_args(argv)
    if args.deadline_s <= MARGIN_S + MIN_BENCH_S and not (args.install_only or args.dry_run):
        p.error(f"--deadline-s must leave room for the benchmark (> {MARGIN_S + MIN_BENCH_S:.0f})")
    if args.wheelhouse is not None and not args.dry_run and not args.wheelhouse.is_dir():
        p.error(f"--wheelhouse {args.wheelhouse} is not a folder")
    return args


def python_version(python: str) -> str:
    """``"3.12"`` for the interpreter ``python``."""
    out = subprocess.run(
        [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def venv_python(venv: Path) -> Path:
    """The venv's interpreter."""
    return venv / "bin" / "python"


def constraints_for(args: argparse.Namespace, work: Path) -> Path:
    """The constraints file; with ``--system-torch`` without the torch/torchvision pins."""
    if not args.system_torch:
        return stack.CONSTRAINTS
    kept = [
        line
        for line in stack.CONSTRAINTS.read_text().splitlines()
        if line.split("==")[0].strip() not in ("torch", "torchvision")
    ]
    path = work / "constraints-system-torch.txt"
    path.write_text("\n".join(kept) + "\n")
    return path


def join_parts(wheelhouse: Path) -> list[Path]:
    """Reassemble wheels carried in pieces (``split -b 60m X.whl X.whl.part``) in ``wheelhouse``.

    One file can be larger than what a single transfer carries (spconv-cu126 2.3.8's cp312
    wheel is 67 MiB); ``X.whl.partaa``, ``X.whl.partab``, ... become ``X.whl`` again.
    """
    joined: list[Path] = []
    groups: dict[Path, list[Path]] = {}
    for part in sorted(wheelhouse.glob("*.whl.part*")):
        groups.setdefault(part.with_name(part.name.split(".whl.part")[0] + ".whl"), []).append(part)
    for whl, parts in groups.items():
        if whl.exists():
            continue
        with open(whl, "wb") as out:
            for part in parts:
                out.write(part.read_bytes())
        joined.append(whl)
    return joined


def spconv_plan(args: argparse.Namespace) -> tuple[bool, str]:
    """Whether the install includes spconv, and why (one line for the plan and the report)."""
    if args.no_spconv:
        return False, "--no-spconv"
    if args.wheelhouse is not None and args.wheelhouse.is_dir():
        names = [p.name.lower() for p in args.wheelhouse.iterdir()]
        if not any(n.startswith("spconv") and ".whl" in n for n in names):
            return False, f"no spconv wheel in --wheelhouse {args.wheelhouse}"
    return True, "spconv from the pinned stack; torch backend if it does not import"


def pip_commands(
    args: argparse.Namespace, py: str, constraints: Path, spconv: bool = True
) -> list[list[str]]:
    """Every pip command of the install, in order (arguments after ``python -m pip install``)."""
    source = ["--no-index", "--find-links", str(args.wheelhouse)] if args.wheelhouse else []
    common = ["--disable-pip-version-check", "--no-input", "--progress-bar", "off", *source]
    cmds: list[list[str]] = []
    if not args.system_torch:
        # torch and torchvision in one command, pinned together: pip never swaps torch later.
        cmds.append([*common, "-c", str(constraints), "torch", "torchvision"])
    plan = stack.install_plan(
        stack.SUITE, py, editable=False, constraints=constraints, spconv=spconv
    )
    for step in plan:
        cmds.append([*common, *step])
    cmds.append([*common, "-c", str(constraints), *EXTRA])
    return cmds


def run(cmd: list[str], log: list[dict], **kw: object) -> float:
    """Run a command (echoed), record its wall time, raise on failure."""
    print("+ " + shlex.join(str(c) for c in cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, **kw)  # type: ignore[call-overload]
    dt = time.perf_counter() - t0
    log.append({"cmd": [str(c) for c in cmd], "s": round(dt, 1)})
    return dt


def du_mib(path: Path) -> float:
    """Disk use of a folder in MiB (apparent size of regular files)."""
    total = 0
    for p in path.rglob("*"):
        if p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    return total / 2**20


GPU_CHECK = """
import json, sys, torch
dev = sys.argv[1]
info = {"torch": torch.__version__, "cuda": torch.version.cuda,
        "available": torch.cuda.is_available()}
if info["available"]:
    info["card"] = torch.cuda.get_device_name(0)
    info["capability"] = list(torch.cuda.get_device_capability(0))
import olivine_losses, olivine_data, olivine_models, olivine_train  # noqa: F401
import numpy
info["numpy"] = numpy.__version__
from olivine_models.point.backends import resolve_sparse_backend
info["sparse_backend"] = resolve_sparse_backend(sys.argv[2])
if info["sparse_backend"] == "spconv":
    import spconv
    info["spconv"] = getattr(spconv, "__version__", "?")
print(json.dumps(info))
sys.exit(0 if info["available"] or not dev.startswith("cuda") else 2)
"""


def main(argv: list[str] | None = None) -> int:
    """Provision, check, benchmark; see the module docstring."""
    t_start = time.perf_counter()
    args = parse_args(argv)
    try:
        py = python_version(args.python)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"gpu_run.py: cannot run --python {args.python}: {exc}", file=sys.stderr)
        return 2
    report: dict = {
        "python": py,
        "venv": str(args.venv),
        "device": args.device,
        "system_torch": args.system_torch,
        "wheelhouse": str(args.wheelhouse) if args.wheelhouse else None,
        "steps": [],
    }
    with_spconv, why = spconv_plan(args)
    backend = "auto" if with_spconv else "torch"
    report["sparse_backend"] = backend
    report["sparse_backend_reason"] = why
    with tempfile.TemporaryDirectory(prefix="olivine-gpu-run-") as tmp:
        constraints = constraints_for(args, Path(tmp))
        cmds = pip_commands(args, py, constraints, spconv=with_spconv)
        vpy = venv_python(args.venv)
        if args.dry_run:
            print(f"# Python {py}; venv {args.venv}; deadline {args.deadline_s:.0f} s")
            print(f"# sparse backend: {backend} ({why})")
            venv_flags = " --system-site-packages" if args.system_torch else ""
            print(f"{args.python} -m venv{venv_flags} {args.venv}")
            for c in cmds:
                print(f"{vpy} -m pip install " + shlex.join(c))
            print(
                f"{vpy} -m {RUN_GPU} --device {args.device} --sparse-backend {backend} "
                "--json ... --budget-s ..."
            )
            return 0

        if args.device.startswith("cuda") and shutil.which("nvidia-smi") is None:
            print(
                "gpu_run.py: no nvidia-smi on PATH: this machine has no NVIDIA driver", flush=True
            )
            if not args.install_only:
                return 2
        if args.wheelhouse is not None:
            for whl in join_parts(args.wheelhouse):
                print(f"[gpu_run] joined {whl.name}", flush=True)
        try:
            if args.venv.exists() and not args.reuse:
                shutil.rmtree(args.venv)
            if not vpy.exists():
                flags = ["--system-site-packages"] if args.system_torch else []
                run([args.python, "-m", "venv", *flags, str(args.venv)], report["steps"])
            for c in cmds:
                run([str(vpy), "-m", "pip", "install", "-q", *c], report["steps"])
        except subprocess.CalledProcessError as exc:
            print(f"gpu_run.py: install failed ({exc})", file=sys.stderr, flush=True)
            return 3
        report["install_s"] = round(time.perf_counter() - t_start, 1)
        report["venv_mib"] = round(du_mib(args.venv))
        print(
            f"[gpu_run] install done in {report['install_s']:.0f} s; venv {report['venv_mib']} MiB",
            flush=True,
        )

    args.out.mkdir(parents=True, exist_ok=True)
    check = subprocess.run(
        [str(vpy), "-c", GPU_CHECK, args.device, backend],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    print(check.stdout.strip() or check.stderr.strip()[-2000:], flush=True)
    if check.returncode == 0 and check.stdout.strip():
        report["check"] = json.loads(check.stdout.strip().splitlines()[-1])
    _write(args.out / "gpu_run.json", report)
    if check.returncode != 0:
        print("gpu_run.py: the GPU/import check failed (above)", file=sys.stderr, flush=True)
        return 2 if check.returncode == 2 else 3
    if args.install_only:
        return 0

    left = args.deadline_s - (time.perf_counter() - t_start) - MARGIN_S
    budget = min(MAX_BENCH_S, left)
    if budget < MIN_BENCH_S:
        print(f"gpu_run.py: only {left:.0f} s left for the benchmark; stopping", file=sys.stderr)
        return 2
    suffix = "-quick" if args.quick else ""
    cmd = [
        str(vpy),
        "-m",
        RUN_GPU,
        "--device",
        args.device,
        "--sparse-backend",
        backend,
        "--budget-s",
        f"{budget:.0f}",
        "--json",
        str(args.out / f"gpu{suffix}.json"),
        "--markdown",
        str(args.out / f"gpu{suffix}.md"),
    ]
    if args.quick:
        cmd.append("--quick")
    if args.sections:
        cmd += ["--sections", args.sections]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    # run_gpu.py has its own watchdog at budget + 45 s; this is the last line of defence.
    proc = subprocess.run(cmd, env=env, cwd=ROOT, timeout=budget + MARGIN_S + 30)
    report["benchmark_s"] = round(time.perf_counter() - t0, 1)
    report["benchmark_rc"] = proc.returncode
    report["total_s"] = round(time.perf_counter() - t_start, 1)
    _write(args.out / "gpu_run.json", report)
    print(
        f"[gpu_run] total {report['total_s']:.0f} s (install {report['install_s']:.0f} s, "
        f"benchmark {report['benchmark_s']:.0f} s); results in {args.out}",
        flush=True,
    )
    return 1 if proc.returncode else 0


def _write(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
