"""Shared by tests/train/test_export*.py and scripts/export_manifests.py (loaded by file path).

* :func:`load_openpcdet` imports OpenPCDet's real ``VoxelBackBone8x`` from the pinned, unmodified
  copies of ``pcdet/models/backbones_3d/spconv_backbone.py`` and ``pcdet/utils/spconv_utils.py``
  in ``export_data/openpcdet/`` (Apache-2.0, see its PROVENANCE.md) without installing pcdet:
  the two files are executed as modules ``_olivine_pcdet.utils.spconv_utils`` and
  ``_olivine_pcdet.models.backbones_3d.spconv_backbone`` of an empty package skeleton, so the
  relative import ``from ...utils.spconv_utils import replace_feature, spconv`` resolves to the
  real file. Nothing else of pcdet (its compiled CUDA ops) is imported.
* :func:`seeded_state`: a deterministic toolkit-side state dict for given names and shapes.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

DATA = Path(__file__).resolve().parent / "export_data"
PCDET = DATA / "openpcdet"
PKG = "_olivine_pcdet"
#: the OpenPCDet files this module runs, by path in the OpenPCDet repository
PCDET_FILES = {
    "pcdet/utils/spconv_utils.py": f"{PKG}.utils.spconv_utils",
    "pcdet/models/backbones_3d/spconv_backbone.py": f"{PKG}.models.backbones_3d.spconv_backbone",
    "pcdet/models/detectors/detector3d_template.py": None,  # two methods are taken by AST
}


def vendored_path(repo_path: str, folder: Path = PCDET) -> Path:
    """Where the pinned copy of OpenPCDet's ``repo_path`` lives (``.py`` -> ``.py.txt``, so
    that linters and pytest leave third-party code alone).
    """
    return folder / (Path(repo_path).name + ".txt")


def _package(name: str) -> None:
    if name not in sys.modules:
        mod = types.ModuleType(name)
        mod.__path__ = []
        sys.modules[name] = mod


def load_openpcdet(folder: Path = PCDET) -> types.ModuleType:
    """The real ``spconv_backbone`` module of OpenPCDet (see the module docstring)."""
    done = sys.modules.get(PCDET_FILES["pcdet/models/backbones_3d/spconv_backbone.py"] or "")
    if done is not None:
        return done
    import spconv  # OpenPCDet's spconv_utils sets a global of spconv at import; restore it

    direct = spconv.constants.SPCONV_USE_DIRECT_TABLE
    for pkg in (PKG, f"{PKG}.utils", f"{PKG}.models", f"{PKG}.models.backbones_3d"):
        _package(pkg)
    module: types.ModuleType | None = None
    try:
        for repo_path, name in PCDET_FILES.items():
            if name is None:
                continue
            path = vendored_path(repo_path, folder)
            loader = importlib.machinery.SourceFileLoader(name, str(path))
            spec = importlib.util.spec_from_loader(name, loader)
            assert spec is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            loader.exec_module(module)
    finally:
        spconv.constants.SPCONV_USE_DIRECT_TABLE = direct
    assert module is not None
    return module


@contextmanager
def openpcdet_globals() -> Iterator[None]:
    """Run with the spconv setting OpenPCDet's ``spconv_utils`` makes at import
    (``SPCONV_USE_DIRECT_TABLE = False`` for spconv >= 2.2), restored afterwards.
    """
    import spconv

    old = spconv.constants.SPCONV_USE_DIRECT_TABLE
    spconv.constants.SPCONV_USE_DIRECT_TABLE = False
    try:
        yield
    finally:
        spconv.constants.SPCONV_USE_DIRECT_TABLE = old


def set_native_algo(module: torch.nn.Module) -> int:
    """spconv 2.3 on CPU implements only ``ConvAlgo.Native``; the real classes pick the GPU
    default. Set Native on every sparse convolution (weights are stored in one layout for all
    algorithms); return how many were set.
    """
    import spconv.pytorch as sp

    n = 0
    for m in module.modules():
        if isinstance(m, sp.conv.SparseConvolution):
            m.algo = sp.ConvAlgo.Native
            n += 1
    return n


def seeded_state(shapes: Mapping[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """A deterministic state dict: conv weights ~ N(0, 2 / fan_in), BatchNorm weight in
    [0.5, 1.5], bias and running mean ~ 0.1 N(0, 1), running var in [0.5, 1.5],
    ``num_batches_tracked`` 7 -- drawn in the order of ``shapes`` from one CPU generator.
    """
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for name, shape in shapes.items():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            out[name] = torch.tensor(7)
        elif len(shape) == 5:
            fan_in = shape[1] * shape[2] * shape[3] * shape[4]
            out[name] = torch.randn(shape, generator=gen) * (2.0 / fan_in) ** 0.5
        elif leaf in ("weight", "running_var"):
            out[name] = 0.5 + torch.rand(shape, generator=gen)
        else:
            out[name] = 0.1 * torch.randn(shape, generator=gen)
    return out


def checksums(state: Mapping[str, torch.Tensor]) -> dict[str, list[float]]:
    """Per tensor ``[sum, sum of squares]`` in float64 (detects a drifted random generator)."""
    return {k: [float(v.double().sum()), float(v.double().pow(2).sum())] for k, v in state.items()}


def tensor_table(state: Mapping[str, Any]) -> list[list[Any]]:
    """``[name, shape]`` rows of a state dict, in its order."""
    return [[k, list(v.shape)] for k, v in state.items()]


def manifest(name: str) -> dict[str, Any]:
    """A committed manifest (``export_data/<name>.json``)."""
    import json

    data: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return data


def outputs(name: str) -> dict[str, torch.Tensor]:
    """The fixed input and the real class's output of a manifest (``export_data/<name>.pt``)."""
    data: dict[str, torch.Tensor] = torch.load(DATA / f"{name}.pt", weights_only=True)
    return data


def write_backbone(path: Path, model_name: str, state: dict[str, torch.Tensor], cin: int) -> Path:
    """A ``backbone.pt`` (format ``olivine-backbone/1``) holding ``state``."""
    from olivine_train.checkpoint import BACKBONE_FORMAT, atomic_save

    payload = {
        "format": BACKBONE_FORMAT,
        "model_name": model_name,
        "in_channels": cin,
        "state_dict": state,
    }
    return atomic_save(payload, path)
