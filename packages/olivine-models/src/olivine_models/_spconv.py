"""Lazy, guarded import of ``spconv.pytorch`` and the CPU/GPU algorithm choice.

spconv-cu120 ships Linux x86-64 wheels only; elsewhere the import fails and we raise an
ImportError that says which build to install, or to use the PyTorch-only backend. The import is
deferred to the first use of a spconv backbone so that ``import olivine_models`` stays light.
"""

from __future__ import annotations

import logging
import warnings
from types import ModuleType
from typing import Any

import torch

_SPCONV_HINT = (
    "the spconv backend needs spconv: on this platform install `spconv` (CPU) or the spconv-cuXXX "
    "wheel matching your CUDA (e.g. `pip install spconv-cu120`); never install both. Or use "
    "backend='torch' / 'auto' (model.sparse_backend), the PyTorch-only backend: same weights."
)


class _FxTracingNotice(logging.Filter):
    """Drops torch's ``is_fx_tracing will return true for both fx.symbolic_trace and
    torch.export ...`` notice, and nothing else.

    spconv gives ``SparseConvTensor`` torch.fx's ``ProxyableClassMeta`` metaclass, whose
    ``__call__`` asks the deprecated ``torch.fx._symbolic_trace.is_fx_tracing()`` on every
    construction; that function logs the notice (a ``logging`` warning, not a
    ``warnings.warn``, so warning filters cannot catch it) the first time, i.e. at the first
    step of every run. It is advice to spconv's authors and says nothing to our users.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("is_fx_tracing will return true")


def _silence_fx_tracing_notice() -> None:
    """Install :class:`_FxTracingNotice` on the logger that emits it (once)."""
    logger = logging.getLogger("torch.fx._symbolic_trace")
    if not any(isinstance(f, _FxTracingNotice) for f in logger.filters):
        logger.addFilter(_FxTracingNotice())


def require_spconv() -> ModuleType:
    """Return the ``spconv.pytorch`` module or raise an ImportError with install instructions."""
    try:
        with warnings.catch_warnings():
            # spconv 2.3.6 uses the deprecated torch.cuda.amp decorators at import time.
            warnings.simplefilter("ignore", FutureWarning)
            import spconv.pytorch as spconv_pytorch
    except ImportError as exc:  # pragma: no cover - depends on the platform
        raise ImportError(f"{_SPCONV_HINT} (import error: {exc})") from exc
    _silence_fx_tracing_notice()  # spconv's SparseConvTensor triggers it (see the filter)
    return spconv_pytorch


def conv_algo_for(device: torch.device, gpu_algo: str = "MaskImplicitGemm") -> Any:
    """spconv ``ConvAlgo`` to use for tensors on ``device``.

    spconv's CPU path only implements ``ConvAlgo.Native``; on CUDA the implicit-GEMM algorithms are
    much faster. Weights use the same (KRSC) layout for every algorithm in spconv >= 2.2, so one
    state dict serves both.
    """
    spconv_pytorch = require_spconv()
    algo_enum = spconv_pytorch.ConvAlgo
    if device.type != "cuda":
        return algo_enum.Native
    try:
        return getattr(algo_enum, gpu_algo)
    except AttributeError as exc:
        known = [a for a in ("Native", "MaskImplicitGemm", "MaskSplitImplicitGemm")]
        raise ValueError(f"unknown spconv algorithm {gpu_algo!r}; known: {known}") from exc
