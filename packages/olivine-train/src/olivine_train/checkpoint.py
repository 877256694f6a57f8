"""Checkpoints: atomic writes, exact resume, backbone export.

A training checkpoint (``last.pt`` / ``best.pt``) is a dict of tensors and plain Python values
(loadable with ``torch.load(..., weights_only=True)``)::

    format      "olivine-train/1"
    kind        "pretrain" | "downstream"
    model_name  point encoder name (e.g. "minkunet34c"), checked on resume
    config      the resolved config as a nested dict
    model       state dict of the trainable modules
    optimizer, scheduler, scaler   their state dicts (scaler may be None)
    vmf         state dict of the vMF class prior (pretraining) or None
    step, epoch, step_in_epoch, best_metric
    rng         python / numpy / torch (+ cuda) RNG states and named torch generators

``backbone.pt`` holds only the point encoder (``{"format": "olivine-backbone/1", "model_name",
"in_channels", "state_dict"}``) and is what downstream recipes load with
``olivine_models.load_matching_state``.

Loading (:func:`load_checkpoint`, :func:`load_backbone_state`) first checks the CRC-32 of every
zip record (:func:`zip_damage`; ``torch.load`` does not), so a file damaged in its middle is a
:class:`CheckpointError` naming it instead of a model with wrong weights.

Every file is written to a temporary name in the same folder (``.<name>.tmp<pid>``), flushed, then
``os.replace``d, so a crash mid-write never leaves a truncated ``last.pt``. A write that fails
(full disk, read-only folder) raises :class:`CheckpointWriteError` naming the file and leaves the
previous version in place. A ``kill -9`` mid-write leaves the temporary file behind;
:func:`remove_orphan_temp_files` (called when a run folder is opened by
:class:`~olivine_train.logging.RunLogger`) deletes those of processes that no longer run.
"""

from __future__ import annotations

import os
import random
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from olivine_data.fsutil import atomic_write, pid_alive
from olivine_models import StateMismatchError, load_state, load_weights_only

__all__ = [
    "BACKBONE_FORMAT",
    "CHECKPOINT_FORMAT",
    "Checkpoint",
    "CheckpointError",
    "CheckpointWriteError",
    "remove_orphan_temp_files",
    "atomic_save",
    "capture_rng",
    "atomic_write_text",
    "load_backbone_state",
    "load_checkpoint",
    "load_strict",
    "Payload",
    "TERMS_STATE_KEY",
    "restore_rng",
    "save_backbone",
    "zip_damage",
]

CHECKPOINT_FORMAT = "olivine-train/1"
#: the checkpoint key of the pretraining loss terms' state (the vMF prior's buffers; None
#: downstream), named after the one term that has state since format 1
TERMS_STATE_KEY = "vmf"
BACKBONE_FORMAT = "olivine-backbone/1"


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or does not match the model/config."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, quota, I/O error); the previous file is
    unchanged. An ``OSError``, so the CLI reports it like any file-system error (exit code 4).
    """


_TEMP_NAME = re.compile(r"^\..+\.tmp(\d+)$")  # .<name>.tmp<pid> (atomic_save, save_config, ...)


def _writer_alive(pid: int) -> bool:
    # this process has not written anything yet when it cleans up: its own pid is a dead writer's
    return pid != os.getpid() and pid_alive(pid)


def remove_orphan_temp_files(folder: str | Path) -> list[Path]:
    """Delete ``.<name>.tmp<pid>`` files in ``folder`` left by processes that no longer run (a
    ``kill -9`` during an atomic write); return what was removed. Files of live processes (e.g.
    another job writing into the same folder right now) are kept.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TEMP_NAME.match(entry.name)
        if match is None or not entry.is_file() or _writer_alive(int(match.group(1))):
            continue
        try:
            entry.unlink()
        except FileNotFoundError:  # removed concurrently
            continue
        removed.append(entry)
    return removed


#: A ``torch.save`` / ``torch.load`` payload (a checkpoint, its RNG states): nested containers
#: whose value types depend on the key, read back by ``torch.load`` as untyped objects.
Payload = dict[str, Any]
#: A training checkpoint (``last.pt``, ``best.pt``): the keys of
#: :meth:`olivine_train.recipes.loop.JobBase.checkpoint`.
Checkpoint = Payload


def _atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """``write(fh)`` into ``.<name>.tmp<pid>`` beside ``path``, fsync, then ``os.replace``
    (:func:`olivine_data.fsutil.atomic_write`); the temporary file never survives.
    """
    return atomic_write(path, write)


def atomic_save(obj: object, path: str | Path) -> Path:
    """``torch.save`` to ``path`` atomically (temporary file, fsync, ``os.replace``)."""
    path = Path(path)
    try:
        return _atomic_write(path, lambda fh: torch.save(obj, fh))
    except RuntimeError as exc:
        # torch's zip writer reports a failed write (ENOSPC, EFBIG, EIO) as
        # "[enforce fail at inline_container.cc:...] ... file write failed"; other errors are bugs
        if "inline_container" not in str(exc) and "PytorchStreamWriter" not in str(exc):
            raise
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointWriteError(
            f"{path}: cannot write the checkpoint ({reason}); is the disk full? The previous "
            f"{path.name}, if any, is unchanged"
        ) from exc


def atomic_write_text(text: str, path: str | Path) -> Path:
    """Write ``text`` to ``path`` atomically (temporary file, fsync, ``os.replace``)."""
    return _atomic_write(Path(path), lambda fh: fh.write(text.encode("utf-8")))


def capture_rng(generators: dict[str, torch.Generator] | None = None) -> Payload:
    """All RNG states needed for an exact resume (weights_only-loadable types only)."""
    np_state: tuple[Any, ...] = tuple(np.random.get_state(legacy=True))  # numpy: untyped tuple
    py_version, py_state, py_gauss = random.getstate()
    state: Payload = {
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
        "numpy": {
            "kind": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generators": {k: g.get_state() for k, g in (generators or {}).items()},
    }
    return state


def restore_rng(state: Payload, generators: dict[str, torch.Generator] | None = None) -> None:
    """Inverse of :func:`capture_rng`."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state(
        (
            npst["kind"],
            npst["keys"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, gen in (generators or {}).items():
        if name not in state.get("generators", {}):
            raise CheckpointError(f"checkpoint has no state for generator {name!r}")
        gen.set_state(state["generators"][name])


#: (path, inode, size, mtime) of the zip files whose checksums were verified in this process
_VERIFIED: set[tuple[str, int, int, int]] = set()


def zip_damage(path: str | Path) -> str | None:
    """Why the zip-format ``torch.save`` file ``path`` is damaged, or None when every record's
    CRC-32 matches (or the file is not a zip: the legacy pickle format has no checksums).

    ``torch.load`` does not check the CRC-32 that ``torch.save`` writes for every record, so a
    file damaged in its middle (a bad disk block, an interrupted copy over an existing file)
    loads without error with wrong tensor values. This reads the whole file once (about 1 s per
    GB); a file verified unchanged (same inode, size and mtime) is not read again.
    """
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    if key in _VERIFIED or not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        return f"corrupt zip structure ({exc})"
    if bad is not None:
        return f"record {bad!r} does not match its CRC-32 checksum: the file is damaged"
    _VERIFIED.add(key)
    return None


def _read(path: Path, what: str, mmap: bool = False) -> object:
    """``torch.load(weights_only=True)`` of ``path`` after checking its zip checksums
    (:func:`zip_damage`); a :class:`CheckpointError` naming ``what`` and the file when it is
    missing, damaged or unreadable.
    """
    if not path.is_file():
        raise CheckpointError(f"{what} {str(path)!r} does not exist")
    damage = zip_damage(path)
    if damage is not None:
        raise CheckpointError(f"{path}: cannot read the {what}: {damage}")
    try:
        # tensors and plain containers only: a pickle payload, an empty or a text file is one
        # line naming the file (never torch's advice to turn weights_only off)
        return load_weights_only(path, what, mmap=mmap)
    except (ValueError, OSError) as exc:
        raise CheckpointError(str(exc)) from None


def load_checkpoint(
    path: str | Path,
    *,
    expect_kind: str | None = None,
    expect_model: str | None = None,
    mmap: bool = False,
) -> Checkpoint:
    """Load a training checkpoint (``weights_only=True``) and check its kind and model name;
    ``mmap`` maps the tensors instead of reading them (for a look at the stored config).
    """
    path = Path(path)
    ckpt = _read(path, "checkpoint", mmap=mmap)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        fmt = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(
            f"{path}: expected an {CHECKPOINT_FORMAT!r} training checkpoint, got format {fmt!r}"
        )
    if expect_kind is not None and ckpt.get("kind") != expect_kind:
        raise CheckpointError(
            f"{path}: expected a {expect_kind!r} checkpoint, got {ckpt.get('kind')!r}"
        )
    if expect_model is not None and ckpt.get("model_name") != expect_model:
        raise CheckpointError(
            f"{path}: checkpoint was trained with point encoder {ckpt.get('model_name')!r}, "
            f"but the config asks for {expect_model!r}"
        )
    return ckpt


def load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load an exact-fit state dict (``olivine_models.load_state``, strict); a mismatch is a
    :class:`CheckpointError` listing the missing, unexpected and mis-shaped keys.
    """
    try:
        load_state(module, state, strict=True, source=what, target="the model")
    except StateMismatchError as exc:
        raise CheckpointError(str(exc)) from None


def save_backbone(
    path: str | Path, backbone: torch.nn.Module, model_name: str, in_channels: int
) -> Path:
    """Export the point encoder alone (``backbone.pt``)."""
    state = {k: v.detach().cpu() for k, v in backbone.state_dict().items()}
    return atomic_save(
        {
            "format": BACKBONE_FORMAT,
            "model_name": model_name,
            "in_channels": int(in_channels),
            "state_dict": state,
        },
        path,
    )


def load_backbone_state(path: str | Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """Point-encoder state dict from ``backbone.pt`` or a pretraining ``last.pt``/``best.pt``.

    Returns (state_dict, model_name). For a training checkpoint the ``backbone.`` prefix of the
    pretraining module is stripped.
    """
    path = Path(path)
    obj = _read(path, "pretrained weights file")
    if isinstance(obj, dict) and obj.get("format") == BACKBONE_FORMAT:
        return dict(obj["state_dict"]), obj.get("model_name")
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        prefix = "backbone."
        state = {k[len(prefix) :]: v for k, v in obj["model"].items() if k.startswith(prefix)}
        if not state:
            raise CheckpointError(f"{path}: training checkpoint holds no 'backbone.*' weights")
        return state, obj.get("model_name")
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj), None
    raise CheckpointError(
        f"{path}: expected {BACKBONE_FORMAT!r}, {CHECKPOINT_FORMAT!r} or a plain state dict"
    )
