"""Reading weights files that may not be trusted: tensors and plain containers only.

Every weights file the toolkit reads (a teacher's ``model.image_weights``, a SAM checkpoint, a
pretrained backbone, a training checkpoint) goes through :func:`load_weights_only`:
``torch.load(weights_only=True)``, which never runs code from the file. What it cannot load is
refused with **one** line naming the file and saying why, in words that fit an untrusted file:

* pickled Python objects (classes, functions such as ``posix.system``: what a pickle payload
  whose ``__reduce__`` would run a command holds) -> :class:`UnsafeWeightsError`; the message
  never suggests turning the protection off (torch's own text advises ``weights_only=False``,
  which would run the payload);
* an empty file, a text file, any file that is neither ``torch.save``'s zip format nor a
  pickle -> ``ValueError`` saying what it starts with (torch says ``KeyError: '101'`` or ``()``).
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["UnsafeWeightsError", "load_weights_only", "weights_file_problem"]


class UnsafeWeightsError(ValueError):
    """The file holds pickled Python objects; they are not loaded (they could run code)."""


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)|Unsupported global: GLOBAL ([\w.]+)")


def _header_problem(path: Path) -> str | None:
    """Why the first bytes of ``path`` cannot start a ``torch.save`` file (None if they can)."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    size = path.stat().st_size
    if not head:
        return "is empty (0 bytes): not a PyTorch weights file"
    if head.startswith(b"PK") or head[0] == 0x80:  # zip (torch >= 1.6) or a pickle (legacy)
        return None
    return (
        f"is not a PyTorch weights file: it starts with {head!r} ({size} bytes; neither the zip "
        "format of torch.save nor a pickle: a text file, an HTML page or another format?)"
    )


def load_weights_only(path: str | Path, what: str, *, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True, map_location="cpu")`` with one-line errors.

    ``what`` names the file's role (e.g. ``"model.image_weights"``) at the start of the message.
    ``mmap`` maps the tensors instead of reading them (zip format only).

    Raises:
        FileNotFoundError: no such file.
        UnsafeWeightsError: the file holds Python objects beyond tensors and plain containers.
        ValueError: the file is empty, not a PyTorch file, or cannot be read (truncated).
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{what}: weights file not found: {file}")
    bad = _header_problem(file)
    if bad is not None:
        raise ValueError(f"{what}: {file} {bad}")
    try:
        with warnings.catch_warnings():  # "Detected pickle protocol 4 ..." from the unpickler
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(
                file,
                map_location="cpu",
                weights_only=True,
                mmap=mmap and zipfile.is_zipfile(file),
            )
    except pickle.UnpicklingError as exc:
        found = _GLOBAL.search(str(exc))
        name = f" (such as {next(g for g in found.groups() if g)!r})" if found else ""
        raise UnsafeWeightsError(
            f"{what}: {file} holds Python objects{name}, not only tensors: they will not be "
            "loaded, since unpickling them could run code from the file; use a weights file "
            "that holds tensors only (a state dict) from a source you trust"
        ) from None
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise ValueError(
            f"{what}: {file} cannot be read as a PyTorch weights file ({reason}): truncated or "
            "corrupt"
        ) from None


def weights_file_problem(path: str | Path, what: str) -> str | None:
    """The message :func:`load_weights_only` would raise for ``path``, or None when it loads
    (tensors mapped, not read: cheap even for large files). For configuration checks.
    """
    try:
        load_weights_only(path, what, mmap=True)
    except (ValueError, FileNotFoundError, OSError) as exc:
        return str(exc)
    return None
