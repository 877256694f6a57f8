"""The per-image VFM label store (and the label vocabularies, re-exported from
:mod:`olivine_data.vocabulary`).

Label store
-----------
:class:`LabelStore` keeps one single-channel uint8 PNG per camera image at
``<root>/camseg/<CAMERA>/<image stem>.png`` (the reference layout, where ``samples`` is replaced by
``camseg`` and ``.jpg`` by ``.png``). Reads validate every id against the store's vocabulary;
writes are atomic (:func:`olivine_data.fsutil.atomic_write`: temporary file in the same folder,
fsync, then ``os.replace``).

The same store keeps SAM superpixels next to the labels, one single-channel 16-bit PNG per image
at ``<root>/superpixels/<CAMERA>/<image stem>.png``: segment ids ``1..N`` and ``0`` for pixels no
segment covers (Seal's construction from SAM's automatic masks; see
``olivine_models.vfm.mask_superpixels``).

The temporary file of a write is ``.<stem>.png.<pid>@<host>.tmp``: after a ``kill -9`` it says
which process left it, so :meth:`LabelStore.remove_stale_temp_files` (called by ``make-labels``
at start) deletes only those of processes of this host that no longer run, never the file that a
live shard on this or another host is writing.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from olivine_data.fsutil import atomic_write, host_name, pid_alive
from olivine_data.vocabulary import (
    GSAM14,
    NUSCENES16,
    SEEM17,
    VOCABULARIES,
    Vocabulary,
    get_vocabulary,
)

__all__ = [
    "GSAM14",
    "NUSCENES16",
    "SEEM17",
    "VOCABULARIES",
    "LabelStore",
    "Vocabulary",
    "get_vocabulary",
    "pair_superpixel_ids",
]

#: ``.<stem>.png.<pid>@<host>.tmp``: the temporary file of :meth:`LabelStore.write`
_TEMP_NAME = re.compile(r"^\.(?P<stem>.+)\.png\.(?P<pid>\d+)@(?P<host>[^/]+)\.tmp$")


class LabelStore:
    """One uint8 PNG of VFM class ids per camera image, under ``<root>/camseg/<CAMERA>/``.

    Args:
        root: dataset root; labels live in ``root/camseg``.
        vocabulary: ids read or written are checked against it (default SEEM17).
    """

    def __init__(self, root: str | os.PathLike[str], vocabulary: str | Vocabulary = "seem17"):
        self.root = Path(root)
        self.vocabulary = get_vocabulary(vocabulary)

    def __repr__(self) -> str:
        return f"LabelStore(root={str(self.root)!r}, vocabulary={self.vocabulary.name!r})"

    def path(self, camera: str, image_filename: str | os.PathLike[str]) -> Path:
        """``<root>/camseg/<camera>/<stem of image_filename>.png``.

        ``image_filename`` may be a bare name or a path (``samples/CAM_FRONT/x.jpg``); only its
        stem is used.
        """
        if not camera or "/" in camera or "\\" in camera or camera in (".", ".."):
            raise ValueError(f"label store: invalid camera name {camera!r}")
        stem = Path(image_filename).stem
        if not stem:
            raise ValueError(f"label store: empty image filename for camera {camera!r}")
        return self.root / "camseg" / camera / f"{stem}.png"

    def exists(self, camera: str, image_filename: str | os.PathLike[str]) -> bool:
        """Whether the label PNG of this image exists."""
        return self.path(camera, image_filename).is_file()

    def read(
        self,
        camera: str,
        image_filename: str | os.PathLike[str],
        expected_shape: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """Read the ``(H, W)`` uint8 label image.

        Raises:
            FileNotFoundError: no label file for this image (the message names the path).
            ValueError: not a single-channel 8-bit image, wrong ``expected_shape``, or ids outside
                the vocabulary.
        """
        from PIL import Image

        p = self.path(camera, image_filename)
        if not p.is_file():
            raise FileNotFoundError(f"VFM label file not found: {p}")
        try:
            with Image.open(p) as im:
                if im.mode not in ("L", "P"):
                    raise ValueError(
                        f"{p}: expected a single-channel 8-bit PNG (mode L), got mode {im.mode}"
                    )
                arr = np.array(im, dtype=np.uint8)
        except OSError as exc:
            raise ValueError(f"{p}: cannot decode label PNG ({exc})") from exc
        if expected_shape is not None and arr.shape != tuple(expected_shape):
            raise ValueError(
                f"{p}: label image has shape {arr.shape}, expected {tuple(expected_shape)} "
                "(the size of the camera image it labels)"
            )
        self.vocabulary.validate_ids(arr, str(p))
        return arr

    def write(
        self, camera: str, image_filename: str | os.PathLike[str], labels: np.ndarray
    ) -> Path:
        """Write ``labels`` ((H, W) integer ids of the vocabulary) atomically; return the path."""
        p = self.path(camera, image_filename)
        arr = _integer_map(p, labels, "labels")
        self.vocabulary.validate_ids(arr, str(p))
        _write_png_atomic(p, arr.astype(np.uint8))
        return p

    def remove_stale_temp_files(self) -> list[Path]:
        """Delete the temporary files of :meth:`write` and :meth:`write_superpixels` left under
        ``<root>/camseg/*/`` and ``<root>/superpixels/*/`` by processes of this host that no
        longer run (a ``kill -9`` mid-write); return them.

        Files of live processes (another shard writing now) and of other hosts (whose processes
        cannot be checked from here) are kept, as are files not named by this version.
        """
        removed: list[Path] = []
        host = host_name()
        folders = [
            folder
            for top in (self.root / "camseg", self.root / "superpixels")
            if top.is_dir()
            for folder in sorted(top.iterdir())
        ]
        for folder in folders:
            if not folder.is_dir():
                continue
            for entry in sorted(folder.iterdir()):
                m = _TEMP_NAME.match(entry.name)
                if m is None or m["host"] != host or pid_alive(int(m["pid"])):
                    continue
                try:
                    entry.unlink()
                except FileNotFoundError:  # removed concurrently by another shard
                    continue
                removed.append(entry)
        return removed

    def superpixel_path(self, camera: str, image_filename: str | os.PathLike[str]) -> Path:
        """``<root>/superpixels/<camera>/<stem of image_filename>.png``."""
        label = self.path(camera, image_filename)
        return self.root / "superpixels" / camera / label.name

    def has_superpixels(self, camera: str, image_filename: str | os.PathLike[str]) -> bool:
        """Whether the superpixel PNG of this image exists."""
        return self.superpixel_path(camera, image_filename).is_file()

    def write_superpixels(
        self, camera: str, image_filename: str | os.PathLike[str], segments: np.ndarray
    ) -> Path:
        """Write ``(H, W)`` segment ids (0 = unassigned) atomically as a 16-bit PNG."""
        p = self.superpixel_path(camera, image_filename)
        arr = _integer_map(p, segments, "superpixels")
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 65535):
            raise ValueError(
                f"{p}: superpixel ids must be in 0..65535, got {int(arr.min())}..{int(arr.max())}"
            )
        _write_png_atomic(p, arr.astype(np.uint16))
        return p

    def read_superpixels(
        self,
        camera: str,
        image_filename: str | os.PathLike[str],
        expected_shape: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """Read the ``(H, W)`` uint16 superpixel map (0 = unassigned).

        Raises:
            FileNotFoundError: no superpixel file for this image (the message names the path).
            ValueError: not a single-channel 16-bit PNG, or the wrong ``expected_shape``.
        """
        from PIL import Image

        p = self.superpixel_path(camera, image_filename)
        if not p.is_file():
            raise FileNotFoundError(
                f"SAM superpixel file not found: {p} (made by `olivine-train make-labels "
                "--mode refine`)"
            )
        try:
            with Image.open(p) as im:
                if im.mode not in ("I;16", "I"):
                    raise ValueError(
                        f"{p}: expected a single-channel 16-bit PNG (mode I;16), got mode {im.mode}"
                    )
                arr = np.array(im).astype(np.uint16)
        except OSError as exc:
            raise ValueError(f"{p}: cannot decode superpixel PNG ({exc})") from exc
        if expected_shape is not None and arr.shape != tuple(expected_shape):
            raise ValueError(
                f"{p}: superpixel image has shape {arr.shape}, expected {tuple(expected_shape)} "
                "(the size of the camera image it segments)"
            )
        return arr


def pair_superpixel_ids(superpixels: np.ndarray, pair_pixels: np.ndarray) -> np.ndarray:
    """Superpixel id of every point-pixel pair, unique across the cameras of one sample.

    Args:
        superpixels: ``(C, H, W)`` maps of the sample's cameras (``0`` = unassigned).
        pair_pixels: ``(P, 3)`` ``[camera, row, col]``.

    Returns:
        ``(P,)`` int64: segment ``s > 0`` of camera ``c`` becomes ``offset_c + s - 1`` (cameras
        numbered one after the other, offsets from each map's largest id), unassigned pixels ``-1``
        (ignored by ``olivine_losses.SuperpixelInfoNCELoss``), as SLidR offsets superpixel ids per
        image.
    """
    sp = np.asarray(superpixels)
    pix = np.asarray(pair_pixels)
    if sp.ndim != 3:
        raise ValueError(f"superpixels: expected (C, H, W), got shape {sp.shape}")
    if pix.ndim != 2 or pix.shape[1] != 3:
        raise ValueError(f"pair_pixels: expected (P, 3), got shape {pix.shape}")
    sizes = sp.reshape(sp.shape[0], -1).max(axis=1).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    cam, row, col = pix.T
    raw = sp[cam, row, col].astype(np.int64)
    return np.where(raw > 0, offsets[cam] + raw - 1, -1)  # type: ignore[no-any-return]


def _integer_map(path: Path, values: np.ndarray, what: str) -> np.ndarray:
    """``values`` as an array, checked to be a 2-D (H, W) integer map (errors name ``path``)."""
    arr = np.asarray(values)
    if arr.ndim != 2:
        raise ValueError(f"{path}: {what} must be a 2-D (H, W) array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{path}: {what} must have an integer dtype, got {arr.dtype}")
    return arr


def _write_png_atomic(path: Path, array: np.ndarray) -> None:
    """Save a uint8 (mode L) or uint16 (mode I;16) array as PNG via a temporary file."""
    from PIL import Image

    # named by its writer, so that LabelStore.remove_stale_temp_files can tell a dead writer's
    # file from a live one's after a kill -9
    atomic_write(
        path,
        lambda fh: Image.fromarray(array).save(fh, format="PNG"),
        temp_name=f".{path.stem}.png.{os.getpid()}@{host_name()}.tmp",
    )
