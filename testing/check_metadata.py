"""Check the metadata of the built wheels (nox session ``build``).

Usage: python testing/check_metadata.py DIST_DIR
"""

from __future__ import annotations

import re
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
dist = Path(sys.argv[1])
problems: list[str] = []


def source_version(name: str) -> str:
    text = ROOT / "packages" / f"olivine-{name}" / "src" / f"olivine_{name}" / "_version.py"
    match = re.search(r'__version__\s*=\s*"([^"]+)"', text.read_text())
    if match is None:
        raise SystemExit(f"{text}: no __version__ string")
    return match.group(1)


def requirement_names(meta: object) -> set[str]:
    reqs = meta.get_all("Requires-Dist") or []  # type: ignore[attr-defined]
    return {
        re.split(r"[\s;<>=!~\[(]", r, maxsplit=1)[0].lower() for r in reqs if "extra ==" not in r
    }


expected_scripts = {"data": "olivine-data", "train": "olivine-train"}
for name in ("losses", "data", "models", "train"):
    wheels = list(dist.glob(f"olivine_{name}-*.whl"))
    if len(wheels) != 1:
        problems.append(f"olivine-{name}: expected one wheel in {dist}, found {wheels}")
        continue
    with zipfile.ZipFile(wheels[0]) as zf:
        info = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        meta = Parser().parsestr(zf.read(info[0]).decode())
        files = set(zf.namelist())
        entry = next((n for n in files if n.endswith("entry_points.txt")), None)
        scripts = zf.read(entry).decode() if entry else ""
    if meta["Version"] != source_version(name):
        problems.append(f"olivine-{name}: wheel version {meta['Version']} != _version.py")
    if f"olivine_{name}/py.typed" not in files:
        problems.append(f"olivine-{name}: py.typed missing from the wheel")
    if not meta.get_payload().strip():
        problems.append(f"olivine-{name}: empty long description (README)")
    names = requirement_names(meta)
    if name == "losses" and names != {"torch"}:
        problems.append(f"olivine-losses must depend on torch only, got {sorted(names)}")
    if name in ("data", "models") and names & {"olivine-train", "olivine-data", "olivine-models"}:
        problems.append(f"olivine-{name} must not depend on a sibling, got {sorted(names)}")
    if name == "train" and not {"olivine-losses", "olivine-data", "olivine-models"} <= names:
        problems.append(f"olivine-train must depend on its three siblings, got {sorted(names)}")
    if name in expected_scripts and expected_scripts[name] not in scripts:
        problems.append(f"olivine-{name}: console script {expected_scripts[name]} missing")
    print(f"olivine-{name} {meta['Version']}: requires {sorted(names)}")
if problems:
    sys.exit("metadata check failed:\n  - " + "\n  - ".join(problems))
print("metadata OK")
