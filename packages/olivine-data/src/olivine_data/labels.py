"""Label vocabularies and the per-image VFM label store.

Vocabularies
------------
A :class:`Vocabulary` names the ids a label source produces and maps each id to the nuScenes
16-class evaluation id (``0`` = ignore) through the ``to_eval`` lookup array.

``SEEM17``
    The camera-ready OLIVINE labels (SEEM Focal-L, ``demo_code/utils/constants.py``): the 16
    nuScenes class names in SEEM's own order (**not** the lidarseg evaluation order) plus
    ``"background"``. Ids 0..16; ``16 = background`` is the explicit unlabelled id.

    Reference quirk, documented deviation: the reference SEEM script leaves *unpainted* pixels at
    0, which collides with ``barrier`` (id 0). Labels written by this toolkit (the synthetic world,
    the ``make-labels`` recipe) use 16 for unlabelled pixels. Downloaded reference ``camseg`` PNGs
    keep the collision; nothing here can undo it.

``GSAM14``
    The Grounded-SAM labels of the arXiv-v1 era: 0 = background/unlabelled, then the 13 prompt
    classes in prompt order (barrier=1 ... building=13).

``NUSCENES16``
    The nuScenes lidarseg evaluation classes: 0 = ignore, then the 16 classes in lidarseg
    evaluation order (barrier=1 ... vegetation=16). ``to_eval`` is the identity.

Label store
-----------
:class:`LabelStore` keeps one single-channel uint8 PNG per camera image at
``<root>/camseg/<CAMERA>/<image stem>.png`` (the reference layout, where ``samples`` is replaced by
``camseg`` and ``.jpg`` by ``.png``). Reads validate every id against the store's vocabulary;
writes are atomic (temporary file in the same folder, then ``os.replace``).

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
import socket
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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


@dataclass(frozen=True)
class Vocabulary:
    """A label space: ``class_names[i]`` is the name of id ``i``.

    Attributes:
        name: registry name (``"seem17"``, ...).
        class_names: one name per id, ids ``0 .. len(class_names) - 1``.
        unlabelled_id: the id that means "no label" (background / ignore).
        to_eval: ``(len(class_names),)`` int64 read-only array mapping an id of this vocabulary to
            the nuScenes 16-class evaluation id (0 = ignore). Use ``vocab.to_eval[ids]``.
    """

    name: str
    class_names: tuple[str, ...]
    unlabelled_id: int
    to_eval: np.ndarray = field(compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        n = len(self.class_names)
        if n == 0 or n > 256:
            raise ValueError(f"vocabulary {self.name!r}: expected 1..256 classes, got {n}")
        if not 0 <= self.unlabelled_id < n:
            raise ValueError(
                f"vocabulary {self.name!r}: unlabelled_id must lie in [0, {n}), "
                f"got {self.unlabelled_id}"
            )
        table = np.asarray(self.to_eval, dtype=np.int64).copy()
        if table.shape != (n,):
            raise ValueError(
                f"vocabulary {self.name!r}: to_eval expected shape ({n},), got {table.shape}"
            )
        if table.min() < 0 or table.max() > 16:
            raise ValueError(f"vocabulary {self.name!r}: to_eval ids must lie in [0, 16]")
        table.setflags(write=False)
        object.__setattr__(self, "to_eval", table)

    @property
    def num_classes(self) -> int:
        """Number of ids, including the unlabelled one."""
        return len(self.class_names)

    def validate_ids(self, ids: np.ndarray, what: str) -> None:
        """Raise ``ValueError`` naming ``what`` if any id in ``ids`` is outside the vocabulary."""
        if ids.size == 0:
            return
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= self.num_classes:
            bad = np.unique(ids[(ids < 0) | (ids >= self.num_classes)])
            raise ValueError(
                f"{what}: label ids {bad[:10].tolist()} are outside vocabulary {self.name!r} "
                f"(expected 0..{self.num_classes - 1})"
            )


NUSCENES16 = Vocabulary(
    name="nuscenes16",
    class_names=(
        "ignore",
        "barrier",
        "bicycle",
        "bus",
        "car",
        "construction_vehicle",
        "motorcycle",
        "pedestrian",
        "traffic_cone",
        "trailer",
        "truck",
        "driveable_surface",
        "other_flat",
        "sidewalk",
        "terrain",
        "manmade",
        "vegetation",
    ),
    unlabelled_id=0,
    to_eval=np.arange(17),
)

_EVAL = {name: i for i, name in enumerate(NUSCENES16.class_names)}


#: VFM class names that are not NUSCENES16 names -> their evaluation class (None: 0, ignored).
_VFM_TO_EVAL: dict[str, str | None] = {
    "road": "driveable_surface",
    "building": "manmade",
    "other ground": "other_flat",
    "background": None,
}


def _eval_ids(class_names: tuple[str, ...]) -> np.ndarray:
    """The NUSCENES16 id of each VFM class name (a NUSCENES16 name or one of ``_VFM_TO_EVAL``)."""
    evals = [_VFM_TO_EVAL.get(name, name) for name in class_names]
    return np.array([0 if name is None else _EVAL[name] for name in evals])


_SEEM17_NAMES = (
    "barrier",
    "bicycle",
    "bus",
    "car",
    "truck",
    "trailer",
    "motorcycle",
    "construction_vehicle",
    "pedestrian",
    "traffic_cone",
    "road",
    "sidewalk",
    "terrain",
    "vegetation",
    "building",
    "other ground",
    "background",
)
SEEM17 = Vocabulary(
    name="seem17", class_names=_SEEM17_NAMES, unlabelled_id=16, to_eval=_eval_ids(_SEEM17_NAMES)
)

_GSAM14_NAMES = (
    "background",
    "barrier",
    "bicycle",
    "bus",
    "car",
    "motorcycle",
    "pedestrian",
    "traffic_cone",
    "truck",
    "road",
    "sidewalk",
    "terrain",
    "vegetation",
    "building",
)
GSAM14 = Vocabulary(
    name="gsam14", class_names=_GSAM14_NAMES, unlabelled_id=0, to_eval=_eval_ids(_GSAM14_NAMES)
)

VOCABULARIES: dict[str, Vocabulary] = {v.name: v for v in (SEEM17, GSAM14, NUSCENES16)}


def get_vocabulary(name: str | Vocabulary) -> Vocabulary:
    """Return the registered vocabulary ``name`` (case-insensitive); a Vocabulary passes through.

    Raises:
        ValueError: unknown name; the message lists the known ones.
    """
    if isinstance(name, Vocabulary):
        return name
    if not isinstance(name, str):
        raise TypeError(f"vocabulary: expected a name or a Vocabulary, got {type(name).__name__}")
    try:
        return VOCABULARIES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown vocabulary {name!r}; known: {sorted(VOCABULARIES)}") from None


#: ``.<stem>.png.<pid>@<host>.tmp``: the temporary file of :meth:`LabelStore.write`
_TEMP_NAME = re.compile(r"^\.(?P<stem>.+)\.png\.(?P<pid>\d+)@(?P<host>[^/]+)\.tmp$")


def _host() -> str:
    """This host's name, reduced to characters safe in a file name."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "unknown-host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


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
        host = _host()
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
                if m is None or m["host"] != host or _pid_alive(int(m["pid"])):
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

    path.parent.mkdir(parents=True, exist_ok=True)
    # named by its writer, so that LabelStore.remove_stale_temp_files can tell a dead writer's
    # file from a live one's after a kill -9
    tmp = path.parent / f".{path.stem}.png.{os.getpid()}@{_host()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with os.fdopen(fd, "wb") as fh:
            Image.fromarray(array).save(fh, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
