"""What ``make-labels`` checks: the images it reads and the label PNGs it finds already made.

* An image that cannot be read (missing, truncated, undecodable, of another size than its table
  records, outside the dataroot) is a :class:`LabelFailure`: the shard goes on with the other
  images and :class:`MakeLabelsFailed` (exit code 1) lists the failures at the end, naming each
  image. (A truncated JPEG used to stop the whole shard with exit code 4, "the file system
  refused", without naming it.)
* On resume a stored label PNG counts as done only if it decodes as a single-channel 8-bit image
  of the size its record gives with every id in the vocabulary
  (:func:`~.label_worklist.pending_items`); a zero-byte or truncated PNG, or one of another size,
  is made again. (Resume used to go by file existence
  only, and training failed on such a file later.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["LabelFailure", "MakeLabelsFailed"]


@dataclass(frozen=True)
class LabelFailure:
    """An image ``make-labels`` could not label, and why (the reader's one-line error)."""

    image: str
    reason: str


class MakeLabelsFailed(ValueError):
    """Some images of a shard could not be labelled; the others were written (exit code 1)."""

    def __init__(self, shard: tuple[int, int], failures: Sequence[LabelFailure], written: int):
        self.failures = tuple(failures)
        lines = "\n".join(f"  - {f.reason}" for f in self.failures)
        super().__init__(
            f"make-labels shard {shard[0]}/{shard[1]}: {len(self.failures)} image(s) could not "
            f"be labelled, the {written} others were written (fix them and rerun: done images "
            f"are kept):\n{lines}"
        )
