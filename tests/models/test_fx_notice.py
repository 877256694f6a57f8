"""Every run used to start with torch.fx's ``is_fx_tracing will return true ...`` notice,
logged when spconv's ``SparseConvTensor`` (a torch.fx ``ProxyableClassMeta`` class) is first
constructed (issue 23, item 6). ``olivine_models._spconv.require_spconv`` filters that one notice.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

_FORWARD = """
import torch
from olivine_models import create_point_encoder

torch.manual_seed(0)
net = create_point_encoder("minkunet_tiny", in_channels=1).eval()
coords = torch.tensor([[0, 1, 2, 3], [0, 4, 5, 6], [0, 7, 1, 2]], dtype=torch.int32)
out = net(coords, torch.ones(3, 1), (16, 16, 16), 1)
print("features", tuple(out.shape))
"""

_OTHER_FX_LOG = """
import logging
from olivine_models._spconv import require_spconv

require_spconv()
logging.getLogger("torch.fx._symbolic_trace").warning("another fx message")
"""


def _run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "default"},
    )


def test_a_sparse_forward_logs_no_fx_tracing_notice() -> None:
    proc = _run(_FORWARD)
    assert proc.returncode == 0, proc.stderr
    assert "features (3, " in proc.stdout
    assert "is_fx_tracing" not in proc.stderr, proc.stderr


@pytest.mark.skipif(
    importlib.util.find_spec("spconv") is None,
    reason="spconv is not installed (e.g. the no_spconv session): the filter is installed where "
    "spconv is imported",
)
def test_the_filter_drops_only_that_notice() -> None:
    proc = _run(_OTHER_FX_LOG)
    assert proc.returncode == 0, proc.stderr
    assert "another fx message" in proc.stderr
