"""Export a pretrained point encoder to OpenPCDet and mmdetection3d (``olivine-train export``).

:func:`export_backbone` reads a run folder, ``backbone.pt`` or a training checkpoint, maps the
point encoder's tensors onto the target class (:mod:`olivine_train.export.layouts`) and writes
the file atomically; the :class:`ExportReport` says what was mapped, added and left out, and
how to load the file.
"""

from olivine_train.export.exporter import (
    EXPORT_FORMAT,
    EXPORT_TARGETS,
    ExportReport,
    export_backbone,
    map_state,
)
from olivine_train.export.source import ExportError, PretrainedBackbone, read_backbone

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_TARGETS",
    "ExportError",
    "ExportReport",
    "PretrainedBackbone",
    "export_backbone",
    "map_state",
    "read_backbone",
]
