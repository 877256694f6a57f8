"""Output-folder handling shared by the synthetic exports."""

from __future__ import annotations

import shutil
from pathlib import Path

__all__ = ["prepare_out_dir"]


def prepare_out_dir(root: Path, owned: tuple[str, ...], overwrite: bool) -> None:
    """Create ``root``; refuse a non-empty folder unless ``overwrite``, which first removes the
    entries an export writes (``owned``) so no stale file survives (other entries are kept).
    """
    if root.exists() and not root.is_dir():
        raise ValueError(f"out_dir: {root} exists and is not a folder")
    if root.is_dir() and any(root.iterdir()):
        if not overwrite:
            raise ValueError(
                f"out_dir: {root} is not empty; pass overwrite=True (CLI: --overwrite) to replace "
                "a previous export"
            )
        for name in owned:
            p = root / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    root.mkdir(parents=True, exist_ok=True)
