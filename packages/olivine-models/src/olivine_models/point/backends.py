"""Which sparse-convolution backend a MinkUNet runs on: spconv or the PyTorch-only one.

``"spconv"`` uses spconv 2.x (Yan et al., SECOND, Sensors 2018; github.com/traveller59/spconv),
imported on first use (~7 s). ``"torch"`` uses :mod:`olivine_models.point.sparse_torch`, built
from PyTorch operations only, which runs wherever torch runs (any CUDA version, CPU, MPS) and
never imports spconv. ``"auto"`` takes spconv when it is installed and imports, else torch, and
logs which one (logger ``olivine_models``). Both backends share one state-dict layout.
"""

from __future__ import annotations

import importlib.util
import logging
from types import ModuleType
from typing import Any, Literal

import torch
from torch import nn

__all__ = [
    "SPARSE_BACKENDS",
    "SparseBackend",
    "resolve_sparse_backend",
    "sparse_layers",
    "spconv_available",
    "switch_spconv_algo",
]

SparseBackend = Literal["spconv", "torch"]

SPARSE_BACKENDS: tuple[str, ...] = ("auto", "spconv", "torch")
"""Accepted values of ``backend=`` / the ``model.sparse_backend`` config key."""

_log = logging.getLogger("olivine_models")


def spconv_available() -> bool:
    """Whether a ``spconv`` distribution is installed (a file lookup; nothing is imported)."""
    return importlib.util.find_spec("spconv") is not None


def resolve_sparse_backend(backend: str) -> SparseBackend:
    """Map ``"auto" | "spconv" | "torch"`` to the backend that will run.

    ``"auto"`` imports spconv when it is installed (so an installed but broken spconv, e.g. a
    CUDA-library mismatch, falls back to torch) and logs one INFO line saying which backend it
    chose and why.

    Raises:
        ValueError: ``backend`` is not one of :data:`SPARSE_BACKENDS`.
        ImportError: ``"spconv"`` was asked for and spconv does not import.
    """
    if backend not in SPARSE_BACKENDS:
        raise ValueError(
            f"unknown sparse backend {backend!r}; allowed: {', '.join(SPARSE_BACKENDS)}"
        )
    if backend == "torch":
        return "torch"
    if backend == "spconv":
        from olivine_models._spconv import require_spconv

        require_spconv()
        return "spconv"
    if not spconv_available():
        _log.info("sparse backend: torch (auto; spconv is not installed)")
        return "torch"
    from olivine_models._spconv import require_spconv

    try:
        require_spconv()
    except (ImportError, OSError, RuntimeError) as exc:
        _log.info("sparse backend: torch (auto; spconv is installed but does not import: %s)", exc)
        return "torch"
    _log.info("sparse backend: spconv (auto)")
    return "spconv"


def sparse_layers(backend: str) -> tuple[SparseBackend, ModuleType, dict[str, Any]]:
    """Resolve ``backend`` and return ``(backend, layer module, extra layer kwargs)``.

    The layer module has ``SubMConv3d``, ``SparseConv3d``, ``SparseInverseConv3d`` and
    ``SparseConvTensor``: ``spconv.pytorch`` (kwargs ``{"algo": ConvAlgo.Native}``: the CPU
    algorithm, switched per input device by :func:`switch_spconv_algo`) or
    :mod:`olivine_models.point.sparse_torch` (no kwargs).
    """
    chosen = resolve_sparse_backend(backend)
    if chosen == "spconv":
        from olivine_models._spconv import require_spconv

        spconv = require_spconv()
        return chosen, spconv, {"algo": spconv.ConvAlgo.Native}
    from olivine_models.point import sparse_torch

    return chosen, sparse_torch, {}


def switch_spconv_algo(model: nn.Module, device: torch.device, gpu_algo: str, current: Any) -> Any:
    """Set the spconv algorithm for inputs on ``device`` on every spconv layer of ``model``
    (Native on CPU, ``gpu_algo`` on CUDA; one state-dict layout for all); returns it.
    """
    from olivine_models._spconv import conv_algo_for, require_spconv

    algo = conv_algo_for(device, gpu_algo)
    if algo == current:
        return current
    conv_type = require_spconv().conv.SparseConvolution
    for module in model.modules():
        if isinstance(module, conv_type):
            module.algo = algo
    return algo
