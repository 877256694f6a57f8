"""Import ``mmdet3d.models`` without mmcv's compiled operators (for export_manifests.py).

mmcv-lite 2.1.0 has no compiled extension, and mmcv 2.1.0 (with it) has no wheel for this
torch. ``mmdet3d.models`` (and mmdet's modules it pulls in) import names from ``mmcv.ops`` and
load ``mmcv._ext`` at import time, for detection heads, voxelisation and point ops. None of them
is on the path of ``SparseEncoder`` / ``MinkUNetBackbone`` construction, state-dict loading or
forward with ``sparseconv_backend='spconv'`` and spconv 2 installed: those use spconv's
``SubMConv3d``/``SparseConv3d``/``SparseInverseConv3d``/``SparseSequential`` (mmdet3d registers
them in ``models/layers/spconv``), torch's BatchNorm1d and ReLU, mmcv.cnn's builders (pure
Python in mmcv-lite) and mmdet's ``BasicBlock``.

:func:`install` puts a finder first on ``sys.meta_path`` that serves ``mmcv.ops``, its
submodules and ``mmcv._ext`` as empty modules; every attribute asked of them becomes a class
that raises ``RuntimeError`` when instantiated or called, and its name is recorded in
:data:`REQUESTED`. So an import succeeds, and any use of a compiled op -- construction, load or
forward -- fails loudly instead of being simulated. The manifest records REQUESTED.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from typing import Any

REQUESTED: set[str] = set()
_SERVED = ("mmcv.ops", "mmcv._ext")


class CompiledOpPlaceholder:
    """Stands for a compiled mmcv op; using it raises."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError(
            f"{type(self).__module__}.{type(self).__name__} is a placeholder "
            "for a compiled mmcv op: it is not available here"
        )


class _OpsModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        REQUESTED.add(f"{self.__name__}.{name}")
        cls = type(name, (CompiledOpPlaceholder,), {"__module__": self.__name__})
        setattr(self, name, cls)
        return cls


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname in _SERVED or fullname.startswith("mmcv.ops."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _OpsModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


def install() -> None:
    """Serve the placeholders (idempotent); call before importing mmdet3d.models."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
