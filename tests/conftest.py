"""Shared test fixtures.

Real dataset fragments live outside the repository (non-commercial licences): by default in
``../shared/data`` next to the repository root, or wherever ``OLIVINE_SHARED_DATA`` points.
When ``CI=true`` and the data is missing, tests that need it fail instead of skipping.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path:
    return Path(os.environ.get("OLIVINE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of the real data fragments (see ../shared/data/README.md)."""
    root = shared_data_root()
    if not (root / "README.md").is_file():
        msg = f"real test data not found at {root} (set OLIVINE_SHARED_DATA)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return root
