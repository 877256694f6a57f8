"""Checks run inside the isolated olivine-losses venv (nox session ``losses_isolated``).

Usage: python testing/check_isolated.py TORCH_VERSION
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import sys
from pathlib import Path

want_torch = sys.argv[1]

import torch  # noqa: E402

import olivine_losses  # noqa: E402

problems: list[str] = []
if not torch.__version__.startswith(want_torch):
    problems.append(f"torch {torch.__version__} installed, the matrix asked for {want_torch}")
for sibling in ("olivine_data", "olivine_models", "olivine_train"):
    try:
        importlib.import_module(sibling)
    except ImportError:
        continue
    problems.append(f"{sibling} is importable in the isolated olivine-losses venv")
requires = md.requires("olivine-losses") or []
names = sorted(
    {
        r.split(";")[0].split("[")[0].strip().split(" ")[0].rstrip("<>=!~.0123456789,")
        for r in requires
    }
)
if names != ["torch"]:
    problems.append(f"olivine-losses must require torch only, its metadata says {requires}")
where = Path(olivine_losses.__file__).resolve()
if "site-packages" not in where.parts:
    problems.append(f"olivine_losses imported from {where}, not from the installed wheel")
if md.version("olivine-losses") != olivine_losses.__version__:
    problems.append("wheel metadata version differs from olivine_losses.__version__")
if problems:
    sys.exit("isolated olivine-losses check failed:\n  - " + "\n  - ".join(problems))
print(
    f"isolated olivine-losses {olivine_losses.__version__} OK: torch {torch.__version__}, "
    f"requires {requires}, imported from {where.parent}"
)
