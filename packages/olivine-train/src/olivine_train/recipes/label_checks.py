"""What ``make-labels`` checks: the images it reads and the label PNGs it finds already made.

* An image that cannot be read (missing, truncated, undecodable, of another size than its table
  records, outside the dataroot) is a :class:`LabelFailure`: the shard goes on with the other
  images and :class:`MakeLabelsFailed` (exit code 1) lists the failures at the end, naming each
  image. (A truncated JPEG used to stop the whole shard with exit code 4, "the file system
  refused", without naming it.)
* On resume a stored label PNG counts as done only if it decodes as a single-channel 8-bit image
  of the image's size with every id in the vocabulary (:func:`stored_label_problem`); a zero-byte
  or truncated PNG, or one of another size, is made again. (Resume used to go by file existence
  only, and training failed on such a file later.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from olivine_data.labels import LabelStore

__all__ = ["LabelFailure", "MakeLabelsFailed", "image_size_of", "stored_label_problem"]


@dataclass(frozen=True)
class LabelFailure:
    """An image ``make-labels`` could not label, and why (the reader's one-line error)."""

    image: str
    reason: str


class MakeLabelsFailed(ValueError):
    """Some images of a shard could not be labelled; the others were written (exit code 1)."""

    def __init__(self, shard: tuple[int, int], failures: Sequence[LabelFailure], written: int):
        self.failures = tuple(failures)
        first = self.failures[0]
        more = ""
        if len(self.failures) > 1:
            rest = ", ".join(f.image for f in self.failures[1:6])
            extra = len(self.failures) - 6
            more = f"; also {rest}" + (f" and {extra} more" if extra > 0 else "")
        super().__init__(
            f"make-labels shard {shard[0]}/{shard[1]}: {len(self.failures)} image(s) could not "
            f"be labelled ({written} written; rerun to retry them): {first.reason}{more}"
        )


def image_size_of(path: Path) -> tuple[int, int] | None:
    """``(height, width)`` from the image header (no decoding), None if it cannot be opened."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
    except (OSError, ValueError):
        return None
    return h, w


def stored_label_problem(store: LabelStore, camera: str, name: str, image: Path) -> str | None:
    """Why the stored label PNG of ``image`` must be made again, or None if it is sound.

    Sound: it exists, decodes as a single-channel 8-bit PNG, has the image's size and holds only
    ids of the store's vocabulary. An image that cannot be opened gives no size to compare; the
    PNG is then checked for the rest (the image itself is reported when it is labelled).
    """
    if not store.exists(camera, name):
        return "missing"
    try:
        store.read(camera, name, expected_shape=image_size_of(image))
    except (ValueError, OSError) as exc:
        return str(exc)
    return None
