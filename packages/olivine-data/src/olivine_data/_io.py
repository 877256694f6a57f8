"""Validated low-level readers shared by the dataset readers. Every error names the file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["read_point_file", "read_rgb_image", "read_label_file", "MAX_ABS_COORDINATE"]

#: Largest ``|x|``, ``|y|`` or ``|z|`` (metres, sensor frame) a point file may hold. A spinning
#: LiDAR measures up to a few hundred metres; 1e6 m (1000 km) is far beyond any real return and
#: still voxelises into an int32 grid at 0.1 m. A larger value is a corrupt file or wrong units.
MAX_ABS_COORDINATE = 1.0e6


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")


def read_point_file(path: str | os.PathLike[str], num_fields: int, keep: int = 4) -> np.ndarray:
    """Read a float32 point file of ``num_fields`` values per point; return ``(N, keep)`` float32.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is empty (0 bytes: a scan with no point is a broken file, not a
            sample to skip), the size is not a multiple of ``4 * num_fields`` bytes (truncated or
            of another layout), some values are NaN/inf, or a coordinate (first three fields) is
            beyond :data:`MAX_ABS_COORDINATE` metres.
    """
    p = Path(path)
    _require_file(p, "point file")
    size = p.stat().st_size
    stride = 4 * num_fields
    if size == 0:
        raise ValueError(
            f"{p}: empty point file (0 bytes, no point); expected {num_fields} float32 values "
            "per point: the scan is missing or was cut off when written"
        )
    if size % stride != 0:
        raise ValueError(
            f"{p}: size {size} bytes is not a multiple of {stride} "
            f"({num_fields} float32 per point): truncated or wrong format"
        )
    pts = np.fromfile(p, dtype=np.float32).reshape(-1, num_fields)[:, :keep]
    pts = np.ascontiguousarray(pts)
    check_finite_points(pts, str(p))
    check_coordinate_range(pts[:, :3], str(p))
    return pts


def check_coordinate_range(xyz: np.ndarray, what: str) -> None:
    """Raise ``ValueError`` naming ``what`` and the first offending value if a coordinate is
    beyond :data:`MAX_ABS_COORDINATE` metres (finite but absurd, e.g. ``x = 1e30``).
    """
    if xyz.size == 0:
        return
    absval = np.abs(xyz)
    if float(absval.max()) > MAX_ABS_COORDINATE:
        bad = absval > MAX_ABS_COORDINATE
        row, col = (int(i) for i in np.argwhere(bad)[0])
        n_bad = int(bad.any(axis=1).sum())
        raise ValueError(
            f"{what}: point {row} has {'xyz'[col]} = {float(xyz[row, col]):.6g}, beyond the "
            f"supported |coordinate| <= {MAX_ABS_COORDINATE:g} m ({n_bad} of {xyz.shape[0]} "
            "points): corrupt values or wrong units (metres expected)"
        )


def check_finite_points(points: np.ndarray, what: str) -> None:
    """Raise ``ValueError`` naming ``what`` if any value is NaN or infinite."""
    finite = np.isfinite(points)
    if not finite.all():
        bad = int((~finite).any(axis=1).sum())
        raise ValueError(f"{what}: {bad} of {points.shape[0]} points have NaN/inf values")


def read_rgb_image(
    path: str | os.PathLike[str],
    expected_size: tuple[int, int] | None = None,
    recorded_by: str = "",
) -> np.ndarray:
    """Read an image as ``(H, W, 3)`` uint8 RGB.

    ``expected_size`` is the ``(width, height)`` a table records for the image (``recorded_by``
    names that table record): an image of another size is refused before it is decoded, since its
    calibration (the intrinsic matrix) holds for the recorded size only and pairing it would put
    every point at a wrong pixel.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file does not decode, or its size is not ``expected_size``.
    """
    from PIL import Image

    p = Path(path)
    _require_file(p, "image")
    try:
        with Image.open(p) as im:
            if expected_size is not None and tuple(im.size) != tuple(expected_size):
                (w, h), (ew, eh) = im.size, expected_size
                raise ValueError(
                    f"{p}: the image is {w}x{h} pixels (width x height) but "
                    f"{recorded_by or 'its table'} records {ew}x{eh}: refusing to pair it, the "
                    "calibration holds for the recorded size (was the image resized or replaced?)"
                )
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except OSError as exc:
        raise ValueError(f"{p}: cannot decode image ({exc})") from exc


def read_label_file(
    path: str | os.PathLike[str], dtype: np.dtype | type, num_points: int
) -> np.ndarray:
    """Read a per-point label file of ``dtype`` and check it has ``num_points`` entries."""
    p = Path(path)
    _require_file(p, "label file")
    itemsize = np.dtype(dtype).itemsize
    size = p.stat().st_size
    if size % itemsize != 0 or size // itemsize != num_points:
        raise ValueError(
            f"{p}: {size} bytes = {size / itemsize:g} labels of {np.dtype(dtype)}, "
            f"expected {num_points} (one per point of the scan)"
        )
    return np.fromfile(p, dtype=dtype)
